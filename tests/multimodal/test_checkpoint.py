"""Atomic checkpoints and the random state they carry (clipmath.multimodal.checkpoint, .seeding)."""

import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from clipmath.multimodal import checkpoint as ckpt_module
from clipmath.multimodal.checkpoint import load_checkpoint, save_checkpoint
from clipmath.multimodal.seeding import rng_state, seed_everything, set_rng_state


def _draws() -> tuple:
    return random.random(), np.random.rand(), torch.rand(3).tolist()


def test_round_trip_keeps_every_value(tmp_path):
    state = {"model": {"w": torch.randn(3, 4, dtype=torch.float64)}, "step": 7, "loss": [1.5, 0.25], "name": "x"}
    save_checkpoint(state, tmp_path / "sub" / "c.pt")
    loaded = load_checkpoint(tmp_path / "sub" / "c.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert (loaded["step"], loaded["loss"], loaded["name"]) == (7, [1.5, 0.25], "x")


def test_missing_checkpoint_is_none(tmp_path):
    assert load_checkpoint(tmp_path / "none.pt") is None


def test_unreadable_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(path)


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, path)

    def half_write(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", half_write)
    with pytest.raises(OSError):
        save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_stray_temporary_file_is_ignored_then_removed(tmp_path):
    # What SIGKILL between the write and the rename leaves behind.
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, path)
    stray = tmp_path / ".c.pt.killed.tmp"
    stray.write_bytes(b"half a checkpoint")
    assert load_checkpoint(path) == {"step": 1}
    save_checkpoint({"step": 2}, path)
    assert not stray.exists()
    assert load_checkpoint(path) == {"step": 2}


_WRITER = """
import sys, torch
from clipmath.multimodal.checkpoint import save_checkpoint
torch.set_num_threads(1)
path = sys.argv[1]
i = 0
while True:
    save_checkpoint({"i": i, "payload": torch.full((2_000_000,), float(i))}, path)
    print(i, flush=True)
    i += 1
"""


def test_sigkill_during_writes_never_corrupts(tmp_path):
    path = tmp_path / "c.pt"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # let a few writes complete, then kill mid-way through the next ones
            assert proc.stdout.readline()
        time.sleep(0.013)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = load_checkpoint(path)
    assert state["i"] >= 2
    assert torch.equal(state["payload"], torch.full((2_000_000,), float(state["i"])))


def test_rng_state_restores_every_generator(tmp_path):
    seed_everything(11)
    _draws()
    saved = rng_state()
    expected = _draws()
    save_checkpoint({"rng": saved}, tmp_path / "r.pt")
    _draws()
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert _draws() == expected


def test_seed_everything_repeats_and_differs():
    seed_everything(3)
    first = _draws()
    seed_everything(3)
    assert _draws() == first
    seed_everything(4)
    assert _draws() != first


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3"])
def test_seed_everything_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="seed="):
        seed_everything(seed)
