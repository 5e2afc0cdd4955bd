"""Kill a real run with SIGKILL, resume it, and get the uninterrupted run's numbers bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time

TINY = [
    "--set",
    "stream.kind=shards",
    "--set",
    "sample_sizes=[512]",
    "--set",
    "replicates=1",
    "--set",
    "losses=[conditional, quadratic_u_given_v]",
    "--set",
    "min_steps=60",
    "--set",
    "batch_size=128",
    "--set",
    "train.checkpoint_every=7",
    "--set",
    "train.log_every=1",
    "--set",
    "reference_draws=5",
]
STEP_FIELDS = ("run", "step", "epoch", "loss", "lr", "logit_scale")


def _cli(*args):
    return [sys.executable, "-m", "clipmath.experiments.cli", "run", "gaussian-train", *args]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _records(run):
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    return [{k: r.get(k) for k in STEP_FIELDS + ("final", "A_trained_vs_population")} for r in rows]


def test_sigkill_then_resume_gives_the_uninterrupted_numbers(tmp_path):
    full = tmp_path / "full"
    subprocess.run(
        _cli("--out", str(full), *TINY),
        check=True,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )

    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        _cli("--out", str(cut), *TINY), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = cut / "checkpoints"
    try:
        # Kill once the first training run is done and the second has checkpointed: the resume
        # then reloads a finished run and continues an interrupted one.
        deadline = time.monotonic() + 240
        while not (checkpoints.is_dir() and len(list(checkpoints.glob("*.pt"))) >= 2):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (cut / "metrics.json").exists()
    # What a kill between a checkpoint's write and its rename leaves behind.
    (checkpoints / ".quadratic_u_given_v-N512-r0.pt.killed.tmp").write_bytes(b"half a checkpoint")

    subprocess.run(
        _cli("--resume", str(cut)),
        check=True,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )

    assert (cut / "metrics.json").read_bytes() == (full / "metrics.json").read_bytes()
    assert _records(cut) == _records(full)
    assert not list(checkpoints.glob("*.tmp"))
