"""The run directory: resolved config, final and per-step metrics, report, figures.

Layout (DESIGN.md): ``runs/<experiment>-<time>/`` with ``config.yaml``, ``metrics.json``,
``metrics.jsonl``, ``report.md`` and PNG figures. Files are written atomically (temporary
file in the same directory, then ``os.replace``) so a killed run never leaves half a file.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipmath._atomic import atomic_open


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_open(path) as handle:
        handle.write(data)


def to_jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays (nested in dicts and lists) to JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; floats with 6 significant digits, bare ``|`` escaped."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.6g}"
        # A bare | (as in E[u|v]) would end the cell.
        return re.sub(r"(?<!\\)\|", r"\\|", str(v))

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def prepare_new(path: str | Path, *, overwrite: bool = False, clear: bool = True, argument: str = "--out") -> None:
    """Check that ``path`` may hold a new run, and with ``overwrite`` empty it.

    A new run goes into a missing or empty directory. A non-empty one holds another run (whose
    ``metrics.jsonl`` would be appended to, whose checkpoints a later ``--resume`` would mix with
    this run's) or other files: it is refused, unless ``overwrite`` is set and it is a run
    directory (it has a ``config.yaml``), which is then emptied. ``overwrite`` never deletes a
    directory that is not a run directory.

    Args:
        path: the directory.
        overwrite: empty an existing run directory instead of refusing it.
        clear: with ``overwrite``, empty it now; False checks only (the ranks of a distributed run
            all check, and one of them clears once every one has).
        argument: the command-line argument named in the errors.

    Raises:
        ValueError: naming ``argument`` and the path, for an empty path, a path that exists and
            is not a directory, or a non-empty directory refused as above.
    """
    if str(path) == "":
        raise ValueError(f"{argument} '': expected a directory path")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{argument} {path}: exists and is not a directory")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if not entries:
        return
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    if not overwrite:
        raise ValueError(
            f"{argument} {path}: directory not empty ({shown}); continue that run with --resume {path}, "
            f"replace it with --overwrite, or choose another {argument}"
        )
    if "config.yaml" not in entries:
        raise ValueError(
            f"{argument} {path}: not empty ({shown}) and not a run directory (no config.yaml); "
            "--overwrite empties run directories only"
        )
    if clear:
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


class RunDir:
    """One experiment run's output folder.

    Args:
        root: parent folder (``runs`` by default); the run gets ``<root>/<experiment>-<time>``.
        experiment: experiment name.
        path: exact folder to use instead (used by ``--out`` and ``--resume``).
    """

    def __init__(self, experiment: str, root: str | Path = "runs", path: str | Path | None = None):
        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = Path(root) / f"{experiment}-{stamp}"
            suffix = 1
            while path.exists():
                suffix += 1
                path = Path(root) / f"{experiment}-{stamp}-{suffix}"
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.experiment = experiment
        # Training run tag -> {shard: samples skipped as damaged or corrupt}, told by the trainer.
        self.skipped: dict[str, dict[str, int]] = {}

    def record_skipped(self, tag: str, skipped: dict[str, int]) -> None:
        """Note what the training run ``tag`` skipped; ``metrics.json`` and ``report.md`` then say it.

        Called by :func:`clipmath.multimodal.trainer.train` (also when a resume finds the run done).
        """
        self.skipped[tag] = dict(skipped)

    def _skip_summary(self) -> dict:
        return {
            "total": sum(sum(counts.values()) for counts in self.skipped.values()),
            "by_run": {tag: dict(sorted(counts.items())) for tag, counts in self.skipped.items()},
        }

    def _skip_report(self) -> str:
        summary = self._skip_summary()
        lines = ["", "## Skipped samples", ""]
        if not summary["total"]:
            lines.append(f"No sample was skipped as damaged or corrupt ({len(self.skipped)} training runs).")
        else:
            lines.append(
                f"{summary['total']} samples were skipped as damaged or corrupt (counted in every epoch that read "
                "them; `clipmath shards inspect` on the data lists what disagrees with its manifest):"
            )
            lines.append("")
            rows = [(tag, name, count) for tag, counts in summary["by_run"].items() for name, count in counts.items()]
            lines.append(markdown_table(["training run", "shard", "samples skipped"], rows).rstrip("\n"))
        return "\n".join(lines) + "\n"

    def file(self, name: str) -> Path:
        """Path of a file inside the run directory."""
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        """Atomically write a text file into the run directory.

        ``report.md`` gets a closing "Skipped samples" section once a training run has recorded
        its skips (:meth:`record_skipped`).
        """
        if name == "report.md" and self.skipped:
            text = text.rstrip("\n") + "\n" + self._skip_report()
        path = self.file(name)
        atomic_write_bytes(path, text.encode())
        return path

    def write_metrics(self, metrics: dict) -> Path:
        """Write the final figures to ``metrics.json``.

        Once a training run has recorded its skips (:meth:`record_skipped`), they are added as
        ``"skipped_samples": {"total": n, "by_run": {tag: {shard: count}}}`` (unless the
        experiment wrote that key itself).
        """
        if self.skipped and "skipped_samples" not in metrics:
            metrics = {**metrics, "skipped_samples": self._skip_summary()}
        return self.write_text("metrics.json", json.dumps(to_jsonable(metrics), indent=2) + "\n")

    def log_step(self, record: dict) -> None:
        """Append one per-step record to ``metrics.jsonl``."""
        with open(self.file("metrics.jsonl"), "a") as handle:
            handle.write(json.dumps(to_jsonable(record)) + "\n")

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as ``<name>.png`` and close it."""
        import matplotlib.pyplot as plt

        path = self.file(f"{name}.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return path
