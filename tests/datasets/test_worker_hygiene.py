"""DataLoader workers die with their parent: kill -9 a real run and no child process survives.

Before, a SIGKILLed run left its workers alive forever: torch's worker loop looks at its parent
only between tasks (every 5 s), and then waits to flush its results into a pipe that its sibling
workers still hold open. The tests give the workers 4 s to go, less than that 5 s, and kill
whatever survives (checking that the pid still names the same process) so they never leave
processes behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from clipmath.datasets import write_shards

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads processes from /proc")

GRACE_SECONDS = 4.0

# Streams epochs of 1 MiB groups slowly, so that both workers have results waiting in their pipes.
STREAM_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from clipmath.datasets import ShardStream
    from clipmath.datasets import stream as stream_module

    if sys.argv[2] == "watchdog":  # the fallback for platforms without a parent-death signal
        arm = stream_module._exit_with_parent
        stream_module._exit_with_parent = lambda parent, pdeathsig: arm(parent, False)
    stream = ShardStream(sys.argv[1], batch_size=64, num_workers=2, shuffle_buffer=0, fields=("u",))
    for epoch in range(1000):
        for index, batch in enumerate(stream.epoch(epoch)):
            if epoch == 0 and index == 0:
                print("streaming", flush=True)
            time.sleep(0.05)
    """
)


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def _children(pid: int) -> dict[int, int]:
    """Child pid -> start time, of the live children of ``pid``."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None and stat[0] == pid and stat[1] != "Z":
            found[int(entry)] = stat[2]
    return found


def _survivors(processes: dict[int, int]) -> list[int]:
    """Those of ``processes`` (pid -> start time) still alive: same start time, not a zombie."""
    alive = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            alive.append(pid)
    return alive


def _kill_and_watch(command: list[str], ready: bytes | None, expected_children: int) -> list[int]:
    """Start ``command``, wait for its line ``ready`` (if any) and its children, SIGKILL it.

    Returns:
        The children still alive after the grace.
    """
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    children: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 240
        while ready is not None and proc.stdout.readline().strip() != ready:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
        while len(children) < expected_children:
            children.update(_children(proc.pid))
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the workers fill their pipes
        assert len(_survivors(children)) == expected_children
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + GRACE_SECONDS
        while _survivors(children) and time.monotonic() < deadline:
            time.sleep(0.05)
        return _survivors(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _survivors(children):  # never leave a process behind, whatever happened
            os.kill(pid, signal.SIGKILL)
        proc.stdout.close()


@pytest.mark.parametrize("guard", ["pdeathsig", "watchdog"])
def test_sigkill_of_a_streaming_process_leaves_no_worker_alive(tmp_path, guard):
    samples = ({"__key__": f"s{i:05d}", "u": np.full(1024, i, dtype=np.float32)} for i in range(2000))
    write_shards(samples, tmp_path / "shards", max_count=500)
    command = [sys.executable, "-c", STREAM_SCRIPT, str(tmp_path / "shards"), guard]
    assert _kill_and_watch(command, b"streaming", expected_children=2) == []


def test_sigkill_of_a_training_run_with_two_workers_leaves_no_child_alive(tmp_path):
    command = [
        sys.executable,
        "-m",
        "clipmath.experiments.cli",
        "run",
        "gaussian-train",
        "--out",
        str(tmp_path / "run"),
        "--set",
        "stream.kind=shards",
        "--set",
        "stream.num_workers=2",
        "--set",
        "sample_sizes=[4096]",
        "--set",
        "replicates=1",
        "--set",
        "losses=[conditional]",
        "--set",
        "min_steps=100000",
        "--set",
        "batch_size=64",
        "--set",
        "reference_draws=5",
    ]
    assert _kill_and_watch(command, None, expected_children=2) == []
