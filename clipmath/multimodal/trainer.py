"""One training loop for any bimodal model, any registered loss and any batch source.

The loop is short and linear on purpose (nanoGPT style)::

    for each epoch, for each batch from stream.epoch(epoch, start_batch):
        batch = tensors of the batch moved to the device (other values left alone)
        out  = model(batch["u"], batch["v"])             # BimodalOutput(z_u, z_v, logit_scale, logit_bias)
        extras = {name: batch[name] for name in loss_fn.reads}   # e.g. raw u, v (MMD), class_ids (GCA)
        z_u, z_v, extras = gathered across ranks          # only under torch.distributed
        loss = loss_fn(z_u, z_v, logit_scale=..., logit_bias=..., **extras).loss
        backward                                          # or, with config.micro_batches > 1, the
                                                          # three lines above by accumulated_step
        clip, optimizer step, scheduler step, clamp of logit_scale
        log the step; evaluate and checkpoint every so often

Under ``torchrun`` every rank computes the loss of the *global* batch on embeddings gathered
with gradient, so its value equals the one-process loss on the same batch; the batch fields a
loss reads are gathered the same way, in the same rank order. The backward of the gather sums
the world's identical losses, which makes each rank's gradient ``world_size`` times its share;
DDP's gradient average divides that back, so the update equals the one-process update (the
scaling explained in open_clip#616).

A batch source is anything with ``batches_per_epoch``, ``epoch(epoch, start_batch=0)`` yielding
dicts of named fields ``{"u": ..., "v": ..., ...}`` (``b`` rows each, the per-rank batch):
tensors of any dtype and shape (float or uint8 images (b, C, H, W), token ids, labels),
dicts of tensors (an encoder that takes several fields, e.g. token ids and a mask), lists of
strings; and, optionally, ``skipped`` (a dict shard -> samples skipped so far as damaged or
corrupt, cumulative over the source's life, as :attr:`clipmath.datasets.ShardStream.skipped`). Its order must
depend only on its seed and ``(epoch, start_batch)``: that, plus the checkpointed model,
optimizer, scheduler and generator states, makes a resumed run reproduce an uninterrupted one
bit for bit on CPU. :class:`clipmath.datasets.ShardStream` streams shards; :class:`TensorStream`
serves tensors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from clipmath._atomic import atomic_open
from clipmath.multimodal.accumulation import accumulated_step, batch_size_of, check_gatherable, loss_inputs
from clipmath.multimodal.checkpoint import load_checkpoint, save_checkpoint
from clipmath.multimodal.distributed import gather_with_grad, world_info
from clipmath.multimodal.seeding import rng_state, seed_everything, set_rng_state

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """How to train: optimizer, schedule, device, and how often to log, evaluate and checkpoint.

    Attributes:
        epochs: passes over the batch source.
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        lr: peak learning rate.
        weight_decay: L2 penalty (decoupled for ``adamw``) on the weight matrices and kernels only:
            never on 1-D parameters (biases, norm scales), ``logit_scale`` or ``logit_bias``
            (open_clip's rule; decaying the temperature would pull it towards tau = 1).
        momentum: SGD momentum (ignored by Adam/AdamW).
        schedule: learning-rate factor after warmup: ``constant``, ``cosine`` (to 0) or ``linear`` (to 0).
        warmup_steps: steps of linear warmup from ``lr / warmup_steps`` to ``lr``.
        grad_clip: maximum global gradient norm, or None for no clipping.
        micro_batches: m, the pieces each batch's forward and backward are split into (1: the
            whole batch at once). With m > 1 the step is :func:`~clipmath.multimodal.accumulation.accumulated_step`'s
            feature cache: every negative of the whole (global) batch is kept and the gradient is
            the one-batch gradient up to round-off, while the encoders' activations are those of
            ``b / m`` rows (``b`` the per-rank batch, which m must divide); it costs one more forward.
            Exact for encoders whose output for a row does not depend on the other rows; BatchNorm
            in training mode (e.g. open_clip's ResNet towers) normalises each micro-batch alone.
        precision: ``auto`` (bf16 autocast on CUDA, float32 on CPU), ``fp32``, or ``bf16``
            (``torch.autocast`` to bfloat16 on either device; the losses compute in float32).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        checkpoint_every: steps between checkpoints (0: only the final one).
        eval_every: steps between calls of the evaluation hook (0: only at the end).
        log_every: steps between records in ``metrics.jsonl``.
        seed: seeds Python, NumPy and torch when training starts (not on resume).
        threads: torch intra-op threads while training (restored afterwards), or None to leave
            torch's setting. Tiny models step faster on one thread, and on a shared machine
            OpenMP threads that spin while a sibling is descheduled can slow a run many times.
        max_skipped_fraction: the run fails (ValueError naming the shards) at the end of an epoch
            where the samples the batch source skipped as damaged or corrupt exceed this fraction
            of the samples read so far (skipped plus trained on); 0 tolerates no damage, 1 any.
            The default 0.01 lets isolated corrupt samples pass (bit rot hits one sample per
            damaged member, and the stream reads past damaged tar headers), but not what
            changes the data a result stands for: a lost or truncated shard (one of 100 shards
            is already 1%), or shards written in source order (by class, say) losing a part.
    """

    epochs: int = 10
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = None
    micro_batches: int = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int = 0
    eval_every: int = 0
    log_every: int = 1
    seed: int = 0
    threads: int | None = None
    max_skipped_fraction: float = 0.01

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("optimizer", self.optimizer in ("adam", "adamw", "sgd"), "one of 'adam', 'adamw', 'sgd'"),
            ("lr", self.lr > 0, "a positive float"),
            ("weight_decay", self.weight_decay >= 0, "a float >= 0"),
            ("momentum", 0 <= self.momentum < 1, "a float in [0, 1)"),
            ("schedule", self.schedule in ("constant", "cosine", "linear"), "one of 'constant', 'cosine', 'linear'"),
            ("warmup_steps", self.warmup_steps >= 0, "an integer >= 0"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "None or a positive float"),
            (
                "micro_batches",
                isinstance(self.micro_batches, int)
                and not isinstance(self.micro_batches, bool)
                and self.micro_batches >= 1,
                "an integer >= 1",
            ),
            ("precision", self.precision in ("auto", "fp32", "bf16"), "one of 'auto', 'fp32', 'bf16'"),
            ("device", self.device in ("auto", "cpu", "cuda"), "one of 'auto', 'cpu', 'cuda'"),
            ("checkpoint_every", self.checkpoint_every >= 0, "an integer >= 0"),
            ("eval_every", self.eval_every >= 0, "an integer >= 0"),
            ("log_every", self.log_every >= 1, "an integer >= 1"),
            ("seed", 0 <= self.seed < 2**32, "an integer in [0, 2**32)"),
            ("threads", self.threads is None or self.threads >= 1, "None or an integer >= 1"),
            (
                "max_skipped_fraction",
                isinstance(self.max_skipped_fraction, (int, float))
                and not isinstance(self.max_skipped_fraction, bool)
                and 0 <= self.max_skipped_fraction <= 1,
                "a fraction in [0, 1]",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"train.{name}={getattr(self, name)!r}: expected {expected}")


@dataclass
class TrainResult:
    """What a finished training run returns (the trained model is updated in place).

    Attributes:
        steps: optimizer steps taken in total (across resumes).
        last_loss: loss of the final step.
        epoch_losses: mean training loss of each epoch, in order.
        evaluation: the evaluation hook's output on the final model ({} without a hook).
        data_seconds: wall time spent waiting for batches (this process, since its start or resume).
        compute_seconds: wall time spent in forward, backward and the optimizer step (same span).
        resumed_at: the step a resume started from, or None for an uninterrupted run.
        skipped: shard -> samples the batch source skipped as damaged or corrupt while this run
            read its epochs (each epoch's skips count again; kept across resumes), as of each
            epoch's last batch.
    """

    steps: int
    last_loss: float
    epoch_losses: list[float]
    evaluation: dict[str, float] = field(default_factory=dict)
    data_seconds: float = 0.0
    compute_seconds: float = 0.0
    resumed_at: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def data_fraction(self) -> float:
        """Fraction of the step time spent waiting for data."""
        total = self.data_seconds + self.compute_seconds
        return self.data_seconds / total if total > 0 else 0.0


class TensorStream:
    """Paired tensors served as a batch source, with seeded per-epoch shuffles.

    Epoch ``e`` visits the rows in the order of a permutation seeded by ``(seed, e)``; global
    batch ``k`` is the ``k``-th run of ``batch_size`` rows in that order, and rank ``r`` of
    ``world_size`` takes its ``r``-th slice, so that the ranks' batches together are exactly
    the one-process batch. The last incomplete batch is dropped, so every batch has equal size
    (contrastive losses depend on the batch size).

    Args:
        u: (N, ...) samples of modality u.
        v: (N, ...) samples of modality v, row i paired with ``u[i]``.
        batch_size: the global batch size ``B`` (a multiple of ``world_size``, at most N).
        seed: seed of the shuffles.
        rank: this process's rank.
        world_size: number of processes sharing each global batch.
        fields: further (N, ...) tensors served under their names beside ``u`` and ``v``, e.g.
            ``class_ids`` for a loss that reads them.
    """

    def __init__(
        self,
        u: Tensor,
        v: Tensor,
        *,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        fields: dict[str, Tensor] | None = None,
    ):
        columns = {"u": u, "v": v, **(fields or {})}
        for name, column in columns.items():
            if not isinstance(column, Tensor) or column.dim() == 0 or column.shape[0] != u.shape[0]:
                shape = tuple(column.shape) if isinstance(column, Tensor) else type(column).__name__
                raise ValueError(f"{name}={shape}: expected a tensor with N={u.shape[0]} rows, like u")
        if "key" in columns:
            raise ValueError("fields: 'key' is reserved for the batch's list of row indices")
        if not 1 <= batch_size <= u.shape[0] or batch_size % world_size:
            raise ValueError(
                f"batch_size={batch_size}: expected a multiple of world_size={world_size} in [1, N={u.shape[0]}]"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}: expected an integer in [0, world_size={world_size})")
        self.u, self.v, self.columns = u, v, columns
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.batches_per_epoch = u.shape[0] // batch_size
        self.skipped: dict[str, int] = {}

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, Any]]:
        """Yield this rank's batches of ``epoch``, from global batch ``start_batch`` on."""
        order = torch.from_numpy(np.random.default_rng([self.seed, epoch]).permutation(self.u.shape[0]))
        local = self.batch_size // self.world_size
        for k in range(start_batch, self.batches_per_epoch):
            first = k * self.batch_size + self.rank * local
            index = order[first : first + local]
            yield {**{name: column[index] for name, column in self.columns.items()}, "key": index.tolist()}


def _device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("train.device='cuda': CUDA is not available on this machine; use 'cpu' or 'auto'")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


#: Parameters never decayed whatever their shape: the tilting's temperature and bias.
_NO_DECAY_NAMES = ("logit_scale", "logit_bias")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters in two optimizer groups: decayed (matrices, kernels) and not.

    Weight decay applies to parameters with two or more dimensions only; 1-D parameters
    (biases, norm scales), scalars and the tilting's ``logit_scale`` and ``logit_bias`` get
    none (open_clip's rule).

    Args:
        model: the model whose ``named_parameters`` with ``requires_grad`` are grouped.
        weight_decay: the decay of the first group.

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]``.
    """
    decayed, others = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or name.rsplit(".", 1)[-1] in _NO_DECAY_NAMES
        (others if exempt else decayed).append(param)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr)


def to_device(value: Any, device: torch.device) -> Any:
    """A batch value with its tensors on ``device``: tensors, dicts and lists of tensors; others as they are."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {name: to_device(item, device) for name, item in value.items()}
    if isinstance(value, list) and value and all(isinstance(item, Tensor) for item in value):
        return [item.to(device, non_blocking=True) for item in value]
    return value


def _gather_inputs(extras: dict[str, Any]) -> dict[str, Any]:
    """Each rank's loss inputs gathered along dim 0 in rank order, as the embeddings are."""
    return {name: gather_with_grad(value) for name, value in check_gatherable(extras).items()}


def lr_factor(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning-rate multiplier after ``step`` scheduler steps.

    Linear warmup ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then with
    progress ``p = (step - warmup) / (total - warmup)``: 1 (constant), ``(1 + cos(pi p)) / 2``
    (cosine) or ``1 - p`` (linear).
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.schedule == "linear":
        return 1.0 - progress
    return 1.0


def _forward_backward(
    net: nn.Module,
    loss_fn: nn.Module,
    batch: dict,
    micro_batches: int,
    autocast: contextlib.AbstractContextManager,
    world_size: int,
) -> tuple[Tensor, Tensor]:
    """Forward and backward of one batch, adding the gradient of its loss to the (zeroed) ``.grad``.

    With ``micro_batches`` m = 1 the batch goes through ``net`` at once (the embeddings and the
    fields the loss reads gathered across ranks with gradient); with m > 1 through
    :func:`~clipmath.multimodal.accumulation.accumulated_step`, whose gradient is the same up to
    round-off. Clipping, the optimizer step and the temperature clamp stay with the caller.

    Returns:
        The batch's loss and the logit scale ``log(1/tau)`` it used, both detached scalars.

    Raises:
        ValueError: when m does not divide the batch's rows, or the batch lacks a field the loss reads.
    """
    if micro_batches > 1:
        rows = batch_size_of(batch["u"])
        if rows % micro_batches:
            raise ValueError(
                f"train.micro_batches={micro_batches}: expected a divisor of the batch's {rows} rows (per rank), "
                "so that every micro-batch has the same size"
            )
        out = accumulated_step(net, loss_fn, batch, micro_batches, autocast=autocast)
        return out.loss, out.logit_scale
    extras = loss_inputs(loss_fn, batch)
    with autocast:
        out = net(batch["u"], batch["v"])
        z_u, z_v = out.z_u, out.z_v
        if world_size > 1:
            z_u, z_v, extras = gather_with_grad(z_u), gather_with_grad(z_v), _gather_inputs(extras)
        loss = loss_fn(z_u, z_v, logit_scale=out.logit_scale, logit_bias=out.logit_bias, **extras).loss
    loss.backward()
    return loss.detach(), out.logit_scale.detach()


def _skips_since(now: dict[str, int], base: dict[str, int]) -> dict[str, int]:
    """The skip counts added since ``base`` (both cumulative ``shard -> count`` dicts)."""
    return {name: count - base.get(name, 0) for name, count in now.items() if count > base.get(name, 0)}


def _add_skips(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {name: total.get(name, 0) + more.get(name, 0) for name in {**total, **more}}


def _rows(batch: dict) -> int:
    """Samples in a batch: its keys, else the leading length of ``u``."""
    if "key" in batch:
        return len(batch["key"])
    u = batch["u"]
    while isinstance(u, dict):
        u = next(iter(u.values()))
    return u.shape[0] if isinstance(u, Tensor) else len(u)


def _check_skips(tag: str, skipped: dict[str, int], trained: int, config: TrainConfig, device: torch.device) -> None:
    """Raise if the skipped samples exceed ``config.max_skipped_fraction`` of the samples read.

    Under torch.distributed the counts of all ranks are summed first, so every rank decides alike.
    """
    counts = torch.tensor([sum(skipped.values()), trained], dtype=torch.float64)
    if world_info()[1] > 1:
        counts = counts.to(device)
        torch.distributed.all_reduce(counts)
    lost, read = (int(x) for x in counts.tolist())
    read += lost
    if not lost or lost <= config.max_skipped_fraction * read:
        return
    worst = sorted(skipped.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{name} ({count})" for name, count in worst[:10]) + (", ..." if len(worst) > 10 else "")
    raise ValueError(
        f"stream: {tag} skipped {lost} of the {read} samples it read as damaged or corrupt "
        f"({lost / read:.2%} > train.max_skipped_fraction={config.max_skipped_fraction}); this rank's shards: "
        f"{shown or 'none'}. Repair or rewrite them (`clipmath shards inspect DIR` lists every disagreement with "
        "the manifest), or raise train.max_skipped_fraction"
    )


def _truncate_log(path: os.PathLike, tag: str, step: int) -> None:
    """Drop this run's records past ``step`` (and its final evaluation) from ``metrics.jsonl``.

    They were written after the checkpoint being resumed from and will be written again; a
    line cut short by the kill is dropped too.
    """
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("run") == tag and (record.get("step", 0) > step or record.get("final")):
                continue
            kept.append(line if line.endswith("\n") else line + "\n")
    with atomic_open(path, mode="w") as handle:
        handle.writelines(kept)


def _train(
    model: nn.Module,
    loss_fn: nn.Module,
    stream: Any,
    config: TrainConfig,
    run_dir: Any,
    evaluate: Callable[[nn.Module], dict[str, float]] | None,
    tag: str,
) -> TrainResult:
    """The loop of :func:`train` (which sets and restores the thread count around it)."""
    batches_per_epoch = stream.batches_per_epoch
    if batches_per_epoch < 1:
        raise ValueError(f"stream: expected at least one batch per epoch, got batches_per_epoch={batches_per_epoch}")
    rank, world_size = world_info()
    writes = run_dir is not None and rank == 0
    device = _device(config.device)
    model.to(device)
    optimizer = _optimizer(model, config)
    total_steps = config.epochs * batches_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, config))

    ckpt_path = run_dir.file(f"checkpoints/{tag}.pt") if run_dir is not None else None
    ckpt = load_checkpoint(ckpt_path) if getattr(run_dir, "resuming", False) else None
    step, epoch, position = 0, 0, 0
    # Skips of the finished epochs, and of this one up to its last batch fetched: an epoch reads
    # the same samples again on a resume, so these survive one exactly. Samples trained on, for the fraction.
    skipped_done: dict[str, int] = {}
    skipped_epoch: dict[str, int] = {}
    trained = 0
    epoch_losses: list[float] = []
    epoch_loss_sum, epoch_steps, last_loss = 0.0, 0, math.nan
    if ckpt is None:
        seed_everything(config.seed)
        if writes and getattr(run_dir, "resuming", False):
            _truncate_log(run_dir.file("metrics.jsonl"), tag, 0)
    else:
        if ckpt["batches_per_epoch"] != batches_per_epoch:
            raise ValueError(
                f"checkpoint {str(ckpt_path)!r}: saved with {ckpt['batches_per_epoch']} batches per epoch, "
                f"the stream now has {batches_per_epoch}; resume with the same data and batch size"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        step, epoch, position = ckpt["step"], ckpt["epoch"], ckpt["position"]
        epoch_losses = list(ckpt["epoch_losses"])
        epoch_loss_sum, epoch_steps, last_loss = ckpt["epoch_loss_sum"], ckpt["epoch_steps"], ckpt["last_loss"]
        skipped_done, skipped_epoch = dict(ckpt.get("skipped", {})), dict(ckpt.get("skipped_epoch", {}))
        trained = ckpt.get("trained", 0)
        logger.info("%s: resuming at step %d (epoch %d, batch %d)", tag, step, epoch, position)
        if ckpt["done"]:
            result = TrainResult(
                step, last_loss, epoch_losses, dict(ckpt["evaluation"]), resumed_at=step, skipped=skipped_done
            )
            _record_skips(run_dir, tag, result.skipped)
            return result
        if writes:
            _truncate_log(run_dir.file("metrics.jsonl"), tag, step)
    resumed_at = None if ckpt is None else step

    def checkpoint(done: bool, evaluation: dict[str, float]) -> None:
        if not writes:
            return
        save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "epoch": epoch,
                "position": position,
                "batches_per_epoch": batches_per_epoch,
                "epoch_losses": epoch_losses,
                "epoch_loss_sum": epoch_loss_sum,
                "epoch_steps": epoch_steps,
                "last_loss": last_loss,
                "skipped": skipped_done,
                "skipped_epoch": skipped_epoch,
                "trained": trained,
                "rng": rng_state(),
                "config": asdict(config),
                # The model's own config, when it has one: a checkpoint alone rebuilds the model.
                "model_config": getattr(model, "config", None),
                "done": done,
                "evaluation": evaluation,
            },
            ckpt_path,
        )

    def run_evaluation(final: bool) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            evaluation = {k: float(x) for k, x in evaluate(model).items()}
        model.train()
        if writes:
            run_dir.log_step({"run": tag, "step": step, "epoch": epoch, "final": final, **evaluation})
        return evaluation

    net = model
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    data_seconds = compute_seconds = 0.0
    window_data = window_compute = 0.0  # since the last record
    model.train()
    progress = tqdm(total=total_steps, initial=step, desc=tag, disable=rank != 0, leave=False)
    while epoch < config.epochs:
        # A checkpoint taken after an epoch's last batch resumes at position == batches_per_epoch;
        # a source that counts skips then reads the epoch to its end again, to count them.
        skips_before = dict(getattr(stream, "skipped", {}))
        counts = position < batches_per_epoch or hasattr(stream, "skipped")
        batches = stream.epoch(epoch, start_batch=position) if counts else iter(())
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            fetched = time.perf_counter()
            if batch is None:
                break
            skipped_epoch = _skips_since(getattr(stream, "skipped", {}), skips_before)
            trained += _rows(batch)
            batch = to_device(batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss, logit_scale = _forward_backward(net, loss_fn, batch, config.micro_batches, autocast, world_size)
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            if hasattr(model, "clamp_logit_scale_"):
                model.clamp_logit_scale_()  # keep the stored parameter at or below log 100, as open_clip
            last_loss = loss.item()  # also waits for the device, so the timing below is honest
            if not math.isfinite(last_loss):
                raise FloatingPointError(
                    f"{tag}: the loss is {last_loss} at step {step + 1} (epoch {epoch}); lower train.lr, "
                    "set train.grad_clip, or check the data"
                )
            computed = time.perf_counter()
            step, position = step + 1, position + 1
            epoch_loss_sum, epoch_steps = epoch_loss_sum + last_loss, epoch_steps + 1
            window_data, window_compute = window_data + fetched - started, window_compute + computed - fetched
            data_seconds, compute_seconds = data_seconds + fetched - started, compute_seconds + computed - fetched
            progress.update()
            if writes and step % config.log_every == 0:
                run_dir.log_step(
                    {
                        "run": tag,
                        "step": step,
                        "epoch": epoch,
                        "loss": last_loss,
                        "logit_scale": float(logit_scale),
                        "lr": scheduler.get_last_lr()[0],
                        "data_s": window_data,
                        "compute_s": window_compute,
                        "skipped": sum(skipped_done.values()) + sum(skipped_epoch.values()),
                    }
                )
                window_data = window_compute = 0.0
            if step == total_steps:
                continue  # the final evaluation and checkpoint follow the loop
            if evaluate is not None and config.eval_every and step % config.eval_every == 0:
                run_evaluation(final=False)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint(done=False, evaluation={})
        # The epoch read to its end (a rank's surplus included): all of its skips.
        skipped_epoch = _skips_since(getattr(stream, "skipped", {}), skips_before)
        if position != batches_per_epoch:
            logger.warning("%s: epoch %d gave %d batches, expected %d", tag, epoch, position, batches_per_epoch)
        epoch_losses.append(epoch_loss_sum / max(1, epoch_steps))
        epoch, position, epoch_loss_sum, epoch_steps = epoch + 1, 0, 0.0, 0
        skipped_done, skipped_epoch = _add_skips(skipped_done, skipped_epoch), {}
        _check_skips(tag, skipped_done, trained, config, device)
    progress.close()
    if step == 0:
        raise ValueError(
            f"stream: {tag} learned from no data (every batch was skipped; shards: {skipped_done or 'none skipped'})"
        )
    if skipped_done:
        total = sum(skipped_done.values())
        logger.warning(
            "%s: skipped %d damaged or corrupt samples of the %d read (%.3g%%, within "
            "train.max_skipped_fraction=%g): %s",
            tag,
            total,
            total + trained,
            100 * total / (total + trained),
            config.max_skipped_fraction,
            skipped_done,
        )
    evaluation = run_evaluation(final=True) if evaluate is not None else {}
    checkpoint(done=True, evaluation=evaluation)
    result = TrainResult(
        step, last_loss, epoch_losses, evaluation, data_seconds, compute_seconds, resumed_at, dict(skipped_done)
    )
    _record_skips(run_dir, tag, result.skipped)
    return result


def _record_skips(run_dir: Any, tag: str, skipped: dict[str, int]) -> None:
    """Tell the run directory what this training run skipped (for its metrics.json and report.md)."""
    if run_dir is not None and hasattr(run_dir, "record_skipped"):
        run_dir.record_skipped(tag, skipped)


def train(
    model: nn.Module,
    loss_fn: nn.Module,
    stream: Any,
    config: TrainConfig,
    run_dir: Any = None,
    *,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    tag: str = "train",
) -> TrainResult:
    """Train ``model`` in place by minimising ``loss_fn`` on the batches of ``stream``.

    Each step minimises the empirical loss of one batch (e.g. the CLIP loss (7) or the
    conditional loss (12) of Baptista et al. (2025) with the batch as the empirical measure).

    Args:
        model: maps ``(batch["u"], batch["v"])`` to an output with ``z_u (b, n_e)``,
            ``z_v (b, n_e)``, ``logit_scale`` (scalar) and ``logit_bias`` (scalar or None),
            e.g. :class:`clipmath.multimodal.model.BimodalModel`.
        loss_fn: a registered loss (``clipmath.multimodal.losses.build``), called as
            ``loss_fn(z_u (B, n_e), z_v (B, n_e), logit_scale=..., logit_bias=..., **fields)``
            with the batch fields named in its ``reads`` (gathered like the embeddings); ``B``
            is the global batch.
        stream: batch source (see the module docstring); under torchrun, built for this rank.
        config: optimizer, schedule, device and intervals.
        run_dir: a :class:`clipmath.experiments.rundir.RunDir` (records go to its
            ``metrics.jsonl``, checkpoints to ``checkpoints/<tag>.pt``; ``run_dir.resuming``
            continues from the checkpoint), or None to train without files.
        evaluate: called as ``evaluate(model)`` (the unwrapped model, in eval mode, without
            gradients) every ``config.eval_every`` steps and at the end; returns named floats.
        tag: names this training run inside the run directory (one experiment may train many).

    Returns:
        The run's :class:`TrainResult`.

    Raises:
        ValueError: for a stream without batches, a run that learned from no data (every batch
            skipped), a run whose stream skipped more than ``config.max_skipped_fraction`` of its
            samples as damaged (naming the shards; checked after every epoch), a batch that lacks
            a field the loss reads, or a checkpoint that does not fit.
        FloatingPointError: when a step's loss is NaN or infinite (never trained on silently).
    """
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _train(model, loss_fn, stream, config, run_dir, evaluate, tag)
    finally:
        torch.set_num_threads(threads)
