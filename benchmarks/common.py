"""Timing helpers shared by the benchmarks: median wall time and a ratio table.

Every benchmark times the clipmath implementation and its anchor (open_clip, POT, numpy, the
naive implementation) in one process, alternating repeats so that machine noise hits both
alike, and prints the ratio clipmath / anchor.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence


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
) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``anchor``, interleaved run by run.

    Returns:
        (median seconds of ours, median seconds of anchor).
    """
    for _ in range(warmup):
        ours()
        anchor()
    sync(device)
    t_ours, t_anchor = [], []
    for _ in range(repeat):
        for fn, sink in ((ours, t_ours), (anchor, t_anchor)):
            start = time.perf_counter()
            fn()
            sync(device)
            sink.append(time.perf_counter() - start)
    return statistics.median(t_ours), statistics.median(t_anchor)


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
