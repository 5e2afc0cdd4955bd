"""Atomic training checkpoints.

A checkpoint is one ``torch.save`` file holding everything a run needs to continue as if it
had never stopped: model, optimizer and scheduler state, the step, the stream position
(epoch and batch within the epoch), the random state of every generator and the config.

Writing goes to a temporary file in the same folder, is flushed and fsynced, and only then
renamed over the previous checkpoint (``os.replace`` is atomic on POSIX), after which the
folder itself is fsynced so the rename survives a power cut. A process killed at any point
of a write therefore leaves the previous checkpoint intact; at worst a stray temporary file
remains, which :func:`load_checkpoint` never reads and the next save removes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from clipmath._atomic import atomic_open

logger = logging.getLogger(__name__)


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically.

    Args:
        state: tensors, numbers, strings and nested dicts/lists/tuples of them (what
            ``torch.load(..., weights_only=True)`` accepts).
        path: destination file; its folder is created if needed.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of writes that were killed before their rename.
    for stale in path.parent.glob(_tmp_prefix(path) + "*.tmp"):
        stale.unlink(missing_ok=True)
    with atomic_open(path, prefix=_tmp_prefix(path)) as handle:
        torch.save(state, handle)
    logger.debug("checkpoint written: %s", path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Read the checkpoint at ``path``, or None when there is none yet.

    Args:
        path: a file written by :func:`save_checkpoint`.

    Raises:
        ValueError: if the file exists but is not a readable checkpoint.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, never a deep traceback
        raise ValueError(f"checkpoint {str(path)!r}: not a readable checkpoint ({err})") from None
