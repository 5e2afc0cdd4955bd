r"""``ocean``: Lagrangian data assimilation, Section 6.3 of Baptista, Stuart & Tran (2025), Figs. 13-15.

Data (``data.source``):

- ``synthetic`` (the paper's): u = the K = 49 complex Fourier coefficients :math:`\psi_k` of a
  random time-dependent incompressible flow on the periodic unit square, eqs. (58)-(59), as a
  vector of R^98 (real parts, then imaginary parts); v = the RK4 track of a drifter released at
  (0.75, 0.75), J points to T = 0.1 (:mod:`clipmath.datasets.ocean`; the laws are documented
  there). The first ``n_train`` flows train, the next ``n_test`` are held out.
- ``med``: the real Mediterranean of April-June 2005 (:mod:`clipmath.datasets.ocean.real_sea`):
  u = 98 whitened EOF coefficients of the sea-surface height around a release over T days,
  v = the drifter advected through the geostrophic current of those maps; drifters that beach
  are kept, flagged (a ``beached`` field in the shards) and counted. Test releases start on days
  after the training ones.

Model: :math:`g_u` the fixed identity embedding of u (the paper's non-learned
:math:`g_u(u) = \{\psi_k\}`; ``--set g_u.name=mlp`` learns one), :math:`g_v` the registered
``sequence_transformer`` (lift, M residual attention blocks, last-token pooling, linear projection
to n_e = 98; each point joined by its step from the previous one, ``steps``, except in the
``paper`` preset, whose tokens are the points alone), cosine similarity with a learned
temperature; the two-sided CLIP loss by default, any registered loss or metric by config
(``--set loss.name=...``).

Measured:

- over training (Fig. 14): recall@1 and @5 in both directions (u -> v: coefficients to
  trajectory, v -> u: trajectory to coefficients) on a fixed subset of the training pairs and on
  the test pairs, within disjoint pools of ``eval.pool_size`` = 128 candidates (the batch size of
  training; pools formed by a seeded permutation, the remainder left out) and within the whole
  set;
- Fig. 13: two flow/trajectory pairs; Fig. 15: a held-out trajectory with its true field, the
  retrieved one (Algorithm 1, k = 1) and the posterior mean;
- crossmodal generation by the empirical conditional over a coefficient bank (eq. 28),
  :math:`\nu^N_{u|v} = \sum_i w_i(v)\delta_{u^i}`: for ``generation.queries`` test trajectories,
  over the test bank (which holds the truth) and over the training bank (which does not): the
  effective sample size :math:`1/\sum_i w_i^2`, the largest weight, and the relative L2 error of
  the posterior-mean field :math:`\sum_i w_i \psi^{(i)}` and of the retrieval mode (Theorem 4.2)
  against the true field (the streamfunction at t = 0 on a grid, or the first day's SSH patch).
  Both fields are linear in u, so the posterior-mean field is the field of the posterior-mean
  coefficients.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clipmath.datasets.ocean import (
    DrifterConfig,
    FlowConfig,
    Flows,
    OceanConfig,
    RealSeaConfig,
    ocean_samples,
    sea_pairs,
    simulate_ocean,
)
from clipmath.experiments.registry import Experiment, Headline
from clipmath.experiments.rundir import markdown_table
from clipmath.experiments.toolkit import (
    EncoderConfig,
    LossConfig,
    StreamConfig,
    cached_shards,
    is_main_process,
    shard_stream,
    shards_folder,
)
from clipmath.multimodal import encoders, losses, similarity
from clipmath.multimodal.inference import conditional_weights, recall_at_k, retrieve
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.seeding import seed_everything
from clipmath.multimodal.trainer import TrainConfig, train

logger = logging.getLogger(__name__)

SOURCES = ("synthetic", "med")
DIRECTIONS = {"u_to_v": "coefficients -> trajectory", "v_to_u": "trajectory -> coefficients"}
KS = (1, 5)
BATCH_FIELDS = {"u": "coefficients", "v": "trajectory"}


@dataclass
class DataConfig:
    """The pairs.

    Attributes:
        source: ``synthetic`` (Section 6.3's random flows) or ``med`` (the real Mediterranean).
        n_train: training pairs.
        n_test: held-out pairs.
        flow: laws of the synthetic flows.
        drifters: the synthetic drifters (release points, T, J tokens, RK4 step, noise).
        sea: the real-sea pairs (patch, T in days, J, RK4 step, EOF count, train/test days).
    """

    source: str = "synthetic"
    n_train: int = 65536
    n_test: int = 2048
    flow: FlowConfig = field(default_factory=FlowConfig)
    drifters: DrifterConfig = field(default_factory=lambda: DrifterConfig(n_points=100))
    sea: RealSeaConfig = field(default_factory=RealSeaConfig)


@dataclass
class EvalConfig:
    """Retrieval evaluation (Fig. 14).

    Attributes:
        pool_size: candidates per pool (128: the training batch).
        n_train_eval: training pairs (the first ones) on which train recall is measured.
    """

    pool_size: int = 128
    n_train_eval: int = 2048


@dataclass
class GenerationConfig:
    """Crossmodal generation by the empirical conditional (eq. 28).

    Attributes:
        queries: test trajectories conditioned on (the first ones).
        grid: points per axis of the synthetic streamfunction fields.
    """

    queries: int = 256
    grid: int = 32


def _default_train() -> TrainConfig:
    return TrainConfig(
        epochs=8,
        lr=1e-3,
        schedule="cosine",
        warmup_steps=100,
        log_every=20,
        eval_every=128,
        checkpoint_every=500,
        threads=1,
    )


@dataclass
class OceanExperimentConfig:
    """Config of ``ocean``; the defaults are the ``quick`` preset.

    Attributes:
        seed: seeds the data, the initialisation, the batch order and the evaluation pools.
        data: the pairs.
        stream: shard stream settings.
        loss: the loss (two-sided CLIP, cosine, by default).
        g_u: encoder of u (``n_in`` = dim u, and ``n_e`` unless fixed, are filled in).
        g_v: encoder of the trajectory (``d_in`` = 2 per release, ``n_e`` and ``max_len`` = J filled in).
        n_e: embedding dimension of a learned g_u (a fixed g_u has n_e = dim u = 98).
        tau: initial temperature.
        learn_tau: learn the temperature.
        batch_size: global batch size B.
        eval: retrieval evaluation.
        generation: crossmodal generation.
        train: optimizer and schedule (its ``seed`` is replaced by ``seed``).
    """

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    g_u: EncoderConfig = field(default_factory=lambda: EncoderConfig("fixed", {"kind": "identity"}))
    g_v: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(
            "sequence_transformer", {"d_model": 64, "n_blocks": 4, "n_heads": 4, "steps": True}
        )
    )
    n_e: int = 98
    tau: float = 0.07
    learn_tau: bool = True
    batch_size: int = 128
    eval: EvalConfig = field(default_factory=EvalConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: TrainConfig = field(default_factory=_default_train)

    def __post_init__(self) -> None:
        _check(self)  # at load time, before anything is written


def _check(config: OceanExperimentConfig) -> None:
    data = config.data
    if data.source not in SOURCES:
        raise ValueError(f"data.source={data.source!r}: expected one of {', '.join(SOURCES)}")
    if config.loss.name not in losses.names():
        raise ValueError(f"loss.name={config.loss.name!r} unknown; expected one of {', '.join(losses.names())}")
    if config.loss.metric not in similarity.names():
        raise ValueError(f"loss.metric={config.loss.metric!r}: expected one of {', '.join(similarity.names())}")
    for name, encoder in (("g_u", config.g_u), ("g_v", config.g_v)):
        if encoder.name not in encoders.names():
            raise ValueError(f"{name}.name={encoder.name!r} unknown; expected one of {', '.join(encoders.names())}")
    for name in ("batch_size", "n_e"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name}={getattr(config, name)}: expected an integer >= 1")
    if data.n_train < config.batch_size:
        raise ValueError(f"data.n_train={data.n_train}: expected at least batch_size={config.batch_size}")
    if config.eval.pool_size < max(KS):
        raise ValueError(f"eval.pool_size={config.eval.pool_size}: expected at least {max(KS)} (recall@{max(KS)})")
    if data.n_test < config.eval.pool_size:
        raise ValueError(f"data.n_test={data.n_test}: expected at least eval.pool_size={config.eval.pool_size}")
    if not config.eval.pool_size <= config.eval.n_train_eval <= data.n_train:
        raise ValueError(
            f"eval.n_train_eval={config.eval.n_train_eval}: expected between eval.pool_size="
            f"{config.eval.pool_size} and data.n_train={data.n_train}"
        )
    if not 1 <= config.generation.queries <= data.n_test:
        raise ValueError(f"generation.queries={config.generation.queries}: expected 1..data.n_test={data.n_test}")
    if config.generation.grid < 2:
        raise ValueError(f"generation.grid={config.generation.grid}: expected an integer >= 2")
    if data.source == "med" and data.n_train < data.sea.n_modes:
        raise ValueError(f"data.n_train={data.n_train}: expected at least data.sea.n_modes={data.sea.n_modes} (EOFs)")


# --- data -----------------------------------------------------------------------------------


@dataclass
class Pairs:
    """Both splits in memory, the shard samples of the training split, and the fields of u.

    Attributes:
        u_train, u_test: (n, dim u) float32 coefficients.
        v_train, v_test: (n, J, d) float32 trajectories.
        field: maps (n, dim u) coefficients to (n, G, G) fields (the synthetic streamfunction at
            t = 0, or the first day's SSH patch), linear in u.
        samples: yields the training split's shard samples.
        source: JSON description of the data (shard cache key).
        facts: what the report says about the data (sizes, step check, wall time, beaching).
        extras: per-split arrays for figures (e.g. ``release_test``).
    """

    u_train: np.ndarray
    u_test: np.ndarray
    v_train: np.ndarray
    v_test: np.ndarray
    field: Callable[[np.ndarray], np.ndarray]
    samples: Callable[[], Any]
    source: dict
    facts: dict
    extras: dict


def _synthetic(config: OceanExperimentConfig) -> Pairs:
    data = config.data
    n = data.n_train + data.n_test
    ocean = OceanConfig(
        flow=data.flow, drifters=data.drifters, n_samples=n, seed=config.seed, check_samples=min(256, n)
    )
    started = time.perf_counter()
    ds = simulate_ocean(ocean, progress=False)
    seconds = time.perf_counter() - started
    u = ds["coefficients"].values.reshape(n, -1).astype(np.float32)
    tracks = ds["trajectories"].values  # (n, R, J, 2)
    v = np.ascontiguousarray(tracks.transpose(0, 2, 1, 3).reshape(n, tracks.shape[2], -1))
    k = data.flow.n_modes

    def streamfunction(coefficients: np.ndarray) -> np.ndarray:
        c = np.asarray(coefficients, np.float64)
        flows = Flows(c[:, :k] + 1j * c[:, k:], np.zeros((len(c), k)))
        return flows.on_grid(config.generation.grid, 0.0)[1]

    displacement = np.hypot(*(tracks[:, 0, -1] - np.array(data.drifters.release_points[0])).T)
    facts = {
        "simulation_seconds": seconds,
        "step_check_dt": ds.attrs["step_check_dt"],
        "step_check_max_deviation": ds.attrs.get("step_check_max_deviation"),
        "median_end_displacement": float(np.median(displacement)),
    }
    source = {"name": "ocean", "config": ocean.to_dict(), "split": "train", "n": data.n_train}
    return Pairs(
        u[: data.n_train],
        u[data.n_train :],
        v[: data.n_train],
        v[data.n_train :],
        streamfunction,
        lambda: ocean_samples(ds, range(data.n_train)),
        source,
        facts,
        {},
    )


def _med(config: OceanExperimentConfig) -> Pairs:
    data = config.data
    started = time.perf_counter()
    train_pairs, test_pairs, basis = sea_pairs(data.sea, data.n_train, data.n_test, config.seed)
    seconds = time.perf_counter() - started
    shape = train_pairs.patches.shape[1:]

    def first_day(coefficients: np.ndarray) -> np.ndarray:
        return basis.reconstruct(coefficients).reshape((-1,) + shape)[:, 0]

    facts = {
        "simulation_seconds": seconds,
        "eof_explained_variance": basis.explained,
        "beached_train": int(train_pairs.beached.sum()),
        "beached_test": int(test_pairs.beached.sum()),
        "median_end_displacement_deg": float(np.median(np.hypot(*test_pairs.trajectories[:, -1].T))),
    }
    source = {
        "name": "ocean-med",
        "sea": dataclasses.asdict(data.sea),
        "n_train": data.n_train,
        "n_test": data.n_test,
        "seed": config.seed,
        "split": "train",
    }
    extras = {"release_test": test_pairs.release, "patch_half_deg": (data.sea.patch // 2) / 8.0}
    return Pairs(
        train_pairs.coefficients,
        test_pairs.coefficients,
        train_pairs.trajectories,
        test_pairs.trajectories,
        first_day,
        train_pairs.samples,
        source,
        facts,
        extras,
    )


def make_pairs(config: OceanExperimentConfig) -> Pairs:
    """The pairs of ``config.data.source``."""
    return _synthetic(config) if config.data.source == "synthetic" else _med(config)


# --- model and evaluation -------------------------------------------------------------------


def build_model(config: OceanExperimentConfig, dim_u: int, token_dim: int, length: int) -> BimodalModel:
    """g_u and g_v with the data's dimensions filled in (module docstring), seeded."""
    seed_everything(config.seed)
    params_u = {"n_in": dim_u, **config.g_u.params}
    if config.g_u.name != "fixed":
        params_u.setdefault("n_e", config.n_e)
    g_u = encoders.build(config.g_u.name, **params_u)
    params_v = {"d_in": token_dim, "n_e": g_u.n_e, **config.g_v.params}
    if config.g_v.name == "sequence_transformer":
        params_v.setdefault("max_len", length)
    g_v = encoders.build(config.g_v.name, **params_v)
    return BimodalModel(g_u, g_v, metric=config.loss.metric, tau=config.tau, learn_tau=config.learn_tau)


@torch.no_grad()
def embed(encode: Callable, x: np.ndarray, device: torch.device, chunk: int = 512) -> torch.Tensor:
    """Embeddings of ``x`` in chunks, float64 on the CPU."""
    out = [encode(torch.from_numpy(x[i : i + chunk]).to(device)).double().cpu() for i in range(0, len(x), chunk)]
    return torch.cat(out)


def pooled_recall(z_u: torch.Tensor, z_v: torch.Tensor, pool: int, seed: int, metric: str) -> dict[str, float]:
    """Recall@1, @5 both ways, averaged over disjoint pools of ``pool`` pairs (seeded permutation)."""
    order = torch.randperm(len(z_u), generator=torch.Generator().manual_seed(seed))
    n_pools = len(z_u) // pool
    sums: dict[str, float] = {}
    for p in range(n_pools):
        chosen = order[p * pool : (p + 1) * pool]
        for key, value in recall_at_k(z_u[chosen], z_v[chosen], KS, metric).items():
            sums[key] = sums.get(key, 0.0) + value
    return {key: value / n_pools for key, value in sums.items()}


def _device(model: BimodalModel) -> torch.device:
    return next(iter(model.parameters())).device


def retrieval_figures(model: BimodalModel, pairs: Pairs, config: OceanExperimentConfig) -> dict[str, float]:
    """Every recall of Fig. 14: {split}_{pool|all}_{direction}@{k}."""
    device = _device(model)
    n = config.eval.n_train_eval
    out = {}
    for split, u, v in (("train", pairs.u_train[:n], pairs.v_train[:n]), ("test", pairs.u_test, pairs.v_test)):
        z_u, z_v = embed(model.encode_u, u, device), embed(model.encode_v, v, device)
        pool = pooled_recall(z_u, z_v, config.eval.pool_size, config.seed, config.loss.metric)
        whole = recall_at_k(z_u, z_v, KS, config.loss.metric)
        out.update({f"{split}_pool_{key}": value for key, value in pool.items()})
        out.update({f"{split}_all_{key}": value for key, value in whole.items()})
    return out


def _relative_error(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    axes = tuple(range(1, truth.ndim))
    return np.sqrt(((estimate - truth) ** 2).sum(axes) / (truth**2).sum(axes))


@torch.no_grad()
def generation_figures(model: BimodalModel, pairs: Pairs, config: OceanExperimentConfig) -> dict:
    """Eq. (28) over the test and the training coefficient banks, for the first queries (module docstring)."""
    q = config.generation.queries
    device = _device(model)
    z_v = embed(model.encode_v, pairs.v_test[:q], device)
    truth = pairs.field(pairs.u_test[:q])
    scale = float(model.clamped_logit_scale())
    out: dict[str, Any] = {}
    for bank_name, bank in (("test", pairs.u_test), ("train", pairs.u_train)):
        z_u = embed(model.encode_u, bank, device)
        weights = conditional_weights(z_v, z_u, scale, metric=config.loss.metric).numpy()
        _, mode = retrieve(z_v, z_u, 1, metric=config.loss.metric)
        mode = mode[:, 0].numpy()
        posterior_mean = pairs.field(weights @ bank.astype(np.float64))
        retrieved = pairs.field(bank[mode])
        ess = 1.0 / (weights**2).sum(axis=1)
        out[bank_name] = {
            "mean_relative_error_posterior_mean": float(_relative_error(posterior_mean, truth).mean()),
            "mean_relative_error_mode": float(_relative_error(retrieved, truth).mean()),
            "median_ess": float(np.median(ess)),
            "mean_max_weight": float(weights.max(axis=1).mean()),
            "mode_is_truth": float((mode == np.arange(q)).mean()) if bank_name == "test" else None,
        }
        if bank_name == "test":
            out["figure"] = {
                "weights": weights[0],
                "mode": int(mode[0]),
                "truth": truth[0],
                "retrieved": retrieved[0],
                "posterior_mean": posterior_mean[0],
            }
    prior_mean = pairs.field(pairs.u_train.astype(np.float64).mean(axis=0, keepdims=True))
    out["reference_prior_mean_error"] = float(_relative_error(prior_mean, truth).mean())
    return out


def _history(run_dir: Any, tag: str) -> list[dict]:
    """The evaluation records of training run ``tag`` in metrics.jsonl (robust across resumes)."""
    path = run_dir.file("metrics.jsonl")
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r for r in records if r.get("run") == tag and "final" in r}
    return [by_step[s] for s in sorted(by_step)]


# --- run ------------------------------------------------------------------------------------


def run(config: OceanExperimentConfig, run_dir: Any) -> Headline:
    """Simulate (or read) the pairs, train, evaluate retrieval and generation, write the report."""
    pairs = make_pairs(config)
    logger.info(
        "ocean: %d train / %d test pairs (%s) in %.1f s",
        len(pairs.u_train),
        len(pairs.u_test),
        config.data.source,
        pairs.facts["simulation_seconds"],
    )
    description = pairs.source
    folder = shards_folder(run_dir, config.stream, description, f"{description['name']}-N{len(pairs.u_train)}")
    cached_shards(folder, description, pairs.samples, math.ceil(len(pairs.u_train) / config.stream.n_shards))
    stream = shard_stream(folder, config.batch_size, config.stream, config.seed, fields=BATCH_FIELDS)
    model = build_model(config, pairs.u_train.shape[1], pairs.v_train.shape[2], pairs.v_train.shape[1])
    tag = "ocean"
    train_config = dataclasses.replace(config.train, seed=config.seed)
    result = train(
        model,
        config.loss.build(),
        stream,
        train_config,
        run_dir,
        evaluate=lambda m: retrieval_figures(m, pairs, config),
        tag=tag,
    )
    final = result.evaluation
    model.eval()
    generation = generation_figures(model, pairs, config)
    figure = generation.pop("figure")
    history = _history(run_dir, tag) if is_main_process() else []
    metrics = {
        "data": {
            "source": config.data.source,
            "n_train": len(pairs.u_train),
            "n_test": len(pairs.u_test),
            "tokens": pairs.v_train.shape[1],
            **pairs.facts,
        },
        "steps": result.steps,
        "final_epoch_loss": result.epoch_losses[-1],
        "logit_scale": float(model.clamped_logit_scale().detach()),
        "recall": final,
        "generation": generation,
        "train_seconds": result.data_seconds + result.compute_seconds,
    }
    if is_main_process():
        run_dir.write_metrics(metrics)
        _fig13(run_dir, pairs, config)
        _fig14(run_dir, history, config)
        _fig15(run_dir, pairs, figure, config)
        run_dir.write_text("report.md", _report(config, metrics))
    pool = config.eval.pool_size
    target = config.data.source == "synthetic" and pool == 128  # the quick-preset goal
    rows = [
        (
            f"test R@5 {DIRECTIONS['u_to_v']} ({pool}-candidate pools)",
            final["test_pool_u_to_v@5"],
            0.9 if target else "",
            "issue 9 target (quick)" if target else "",
        )
    ]
    for d, name in DIRECTIONS.items():
        for k in KS:
            rows.append(
                (
                    f"test R@{k} {name}: {pool} pool / all {len(pairs.u_test)}",
                    final[f"test_pool_{d}@{k}"],
                    final[f"test_all_{d}@{k}"],
                    "whole test set",
                )
            )
    rows.append(
        (
            "generation (eq. 28): rel. error of posterior mean / mode, test bank",
            generation["test"]["mean_relative_error_posterior_mean"],
            generation["test"]["mean_relative_error_mode"],
            "mode",
        )
    )
    if "beached_test" in pairs.facts:
        rows.append(
            ("beached drifters (train, test)", pairs.facts["beached_train"], pairs.facts["beached_test"], "test")
        )
    return Headline(rows)


# --- figures and report ---------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show_pair(
    ax,
    field2d: np.ndarray,
    track: np.ndarray,
    config: OceanExperimentConfig,
    extras: dict,
    i: int,
    limit: float | None = None,
):
    """One field with its trajectory: the unit square (synthetic) or the SSH patch (med).

    Colours span [-limit, limit] (default: the field's own largest magnitude).
    """
    limit = float(np.abs(field2d).max()) if limit is None else limit
    colours = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
    if config.data.source == "synthetic":
        ax.imshow(field2d.T, origin="lower", extent=(0, 1, 0, 1), **colours)
        wrapped = np.mod(track[:, :2], 1.0)
        ax.scatter(wrapped[:, 0], wrapped[:, 1], c=np.arange(len(track)), s=3, cmap="viridis")
        ax.plot(*config.data.drifters.release_points[0], "k*", ms=8)
    else:
        half = extras["patch_half_deg"]
        width = half * math.cos(math.radians(extras["release_test"][i, 1]))
        ax.imshow(field2d, origin="lower", extent=(-width, width, -half, half), aspect="auto", **colours)
        ax.plot(track[:, 0], track[:, 1], "k-", lw=1.2)
        ax.plot(0, 0, "k*", ms=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _fig13(run_dir: Any, pairs: Pairs, config: OceanExperimentConfig) -> None:
    plt = _plt()
    fields = pairs.field(pairs.u_test[:2])
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    for i, ax in enumerate(axes):
        _show_pair(ax, fields[i], pairs.v_test[i], config, pairs.extras, i)
        ax.set_title(f"test pair {i}", fontsize=10)
    label = (
        "streamfunction at t = 0 and drifter track"
        if config.data.source == "synthetic"
        else "SSH anomaly (first day) and drifter track"
    )
    fig.suptitle(f"Fig. 13: {label}")
    run_dir.save_figure(fig, "fig13_pairs")


def _fig14(run_dir: Any, history: list[dict], config: OceanExperimentConfig) -> None:
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), sharex=True, sharey=True)
    steps = [r["step"] for r in history]
    for row, (d, name) in enumerate(DIRECTIONS.items()):
        for col, k in enumerate(KS):
            ax = axes[row, col]
            for split, style in (("train", "-"), ("test", "--")):
                for pool, colour in (("pool", "C0"), ("all", "C1")):
                    key = f"{split}_{pool}_{d}@{k}"
                    label = f"{split}, {config.eval.pool_size} pool" if pool == "pool" else f"{split}, whole set"
                    ax.plot(steps, [r.get(key, math.nan) for r in history], style, color=colour, label=label)
            ax.set_title(f"R@{k}: {name}", fontsize=10)
            ax.set_ylim(0, 1.02)
            if row == 1:
                ax.set_xlabel("iteration")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Fig. 14: retrieval accuracy over training")
    run_dir.save_figure(fig, "fig14_recall")


def _fig15(run_dir: Any, pairs: Pairs, figure: dict, config: OceanExperimentConfig) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    track = pairs.v_test[0]
    panels = [
        ("truth", figure["truth"]),
        (f"retrieved (mode, #{figure['mode']})", figure["retrieved"]),
        ("posterior mean (eq. 28)", figure["posterior_mean"]),
    ]
    limit = float(np.abs(figure["truth"]).max())  # one colour scale: the mean's smaller amplitude shows
    for ax, (title, f2d) in zip(axes[:3], panels, strict=True):
        _show_pair(ax, f2d, track, config, pairs.extras, 0, limit)
        ax.set_title(title, fontsize=10)
    weights = np.sort(figure["weights"])[::-1][:20]
    axes[3].bar(range(len(weights)), weights)
    axes[3].set_title("largest 20 weights w_i of eq. (28)", fontsize=10)
    fig.suptitle("Fig. 15: a held-out trajectory, its true field, the retrieved one and the posterior mean")
    run_dir.save_figure(fig, "fig15_retrieval")


def _report(config: OceanExperimentConfig, m: dict) -> str:
    data, r, g = m["data"], m["recall"], m["generation"]
    pool = config.eval.pool_size
    if data["source"] == "synthetic":
        about = (
            f"Synthetic flows (Section 6.3): K = {config.data.flow.n_modes} modes, {data['tokens']} recorded "
            f"points to T = {config.data.drifters.t_final}, RK4 dt = {config.data.drifters.dt} (step check: "
            f"{data['step_check_max_deviation']:.2g} against dt = {data['step_check_dt']:g}); simulated in "
            f"{data['simulation_seconds']:.1f} s; median end displacement {data['median_end_displacement']:.3f}."
        )
    else:
        sea = config.data.sea
        about = (
            f"The real Mediterranean ({sea.file}): u = {sea.n_modes} whitened EOFs "
            f"(explaining {100 * data['eof_explained_variance']:.1f} % of the training variance) of the "
            f"{sea.patch}x{sea.patch} SSH patch over days d..d+{int(sea.t_final)}; v = {data['tokens']} points "
            f"of a {sea.t_final:g}-day geostrophic drift (RK4, dt = {sea.dt:.4g} day); training releases start "
            f"before day {sea.train_days - int(sea.t_final)}, test ones on day {sea.train_days} or later. "
            f"Beached drifters (kept, flagged): {data['beached_train']} of {data['n_train']} training, "
            f"{data['beached_test']} of {data['n_test']} test. Median end displacement "
            f"{data['median_end_displacement_deg']:.3f} degrees. Built in {data['simulation_seconds']:.1f} s."
        )
    rows = []
    for split in ("train", "test"):
        for d, name in DIRECTIONS.items():
            rows.append([split, name] + [r[f"{split}_{p}_{d}@{k}"] for p in ("pool", "all") for k in KS])
    n_train_eval = min(config.eval.n_train_eval, data["n_train"])
    gen_rows = [
        [
            bank,
            v["mean_relative_error_posterior_mean"],
            v["mean_relative_error_mode"],
            v["median_ess"],
            v["mean_max_weight"],
            v["mode_is_truth"] if v["mode_is_truth"] is not None else "n/a",
        ]
        for bank, v in g.items()
        if isinstance(v, dict)
    ]
    lines = [
        "# ocean: Lagrangian data assimilation (Section 6.3 of Baptista, Stuart & Tran (2025))\n",
        about + "\n",
        f"Model: g_u = {config.g_u.name} {config.g_u.params}, g_v = {config.g_v.name} {config.g_v.params}; loss "
        f"{config.loss.name} ({config.loss.metric}), τ from {config.tau} to {math.exp(-m['logit_scale']):.4f}; "
        f"batch {config.batch_size}, {config.train.optimizer} lr {config.train.lr} ({config.train.schedule}), "
        f"{config.train.epochs} epochs = {m['steps']} steps in {m['train_seconds']:.0f} s.\n",
        f"## Retrieval (Fig. 14), final\n\nTrain recall on the first {n_train_eval} training pairs, test recall on "
        f"all {data['n_test']}; '{pool} pool' averages over disjoint pools of {pool} candidates, 'all' ranks "
        "among the whole set.\n",
        markdown_table(["split", "direction", f"R@1 ({pool})", f"R@5 ({pool})", "R@1 (all)", "R@5 (all)"], rows),
        f"\nChance: R@1 = 1/{pool} and R@5 = 5/{pool} in a pool.\n",
        f"## Crossmodal generation (eq. 28)\n\nFor the first {config.generation.queries} test trajectories: the "
        "relative L2 error of the posterior-mean field and of the retrieval mode against the true field, the "
        "median effective sample size 1/Σw², the mean largest weight, and (test bank) how often the mode is the "
        f"true flow. The training mean as the estimate has error {g['reference_prior_mean_error']:.3f}.\n",
        markdown_table(
            ["bank", "posterior-mean error", "mode error", "median ESS", "mean max weight", "mode = truth"], gen_rows
        ),
        "\n![Fig. 13](fig13_pairs.png)\n",
        "![Fig. 14](fig14_recall.png)\n",
        "![Fig. 15](fig15_retrieval.png)\n",
    ]
    return "\n".join(lines)


EXPERIMENT = Experiment(
    name="ocean",
    summary="flow coefficients vs drifter tracks (Section 6.3), synthetic or the real Mediterranean: "
    "retrieval both ways (Fig. 14), generation by eq. (28)",
    config_type=OceanExperimentConfig,
    run=run,
)
