"""Timing helpers shared by the benchmarks: median wall time and a ratio table.

Every benchmark times the clipmath implementation and its anchor (open_clip, POT, numpy, the
naive implementation) in one process, alternating repeats so that machine noise hits both
alike, and prints the ratio clipmath / anchor.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager


def sync(device: str = "cpu") -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def compare(
    ours: Callable[[], object],
    anchor: Callable[[], object],
    *,
    repeat: int = 7,
    warmup: int = 2,
    device: str = "cpu",
    statistic: Callable[[list[float]], float] = statistics.median,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float]:
    """Median (or ``statistic``) seconds of ``ours`` and ``anchor``, interleaved run by run.

    ``statistic=min`` suits small fixed costs on a shared machine: other load only adds time, so
    the fastest repeat is the closest to the cost itself. ``clock=time.thread_time`` counts the CPU
    time of the calling thread only (single-threaded CPU work: the time other processes hold the
    core is left out).

    Returns:
        (seconds of ours, seconds of anchor), each the ``statistic`` of its repeats.
    """
    for _ in range(warmup):
        ours()
        anchor()
    sync(device)
    t_ours, t_anchor = [], []
    for _ in range(repeat):
        for fn, sink in ((ours, t_ours), (anchor, t_anchor)):
            start = clock()
            fn()
            sync(device)
            sink.append(clock() - start)
    return statistic(t_ours), statistic(t_anchor)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one intra-op thread (on a shared machine a second thread waits at every op)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send the process's native stderr (file descriptor 2) to /dev/null inside the block.

    The torch profiler's C++ side (kineto) writes ``profiler_start``/``profiler_stop`` lines to
    descriptor 2, below Python's ``sys.stderr``; they would interleave with the tables.
    Python exceptions still reach the terminal: they are printed after the block.
    """
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_peak_bytes(run: Callable[[], object]) -> int:
    """Peak bytes of the tensors allocated while ``run`` executes on the CPU, from the torch profiler."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    options = {"profile_memory": True, "record_shapes": True, "with_stack": True}
    with quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], **options) as prof:
        run()
    with quiet_native_stderr():
        timeline = prof._memory_profile().timeline
    current = peak = 0
    for _, action, _, size in timeline:
        if action == Action.CREATE:
            current += size
            peak = max(peak, current)
        elif action == Action.DESTROY:
            current -= size
    return peak


def cuda_peak_bytes(run: Callable[[], object]) -> int:
    """Peak CUDA bytes allocated while ``run`` executes, beyond what was allocated before."""
    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def print_table(title: str, rows: Sequence[tuple[str, float, float, str]], unit: str = "s") -> None:
    """Print rows of (case, ours, anchor, goal) in ``unit`` with the ratio ours/anchor."""
    print(f"\n## {title}\n")
    print(f"| case | clipmath ({unit}) | anchor ({unit}) | ratio | goal |")
    print("|---|---|---|---|---|")
    for case, ours, anchor, goal in rows:
        print(f"| {case} | {ours:.4g} | {anchor:.4g} | {ours / anchor:.3f} | {goal} |")
