r"""``gaussian-process``: Section 6.1 of Baptista, Stuart & Tran (2025), Figs. 7-10.

Data (eqs. 56-57, :class:`clipmath.datasets.GaussianProcessSource`): a random field
:math:`w \sim \mathcal N(0, (-\Delta + \tau^2)^{-\alpha})` on (0, 1), observed as
:math:`u = (w(x_i))_{i \le n_u} + \eta` and :math:`v` = its first :math:`n_v` whitened KL
coefficients; (u, v) is Gaussian with a known joint covariance.

Model: unnormalised linear encoders :math:`g_u(u) = Gu`, :math:`g_v(v) = Hv` (eq. 38), inner-product
metric, τ = 1, trained with the two-sided conditional (CLIP) loss on streamed mini-batches. The
learned conditional expectations are those of the tilted law, eq. (41):

.. math::  \mathbb E_\nu[u \mid v] = C_{uu} A v, \qquad \mathbb E_\nu[v \mid u] = C_{vv} A^\top u, \qquad A = G^\top H,

compared with the truth (37), :math:`\mathbb E_\mu[u \mid v] = C_{uv} C_{vv}^{-1} v`, by the squared
:math:`L^2` error averaged over ``eval_draws`` draws of the conditioning variable,
:math:`\frac1M \sum_m |\mathbb E_\nu[u \mid v_m] - \mathbb E_\mu[u \mid v_m]|^2` (and the same for v|u).
Beside it stands the same error of the closed-form optimum of the same rank (Theorem 5.1,
``optimal_alignment(pair, "conditional", rank=min(n_e, n_u, n_v))``), the "floor": the rank-n_e
model the loss aims at. At full rank it is 0 (Corollary 5.2: the conditional means are exact);
below full rank the optimum minimises the loss (a weighted Frobenius distance of A), not this
error, so a trained model may land slightly on either side of it.

**Finite-batch floors** (issue 11, §3; :mod:`clipmath.theory.finite_batch`). Training minimises
the expected *batch* loss, whose normalisers are batch means including the positive, not the
population loss: at full rank (n_e >= min(n_u, n_v)) its minimiser :math:`A_B` is biased away from
Theorem 5.1's, and the error of the conditional means has a floor above 0 that falls with B.
Each full-rank setting gets two more floors, each the SAA optimum over ``batch_floor.pairs``
pairs' worth of fixed batches with its delta-method standard error:

- ``batch_floor``: batches of B fresh pairs from µ (the finite-batch bias alone);
- ``batch_n_floor``: batches drawn as training draws them, epoch permutations of the N training
  pairs (the finite-batch bias and the sampling error of N pairs together: the point a fully
  converged training run reaches);

beside ``sample_floor``, the error of the empirical optimum of Remark D.2 on the N pairs (the
sampling error alone).

Figures: Fig. 7 (samples of w|v, u|v and v|u with the exact conditional mean and 95 % band) and the
three sweeps of Figs. 8-10 (embedding dimension, batch size, sample size), with the floors.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipmath.datasets import GaussianProcessSource
from clipmath.experiments.registry import Experiment, Headline
from clipmath.experiments.rundir import markdown_table
from clipmath.experiments.toolkit import (
    LossConfig,
    StreamConfig,
    is_main_process,
    linear_model,
    linear_weights,
    pair_stream,
)
from clipmath.multimodal.trainer import TrainConfig, train
from clipmath.theory import GaussianPair, optimal_alignment
from clipmath.theory.finite_batch import batch_optimum, epoch_batches, gaussian_batches

logger = logging.getLogger(__name__)


@dataclass
class SourceConfig:
    """The field and its observations (Section 6.1; ``tau`` is the field's inverse length scale)."""

    tau: float = 3.0
    alpha: float = 2.0
    n_modes: int = 1000
    n_u: int = 12
    n_v: int = 5
    sigma: float = 0.05


@dataclass
class SweepConfig:
    """The three sweeps of Figs. 8-10; each holds the other two settings at their defaults.

    Attributes:
        n_e: embedding dimension of the batch-size and sample-size sweeps (paper: 5).
        batch_size: batch B of the embedding and sample-size sweeps (paper: 512).
        sample_size: N of the embedding and batch-size sweeps (paper: 10,000).
        embedding_dims: n_e values of Fig. 8.
        batch_sizes: B values of Fig. 9.
        sample_sizes: N values of Fig. 10.
    """

    n_e: int = 5
    batch_size: int = 512
    sample_size: int = 10000
    embedding_dims: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    batch_sizes: list[int] = field(default_factory=lambda: [128, 256, 512, 1024])
    sample_sizes: list[int] = field(default_factory=lambda: [2000, 10000, 50000])


@dataclass
class BatchFloorConfig:
    """The finite-batch floors of the full-rank settings (module docstring).

    Attributes:
        enabled: compute them.
        pairs: pairs per SAA, K · B (K batches of B); their Monte-Carlo error falls as pairs^{-1/2}.
    """

    enabled: bool = True
    pairs: int = 131072


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=40, lr=3e-2, schedule="cosine", checkpoint_every=200, log_every=10, threads=1)


@dataclass
class GaussianProcessConfig:
    """Config of ``gaussian-process``; the defaults are the ``quick`` preset.

    ``quick`` departs from the paper to finish in minutes on a CPU: Adam at lr 3e-2 with a cosine
    decay for 40 epochs (paper: lr 1e-4, constant, 500 epochs), which trains every batch size of
    Fig. 9 to convergence, and three sample sizes instead of six.

    Attributes:
        seed: seeds the samples, the initialisation, the batch order and the trainer.
        source: the Gaussian-process data.
        stream: where batches come from (memory or shards).
        loss: the training loss; the default, two-sided conditional with the inner metric, is the
            one whose closed-form optimum (Theorem 5.1) the errors are compared with.
        sweeps: the sweeps of Figs. 8-10.
        eval_draws: draws of the conditioning variable the squared error is averaged over.
        fig7_samples: samples drawn for each panel of Fig. 7.
        batch_floor: the finite-batch floors.
        train: optimizer and schedule (its ``seed`` is replaced by ``seed``).
    """

    seed: int = 0
    source: SourceConfig = field(default_factory=SourceConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    loss: LossConfig = field(default_factory=lambda: LossConfig("conditional", "inner", {"direction": "two_sided"}))
    sweeps: SweepConfig = field(default_factory=SweepConfig)
    eval_draws: int = 10000
    fig7_samples: int = 400
    batch_floor: BatchFloorConfig = field(default_factory=BatchFloorConfig)
    train: TrainConfig = field(default_factory=_default_train)

    def __post_init__(self) -> None:
        """Check every value when the config is loaded, before a run directory is written."""
        _check(self)


def conditional_mean_errors(pair: GaussianPair, A: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    r"""Mean squared errors of the model's conditional expectations (eq. 41 against eq. 37).

    Args:
        pair: the data law µ.
        A: (n_u, n_v) coupling :math:`G^\top H` of the model.
        u: (M, n_u) draws of u, the conditioning values of v|u.
        v: (M, n_v) draws of v, the conditioning values of u|v.

    Returns:
        :math:`\frac1M\sum_m |(C_{uu}A - C_{uv}C_{vv}^{-1}) v_m|^2` and
        :math:`\frac1M\sum_m |(C_{vv}A^\top - C_{vu}C_{uu}^{-1}) u_m|^2`.
    """
    mean_u_given_v, _ = pair.conditional("u_given_v")
    mean_v_given_u, _ = pair.conditional("v_given_u")
    gap_u = pair.cov_uu @ A - mean_u_given_v
    gap_v = pair.cov_vv @ A.T - mean_v_given_u
    return float(np.mean(np.sum((v @ gap_u.T) ** 2, axis=1))), float(np.mean(np.sum((u @ gap_v.T) ** 2, axis=1)))


def error_standard_errors(
    pair: GaussianPair, A: np.ndarray, covariance: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[tuple[float, float], tuple[float, float]]:
    r"""Delta-method standard errors and noise biases of :func:`conditional_mean_errors` at a random A.

    Each error is a quadratic form :math:`e(A) = \mathrm{vec}(D)^\top Q\, \mathrm{vec}(D)` of the
    gap D (for u|v, :math:`D = C_{uu} A - M`, :math:`Q = C_{uu}^2 \otimes \hat V`, :math:`\hat V = v^\top v / M`,
    row-major vec of A; the mirror for v|u). For A scattered with covariance Σ (of vec A) about its
    mean, the standard error is :math:`\sqrt{g^\top \Sigma g}` with g the gradient of e, and the noise
    adds :math:`\mathrm{Tr}(Q \Sigma)` to e in expectation (the bias of the plug-in error).

    Returns:
        ``((se_u_given_v, se_v_given_u), (bias_u_given_v, bias_v_given_u))``.
    """
    mean_u_given_v, _ = pair.conditional("u_given_v")
    mean_v_given_u, _ = pair.conditional("v_given_u")
    v_second, u_second = v.T @ v / len(v), u.T @ u / len(u)
    grad_u = 2.0 * pair.cov_uu @ (pair.cov_uu @ A - mean_u_given_v) @ v_second
    grad_v = (2.0 * pair.cov_vv @ (pair.cov_vv @ A.T - mean_v_given_u) @ u_second).T
    q_u = np.kron(pair.cov_uu @ pair.cov_uu, v_second)
    q_v = np.kron(u_second, pair.cov_vv @ pair.cov_vv)
    se = tuple(float(np.sqrt(g.ravel() @ covariance @ g.ravel())) for g in (grad_u, grad_v))
    return se, (float(np.sum(q_u * covariance)), float(np.sum(q_v * covariance)))


def field_given_v(src: GaussianProcessSource, x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean and standard deviation of :math:`w(x) \mid v` from the KL expansion (56).

    With :math:`w = \sum_j \sqrt{\lambda_j}\psi_j \xi_j` and :math:`v = \xi_{1:n_v}`, the first
    :math:`n_v` terms are fixed by v and the others stay independent N(0, 1):
    :math:`\mathbb E[w(x) \mid v] = \sum_{j \le n_v} \sqrt{\lambda_j}\psi_j(x) v_j` and
    :math:`\mathrm{Var}[w(x) \mid v] = \sum_{j > n_v} \lambda_j \psi_j(x)^2`.

    Args:
        src: the source.
        x: (m,) points in [0, 1].
        v: (n_v,) conditioning value.

    Returns:
        (m,) mean and (m,) standard deviation.
    """
    phi = src.modes(x)
    return phi[:, : src.n_v] @ v, np.sqrt(np.sum(phi[:, src.n_v :] ** 2, axis=1))


class _Floors:
    """The finite-batch floors of each (B, N), computed once and shared by the sweeps that repeat them."""

    def __init__(self, config: GaussianProcessConfig, u_eval: np.ndarray, v_eval: np.ndarray):
        self.config, self.u_eval, self.v_eval = config, u_eval, v_eval
        self.cache: dict[tuple, dict] = {}

    def _errors(self, pair: GaussianPair, name: str, fit) -> dict:
        err = conditional_mean_errors(pair, fit.A, self.u_eval, self.v_eval)
        se, bias = error_standard_errors(pair, fit.A, fit.covariance, self.u_eval, self.v_eval)
        return {
            f"{name}_u_given_v": err[0],
            f"{name}_u_given_v_se": se[0],
            f"{name}_u_given_v_noise": bias[0],
            f"{name}_v_given_u": err[1],
            f"{name}_v_given_u_se": se[1],
            f"{name}_v_given_u_noise": bias[1],
        }

    def get(self, pair: GaussianPair, src: GaussianProcessSource, b: int, n: int) -> dict:
        seed, batches = self.config.seed, self.config.batch_floor.pairs // b
        if ("batch", b) not in self.cache:
            logger.info("finite-batch floor B=%d (%d batches)", b, batches)
            fit = batch_optimum(pair, *gaussian_batches(pair, b, batches, [seed, 2_000_003, b]))
            self.cache["batch", b] = self._errors(pair, "batch_floor", fit)
        if ("batch_n", b, n) not in self.cache:
            logger.info("finite-batch and N floor B=%d N=%d (%d batches)", b, n, batches)
            u, v = src.sample(n, seed)  # the training pairs (toolkit.pair_stream draws the same)
            fit = batch_optimum(pair, *epoch_batches(u, v, b, batches, [seed, 3_000_017, b]))
            empirical = optimal_alignment(GaussianPair.from_samples(u, v), "conditional").A  # Remark D.2
            sample = conditional_mean_errors(pair, empirical, self.u_eval, self.v_eval)
            self.cache["batch_n", b, n] = {
                **self._errors(pair, "batch_n_floor", fit),
                "sample_floor_u_given_v": sample[0],
                "sample_floor_v_given_u": sample[1],
            }
        return {**self.cache["batch", b], **self.cache["batch_n", b, n]}


def _settings(sweeps: SweepConfig) -> dict[str, list[tuple[int, int, int]]]:
    """(n_e, B, N) of every run, per sweep; settings shared by sweeps are trained once."""
    return {
        "embedding_dim": [(n_e, sweeps.batch_size, sweeps.sample_size) for n_e in sweeps.embedding_dims],
        "batch_size": [(sweeps.n_e, b, sweeps.sample_size) for b in sweeps.batch_sizes],
        "sample_size": [(sweeps.n_e, sweeps.batch_size, n) for n in sweeps.sample_sizes],
    }


def _check(config: GaussianProcessConfig) -> None:
    if config.seed < 0:
        raise ValueError(f"seed={config.seed}: expected an integer >= 0")
    GaussianProcessSource(**dataclasses.asdict(config.source))  # checks source.*, naming the field
    config.loss.build()  # an unknown loss, metric or hyperparameter: named at load, not mid-run
    for n_e, b, n in {s for runs in _settings(config.sweeps).values() for s in runs}:
        if n_e < 1 or b < 1 or n < b:
            raise ValueError(
                f"sweeps: setting n_e={n_e}, batch_size={b}, N={n}: expected n_e >= 1 and N >= batch_size >= 1"
            )
    if config.batch_floor.pairs < 2 * max(config.sweeps.batch_sizes + [config.sweeps.batch_size]):
        raise ValueError(f"batch_floor.pairs={config.batch_floor.pairs}: expected at least two of the largest batch")
    if config.eval_draws < 1 or config.fig7_samples < 1:
        raise ValueError(f"eval_draws={config.eval_draws}, fig7_samples={config.fig7_samples}: expected integers >= 1")


def run(config: GaussianProcessConfig, run_dir: Any) -> Headline:
    """Train every setting of the three sweeps, measure the conditional-mean errors, write the report."""
    src = GaussianProcessSource(**dataclasses.asdict(config.source))
    pair = src.pair()
    k = min(pair.n_u, pair.n_v)
    # Conditioning draws from a seed no training set uses.
    u_eval, v_eval = pair.sample(config.eval_draws, config.seed + 1_000_003)
    source = {"name": "gaussian-process", **src.config()}
    train_config = dataclasses.replace(config.train, seed=config.seed)

    results: dict[tuple[int, int, int], dict] = {}
    floors = _Floors(config, u_eval, v_eval)
    for n_e, b, n in sorted(
        {s for runs in _settings(config.sweeps).values() for s in runs}, key=lambda s: (s[2], s[1], s[0])
    ):
        stream = pair_stream(src, n, config.seed, b, config.stream, run_dir, source)
        model = linear_model(pair.n_u, pair.n_v, n_e, config.loss.metric, config.seed)
        result = train(model, config.loss.build(), stream, train_config, run_dir, tag=f"ne{n_e}-B{b}-N{n}")
        G, H = linear_weights(model)
        floor_A = optimal_alignment(pair, "conditional", rank=min(n_e, k)).A
        err = conditional_mean_errors(pair, G.T @ H, u_eval, v_eval)
        floor = conditional_mean_errors(pair, floor_A, u_eval, v_eval)
        results[(n_e, b, n)] = {
            "n_e": n_e,
            "batch_size": b,
            "N": n,
            "steps": result.steps,
            "final_epoch_loss": result.epoch_losses[-1],
            "err_u_given_v": err[0],
            "err_v_given_u": err[1],
            "floor_u_given_v": floor[0],
            "floor_v_given_u": floor[1],
        }
        if config.batch_floor.enabled and n_e >= k:
            results[(n_e, b, n)].update(floors.get(pair, src, b, n))
        logger.info(
            "n_e=%d B=%d N=%d: errors u|v %.4g (floor %.4g), v|u %.4g (floor %.4g)",
            n_e,
            b,
            n,
            err[0],
            floor[0],
            err[1],
            floor[1],
        )

    sweeps = {name: [results[s] for s in runs] for name, runs in _settings(config.sweeps).items()}
    zero = conditional_mean_errors(pair, np.zeros((pair.n_u, pair.n_v)), u_eval, v_eval)
    metrics = {
        "sweeps": sweeps,
        "zero_model": {"err_u_given_v": zero[0], "err_v_given_u": zero[1]},
        "eval_draws": config.eval_draws,
        "canonical_correlations": pair.canonical_correlations(),
    }
    if is_main_process():
        run_dir.write_metrics(metrics)
        _fig7(run_dir, src, pair, config)
        for name, number, x in (("embedding_dim", 8, "n_e"), ("batch_size", 9, "batch_size"), ("sample_size", 10, "N")):
            _sweep_figure(run_dir, sweeps[name], x, f"fig{number}_{name}")
        run_dir.write_text("report.md", _report(config, pair, sweeps, zero))
    s = config.sweeps
    base = results[(s.n_e, s.batch_size, s.sample_size)]
    smallest = results[(min(s.embedding_dims), s.batch_size, s.sample_size)]
    where = f"n_e={s.n_e}, B={s.batch_size}, N={s.sample_size}"
    return Headline(
        [
            (
                f"E|E_nu[u|v] - E_mu[u|v]|^2, {where}",
                base["err_u_given_v"],
                base["floor_u_given_v"],
                "closed-form optimum, same rank",
            ),
            (
                f"E|E_nu[v|u] - E_mu[v|u]|^2, {where}",
                base["err_v_given_u"],
                base["floor_v_given_u"],
                "closed-form optimum, same rank",
            ),
            (
                f"E|E_nu[u|v] - E_mu[u|v]|^2, n_e={smallest['n_e']}",
                smallest["err_u_given_v"],
                smallest["floor_u_given_v"],
                "closed-form optimum, same rank",
            ),
            ("E|E_mu[u|v]|^2 (error of A = 0)", zero[0], "", "scale of the u|v errors"),
            *(
                (
                    f"E|E_nu[{d[0]}|{d[-1]}] - E_mu[{d[0]}|{d[-1]}]|^2, {where}",
                    base[f"err_{d}"],
                    base[f"batch_n_floor_{d}"],
                    f"finite-batch floor on the N pairs (± {base[f'batch_n_floor_{d}_se']:.2g})",
                )
                for d in ("u_given_v", "v_given_u")
                if f"batch_n_floor_{d}" in base
            ),
        ]
    )


def _fig7(run_dir: Any, src: GaussianProcessSource, pair: GaussianPair, config: GaussianProcessConfig) -> None:
    """Fig. 7: samples of w|v, u|v (one v) and v|u (one u), exact conditional mean and 95 % band (eq. 37)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(config.seed + 7)
    u0, v0 = (x[0] for x in pair.sample(1, config.seed + 7))
    x = np.linspace(0.0, 1.0, 201)
    u_s, _, w_s = src.sample_field(config.fig7_samples, config.seed + 8, x, v=v0)
    w_mean, w_sd = field_given_v(src, x, v0)
    m_uv, s_uv = pair.conditional("u_given_v")
    m_vu, s_vu = pair.conditional("v_given_u")
    v_s = rng.multivariate_normal(m_vu @ u0, s_vu, size=config.fig7_samples)
    panels = [
        ("w | v", x, w_s, w_mean, w_sd, "x"),
        ("u | v", src.x, u_s, m_uv @ v0, np.sqrt(np.diag(s_uv)), "x_i"),
        ("v | u", np.arange(1, pair.n_v + 1), v_s, m_vu @ u0, np.sqrt(np.diag(s_vu)), "KL index j"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, (title, grid, samples, mean, sd, xlabel) in zip(axes, panels, strict=False):
        style = (
            dict(color="0.6", lw=0.3, alpha=0.3)
            if title == "w | v"
            else dict(color="0.6", marker=".", ls="none", ms=2, alpha=0.3)
        )
        for sample in samples:
            ax.plot(grid, sample, **style)
        ax.plot(grid, mean, "C3-" if title == "w | v" else "C3o-", lw=1.5, label="exact conditional mean")
        ax.fill_between(grid, mean - 1.96 * sd, mean + 1.96 * sd, color="C3", alpha=0.15, label="95 % band")
        ax.set_title(f"{len(samples)} samples of {title}")
        ax.set_xlabel(xlabel)
    axes[0].legend(fontsize=8)
    run_dir.save_figure(fig, "fig7_conditionals")


def _sweep_figure(run_dir: Any, rows: list[dict], x: str, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    values = [r[x] for r in rows]
    for ax, direction in zip(axes, ("u_given_v", "v_given_u"), strict=False):
        ax.plot(values, [r[f"err_{direction}"] for r in rows], "o-", label="trained")
        ax.plot(values, [r[f"floor_{direction}"] for r in rows], "s--", label="closed-form optimum (floor)")
        for floor, style, label in (
            ("batch_floor", "^:", "finite-batch floor (B pairs from µ), ±2 SE"),
            ("batch_n_floor", "v:", "finite-batch floor on the N training pairs, ±2 SE"),
        ):
            kept = [(x_, r) for x_, r in zip(values, rows, strict=False) if f"{floor}_{direction}" in r]
            if kept:
                ax.errorbar(
                    [x_ for x_, _ in kept],
                    [r[f"{floor}_{direction}"] for _, r in kept],
                    yerr=[2 * r[f"{floor}_{direction}_se"] for _, r in kept],
                    fmt=style,
                    capsize=3,
                    label=label,
                )
        ax.set_title(f"E|E_ν[{direction[0]}|{direction[-1]}] − E_µ[{direction[0]}|{direction[-1]}]|²")
        ax.set_xlabel(x)
        ax.set_yscale("symlog", linthresh=1e-5)
        if x != "n_e":
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    run_dir.save_figure(fig, name)


def _report(config: GaussianProcessConfig, pair: GaussianPair, sweeps: dict, zero: tuple[float, float]) -> str:
    t, s = config.train, config.sweeps
    sigma = np.array2string(pair.canonical_correlations(), precision=4)
    lines = [
        "# gaussian-process: Section 6.1 (Figs. 7-10)\n",
        f"Data: GP field (tau={config.source.tau}, alpha={config.source.alpha}, {config.source.n_modes} KL modes), "
        f"u at n_u={pair.n_u} points with noise sigma={config.source.sigma}, v = first n_v={pair.n_v} whitened KL "
        f"coefficients; canonical correlations {sigma}. Batches from {config.stream.kind}.\n",
        f"Training: linear encoders, inner metric, tau = 1, two-sided conditional (CLIP) loss, {t.optimizer} "
        f"lr {t.lr} ({t.schedule}), {t.epochs} epochs (the paper: Adam lr 1e-4, 500 epochs).\n",
        f"Error: squared L2 distance between the learned conditional expectation (E_ν[u|v] = C_uu A v, "
        f"E_ν[v|u] = C_vv Aᵀ u) and the truth (eq. 37), averaged over {config.eval_draws} draws of the "
        "conditioning variable. Floor: the same error for the closed-form optimum of the same rank "
        "(Theorem 5.1), the model the loss aims at (below full rank it minimises the loss, a weighted "
        "Frobenius distance, not this error, so a trained model may land on either side of it); at rank "
        "min(n_u, n_v) it is 0 (Corollary 5.2), so what remains there is the "
        "trained model's own error: optimisation, and the bias of the batch estimator relative to the "
        f"population loss (which Fig. 9 shows falling with B). For scale, A = 0 has errors {zero[0]:.4g} (u|v) "
        f"and {zero[1]:.4g} (v|u).\n",
        "![Fig. 7](fig7_conditionals.png)\n",
    ]
    columns = [
        "n_e",
        "batch_size",
        "N",
        "steps",
        "err_u_given_v",
        "floor_u_given_v",
        "err_v_given_u",
        "floor_v_given_u",
    ]
    floor_columns = [
        f"{name}_{d}" for d in ("u_given_v", "v_given_u") for name in ("batch_floor", "batch_n_floor", "sample_floor")
    ]
    lines += _plateau_lines(config, sweeps)
    for title, name, number in (
        (f"Embedding dimension (N={s.sample_size}, B={s.batch_size})", "embedding_dim", 8),
        (f"Batch size (n_e={s.n_e}, N={s.sample_size})", "batch_size", 9),
        (f"Sample size (n_e={s.n_e}, B={s.batch_size})", "sample_size", 10),
    ):
        table = markdown_table(columns, [[r[c] for c in columns] for r in sweeps[name]])
        lines += [f"## Fig. {number}: {title}\n", table]
        full = [r for r in sweeps[name] if "batch_floor_u_given_v" in r]
        if full:
            lines += [
                "Finite-batch floors of the full-rank settings (± one delta-method standard error):\n",
                markdown_table(
                    ["n_e", "batch_size", "N", *floor_columns],
                    [[r["n_e"], r["batch_size"], r["N"], *(_with_se(r, c) for c in floor_columns)] for r in full],
                ),
            ]
        lines.append(f"![Fig. {number}](fig{number}_{name}.png)\n")
    return "\n".join(lines)


def _with_se(row: dict, key: str) -> str:
    if key + "_se" not in row:
        return f"{row[key]:.4g}"
    return f"{row[key]:.4g} ± {row[key + '_se']:.2g} (noise +{row[key + '_noise']:.2g})"


def plateau(row: dict, direction: str) -> dict:
    """The trained error of a full-rank setting against its floors: how much of it each explains.

    Returns:
        ``trained``, ``batch_floor``, ``batch_n_floor`` (with ``_se``), ``sample_floor``, the gap
        ``trained - batch_n_floor`` in standard errors of that floor (``z``), and the fractions of
        the trained error the batch floor and the batch-and-N floor account for.
    """
    trained, combined = row[f"err_{direction}"], row[f"batch_n_floor_{direction}"]
    se = row[f"batch_n_floor_{direction}_se"]
    return {
        "trained": trained,
        "batch_floor": row[f"batch_floor_{direction}"],
        "batch_floor_se": row[f"batch_floor_{direction}_se"],
        "batch_n_floor": combined,
        "batch_n_floor_se": se,
        "sample_floor": row[f"sample_floor_{direction}"],
        "z": (trained - combined) / se,
        "batch_fraction": row[f"batch_floor_{direction}"] / trained,
        "batch_n_fraction": combined / trained,
    }


def _plateau_lines(config: GaussianProcessConfig, sweeps: dict) -> list[str]:
    rows = [r for r in sweeps["embedding_dim"] if "batch_n_floor_u_given_v" in r]
    if not rows:
        return []
    lines = [
        "## The plateau at full rank and the finite-batch floors\n",
        f"SAA over {config.batch_floor.pairs} pairs' worth of fixed batches (common random numbers), minimised to a "
        "relative step 1e-8 (clipmath.theory.finite_batch); ± one delta-method standard error; `noise +x`: the "
        "SAA's own scatter raises a plotted error by x in expectation (Tr(QΣ), the errors being quadratic), "
        "so a floor is to be read as value − x ± SE. `batch floor`: "
        "batches of B fresh pairs from µ; `batch+N floor`: epoch permutations of the N training pairs (what a "
        "converged run reaches); `N floor`: the empirical optimum on the N pairs (Remark D.2). z = (trained − "
        "batch+N floor) / its standard error.\n",
    ]
    table = []
    for r in rows:
        for direction in ("u_given_v", "v_given_u"):
            p = plateau(r, direction)
            table.append(
                [
                    r["n_e"],
                    r["batch_size"],
                    r["N"],
                    direction,
                    f"{p['trained']:.4g}",
                    _with_se(r, f"batch_floor_{direction}"),
                    _with_se(r, f"batch_n_floor_{direction}"),
                    f"{p['sample_floor']:.4g}",
                    f"{p['z']:.2f}",
                    f"{p['batch_fraction']:.0%}",
                    f"{p['batch_n_fraction']:.0%}",
                ]
            )
    lines += [
        markdown_table(
            [
                "n_e",
                "B",
                "N",
                "error of",
                "trained",
                "batch floor",
                "batch+N floor",
                "N floor",
                "z",
                "batch floor / trained",
                "batch+N floor / trained",
            ],
            table,
        )
    ]
    return lines


EXPERIMENT = Experiment(
    name="gaussian-process",
    summary="Section 6.1: GP data, linear CLIP encoders; Fig. 7 and the n_e, batch and N sweeps of Figs. 8-10",
    config_type=GaussianProcessConfig,
    run=run,
)
