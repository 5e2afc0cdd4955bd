r"""``gca-bimodal``: the GCA losses as first-class bimodal losses, beside ``clip``, in the other experiments.

Chen et al. (2024) train the GCA family on two augmented views of one image; nothing in the
losses needs the two sides to share an encoder. This experiment trains the bimodal experiments
(``mnist-labels``: LeNet against one-hot labels; ``image-text``: the open_clip ResNet and a bag
of words on emoji and their names; ``ocean``: drifter trajectories against flow fields) once with
each loss of ``losses`` (``clip`` and the five GCA losses with the paper's hyperparameters, their
registry defaults) and gathers their headline metrics into one table:

* ``mnist-labels``: the crossmodal classifier's test accuracy and expected calibration error
  (Algorithm 2 of Baptista, Stuart & Tran 2025);
* ``image-text``: held-out text→image and image→text R@5 and zero-shot top-1 accuracy per style;
* ``ocean``: held-out R@1 and R@5 in both directions (coefficients→trajectory ``u→v`` and back)
  within pools of 128 candidates (Fig. 14 of Baptista, Stuart & Tran 2025);
* any other experiment: every number of its ``metrics.json`` whose name says
  accuracy, recall (``R@``) or calibration (``ece``), by its path.

Each run is the experiment's own entry point (``registry.get(name).run``) on its ``quick``
preset with ``loss.name`` set, plus the reductions in ``overrides`` (sized for 2 CPU cores) and,
for the losses that take a target plan, the experiment's entry of ``targets`` (``class`` for
``mnist-labels``, whose one-hot labels make the identity target degenerate), in
a sub-folder ``<experiment>/<loss>/`` of this run with its own ``config.yaml``, ``metrics.json``
and report; the shard caches are shared. A sub-run that already holds ``metrics.json`` is read,
not retrained, so an interrupted run resumes where it stopped. An experiment that is not
registered yet is named in the report as not run.

The GCA losses read the experiment's own logits (inner product at τ = 1 in ``mnist-labels``,
cosine with τ learnt from 0.07 in ``image-text`` and ``ocean``): ε = τ there, not the paper's 0.5.
The losses with a RINCE term (a ``q`` parameter: ``rince``, ``gca_rince``, ``gca_uot``) are
unbounded below on unbounded logits and pull a learnt temperature to its clamp
(:func:`~clipmath.multimodal.losses.gca.check_bounded_robust_term`), and their robustness is set by
:math:`q/\tau` (a positive pair weighs :math:`e^{(q/\tau)\cos}`): they get cosine logits at the
experiment's temperature, fixed, with :math:`q = \min(1, \tau\cdot` ``robust_q_per_tau``:math:`)`,
the paper's :math:`q/\tau = 0.6/0.5`. With :math:`q = 0.6` they trained to chance on image-text
(test R@5 ≈ 0.006, τ learnt from 0.07 or fixed at 0.07; 0.39 for ``rince`` at τ = 0.07 with
q = 0.05) and to 0.32 accuracy on mnist-labels' inner product (loss ≈ −1e9; 0.97 on cosine).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipmath.experiments import registry
from clipmath.experiments.config import check_values, dump_yaml, resolve
from clipmath.experiments.registry import Experiment, Headline
from clipmath.experiments.rundir import RunDir, markdown_table
from clipmath.multimodal import losses

logger = logging.getLogger(__name__)

#: The bimodal experiments, in table order.
EXPERIMENTS = ("mnist-labels", "image-text", "ocean")
#: ``clip`` and the GCA family.
LOSSES = ("clip", "ince", "gca_ince", "rince", "gca_rince", "gca_uot")
#: Names of the numbers the generic reader keeps (accuracy, recall, calibration).
_HEADLINE_KEY = re.compile(r"(accuracy|acc1|R@|recall|ece)", re.IGNORECASE)


def _default_overrides() -> dict:
    return {
        # The quick preset (3,000 training digits, 30 epochs), fine-tuning measured at M = 100 only.
        "mnist-labels": ["finetune.sizes=[100]"],
        # The quick preset at its earlier size (every training emoji in both styles, n_e = 64, 15 epochs).
        "image-text": ["train.epochs=15", "g_u.params.n_e=64", "g_v.params.n_e=64"],
        # The small preset (8,192 pairs) for 5 of its 20 epochs (320 steps).
        "ocean": ["data.n_train=8192", "train.epochs=5"],
    }


def _default_targets() -> dict:
    # One-hot labels: same-label columns are identical, so a balanced plan cannot single out the
    # diagonal; the positives are the pairs that share a label.
    return {"mnist-labels": "class"}


def _takes(loss: str, parameter: str) -> bool:
    """Whether the loss registered as ``loss`` has the constructor parameter ``parameter``."""
    return any(
        parameter in inspect.signature(cls.__init__).parameters
        for cls in losses.loss_class(loss).__mro__
        if "__init__" in vars(cls)
    )


def takes_target(loss: str) -> bool:
    """Whether the loss registered as ``loss`` takes a ``target`` plan (a constructor parameter)."""
    return _takes(loss, "target")


def has_robust_term(loss: str) -> bool:
    """Whether the loss registered as ``loss`` has a RINCE term (a ``q`` parameter)."""
    return _takes(loss, "q")


#: :math:`q/\tau` of the paper's RINCE-type runs: :math:`q = 0.6` at :math:`\varepsilon = \tau = 0.5`.
ROBUST_Q_PER_TAU = 1.2


def robust_term_overrides(tau: float, q_per_tau: float = ROBUST_Q_PER_TAU) -> list[str]:
    r"""``--set`` strings for a loss with a RINCE term: the temperature ``tau`` fixed, the paper's :math:`q/\tau`.

    :math:`q = \min(1, \tau\cdot` ``q_per_tau``:math:`)` (see the module docstring); the metric must
    bound the logits (cosine or ``neg_sq_l2``), which the loss checks.
    """
    return ["learn_tau=false", f"loss.params.q={min(1.0, tau * q_per_tau):.6g}"]


@dataclass
class GcaBimodalConfig:
    r"""Config of ``gca-bimodal``; the defaults are the ``quick`` preset.

    Attributes:
        seed: passed to every sub-run as its ``seed``.
        experiments: which bimodal experiments (see :data:`EXPERIMENTS`; any registered name).
        losses: the losses each is trained with (registered names).
        overrides: ``--set`` strings per experiment, applied on top of its ``quick`` preset (and
            before ``loss.name``).
        targets: the target plan per experiment (``loss.params.target``) of every loss that takes
            one (:func:`takes_target`); the others, and experiments not named, keep their default.
        robust_q_per_tau: :math:`q/\tau` of the losses with a RINCE term (:func:`has_robust_term`),
            which get cosine logits at the experiment's fixed ``tau`` and
            :math:`q = \min(1, \tau\cdot` ``robust_q_per_tau``:math:`)`; default 1.2, the paper's
            :math:`q = 0.6` at :math:`\tau = 0.5`.
    """

    seed: int = 0
    experiments: list[str] = field(default_factory=lambda: list(EXPERIMENTS))
    losses: list[str] = field(default_factory=lambda: list(LOSSES))
    overrides: dict = field(default_factory=_default_overrides)
    targets: dict = field(default_factory=_default_targets)
    robust_q_per_tau: float = ROBUST_Q_PER_TAU

    def __post_init__(self) -> None:
        check_values(
            (
                "robust_q_per_tau",
                self.robust_q_per_tau,
                isinstance(self.robust_q_per_tau, (int, float))
                and not isinstance(self.robust_q_per_tau, bool)
                and 0 < self.robust_q_per_tau < math.inf,
                "a finite number > 0",
            ),
            (
                "experiments",
                self.experiments,
                bool(self.experiments)
                and len(set(self.experiments)) == len(self.experiments)
                and "gca-bimodal" not in self.experiments,
                "a non-empty list of distinct experiment names other than gca-bimodal",
            ),
            (
                "losses",
                self.losses,
                bool(self.losses) and len(set(self.losses)) == len(self.losses),
                "a non-empty list of distinct loss names",
            ),
        )
        for name in self.experiments:
            if name not in registry.names() and name not in EXPERIMENTS:
                raise ValueError(f"experiments: {name!r} unknown; expected registered ones or {', '.join(EXPERIMENTS)}")
        for name in self.losses:
            if name not in losses.names():
                raise ValueError(f"losses: {name!r} unknown; expected one of {', '.join(losses.names())}")
        for name, values in self.overrides.items():
            if not isinstance(values, list) or not all(isinstance(v, str) and "=" in v for v in values):
                raise ValueError(f"overrides.{name}={values!r}: expected a list of 'key=value' strings")
        for name, target in self.targets.items():
            for loss in filter(takes_target, self.losses):  # the loss's own check of the plan's name
                try:
                    losses.build(loss, target=target)
                except ValueError as err:
                    raise ValueError(f"targets.{name}={target!r}: {err}") from None
        for name in self.experiments:  # a registered experiment's config is checked now, before anything runs
            if name in registry.names():
                for loss in self.losses:
                    sub_config(self, name, loss)


def sub_config(config: GcaBimodalConfig, experiment: str, loss: str, shards_dir: str | None = None) -> Any:
    """One sub-run's config: the ``quick`` preset, the overrides, ``loss.name``, its target, ``seed``.

    A loss with a RINCE term also gets ``loss.metric=cosine``, ``learn_tau=false`` and its ``q``
    from ``robust_q_per_tau`` at the experiment's ``tau``.

    Raises:
        ValueError: naming the key, for an override or loss the experiment refuses.
    """
    exp = registry.get(experiment)
    overrides = [*config.overrides.get(experiment, []), f"loss.name={loss}", f"seed={config.seed}"]
    if experiment in config.targets and takes_target(loss):
        overrides.append(f"loss.params.target={config.targets[experiment]}")
    if has_robust_term(loss):
        tau = getattr(resolve(exp.config_type, experiment, "quick", config.overrides.get(experiment, [])), "tau", None)
        if tau is None:
            raise ValueError(f"losses: {loss} sets q from the experiment's tau, which {experiment} does not have")
        overrides += ["loss.metric=cosine", *robust_term_overrides(tau, config.robust_q_per_tau)]
    resolved = resolve(exp.config_type, experiment, "quick", overrides)
    stream = getattr(resolved, "stream", None)
    if shards_dir is not None and stream is not None and getattr(stream, "shards_dir", "") is None:
        resolved = dataclasses.replace(resolved, stream=dataclasses.replace(stream, shards_dir=shards_dir))
    return resolved


def headline_metrics(experiment: str, metrics: dict) -> dict[str, float]:
    """The accuracy, recall and ECE figures of one sub-run's ``metrics.json``, by readable name."""
    if experiment == "mnist-labels":
        (run,) = metrics["runs"].values()  # a loss without a direction trains once
        return {"classifier accuracy": run["accuracy"], "ECE": run["ece"]}
    if experiment == "image-text":
        out = {}
        for pool, r in metrics["retrieval"].items():
            out[f"{pool} text→image R@5"] = r["text_to_image_R@5"]
            out[f"{pool} image→text R@5"] = r["image_to_text_R@5"]
        for pool, z in metrics.get("zero_shot", {}).items():
            out[f"{pool} zero-shot acc1"] = z["acc1"]
        return out
    if experiment == "ocean":  # held-out recall within pools of eval.pool_size candidates (Fig. 14)
        recall = metrics["recall"]
        return {
            f"test R@{k} {d.replace('_to_', '→')}": recall[f"test_pool_{d}@{k}"]
            for d in ("u_to_v", "v_to_u")
            for k in (1, 5)
            if f"test_pool_{d}@{k}" in recall
        }
    return {path: value for path, value in _numbers(metrics) if _HEADLINE_KEY.search(path.rsplit(".", 1)[-1])}


def _numbers(value: Any, path: str = "") -> list[tuple[str, float]]:
    """Every finite number in a JSON tree, with its dotted path."""
    if isinstance(value, dict):
        return [item for key, sub in value.items() for item in _numbers(sub, f"{path}.{key}" if path else str(key))]
    if isinstance(value, list):
        return [item for i, sub in enumerate(value) for item in _numbers(sub, f"{path}[{i}]")]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return [(path, float(value))]
    return []


def run(config: GcaBimodalConfig, run_dir: Any) -> Headline:
    """Run every (experiment, loss) through the experiment's own entry point, tabulate the headlines."""
    import json

    table: dict[str, dict[str, dict]] = {}
    not_run: dict[str, str] = {}
    shards = str(run_dir.file("shards"))
    for experiment in config.experiments:
        if experiment not in registry.names():
            not_run[experiment] = "not registered (its experiment is not committed yet)"
            logger.warning("gca-bimodal: %s is not registered; not run", experiment)
            continue
        exp = registry.get(experiment)
        table[experiment] = {}
        for loss in config.losses:
            folder = Path(run_dir.file(experiment)) / loss
            if (folder / "metrics.json").exists():
                metrics = json.loads((folder / "metrics.json").read_text())
            else:
                resuming = bool(getattr(run_dir, "resuming", False)) and (folder / "config.yaml").exists()
                sub = RunDir(exp.name, path=folder)
                sub.resuming = resuming
                sub_cfg = sub_config(config, experiment, loss, shards)
                if not resuming:
                    sub.write_text("config.yaml", dump_yaml(sub_cfg))
                logger.info("gca-bimodal: %s with %s", experiment, loss)
                exp.run(sub_cfg, sub)
                metrics = json.loads((folder / "metrics.json").read_text())
            table[experiment][loss] = headline_metrics(experiment, metrics)
    run_dir.write_metrics({"table": table, "not_run": not_run, "losses": config.losses})
    run_dir.write_text("report.md", _report(config, table, not_run))
    rows = [
        (f"{experiment}, {loss}: {name}", f"{value:.4f}", "", "")
        for experiment, by_loss in table.items()
        for loss, values in by_loss.items()
        for name, value in values.items()
    ]
    rows += [(f"{experiment}", "not run", "", reason) for experiment, reason in not_run.items()]
    return Headline(rows)


def _cell(values: dict, name: str, top: float) -> str:
    """One table cell: ``values[name]`` to 4 decimals, bold when it equals the column's best ``top``."""
    if name not in values:
        return "–"
    text = f"{values[name]:.4f}"
    return f"**{text}**" if values[name] == top else text


def _report(config: GcaBimodalConfig, table: dict, not_run: dict) -> str:
    lines = [
        "# gca-bimodal: the GCA losses across modalities\n",
        "Each bimodal experiment trained once per loss through its own entry point: its `quick` preset, then "
        "the overrides below, then `loss.name`. GCA losses with the paper's hyperparameters (Chen et al. 2024, "
        "official README's CIFAR-10 command: T = 10, λ = 0.01, ρ = 0.2, KL weight 1, RINCE weight 0.2), "
        "at the experiment's own temperature (ε = τ) and metric, except that the losses with a RINCE term "
        "(unbounded below on unbounded logits, their robustness set by q/τ) get cosine logits at the experiment's "
        f"τ, fixed, and q = min(1, {config.robust_q_per_tau:g} τ) (the paper's q = 0.6 at τ = 0.5). Each "
        "sub-run's report is in `<experiment>/<loss>/report.md`.\n",
    ]
    for experiment, by_loss in table.items():
        names = list(dict.fromkeys(name for values in by_loss.values() for name in values))
        best = {name: max(v.get(name, -math.inf) for v in by_loss.values()) for name in names}
        lowest = {name: min(v.get(name, math.inf) for v in by_loss.values()) for name in names}
        top = {name: lowest[name] if "ECE" in name or "ece" in name else best[name] for name in names}
        lines += [
            f"## {experiment}\n",
            f"Overrides: `{' '.join(config.overrides.get(experiment, [])) or 'none'}`. Target plan of the losses "
            f"that take one: `{config.targets.get(experiment, 'identity')}`. Best per column in bold (lowest for "
            "ECE).\n",
            markdown_table(
                ["loss", *names],
                [[loss, *(_cell(values, n, top[n]) for n in names)] for loss, values in by_loss.items()],
            ),
            "",
        ]
    for experiment, reason in not_run.items():
        lines.append(f"## {experiment}\n\nNot run: {reason}.\n")
    return "\n".join(lines)


EXPERIMENT = Experiment(
    name="gca-bimodal",
    summary="mnist-labels, image-text and ocean trained with clip and each GCA loss: one table of accuracy, "
    "recall and ECE",
    config_type=GcaBimodalConfig,
    run=run,
)
