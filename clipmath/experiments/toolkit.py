"""What every training experiment shares: stream, loss and model configs, shard caches, ranks.

Experiments import this module and never each other. It holds

- :class:`StreamConfig` and :func:`shard_stream`: where batches come from (shards streamed by
  :class:`~clipmath.datasets.ShardStream`, split over the torchrun ranks);
- :func:`cached_shards` and :func:`shards_folder`: shard sets written once into a cache folder
  named by a digest of their source, refused when a folder holds other data;
- :class:`LossConfig`: the loss as data (name, metric, hyperparameters), so that
  ``--set loss.name=gca_uot --set loss.metric=neg_sq_l2`` works in every experiment;
- :class:`EncoderConfig`: an encoder of :mod:`clipmath.multimodal.encoders` as data;
- :func:`is_main_process`, :func:`barrier`: rank 0 writes, the others wait;
- the Gaussian experiments' pieces: :func:`pair_stream` (pairs of a sampler, in memory or
  sharded), :func:`linear_model`, :func:`linear_weights`, :func:`log_log_slope`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from clipmath.datasets import ShardStream, gaussian_samples, read_manifest, write_shards
from clipmath.multimodal import encoders, losses
from clipmath.multimodal.distributed import world_info
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.seeding import seed_everything
from clipmath.multimodal.trainer import TensorStream


@dataclass
class StreamConfig:
    """Where batches come from.

    Attributes:
        kind: ``shards`` (the default: written once, then streamed by :class:`ShardStream`,
            the path every experiment with real encoders takes) or ``memory`` (the Gaussian
            experiments only: the same float32 samples served by
            :class:`~clipmath.multimodal.trainer.TensorStream`; under torchrun its ranks split
            each global batch exactly, so a distributed run repeats the one-process run, which
            sharded streams, giving each rank its own shards, do not).
        shards_dir: folder that caches shard sets between runs; None writes them into the run
            directory.
        n_shards: shards per sample set (at least the number of torchrun ranks).
        num_workers: DataLoader workers of the shard stream (1 by default: on 2 cores one reads
            while the trainer computes; a second worker competes with the trainer for a core).
        shuffle_buffer: samples in each worker's shuffle buffer.
    """

    kind: Literal["shards", "memory"] = "shards"
    shards_dir: str | None = None
    n_shards: int = 4
    num_workers: int = 1
    shuffle_buffer: int = 1000

    def __post_init__(self) -> None:
        for name in ("n_shards", "num_workers", "shuffle_buffer"):
            minimum = 1 if name == "n_shards" else 0
            if getattr(self, name) < minimum:
                raise ValueError(f"stream.{name}={getattr(self, name)!r}: expected an integer >= {minimum}")


@dataclass
class LossConfig:
    """A registered loss as data: ``losses.build(name, metric=metric, **params)``.

    Attributes:
        name: one of :func:`clipmath.multimodal.losses.names`.
        metric: alignment metric of the loss (and of the model), ``cosine``, ``inner`` or ``neg_sq_l2``.
        params: the loss's own hyperparameters, e.g. ``{"direction": "v_given_u"}`` or
            ``{"n_iter": 10, "target": "class"}``.
    """

    name: str = "clip"
    metric: str = "cosine"
    params: dict = field(default_factory=dict)

    def build(self) -> nn.Module:
        """The loss module.

        Raises:
            ValueError: for an unknown name or metric, or a hyperparameter the loss does not take.
        """
        return losses.build(self.name, metric=self.metric, **self.params)


@dataclass
class EncoderConfig:
    """An encoder of :mod:`clipmath.multimodal.encoders` as data: ``encoders.build(name, **params)``.

    Attributes:
        name: one of :func:`clipmath.multimodal.encoders.names`.
        params: its constructor arguments, e.g. ``{"n_e": 10}``.
    """

    name: str = "linear"
    params: dict = field(default_factory=dict)

    def build(self) -> nn.Module:
        """The encoder module.

        Raises:
            ValueError: for an unknown name or a bad parameter.
        """
        return encoders.build(self.name, **self.params)


def is_main_process() -> bool:
    """True on rank 0 (or without torch.distributed): the process that writes files."""
    return world_info()[0] == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if world_info()[1] > 1:
        torch.distributed.barrier()


def shards_folder(run_dir: Any, config: StreamConfig, source: dict, name: str) -> Path:
    """Where the shard set described by ``source`` lives.

    Under ``config.shards_dir`` (a cache shared by runs) or the run directory; the folder name
    is ``name`` plus a digest of the source description, so different data never share a folder.

    Args:
        run_dir: the run directory (used when ``config.shards_dir`` is None).
        config: the stream config.
        source: JSON description of the data (law or files, sizes, seeds).
        name: readable prefix of the folder name.
    """
    root = Path(config.shards_dir) if config.shards_dir is not None else run_dir.file("shards")
    digest = hashlib.sha1(json.dumps(source, sort_keys=True).encode()).hexdigest()[:8]
    return root / f"{name}-{digest}"


def cached_shards(folder: Path, source: dict, samples: Callable[[], Iterable[dict]], max_count: int) -> Path:
    """The shards of ``samples()`` in ``folder``, written by rank 0 only if not there yet.

    A folder without ``manifest.json`` holds an interrupted write and is rewritten; a manifest
    recording another source is refused rather than silently reused.

    Args:
        folder: the shard directory.
        source: JSON description of the samples, stored in (and checked against) the manifest.
        samples: called once, on rank 0, when the shards must be written; yields shard samples
            (see :func:`clipmath.datasets.write_shards`).
        max_count: samples per shard.

    Raises:
        ValueError: if ``folder`` holds shards of different data.
    """
    if is_main_process():
        if (folder / "manifest.json").exists():
            found = read_manifest(folder).source
            if found != source:
                raise ValueError(f"shards in {str(folder)!r} hold {found}, expected {source}; use another shards_dir")
        else:
            if folder.exists():
                shutil.rmtree(folder)
            write_shards(samples(), folder, max_count=max_count, source=source)
    barrier()
    return folder


def shard_stream(
    folder: Path,
    batch_size: int,
    config: StreamConfig,
    seed: int,
    *,
    fields: tuple[str, ...] | dict[str, str] = ("u", "v"),
    transform: Callable | None = None,
) -> ShardStream:
    """This rank's :class:`ShardStream` of ``folder`` for the global batch size ``batch_size``.

    Args:
        folder: a shard directory.
        batch_size: global batch size B, a multiple of the world size.
        config: workers and shuffle buffer.
        seed: shuffle (and transform) seed.
        fields: the stored fields to read, or ``{batch name: stored field}``.
        transform: per-sample transform run in the workers (see :class:`ShardStream`).

    Raises:
        ValueError: if ``batch_size`` is not a multiple of the world size.
    """
    rank, world_size = world_info()
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size}: expected a multiple of the world size {world_size}")
    return ShardStream(
        folder,
        batch_size=batch_size // world_size,
        seed=seed,
        shuffle_buffer=config.shuffle_buffer,
        num_workers=config.num_workers,
        rank=rank,
        world_size=world_size,
        fields=fields,
        transform=transform,
    )


def pair_stream(
    sampler: Any, n: int, seed: int, batch_size: int, config: StreamConfig, run_dir: Any, source: dict
) -> ShardStream | TensorStream:
    """A batch source of the first ``n`` pairs ``sampler.sample(n, seed)``, split over the ranks.

    With ``config.kind == "shards"`` the pairs are written once into the shard cache
    (:func:`cached_shards`) and streamed; with ``memory`` they are served as float32 tensors,
    the numbers the shards store.

    Args:
        sampler: the data law, ``.sample(n, seed) -> (u (n, n_u), v (n, n_v))``.
        n: number of pairs.
        seed: sampling and shuffling seed.
        batch_size: global batch size B (a multiple of the world size).
        config: shards or memory, workers, buffer.
        run_dir: the run directory (holds the shards without ``config.shards_dir``).
        source: JSON description of the sampler, with a ``name``.
    """
    rank, world_size = world_info()
    if config.kind == "memory":
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size}: expected a multiple of the world size {world_size}")
        u, v = (torch.from_numpy(np.asarray(x, dtype=np.float32)) for x in sampler.sample(n, seed))
        return TensorStream(u, v, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size)
    description = {"sampler": source, "n": n, "seed": seed}
    folder = shards_folder(run_dir, config, description, f"{source['name']}-seed{seed}-N{n}")
    cached_shards(folder, description, lambda: gaussian_samples(sampler, n, seed), math.ceil(n / config.n_shards))
    return shard_stream(folder, batch_size, config, seed)


def linear_model(n_u: int, n_v: int, n_e: int, metric: str, seed: int) -> BimodalModel:
    """Unnormalised linear encoders (eq. 38 of Baptista et al. (2025)) with fixed τ = 1, seeded."""
    seed_everything(seed)
    return BimodalModel(
        encoders.build("linear", n_in=n_u, n_e=n_e),
        encoders.build("linear", n_in=n_v, n_e=n_e),
        metric=metric,
        tau=1.0,
        learn_tau=False,
    )


def linear_weights(model: BimodalModel) -> tuple[np.ndarray, np.ndarray]:
    """(G (n_e, n_u), H (n_e, n_v)) of a trained linear model, float64."""
    return (model.g_u.weight.detach().double().cpu().numpy(), model.g_v.weight.detach().double().cpu().numpy())


def log_log_slope(n: list[int], err: list[float]) -> float:
    """Least-squares slope of log(err) against log(n) (nan with fewer than two positive points)."""
    pairs = [(a, b) for a, b in zip(n, err, strict=True) if b > 0 and math.isfinite(b)]
    if len(pairs) < 2:
        return math.nan
    x, y = np.log([a for a, _ in pairs]), np.log([b for _, b in pairs])
    return float(np.polyfit(x, y, 1)[0])
