"""The cost of input validation on a training step: time against the unchecked arithmetic, and host syncs.

A step here is one forward+backward of a ``BimodalModel`` of two linear encoders and a loss
at B = 256, n_e = 64 on the CPU (one thread), small enough that per-call overheads show. Each
row times the clipmath step (``model(u, v)`` then the registered loss module, every check
included) against its anchor, the same arithmetic without any check, in one process:

- ``clip``: anchor ``clip_loss(scaled_logits(...))`` on the encoders' outputs;
- ``gca_rince`` (T = 10) and ``gca_uot`` (T = 10): anchor the same Sinkhorn iterations and
  loss written in plain PyTorch (autograd's own logsumexp, no buffer reuse).

The last columns count the calls that copy a value to the host per step
(:func:`clipmath.multimodal.checks.count_host_syncs`), each one a device wait on a GPU, and the
graph breaks ``torch._dynamo.explain`` finds in the loss's forward (each host read splits the
graph ``torch.compile`` can build). Goal: at most one of each per step (the loss's checks,
resolved together), and a ratio near 1.

Run: ``python benchmarks/run.py validation`` or ``python benchmarks/bench_validation.py``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import torch

from clipmath.multimodal import encoders, losses, similarity
from clipmath.multimodal.checks import count_host_syncs
from clipmath.multimodal.logits import scaled_logits
from clipmath.multimodal.losses.clip import clip_loss
from clipmath.multimodal.model import BimodalModel

from common import compare, single_thread

B, N_IN, N_E, T = 256, 32, 64, 10
STEPS = 10
LAM, Q, RHO = 0.01, 0.6, 0.2


def _plain_gca_rince(logits: torch.Tensor) -> torch.Tensor:
    """GCA-RINCE (§4.3 of Chen et al. 2024) with a = b = 1, plain PyTorch."""
    log_v = logits.new_zeros(logits.shape[1])
    for _ in range(T - 1):
        log_u = -torch.logsumexp(logits + log_v, 1)
        log_v = -torch.logsumexp(logits + log_u[:, None], 0)
    log_kv = logits + log_v
    return _plain_robust(log_kv, torch.logsumexp(log_kv, 1))


def _plain_robust(log_kv: torch.Tensor, neg_log_u: torch.Tensor) -> torch.Tensor:
    norm = math.log(LAM) + neg_log_u
    return ((Q * norm).exp() - (Q * log_kv.diagonal()).exp()).mean() / Q


def _plain_gca_uot(logits: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """GCA-UOT (§4.5 of Chen et al. 2024) with w_kl = 1, w_rince = 0.2, plain PyTorch."""
    log_mass = -math.log(logits.shape[0])
    lam = RHO / (RHO + eps)
    log_v = logits.new_zeros(logits.shape[1])
    for _ in range(T):
        log_u = lam * (log_mass - torch.logsumexp(logits + log_v, 1))
        log_v = lam * (log_mass - torch.logsumexp(logits + log_u[:, None], 0))
    log_plan = logits + log_u[:, None] + log_v
    kl = -torch.log_softmax(log_plan, 1).diagonal().mean()
    log_kv = logits + log_v
    return kl + 0.2 * _plain_robust(log_kv, -log_u)


def _steps(name: str, gen: torch.Generator) -> tuple[Callable[[], None], Callable[[], None]]:
    model = BimodalModel(encoders.build("linear", n_in=N_IN, n_e=N_E), encoders.build("linear", n_in=N_IN, n_e=N_E))
    u = torch.randn(B, N_IN, generator=gen)
    v = u + torch.randn(B, N_IN, generator=gen)
    loss_fn = losses.build(name, n_iter=T) if name != "clip" else losses.build(name)
    sim = similarity.get("cosine")

    def ours() -> None:
        model.zero_grad(set_to_none=True)
        out = model(u, v)
        loss_fn(out.z_u, out.z_v, logit_scale=out.logit_scale, logit_bias=out.logit_bias).loss.backward()

    def anchor() -> None:
        model.zero_grad(set_to_none=True)
        scale = model.clamped_logit_scale()
        logits = scaled_logits(sim, model.encode_u(u), model.encode_v(v), scale)
        if name == "clip":
            loss = clip_loss(logits)
        elif name == "gca_rince":
            loss = _plain_gca_rince(logits)
        else:
            loss = _plain_gca_uot(logits, torch.exp(-scale))
        loss.backward()

    return ours, anchor


def _graph_breaks(name: str, gen: torch.Generator) -> int:
    """Graph breaks of the loss's forward under torch.compile's tracer (no compilation)."""
    import torch._dynamo as dynamo

    loss_fn = losses.build(name, n_iter=T) if name != "clip" else losses.build(name)
    z_u, z_v = torch.randn(B, N_E, generator=gen), torch.randn(B, N_E, generator=gen)
    dynamo.reset()
    explained = dynamo.explain(lambda *x: loss_fn(*x[:2], logit_scale=x[2]).loss)(z_u, z_v, torch.tensor(2.0))
    return explained.graph_break_count


def _repeated(step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        for _ in range(STEPS):
            step()

    return run


def main(device: str = "cpu") -> list[tuple[str, float, float, int, int]]:
    """Time each step against its anchor, count its host syncs and print the table; returns its rows."""
    if device != "cpu":
        raise SystemExit("bench_validation runs on the CPU (the sync counts hold on any device)")
    gen = torch.Generator().manual_seed(0)
    rows = []
    with single_thread():
        for name in ("clip", "gca_rince", "gca_uot"):
            ours, anchor = _steps(name, gen)
            with count_host_syncs() as syncs:
                ours()
            # Blocks of STEPS steps, interleaved, timed by this thread's CPU time (one intra-op
            # thread), the fastest block of each: other load on a shared machine only adds time,
            # and the difference sought is a few percent.
            t_ours, t_anchor = compare(
                _repeated(ours), _repeated(anchor), repeat=31, warmup=2, statistic=min, clock=time.thread_time
            )
            case = f"{name} fwd+bwd B={B} n_e={N_E}"
            rows.append((case, t_ours / STEPS, t_anchor / STEPS, sum(syncs.values()), _graph_breaks(name, gen)))
    print("\n## validation overhead per step (cpu, 1 thread, CPU seconds)\n")
    print("| case | clipmath (s) | unchecked anchor (s) | ratio | host syncs per step | graph breaks | goal |")
    print("|---|---|---|---|---|---|---|")
    for case, t_ours, t_anchor, syncs, breaks in rows:
        print(
            f"| {case} | {t_ours:.4g} | {t_anchor:.4g} | {t_ours / t_anchor:.3f} | {syncs} | {breaks} "
            "| <= 1 sync, <= 1 break |"
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpu")
