"""Log-domain Sinkhorn vs POT, and the GCA-INCE loss vs CLIP: time, iterations and peak memory.

1. ``sinkhorn`` against POT's ``ot.bregman.sinkhorn_log`` (torch backend) at n = 2048: the same
   cosine cost of random unit vectors in 64 dimensions, epsilon = 0.02, uniform marginals, both
   stopping when the Euclidean norm of the column-marginal error after a row step is below 1e-6,
   checked every 10 iterations. Goal: ratio <= 1.0.
2. ``gca_ince`` (T = 10 Sinkhorn iterations) forward+backward against ``clip`` forward+backward at
   B = 4096, n_e = 512, gradient with respect to z_u, z_v and the logit scale; envelope gradient
   (goal <= 2.5) and unrolled.
3. Peak memory of one ``gca_ince`` forward+backward at T = 10 and T = 50, envelope and unrolled,
   at B = 4096: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the peak of the tensor
   allocations that ``torch.profiler.profile(profile_memory=True)`` records.

On the CPU every timing runs single-threaded (see :func:`main`).

Run: ``python benchmarks/run.py ot`` or ``python benchmarks/bench_ot.py [cpu|cuda]``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import ot as pot
import torch

from clipmath.multimodal import losses, similarity
from clipmath.multimodal.ot import sinkhorn

from common import compare, cpu_peak_bytes, cuda_peak_bytes, print_table, single_thread

N_OT, EPSILON, TOL, CHECK_EVERY = 2048, 0.02, 1e-6, 10
B, N_E = 4096, 512


def _unit(rows: int, dim: int, gen: torch.Generator, device: str) -> torch.Tensor:
    return similarity.normalize(torch.randn(rows, dim, generator=gen, device=device))


def bench_sinkhorn(device: str) -> list[tuple[str, float, float, str]]:
    """Time both solvers to convergence on the same problem; the case names the iterations."""
    gen = torch.Generator(device=device).manual_seed(0)
    cost = -_unit(N_OT, 64, gen, device) @ _unit(N_OT, 64, gen, device).T
    marginal = torch.full((N_OT,), 1.0 / N_OT, device=device)
    counts = {}

    def ours() -> None:
        counts["ours"] = sinkhorn(cost=cost, epsilon=EPSILON, tol=TOL, max_iter=5000, check_every=CHECK_EVERY).n_iter

    def anchor() -> None:
        _, log = pot.bregman.sinkhorn_log(marginal, marginal, cost, EPSILON, numItermax=5000, stopThr=TOL, log=True)
        counts["pot"] = log["niter"] + 1  # POT reports the 0-based index of its last iteration

    t_ours, t_anchor = compare(ours, anchor, repeat=5, warmup=1, device=device)
    iterations = f"iterations {counts['ours']} vs {counts['pot']}"
    case = f"sinkhorn n={N_OT} eps={EPSILON} tol={TOL:g} ({device}; {iterations})"
    return [(case, t_ours, t_anchor, "<= 1.0")]


def _inputs(batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(1)
    z_u = _unit(batch, N_E, gen, device)
    z_v = similarity.normalize(z_u + torch.randn(batch, N_E, generator=gen, device=device))
    logit_scale = torch.tensor(math.log(1 / 0.07), device=device)
    return z_u.requires_grad_(), z_v.requires_grad_(), logit_scale.requires_grad_()


def _step(name: str, inputs: tuple[torch.Tensor, ...], **hyperparameters) -> Callable[[], None]:
    loss_fn = losses.build(name, **hyperparameters)

    def run() -> None:
        for t in inputs:
            t.grad = None
        z_u, z_v, logit_scale = inputs
        loss_fn(z_u, z_v, logit_scale=logit_scale).loss.backward()

    return run


def bench_gca_ince(device: str) -> list[tuple[str, float, float, str]]:
    """gca_ince (T = 10) forward+backward against clip, envelope and unrolled."""
    inputs = _inputs(B, device)
    anchor = _step("clip", inputs)
    rows = []
    for grad, goal in (("envelope", "<= 2.5"), ("unrolled", "")):
        ours = _step("gca_ince", inputs, n_iter=10, grad=grad)
        t_ours, t_anchor = compare(ours, anchor, repeat=3, warmup=1, device=device)
        case = f"gca_ince T=10 {grad} vs clip, fwd+bwd B={B} n_e={N_E} ({device})"
        rows.append((case, t_ours, t_anchor, goal))
    return rows


def peak_memory(run: Callable[[], None], device: str) -> int:
    """Peak bytes allocated by ``run`` beyond what was allocated before it."""
    return cuda_peak_bytes(run) if device.startswith("cuda") else cpu_peak_bytes(run)


def bench_memory(device: str) -> list[tuple[str, float, float]]:
    """Peak MiB of gca_ince forward+backward at T = 10 and T = 50."""
    inputs = _inputs(B, device)
    rows = []
    for grad in ("envelope", "unrolled"):
        peaks = [peak_memory(_step("gca_ince", inputs, n_iter=t, grad=grad), device) / 2**20 for t in (10, 50)]
        rows.append((f"gca_ince {grad} fwd+bwd B={B} n_e={N_E} ({device})", *peaks))
    return rows


def main(device: str = "cpu") -> list[tuple[str, float, float, str]]:
    """Run the three comparisons on ``device`` and print their tables; returns the timing rows."""
    if device != "cpu":
        return _run(device)
    # On a shared 2-core machine a second intra-op thread waits at every op for a core that
    # another process holds: repeat times varied tenfold. One thread each keeps the ratio honest.
    with single_thread():
        return _run(device)


def _run(device: str) -> list[tuple[str, float, float, str]]:
    rows = bench_sinkhorn(device)
    print_table("sinkhorn vs POT sinkhorn_log (torch backend)", rows)
    gca_rows = bench_gca_ince(device)
    print_table("gca_ince (T = 10) vs clip", gca_rows)
    print("\n## gca_ince peak memory, T = 10 vs T = 50\n")
    print("| case | T=10 (MiB) | T=50 (MiB) | ratio |")
    print("|---|---|---|---|")
    for case, t10, t50 in bench_memory(device):
        print(f"| {case} | {t10:.1f} | {t50:.1f} | {t50 / t10:.2f} |")
    return rows + gca_rows


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpu")
