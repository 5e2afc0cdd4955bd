"""Tiled vs dense CLIP loss: forward+backward time, and peak memory up to B = 65,536.

The anchor is the dense ``losses.build("clip")``, which forms the B x B logits. Time is the
interleaved median of forward+backward at B = 4096, n_e = 512 (goal: tiled/dense <= 1.5). Peak
memory is measured in a fresh subprocess per case: on the CPU the growth of the peak resident set
(``VmHWM``) over its value after imports and input creation, on CUDA ``torch.cuda.max_memory_allocated``
over the allocation after input creation. ``VmHWM`` rather than ``getrusage().ru_maxrss``: at exec,
Linux folds the high-water mark of the replaced address space into ``ru_maxrss``, so a child started
from this (large) process would report the parent's peak and hide its own growth. Where the dense loss
cannot run (B = 65,536 needs tens of GiB), its memory is extrapolated as ``k * B^2 * 4`` bytes, with
``k`` the number of B x B float32 buffers measured at the largest B it ran.

Run: ``python benchmarks/run.py tiled`` or ``python benchmarks/bench_tiled.py [cpu|cuda]``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import torch

from clipmath.multimodal import losses
from clipmath.multimodal.tiled import tiled_clip_loss

from common import compare, cuda_peak_bytes, print_table

GIB = 1024**3
DENSE_SIZES = (4096, 8192, 16384)
BIG_B = 65536


def _inputs(B: int, n_e: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)
    z_u = torch.randn(B, n_e, generator=gen, device=device).requires_grad_()
    z_v = torch.randn(B, n_e, generator=gen, device=device).requires_grad_()
    logit_scale = torch.tensor(math.log(1 / 0.07), device=device, requires_grad=True)
    return z_u, z_v, logit_scale


def _step(kind: str, inputs: tuple[torch.Tensor, ...], tile_size: int = 4096):
    """One forward+backward of the ``tiled`` or ``dense`` CLIP loss on ``inputs``."""
    dense = losses.build("clip")

    def run() -> None:
        for t in inputs:
            t.grad = None
        loss = tiled_clip_loss(*inputs, tile_size=tile_size) if kind == "tiled" else dense(*inputs).loss
        loss.backward()

    return run


def _peak_rss() -> int:
    """Peak resident bytes of this process's own address space (``VmHWM`` in /proc/self/status)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def measure_peak(kind: str, B: int, n_e: int, device: str) -> int:
    """Peak bytes of one forward+backward, measured in this (fresh) process."""
    torch.set_num_threads(1)
    inputs = _inputs(B, n_e, device)
    step = _step(kind, inputs)
    if device.startswith("cuda"):
        return cuda_peak_bytes(step)
    base = _peak_rss()
    step()
    return _peak_rss() - base


def _peak_in_subprocess(kind: str, B: int, n_e: int, device: str) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--peak", kind, str(B), str(n_e), device],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def main(device: str = "cpu") -> None:
    """Print the time and memory tables for ``device`` (``cpu`` or ``cuda``)."""
    inputs = _inputs(4096, 512, device)
    rows = []
    for tile_size in (1024, 2048, 4096):
        ours, anchor = compare(
            _step("tiled", inputs, tile_size), _step("dense", inputs), repeat=5, warmup=1, device=device
        )
        rows.append((f"fwd+bwd B=4096 n_e=512, tile {tile_size}", ours, anchor, "<= 1.5"))
    print_table(f"tiled vs dense CLIP loss, seconds ({device})", rows)

    n_e = 128
    rows = []
    for B in DENSE_SIZES:
        tiled, dense = _peak_in_subprocess("tiled", B, n_e, device), _peak_in_subprocess("dense", B, n_e, device)
        buffers = dense / (B * B * 4)
        rows.append((f"B={B} n_e={n_e} (dense = {buffers:.1f} B^2 float32 buffers)", tiled / GIB, dense / GIB, ""))
    tiled = _peak_in_subprocess("tiled", BIG_B, n_e, device)
    rows.append(
        (f"B={BIG_B} n_e={n_e} (dense extrapolated)", tiled / GIB, buffers * BIG_B * BIG_B * 4 / GIB, "< 3 GiB")
    )
    print_table(f"peak memory ({device})", rows, unit="GiB")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peak"]:
        kind, B, n_e, device = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        print(json.dumps({"peak_bytes": measure_peak(kind, B, n_e, device)}))
    else:
        main(*sys.argv[1:2])
