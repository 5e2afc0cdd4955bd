r"""``gaussian-train``: trained linear encoders against the Gaussian closed forms, as N grows.

Section 5 of Baptista, Stuart & Tran (2025): for :math:`(u, v) \sim \mathcal N(0, \mathcal C)`
and linear encoders :math:`g_u(u) = Gu`, :math:`g_v(v) = Hv` (eq. 38, :math:`n_e \le \min(n_u, n_v)`,
unnormalised, τ = 1 absorbed into G and H), each loss below has a population minimiser in
closed form, written through :math:`A = G^\top H` (and :math:`B_u = G^\top G`):

===========================  ===============================================  ======================
theory loss                  trained as                                       closed form
===========================  ===============================================  ======================
``conditional``              ``conditional`` two-sided, ``inner`` metric      Theorem 5.1
``joint``                    ``joint``, ``inner`` metric                      Theorem 5.6
``quadratic_u_given_v``      ``conditional`` u_given_v, ``neg_sq_l2`` metric  Theorem 5.3, (50a-b)
``quadratic_v_given_u``      ``conditional`` v_given_u, ``neg_sq_l2`` metric  Theorem 5.3 mirrored
``quadratic_conditional``    ``conditional`` two-sided, ``neg_sq_l2`` metric  docs/theory/quadratic_conditional.md
``quadratic_joint``          ``joint``, ``neg_sq_l2`` metric                  docs/theory/quadratic_joint.md
``mmd_conditional``          ``mmd_conditional`` (h = 1), ``inner`` metric    Theorem 5.1 (docs/theory/mmd.md)
``mmd_joint``                ``mmd_joint`` (h = 1), ``inner`` metric          numerical (docs/theory/mmd.md)
===========================  ===============================================  ======================

The MMD losses read the raw batch fields ``u`` and ``v`` (their kernels act on the data, not the
embeddings); the trainer passes them (``PairLoss.reads``). Their Gaussian kernel has the trained
losses' default bandwidth 1, the bandwidth :func:`~clipmath.theory.optimal_alignment` uses too.

For each sample size N the first N pairs of one seeded draw are written to shards once, streamed,
and the encoders trained with each loss. Three gaps are measured for A, for B_u (quadratic
losses), and for the model's conditional mean map and covariance (from :func:`tilted_model`):

- *trained vs population*: the trained model against the population optimum (the total error);
- *empirical vs population*: the closed form on the sample's second moments (Remark D.2) against
  the population one, pure sampling error, :math:`O(N^{-1/2})`;
- *trained vs empirical*: what remains: the sample loss (12) and the plug-in Gaussian loss of
  Remark D.2 are different estimators (their minimisers differ by O(1/√N)), plus the bias of the
  finite-batch estimator (each step minimises the loss of a batch of B, whose expectation is not
  the population loss; the batch-size sweep of Section 6.1, Fig. 9), which does not vanish as N
  grows at fixed B, plus optimisation error.

The sampling error of the plug-in optimum is averaged over ``reference_draws`` draws (no
training), the trained errors over ``replicates`` training sets; both as root mean squares.

The shared plumbing (shards written once, the stream, the linear model) is in
:mod:`clipmath.experiments.toolkit`. ``LOSS_TABLE`` is not a choice of training loss but the
map from each closed form to the registered loss and metric whose population minimiser it is.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from clipmath.datasets import build_source
from clipmath.experiments.config import check_values
from clipmath.experiments.registry import Experiment, Headline
from clipmath.experiments.rundir import markdown_table
from clipmath.experiments.toolkit import (
    StreamConfig,
    is_main_process,
    linear_model,
    linear_weights,
    log_log_slope,
    pair_stream,
)
from clipmath.multimodal import losses
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.trainer import TrainConfig, train
from clipmath.theory import LOSSES, GaussianPair, optimal_alignment, tilted_model

logger = logging.getLogger(__name__)

#: theory loss -> (registered loss, alignment metric, loss hyperparameters, matched conditional).
LOSS_TABLE: dict[str, tuple[str, str, dict, str]] = {
    "conditional": ("conditional", "inner", {"direction": "two_sided"}, "u_given_v"),
    "joint": ("joint", "inner", {}, "u_given_v"),
    "quadratic_u_given_v": ("conditional", "neg_sq_l2", {"direction": "u_given_v"}, "u_given_v"),
    "quadratic_v_given_u": ("conditional", "neg_sq_l2", {"direction": "v_given_u"}, "v_given_u"),
    "quadratic_conditional": ("conditional", "neg_sq_l2", {"direction": "two_sided"}, "u_given_v"),
    "quadratic_joint": ("joint", "neg_sq_l2", {}, "u_given_v"),
    "mmd_conditional": ("mmd_conditional", "inner", {"bandwidth": 1.0}, "u_given_v"),
    "mmd_joint": ("mmd_joint", "inner", {"bandwidth": 1.0}, "u_given_v"),
}
TheoryLoss = Literal[LOSSES]  # every population loss of clipmath.theory, by name


@dataclass
class DataConfig:
    r"""The Gaussian law.

    Attributes:
        n_u: dimension of u; with ``n_v`` both None, the 2-D example of Section 5.4
            (:math:`\mathcal C = [[1.5, 1], [1, 1.5]]`).
        n_v: dimension of v.
        cov_seed: seed of the random covariance (when n_u, n_v are given).
    """

    n_u: int | None = None
    n_v: int | None = None
    cov_seed: int = 0

    def source_params(self) -> dict:
        """Parameters of the ``gaussian`` source of :func:`clipmath.datasets.build_source`."""
        if self.n_u is None and self.n_v is None:
            return {}
        return {"n_u": self.n_u, "n_v": self.n_v, "cov_seed": self.cov_seed}


def _default_train() -> TrainConfig:
    return TrainConfig(
        epochs=10, lr=0.03, schedule="cosine", warmup_steps=20, checkpoint_every=200, log_every=10, threads=1
    )


@dataclass
class GaussianTrainConfig:
    """Config of ``gaussian-train``; the defaults are the ``quick`` preset.

    Attributes:
        seed: seeds the samples, the initialisation, the batch order and the trainer
            (replicate r uses ``seed + r``).
        data: the Gaussian law.
        stream: where the batches come from.
        n_e: embedding dimension, 1 <= n_e <= min(n_u, n_v).
        losses: the losses to train (theory names, see the module docstring).
        sample_sizes: the N of the sweep (each set is the first N pairs of one draw).
        replicates: independent draws per N (seeds ``seed``, ``seed + 1``, ...); errors are
            reported as the root mean square over them, so the rate is not one path's noise.
        reference_draws: draws of N pairs over which the sampling error of the empirical optimum
            (no training) is averaged.
        min_steps: every run takes at least this many steps (more epochs for small N).
        batch_size: global batch size B.
        train: optimizer and schedule (its ``seed`` is replaced by the replicate's seed and its
            ``epochs`` raised to reach ``min_steps``).
    """

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    n_e: int = 1
    losses: list[TheoryLoss] = field(default_factory=lambda: ["conditional", "joint", "quadratic_u_given_v"])
    sample_sizes: list[int] = field(default_factory=lambda: [1000, 4000, 16000])
    replicates: int = 3
    reference_draws: int = 100
    min_steps: int = 400
    batch_size: int = 256
    train: TrainConfig = field(default_factory=_default_train)

    def __post_init__(self) -> None:
        """Check every value when the config is loaded, before a run directory is written."""
        _check(self, build_source("gaussian", **self.data.source_params()))


def build_loss(theory_loss: str) -> torch.nn.Module:
    """The registered loss module that trains the encoders for ``theory_loss`` (see LOSS_TABLE)."""
    name, metric, params, _ = LOSS_TABLE[theory_loss]
    return losses.build(name, metric=metric, **params)


# ---------------------------------------------------------------- this experiment

#: Per replicate: the trained model against both closed forms, and the empirical one against the population one.
GAPS = ("trained_vs_population", "trained_vs_empirical", "empirical_vs_population")
#: Per N, reported: RMS over replicates of the first two gaps; the third over ``reference_draws`` draws.
SUMMARY_GAPS = ("trained_vs_population", "trained_vs_empirical", "sampling_error")
QUANTITIES = ("A", "B", "mean", "cov")


def _relative(x: np.ndarray | None, ref: np.ndarray | None) -> float | None:
    if x is None or ref is None:
        return None
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def _rms(values: list[float | None]) -> float | None:
    if not values or any(x is None for x in values):
        return None
    return float(np.sqrt(np.mean(np.square(values))))


def _describe(pair: GaussianPair, loss: str, G: np.ndarray, H: np.ndarray) -> dict[str, np.ndarray | None]:
    """A, B (GᵀG or HᵀH, quadratic losses only) and the matched model conditional of encoders G, H.

    The conditional ``(mean map, covariance)`` is that of the tilted law ν (eqs. 41 and 48) built on
    the marginals of ``pair``, in the direction the loss matches (LOSS_TABLE).
    """
    A = G.T @ H
    B_u, B_v = (G.T @ G, H.T @ H) if loss.startswith("quadratic") else (None, None)
    try:
        mean, cov = tilted_model(pair, A, B_u, B_v).conditional(LOSS_TABLE[loss][3])
    except ValueError:  # an improper ν (inner tilting, ||C^1/2 A C^1/2|| >= 1) has no conditional
        mean = cov = None
    B = B_v if loss == "quadratic_v_given_u" else B_u  # None for the inner-product losses
    return {"A": A, "B": B, "mean": mean, "cov": cov}


def _optimum(law: GaussianPair, pair: GaussianPair, loss: str, n_e: int) -> dict[str, np.ndarray | None]:
    """:func:`_describe` of the closed-form optimum for the law ``law`` (population or empirical)."""
    opt = optimal_alignment(law, loss, rank=n_e)
    return _describe(pair, loss, opt.G, opt.H)


def _errors(x: dict, ref: dict, gap: str) -> dict[str, float | None]:
    return {f"{q}_{gap}": _relative(x[q], ref[q]) for q in QUANTITIES}


def _sampling_error(pair: GaussianPair, loss: str, n: int, config: GaussianTrainConfig, population: dict) -> dict:
    """RMS relative error of the empirical optimum (Remark D.2) over ``reference_draws`` draws of N pairs."""
    draws = []
    for seed in range(config.seed, config.seed + config.reference_draws):
        empirical = _optimum(GaussianPair.from_samples(*pair.sample(n, seed)), pair, loss, config.n_e)
        draws.append(_errors(empirical, population, "sampling_error"))
    return {key: _rms([d[key] for d in draws]) for key in draws[0]}


def _check(config: GaussianTrainConfig, pair: GaussianPair) -> None:
    k = min(pair.n_u, pair.n_v)
    sizes = config.sample_sizes
    check_values(
        ("seed", config.seed, config.seed >= 0, "an integer >= 0"),
        ("batch_size", config.batch_size, config.batch_size >= 1, "an integer >= 1"),
        ("n_e", config.n_e, 1 <= config.n_e <= k, f"1 <= n_e <= min(n_u, n_v) = {k}"),
        (
            "sample_sizes",
            sizes,
            bool(sizes) and min(sizes) >= config.batch_size,
            f"sizes >= batch_size={config.batch_size}",
        ),
        ("replicates", config.replicates, config.replicates >= 1, "an integer >= 1"),
        ("reference_draws", config.reference_draws, config.reference_draws >= 1, "an integer >= 1"),
        ("min_steps", config.min_steps, config.min_steps >= 0, "an integer >= 0"),
    )


def run(config: GaussianTrainConfig, run_dir: Any) -> Headline:
    """Train every (N, replicate, loss) of the sweep, compare with the closed forms, write the report."""
    params = config.data.source_params()
    pair = build_source("gaussian", **params)  # the config checked itself against it when loaded
    source = {"name": "gaussian", **params}
    population = {loss: _optimum(pair, pair, loss, config.n_e) for loss in config.losses}

    rows = []
    for n in sorted(config.sample_sizes):
        # Enough epochs for min_steps: small sets are trained to convergence too, so that the
        # error reflects the data, not a shorter optimisation.
        epochs = max(config.train.epochs, math.ceil(config.min_steps / (n // config.batch_size)))
        for replicate in range(config.replicates):
            seed = config.seed + replicate
            train_config = dataclasses.replace(config.train, epochs=epochs, seed=seed)
            empirical_pair = GaussianPair.from_samples(*pair.sample(n, seed))
            stream = pair_stream(pair, n, seed, config.batch_size, config.stream, run_dir, source)
            for loss in config.losses:
                model = linear_model(pair.n_u, pair.n_v, config.n_e, LOSS_TABLE[loss][1], seed)
                target = population[loss]["A"]

                def evaluate(m: BimodalModel, target: np.ndarray = target) -> dict[str, float]:
                    G, H = linear_weights(m)
                    return {"A_trained_vs_population": _relative(G.T @ H, target)}

                tag = f"{loss}-N{n}-r{replicate}"
                result = train(model, build_loss(loss), stream, train_config, run_dir, evaluate=evaluate, tag=tag)
                trained = _describe(pair, loss, *linear_weights(model))
                empirical = _optimum(empirical_pair, pair, loss, config.n_e)
                rows.append(
                    {
                        "loss": loss,
                        "N": n,
                        "replicate": replicate,
                        "steps": result.steps,
                        "final_epoch_loss": result.epoch_losses[-1],
                        **_errors(trained, population[loss], "trained_vs_population"),
                        **_errors(trained, empirical, "trained_vs_empirical"),
                        **_errors(empirical, population[loss], "empirical_vs_population"),
                    }
                )
                logger.info("%s: rel. error of A %.4g (vs population)", tag, rows[-1]["A_trained_vs_population"])

    summary = []
    for loss in config.losses:
        for n in sorted(config.sample_sizes):
            mine = [r for r in rows if r["loss"] == loss and r["N"] == n]
            entry = {"loss": loss, "N": n, **_sampling_error(pair, loss, n, config, population[loss])}
            for q in QUANTITIES:
                for gap in SUMMARY_GAPS[:2]:
                    entry[f"{q}_{gap}"] = _rms([r[f"{q}_{gap}"] for r in mine])
            summary.append(entry)
    slopes = {
        loss: {
            f"{q}_{gap}": log_log_slope(
                [s["N"] for s in summary if s["loss"] == loss],
                [math.nan if s[f"{q}_{gap}"] is None else s[f"{q}_{gap}"] for s in summary if s["loss"] == loss],
            )
            for q in ("A", "mean")
            for gap in SUMMARY_GAPS
        }
        for loss in config.losses
    }
    metrics = {
        "pair": {"n_u": pair.n_u, "n_v": pair.n_v, "canonical_correlations": pair.canonical_correlations()},
        "n_e": config.n_e,
        "batch_size": config.batch_size,
        "rows": rows,
        "summary": summary,
        "slopes": slopes,
    }
    if is_main_process():
        run_dir.write_metrics(metrics)
        _figure(run_dir, summary, config.losses)
        run_dir.write_text("report.md", _report(config, pair, summary, slopes))
    n_max = max(config.sample_sizes)
    headline = []
    for loss in config.losses:
        last = next(s for s in summary if s["loss"] == loss and s["N"] == n_max)
        headline += [
            (
                f"{loss}: RMS rel. error of A, N={n_max}",
                last["A_trained_vs_population"],
                last["A_sampling_error"],
                "empirical optimum (sampling error)",
            ),
            (f"{loss}: slope of trained error", slopes[loss]["A_trained_vs_population"], -0.5, "1/sqrt(N)"),
            (f"{loss}: slope of sampling error", slopes[loss]["A_sampling_error"], -0.5, "1/sqrt(N)"),
        ]
    return Headline(headline)


_LABELS = {
    "trained_vs_population": "trained vs population",
    "trained_vs_empirical": "trained vs empirical optimum",
    "sampling_error": "empirical optimum vs population",
}


def _figure(run_dir: Any, summary: list[dict], loss_names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(loss_names), figsize=(4.2 * len(loss_names), 7), squeeze=False)
    for col, loss in enumerate(loss_names):
        mine = [s for s in summary if s["loss"] == loss]
        n = np.array([s["N"] for s in mine], dtype=float)
        for row, (q, name) in enumerate((("A", "A = GᵀH"), ("mean", "conditional mean map"))):
            ax = axes[row, col]
            for gap in SUMMARY_GAPS:
                ax.loglog(
                    n, [np.nan if s[f"{q}_{gap}"] is None else s[f"{q}_{gap}"] for s in mine], "o-", label=_LABELS[gap]
                )
            anchor = mine[0][f"{q}_sampling_error"]
            if anchor:
                ax.loglog(n, anchor * np.sqrt(n[0] / n), "k--", lw=1, label="∝ 1/√N")
            ax.set_title(f"{loss}: {name}", fontsize=10)
            ax.set_xlabel("N")
            ax.set_ylabel("relative error (RMS)")
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    run_dir.save_figure(fig, "relative_errors")


def _report(config: GaussianTrainConfig, pair: GaussianPair, summary: list[dict], slopes: dict) -> str:
    sigma = np.array2string(pair.canonical_correlations(), precision=4)
    columns = [f"{q}_{gap}" for q in QUANTITIES for gap in SUMMARY_GAPS]
    lines = [
        "# gaussian-train: trained linear encoders against the closed forms\n",
        f"Data: Gaussian pair n_u={pair.n_u}, n_v={pair.n_v}, canonical correlations {sigma}; "
        f"n_e={config.n_e}, batch B={config.batch_size}; {config.train.optimizer} (lr {config.train.lr}, "
        f"{config.train.schedule}), at least {config.train.epochs} epochs and {config.min_steps} steps per run; "
        f"batches from {config.stream.kind}. For each N, {config.replicates} independent training sets "
        f"(seeds {config.seed}..{config.seed + config.replicates - 1}).\n",
        "Relative Frobenius errors `|X - X_ref| / |X_ref|` of A = GᵀH, B (GᵀG or HᵀH for the quadratic "
        "losses), and the mean map and covariance of the model conditional the loss matches (tilted law ν), "
        "as root mean squares:\n",
        "- **trained vs population**: the total error against Theorems 5.1 / 5.6 / 5.3 (RMS over the training sets);",
        "- **sampling error**: the closed form on a sample's second moments (Remark D.2) against the "
        f"population one, RMS over {config.reference_draws} draws of N pairs: what any estimator from N "
        "pairs can be expected to miss; it falls like 1/√N;",
        "- **trained vs empirical**: the trained model against the closed form on its own training set. "
        "This is not optimisation error alone. (i) Even with one batch of all N pairs, training minimises "
        "the sample loss (12), whose normaliser is a sample mean of exp(score), not the Gaussian "
        "moment-generating function that Remark D.2 evaluates with the sample moments; the two minimisers "
        "are different estimators of the same optimum and differ by O(1/√N) (the log-sum-exp one is the "
        "noisier: exp(uᵀAv) is heavy-tailed). (ii) Each step minimises the loss of a batch of "
        f"B={config.batch_size}, whose expectation is not the population loss (the positive pair sits among "
        "the negatives, and log E is estimated by the log of a batch mean): a bias that does not vanish as N "
        "grows at fixed B (the batch-size sweep of Section 6.1, Fig. 9). (iii) Optimisation error.\n",
        "So the trained error can exceed the sampling error of the plug-in estimator by a factor, falls "
        "like 1/√N while (i) and the sampling error dominate, and flattens where it meets the batch-bias "
        f"floor (ii); with {config.replicates} training sets per N its fitted slope is itself noisy.\n",
        "For the inner-product losses the conditional covariance of ν is C_uu whatever A is, so its error is 0 "
        "by construction.\n",
        "## Log-log slopes of RMS error against N (1/√N has slope -0.5)\n",
        markdown_table(
            ["loss", "quantity"] + list(SUMMARY_GAPS),
            [
                [loss, q] + [slopes[loss][f"{q}_{gap}"] for gap in SUMMARY_GAPS]
                for loss in slopes
                for q in ("A", "mean")
            ],
        ),
        "## Relative errors (RMS)\n",
        markdown_table(
            ["loss", "N"] + columns,
            [[s["loss"], s["N"]] + ["" if s[c] is None else s[c] for c in columns] for s in summary],
        ),
        "![relative errors](relative_errors.png)\n",
    ]
    return "\n".join(lines)


EXPERIMENT = Experiment(
    name="gaussian-train",
    summary="linear encoders trained on streamed Gaussian pairs vs the closed forms of Thms 5.1/5.3/5.6, as N grows",
    config_type=GaussianTrainConfig,
    run=run,
)
