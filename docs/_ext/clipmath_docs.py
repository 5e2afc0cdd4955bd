"""Sphinx directives that build documentation tables from the package itself, at build time.

- ``loss-table``: every registered loss (``clipmath.multimodal.losses.names()``) with the first
  sentence of its docstring (its equation and the paper's numbering), the metrics it runs with
  (each tried on a small batch now), the batch fields it reads (``reads``, per target option)
  and its Gaussian references (the exact population loss of ``clipmath.theory.LOSSES`` with
  its name, and the closed form ``clipmath.experiments.gaussian_train.LOSS_TABLE`` trains it against);
- ``experiment-presets``: an experiment's summary, its presets and their YAML, from the registry;
- ``experiment-results``: the numbers file and figures of ``docs/results/<experiment>/``,
  written by ``docs/generate_results.py``;
- ``package-api``: the package's docstring and one ``automodule`` section per public submodule,
  found by walking the package (so a new module gets its page section without an edit here).
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _first_sentence(obj: object) -> str:
    """The summary line of ``obj``'s docstring (one RST line)."""
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


class _Table(SphinxDirective):
    """A directive that writes RST lines and parses them in place."""

    def render(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="clipmath_docs"), self.content_offset, container)
        return container.children


def _tiny_batch(reads: tuple[str, ...]):
    import torch

    gen = torch.Generator().manual_seed(0)
    z_u = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    z_v = z_u + 0.5 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    fields = {
        "u": torch.randn(6, 4, generator=gen, dtype=torch.float64),
        "v": torch.randn(6, 2, generator=gen, dtype=torch.float64),
        "class_ids": torch.tensor([0, 1, 0, 1, 2, 2]),
        "domain_ids": torch.tensor([0, 0, 1, 1, 2, 2]),
    }
    return z_u, z_v, {name: fields[name] for name in reads}


def _runs(name: str, metric: str, **options) -> bool:
    """Whether loss ``name`` builds with ``metric`` and gives a finite loss on a small batch."""
    import torch

    from clipmath.multimodal import losses

    try:
        module = losses.build(name, metric=metric, **options)
    except ValueError:  # the loss refuses the metric (e.g. the RINCE terms on inner products)
        return False
    z_u, z_v, extras = _tiny_batch(tuple(module.reads))
    scale = torch.tensor(math.log(2.0), dtype=torch.float64)
    return bool(torch.isfinite(module(z_u, z_v, logit_scale=scale, **extras).loss))


def _reads(name: str) -> str:
    """The batch fields loss ``name`` reads, per ``target`` option where it has one."""
    from clipmath.multimodal import losses

    default = losses.build(name).reads
    parts = [", ".join(f"``{field}``" for field in default) or "--"]
    for target, options in (("domain", {"alpha": 1.0, "beta": 0.5}), ("class", {})):
        try:
            reads = losses.build(name, target=target, **options).reads
        except ValueError:  # no target option
            return parts[0]
        parts.append(f"``target={target!r}``: " + ", ".join(f"``{field}``" for field in reads))
    return "; ".join(parts)


def _gaussian_references() -> dict[str, list[str]]:
    """Registered loss -> its Gaussian references.

    The closed forms of Section 5 it is trained against (``gaussian_train.LOSS_TABLE``), and the
    exact population loss of the same name in :data:`clipmath.theory.LOSSES`.
    """
    from clipmath.experiments.gaussian_train import LOSS_TABLE
    from clipmath.theory import LOSSES

    found: dict[str, list[str]] = {}
    for name in LOSSES:
        found.setdefault(name, []).append(
            f"population loss :func:`population_loss(pair, {name!r}, ...) <clipmath.theory.population_loss>`"
        )
    for theory_loss, (name, metric, params, _) in LOSS_TABLE.items():
        options = ", ".join(f"{k}={v!r}" for k, v in params.items())
        setting = f"``{metric}``" + (f", {options}" if options else "")
        found.setdefault(name, []).append(
            f":func:`optimal_alignment(pair, {theory_loss!r}) <clipmath.theory.optimal_alignment>` ({setting})"
        )
    return found


class LossTable(_Table):
    """``.. loss-table::`` -- every registered loss against every metric (see the module docstring)."""

    def run(self) -> list[nodes.Node]:
        """The table's nodes."""
        from clipmath.multimodal import losses, similarity

        references = _gaussian_references()
        metrics = similarity.names()
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 10 40 14 18 18",
            "",
            "   * - loss",
            "     - what it computes (docstring summary)",
            "     - metrics",
            "     - batch fields read",
            "     - Gaussian reference",
        ]
        for name in losses.names():
            cls = losses.loss_class(name)
            supported = [m for m in metrics if _runs(name, m)]
            lines += [
                f"   * - ``{name}``",
                f"     - :class:`{cls.__module__}.{cls.__qualname__}`: {_first_sentence(cls)}",
                "     - " + ", ".join(f"``{m}``" for m in supported),
                f"     - {_reads(name)}",
                "     - " + ("; ".join(references.get(name, [])) or "--"),
            ]
        return self.render(lines)


class ExperimentPresets(_Table):
    """``.. experiment-presets:: NAME`` -- the registry's summary, preset names and the preset YAML."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """The summary, the presets and their YAML (or a note for an unregistered name)."""
        from clipmath.experiments import config, registry

        name = self.arguments[0]
        if name not in registry.names():
            note = f"   ``{name}`` is not registered in this version of the package yet."
            return self.render([".. note::", "", note])
        experiment = registry.get(name)
        module = experiment.run.__module__
        yaml_path = config.PRESET_DIR / f"{module.rsplit('.', 1)[-1]}.yaml"
        self.env.note_dependency(str(yaml_path))
        presets = ", ".join(f"``{p}``" for p in config.preset_names(name))
        lines = [
            f"*{experiment.summary}*",
            "",
            f"Module :mod:`{module}`; config :class:`{module}.{experiment.config_type.__name__}` "
            f"(its defaults are the ``quick`` preset). Presets: {presets}. Run: "
            f"``clipmath run {name} [--preset NAME] [--set key=value ...]``.",
            "",
        ]
        if yaml_path.exists():
            lines += [f"The presets file, ``clipmath/experiments/presets/{yaml_path.name}``:", ""]
            lines += [".. code-block:: yaml", ""]
            lines += ["   " + line for line in yaml_path.read_text().splitlines()]
        return self.render(lines)


class ExperimentResults(_Table):
    """``.. experiment-results:: NAME`` -- the committed numbers and figures of a real ``quick`` run."""

    required_arguments = 1
    option_spec = {"figures": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        """The headline table and the figures (or a note when no run is committed)."""
        name = self.arguments[0]
        folder = RESULTS / name
        numbers = folder / "numbers.json"
        if not numbers.exists():
            return self.render(
                [".. note::", "", f"   No committed run yet: ``python docs/generate_results.py {name}`` writes one."]
            )
        self.env.note_dependency(str(numbers))
        record = json.loads(numbers.read_text())
        lines = [
            f"Measured by ``python docs/generate_results.py {name}`` (``clipmath run {name} --preset "
            f"{record['preset']} --seed {record['seed']}``, {record['seconds']:.0f} s on {record['machine']}, "
            f"clipmath at commit ``{record['commit']}``)."
            + (
                ""
                if record["preset"] == "quick"
                else f" The ``{record['preset']}`` preset was the quick one at that commit."
            ),
            "",
            ".. list-table::",
            "   :header-rows: 1",
            "",
            "   * - figure",
            "     - measured",
            "     - reference",
            "     - what the reference is",
        ]
        for label, measured, reference, what in record["headline"]:
            lines += [f"   * - {label}", f"     - {measured}", f"     - {reference}", f"     - {what or '--'}"]
        wanted = self.options.get("figures")
        figures = wanted.split() if wanted else record["figures"]
        for figure in figures:
            lines += ["", f".. figure:: /results/{name}/{figure}", "   :width: 90%", "", f"   ``{figure}``"]
        return self.render(lines)


def public_modules(package: str) -> list[str]:
    """Every public module under ``package`` (no part of its name starting with ``_``), sorted."""
    root = importlib.import_module(package)
    found = []
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return sorted(found)


class PackageApi(SphinxDirective):
    """``.. package-api:: PACKAGE`` -- the package docstring, then a section per public submodule."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """The package docstring and the module sections."""
        package = self.arguments[0]
        lines = [f".. automodule:: {package}", "   :no-members:", ""]
        for module in public_modules(package):
            lines += [f"``{module}``", "-" * (len(module) + 4), "", f".. automodule:: {module}", ""]
        container = nodes.section()
        nested_parse_with_titles(self.state, StringList(lines, source="clipmath_docs"), container)
        return container.children


def setup(app) -> dict:
    """Register the directives."""
    app.add_directive("loss-table", LossTable)
    app.add_directive("experiment-presets", ExperimentPresets)
    app.add_directive("experiment-results", ExperimentResults)
    app.add_directive("package-api", PackageApi)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
