"""The loss x metric table of ``image-text``: one run per (loss, metric), then one table of their figures.

Regenerate it with::

    python -m clipmath.experiments.image_text_sweep --out runs/image-text-losses [--set KEY=VALUE ...]

which runs ``clipmath run image-text --out OUT/<loss>-<metric> --set loss.name=<loss> --set
loss.metric=<metric>`` for every pair of :data:`LOSSES` x :data:`METRICS`, one after the other (the
quick preset plus the ``--set`` overrides given; ``siglip`` with its initial ``tau=0.1`` and
``bias=-10``, as its preset), skips the runs already finished (a ``metrics.json`` there), and writes
``OUT/loss_metric.md`` and ``OUT/loss_metric.json``: per run and evaluated style, the held-out
``image_to_text_R@1/5/10``, ``text_to_image_R@1/5/10`` and the zero-shot top-1 accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clipmath.experiments.gca_bimodal import robust_term_overrides
from clipmath.experiments.rundir import markdown_table

LOSSES = ("clip", "siglip", "gca_uot")
METRICS = ("cosine", "neg_sq_l2")
#: Overrides a loss needs beyond its name: SigLIP's initialisation (Zhai et al. 2023, §3.3);
#: ``gca_uot``'s RINCE term at the quick preset's τ = 0.07, fixed, with the paper's q/τ (as ``gca-bimodal``).
LOSS_OVERRIDES = {"siglip": ("tau=0.1", "bias=-10.0"), "gca_uot": tuple(robust_term_overrides(0.07))}
COLUMNS = tuple(f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10))


def run_sweep(out: Path, overrides: list[str]) -> dict:
    """Run every (loss, metric) not yet finished under ``out`` and write the table; returns its rows."""
    from clipmath.experiments import cli

    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for loss in LOSSES:
        for metric in METRICS:
            name = f"{loss}-{metric}"
            run = out / name
            if not (run / "metrics.json").is_file():
                sets = [f"loss.name={loss}", f"loss.metric={metric}", *LOSS_OVERRIDES.get(loss, ()), *overrides]
                argv = ["run", "image-text", "--out", str(run), "--overwrite"]
                for item in sets:
                    argv += ["--set", item]
                if cli.main(argv) != 0:
                    raise SystemExit(f"image_text_sweep: the run {name} failed (see above)")
            rows[name] = json.loads((run / "metrics.json").read_text())
    table = {name: _figures(metrics) for name, metrics in rows.items()}
    (out / "loss_metric.json").write_text(json.dumps({"overrides": overrides, "runs": table}, indent=2) + "\n")
    (out / "loss_metric.md").write_text(loss_metric_table(table, overrides))
    return table


def _figures(metrics: dict) -> dict:
    return {
        style: {
            **{c: r[c] for c in COLUMNS},
            "zero_shot_acc1": metrics["zero_shot"].get(style, {}).get("acc1"),
            "evaluated_on": metrics["evaluated_on"],
            "train_seconds": metrics["timings"]["train_seconds"],
        }
        for style, r in metrics["retrieval"].items()
    }


def loss_metric_table(table: dict, overrides: list[str]) -> str:
    """The markdown table of :func:`run_sweep`'s figures, one row per run and evaluated style."""
    header = ["loss-metric", "style", *COLUMNS, "zero-shot acc1", "training (s)"]
    rows = [
        [
            name,
            style,
            *(f[c] for c in COLUMNS),
            f["zero_shot_acc1"] if f["zero_shot_acc1"] is not None else "",
            round(f["train_seconds"]),
        ]
        for name, styles in table.items()
        for style, f in styles.items()
    ]
    evaluated = {f["evaluated_on"] for styles in table.values() for f in styles.values()}
    return (
        f"# image-text: loss x metric ({', '.join(sorted(evaluated))} set; overrides: {overrides or 'none'})\n\n"
        + markdown_table(header, rows)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    """The command line of :func:`run_sweep`; prints the table and returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m clipmath.experiments.image_text_sweep", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="folder of the runs and the table")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every run (repeatable), e.g. data.validation=true",
    )
    args = parser.parse_args(argv)
    run_sweep(Path(args.out), args.overrides)
    print((Path(args.out) / "loss_metric.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
