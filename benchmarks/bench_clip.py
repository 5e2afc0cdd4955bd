"""CLIP loss vs open_clip's ``ClipLoss``: forward+backward time at B = 4096, n_e = 512.

Both get the same pre-normalised float32 features and the gradient is taken with respect to
z_u, z_v and the logit scale. open_clip takes the exponentiated scale, so its step includes the
``exp``; ours takes ``log(1/tau)``. Rows: our ``clip`` with the ``cosine`` metric (which
normalises again, as it must for arbitrary inputs) and with ``inner`` (no normalisation, the
same arithmetic open_clip does on pre-normalised features). Goal: ratio <= 1.1.

Run: ``python benchmarks/run.py clip`` or ``python benchmarks/bench_clip.py [cpu|cuda]``.
"""

from __future__ import annotations

import math
import sys

import torch
from open_clip.loss import ClipLoss as OpenClipLoss

from clipmath.multimodal import losses, similarity

from common import compare, print_table

B, N_E = 4096, 512


def _inputs(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)
    z_u = similarity.normalize(torch.randn(B, N_E, generator=gen, device=device)).requires_grad_()
    z_v = similarity.normalize(torch.randn(B, N_E, generator=gen, device=device)).requires_grad_()
    logit_scale = torch.tensor(math.log(1 / 0.07), device=device, requires_grad=True)
    return z_u, z_v, logit_scale


def _step(loss_fn, inputs: tuple[torch.Tensor, ...]):
    def run() -> None:
        for t in inputs:
            t.grad = None
        loss_fn(*inputs).backward()

    return run


def main(device: str = "cpu") -> list[tuple[str, float, float, str]]:
    """Time both losses on ``device`` and print the table; returns its rows."""
    inputs = _inputs(device)
    anchor_loss = OpenClipLoss()
    anchor = _step(lambda z_u, z_v, s: anchor_loss(z_u, z_v, s.exp()), inputs)
    rows = []
    for metric in ("cosine", "inner"):
        ours_loss = losses.build("clip", metric=metric)
        ours = _step(lambda z_u, z_v, s, ours_loss=ours_loss: ours_loss(z_u, z_v, logit_scale=s).loss, inputs)
        t_ours, t_anchor = compare(ours, anchor, repeat=7, warmup=2, device=device)
        rows.append((f"clip fwd+bwd B={B} n_e={N_E} {metric} ({device})", t_ours, t_anchor, "<= 1.1"))
    print_table("clip vs open_clip ClipLoss", rows)
    return rows


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpu")
