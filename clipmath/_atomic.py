"""Atomic file writes shared by every layer: write a temporary file, fsync, rename.

A reader (or a resumed run) therefore sees either the previous complete file or the new
complete file, never a half-written one, even when the writer is killed mid-write. Used by
run directories, checkpoints, metrics truncation on resume, and shard writing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def commit(handle: IO, tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Flush ``handle`` (open on ``tmp``) to disk, close it, rename ``tmp`` over ``path``.

    The folder is fsynced too, so the rename itself survives a crash.
    """
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(tmp, path)
    folder = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", prefix: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on leaving the block, :func:`commit` it to ``path``.

    Args:
        path: destination file; its folder is created if needed.
        mode: ``"wb"`` or ``"w"``.
        prefix: temporary-file prefix (default ``.<name>.``), so callers can find leftovers of
            killed writes.

    If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode={mode!r}: expected 'wb' or 'w'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.", suffix=".tmp")
    handle = os.fdopen(fd, mode)
    try:
        yield handle
        commit(handle, tmp, path)
    except BaseException:
        handle.close()
        Path(tmp).unlink(missing_ok=True)
        raise
