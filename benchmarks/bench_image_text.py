"""Image-text training with open_clip towers: clipmath's path vs open_clip's, and large batches.

The model: a tiny open_clip ``CLIP`` (a ViT on 32x32 images, patch 8, width 64, 2 layers, 2 heads;
a text transformer with context 16, open_clip's 49,408-token vocabulary, width 64, 2 layers,
2 heads; ``embed_dim`` 32), the size of a CPU preset.

**Steps per second** (goal: clipmath / open_clip >= 0.95). Anchor: a minimal open_clip loop, the
``CLIP`` model on images already normalised to float (converted once, before timing) and token
ids, ``open_clip.ClipLoss`` on ``model(images, ids)``, Adam, and the clamp of ``logit_scale`` to
``log 100`` after each step as open_clip's training does. Ours, on the same weights and batches
(uint8 images, preprocessed inside the encoder): (a) a manual loop, ``BimodalModel`` with the
``open_clip_vision`` and ``open_clip_text`` encoders loaded by ``load_open_clip_weights``,
``losses.build("clip")``, Adam and ``clamp_logit_scale_``; (b) the whole trainer,
``clipmath.multimodal.trainer.train`` on a ``TensorStream`` of the same tensors (its per-step
``loss.item()``, NaN check, log and progress bar included); on the CPU also (c) the trainer with
``precision="bf16"`` (bf16 autocast) against the same float32 anchor. Runs of 10 steps alternate, ours then
the anchor (a warm-up pair, then 9 pairs); the table shows the fastest run of each, the least
disturbed by other load on a shared machine, where medians of runs a few seconds apart swing by
+-20 %; the ratio of the medians is printed below it.

**Peak memory of an effective batch of 16,384**: :func:`clipmath.multimodal.accumulation.accumulated_step`
with 32 micro-batches of 512 and the tiled ``clip`` loss (tile 2048), beside the dense one-batch step
(the whole batch through the encoders with gradient and the dense loss). Each case runs in a fresh
subprocess and reports the growth of its peak resident set (``VmHWM``, see bench_tiled.py) over its
value after building the model and the batch; on CUDA ``torch.cuda.max_memory_allocated``. The dense
step is measured at B = 512, 1024, 2048; its estimate at 16,384 is ``a + b B + 4 k B^2``, with ``k``
the number of B x B float32 buffers of the dense loss (measured on the loss alone at B = 4096) and
``a + b B`` (activations and embeddings) fitted to the measured peaks less ``4 k B^2``. The time of one
accumulated step is printed beside it, and so is one whole step of ``train()`` with ``TrainConfig(micro_batches=32)``
on a stream of 16,384 rows (the same accumulation, plus the stream's copy of the batch and Adam's
moments).

Threads: ``torch.set_num_threads(1)`` on both sides (a shared 2-core machine; see bench_mnist_train.py).

Run: ``python benchmarks/run.py image_text`` or ``python benchmarks/bench_image_text.py [cpu|cuda]``.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from clipmath.multimodal import encoders, losses
from clipmath.multimodal.accumulation import accumulated_step
from clipmath.multimodal.encoders.open_clip_adapter import load_open_clip_weights
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.trainer import TensorStream, TrainConfig, train

from common import compare, cuda_peak_bytes, print_table, sync

EMBED = 32
VISION = {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "heads": 2}
TEXT = {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
BATCH, STEPS = 128, 10
REPEAT = 9
BIG_B, MICRO, TILE = 16384, 32, 2048
DENSE_SIZES = (512, 1024, 2048)
LOSS_B = 4096
GIB = 1024**3
SEED = 0


def _open_clip_model(device: str):
    import open_clip

    torch.manual_seed(SEED)
    vision_cfg = {**{k: v for k, v in VISION.items() if k != "heads"}, "head_width": VISION["width"] // VISION["heads"]}
    return open_clip.CLIP(EMBED, vision_cfg, dict(TEXT)).to(device)


def _clipmath_model(reference, device: str) -> BimodalModel:
    g_u = encoders.build("open_clip_vision", n_e=EMBED, **VISION)
    g_v = encoders.build("open_clip_text", n_e=EMBED, **TEXT)
    model = BimodalModel(g_u, g_v, metric="cosine")
    return load_open_clip_weights(model, reference.state_dict()).to(device)


def _data(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 32, 32) uint8 images and (n, 16) token ids: start, 1-12 tokens, end, padding."""
    gen = torch.Generator().manual_seed(SEED)
    images = torch.randint(0, 256, (n, 3, VISION["image_size"], VISION["image_size"]), generator=gen, dtype=torch.uint8)
    lengths = torch.randint(1, 13, (n,), generator=gen)
    ids = torch.randint(1, 49406, (n, TEXT["context_length"]), generator=gen)
    position = torch.arange(TEXT["context_length"])
    ids = torch.where(position < lengths[:, None] + 1, ids, 0)
    ids[:, 0] = 49406
    ids[torch.arange(n), lengths + 1] = 49407
    return images.to(device), ids.to(device)


def _normalised(images: torch.Tensor) -> torch.Tensor:
    import open_clip

    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def _autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()


def _anchor_loop(model, images, ids, device):
    """open_clip's minimal loop on pre-normalised float images."""
    import open_clip

    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    floats = _normalised(images)

    def run() -> None:
        for k in range(STEPS):
            rows = slice(k * BATCH, (k + 1) * BATCH)
            with _autocast(device):
                image_features, text_features, scale = model(floats[rows], ids[rows])
                loss = loss_fn(image_features, text_features, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))

    return run


def _manual_loop(model, images, ids, device):
    """Clipmath's model and loss in a loop as short as the anchor's."""
    loss_fn = losses.build("clip")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def run() -> None:
        for k in range(STEPS):
            rows = slice(k * BATCH, (k + 1) * BATCH)
            with _autocast(device):
                out = model(images[rows], {"ids": ids[rows]})
                loss = loss_fn(out.z_u, out.z_v, logit_scale=out.logit_scale).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.clamp_logit_scale_()

    return run


def _trainer(model, images, ids, device, precision="auto"):
    """Clipmath's whole trainer on the same tensors (one epoch of STEPS batches)."""
    stream = TensorStream(images, ids, batch_size=BATCH, seed=SEED)
    config = TrainConfig(epochs=1, optimizer="adam", lr=1e-4, device=device, threads=1, seed=SEED, precision=precision)

    def run() -> None:
        train(model, losses.build("clip"), stream, config)

    return run


# --- peak memory, one case per subprocess -------------------------------------------------------


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def measure(kind: str, B: int, device: str) -> dict:
    """Peak bytes (and seconds) of one training step's forward and backward at batch B, in this process."""
    torch.set_num_threads(1)
    if kind == "loss":
        return _measure_loss(B, device)
    reference = _open_clip_model(device)
    model = _clipmath_model(reference, device)
    del reference
    images, ids = _data(B, device)
    batch = {"u": images, "v": {"ids": ids}}
    if kind == "accumulated":
        loss_fn = losses.build("clip", tile_size=TILE)

        def step() -> None:
            accumulated_step(model, loss_fn, batch, MICRO, autocast=_autocast(device))
    elif kind == "trainer":  # one whole optimizer step of train(): the stream's batch copy and Adam's moments too
        stream = TensorStream(images, ids, batch_size=B, seed=SEED)
        config = TrainConfig(
            epochs=1, optimizer="adam", lr=1e-4, device=device, threads=1, seed=SEED, micro_batches=MICRO
        )

        def step() -> None:
            train(model, losses.build("clip", tile_size=TILE), stream, config)
    else:
        loss_fn = losses.build("clip")

        def step() -> None:
            with _autocast(device):
                out = model(images, batch["v"])
                loss = loss_fn(out.z_u, out.z_v, logit_scale=out.logit_scale).loss
            loss.backward()

    start = time.perf_counter()
    if device.startswith("cuda"):
        peak = cuda_peak_bytes(step)
    else:
        base = _peak_rss()
        step()
        peak = _peak_rss() - base
    sync(device)
    return {"peak_bytes": peak, "seconds": time.perf_counter() - start}


def _measure_loss(B: int, device: str) -> dict:
    """Peak bytes of the dense clip loss alone (forward and backward) on (B, n_e) embeddings."""
    gen = torch.Generator(device=device).manual_seed(SEED)
    z_u = torch.randn(B, EMBED, generator=gen, device=device, requires_grad=True)
    z_v = torch.randn(B, EMBED, generator=gen, device=device, requires_grad=True)
    scale = torch.tensor(math.log(1 / 0.07), device=device, requires_grad=True)
    loss_fn = losses.build("clip")

    def step() -> None:
        loss_fn(z_u, z_v, logit_scale=scale).loss.backward()

    if device.startswith("cuda"):
        return {"peak_bytes": cuda_peak_bytes(step), "seconds": 0.0}
    base = _peak_rss()
    step()
    return {"peak_bytes": _peak_rss() - base, "seconds": 0.0}


def _in_subprocess(kind: str, B: int, device: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--peak", kind, str(B), device], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(device: str = "cpu") -> None:
    """Print the steps/s table and the memory table for ``device`` (``cpu`` or ``cuda``)."""
    torch.set_num_threads(1)
    reference = _open_clip_model(device)
    images, ids = _data(STEPS * BATCH, device)
    anchor = _anchor_loop(reference, images, ids, device)
    rows, medians = [], []
    cases = [("manual loop: BimodalModel + clip loss", _manual_loop), ("trainer.train", _trainer)]
    if device == "cpu":  # bf16 autocast on the CPU (the trainer's default there is float32)
        cases.append(("trainer.train, precision=bf16", lambda *args: _trainer(*args, precision="bf16")))
    for case, build in cases:
        ours = build(_clipmath_model(reference, device), images, ids, device)
        times: dict[str, list[float]] = {"ours": [], "anchor": []}
        for k in range(REPEAT):
            t_ours, t_anchor = compare(ours, anchor, repeat=1, warmup=int(k == 0), device=device)
            times["ours"].append(t_ours)
            times["anchor"].append(t_anchor)
        rows.append((f"{case}, B={BATCH}", STEPS / min(times["ours"]), STEPS / min(times["anchor"]), ">= 0.95"))
        medians.append((case, statistics.median(times["anchor"]) / statistics.median(times["ours"])))
    print_table(
        f"tiny open_clip CLIP training vs open_clip's ClipLoss loop ({device}, 1 thread, best of {REPEAT})",
        rows,
        unit="steps/s",
    )
    print(
        "\nratio of the medians (disturbed by other load on a shared machine): "
        + ", ".join(f"{case}: {ratio:.3f}" for case, ratio in medians)
    )

    # The dense loss's B x B buffers, counted on the loss alone; the rest of the dense step
    # (activations, embeddings) fitted linearly in B over the measured sizes.
    buffers = _in_subprocess("loss", LOSS_B, device)["peak_bytes"] / (4 * LOSS_B**2)
    dense = {B: _in_subprocess("dense", B, device) for B in DENSE_SIZES}
    sizes = np.array(DENSE_SIZES, dtype=float)
    linear = np.array([dense[B]["peak_bytes"] - buffers * 4 * B**2 for B in DENSE_SIZES], dtype=float)
    a, b = np.polyfit(sizes, linear, 1)[::-1]
    quadratic = buffers * 4 * BIG_B**2
    estimate = a + b * BIG_B + quadratic
    accumulated = _in_subprocess("accumulated", BIG_B, device)
    trainer = _in_subprocess("trainer", BIG_B, device)
    print(f"\n## peak memory of one step ({device}, 1 thread)\n")
    print("| case | peak (GiB) | step (s) |")
    print("|---|---|---|")
    for B in DENSE_SIZES:
        print(f"| dense one-batch B={B} | {dense[B]['peak_bytes'] / GIB:.3f} | {dense[B]['seconds']:.2f} |")
    print(
        f"| dense one-batch B={BIG_B} (estimate: {(a + b * BIG_B) / GIB:.2f} linear in B "
        f"+ {buffers:.1f} B^2 float32 loss buffers = {quadratic / GIB:.2f}) | {estimate / GIB:.2f} | |"
    )
    print(
        f"| accumulated B={BIG_B}, {MICRO} micro-batches of {BIG_B // MICRO}, tiled clip (tile {TILE}) "
        f"| {accumulated['peak_bytes'] / GIB:.3f} | {accumulated['seconds']:.1f} |"
    )
    print(
        f"| trainer.train, one step of B={BIG_B} with train.micro_batches={MICRO}, tiled clip (tile {TILE}) "
        f"| {trainer['peak_bytes'] / GIB:.3f} | {trainer['seconds']:.1f} |"
    )
    print(
        f"\nratio accumulated / dense estimate at B={BIG_B}: {accumulated['peak_bytes'] / estimate:.3f}; "
        f"trainer / dense estimate: {trainer['peak_bytes'] / estimate:.3f}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peak"]:
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
    else:
        main(*sys.argv[1:2])
