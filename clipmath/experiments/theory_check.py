"""``theory-check``: every Gaussian closed form of Baptista, Stuart & Tran (2025) against numerics.

For seeded random covariances in several dimensions:

1. each closed-form optimum (Theorems 5.1, 5.3, 5.6 and (50a)/(50b)), at every rank, against the
   minimiser of the exact population loss found by BFGS over (G, H) from several random starts
   (largest relative error; the bar is 1e-6, digest §12);
2. each population loss at the optimum against the Monte-Carlo mean of the per-sample loss (the
   error beside its standard error);
3. Theorem 3.10, :math:`L_{cond}(A) \\le L_{joint}(A)`, at random A (count of violations);
4. Theorem 3.2, :math:`J_{cond}(A) - L_{cond}(A) = I(u; v)`, at the same A (largest absolute error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from clipmath.experiments.registry import Experiment, Headline
from clipmath.experiments.rundir import RunDir, markdown_table
from clipmath.theory import (
    LOSSES,
    conditional_kl_objective,
    monte_carlo_loss,
    numerical_alignment,
    optimal_alignment,
    population_loss,
    random_gaussian_pair,
)

logger = logging.getLogger(__name__)

REL_TOL = 1e-6
Z_BOUND = 4.0


@dataclass
class TheoryCheckConfig:
    """Configuration of ``theory-check`` (defaults = the ``quick`` preset).

    Attributes:
        seed: seed of the covariances, random starts, Monte-Carlo draws and random A.
        dims: the (n_u, n_v) checked.
        n_covariances: random covariances per dimension pair.
        restarts: BFGS random starts per numerical minimisation.
        gtol: BFGS tolerance on the gradient norm.
        mc_samples: pairs drawn per Monte-Carlo estimate.
        n_random_A: random A per covariance for Theorems 3.2 and 3.10.
    """

    seed: int = 0
    dims: list[tuple[int, int]] = field(default_factory=lambda: [(1, 1), (2, 2), (4, 3), (3, 5)])
    n_covariances: int = 1
    restarts: int = 3
    gtol: float = 1e-12
    mc_samples: int = 50_000
    n_random_A: int = 50


def _tilts(result) -> dict:
    return {name: getattr(result, name) for name in ("B_u", "B_v") if getattr(result, name) is not None}


def _relative_error(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.linalg.norm(x - y) / np.linalg.norm(y))


def _random_A(pair, rng: np.random.Generator) -> np.ndarray:
    """A random coupling with :math:`\\|C_{uu}^{1/2} A C_{vv}^{1/2}\\|_2` uniform on (0, 1.2): mostly
    inside the domain of L_joint, some outside (where L_joint = +inf)."""
    A = rng.standard_normal((pair.n_u, pair.n_v))
    su, sv = np.linalg.cholesky(pair.cov_uu), np.linalg.cholesky(pair.cov_vv)
    return A * rng.uniform(0.0, 1.2) / np.linalg.norm(su.T @ A @ sv, 2)


def run(config: TheoryCheckConfig, run_dir: RunDir) -> Headline:
    """Run the four checks over every configured covariance; write metrics.json and report.md."""
    for n_u, n_v in config.dims:
        if n_u < 1 or n_v < 1:
            raise ValueError(f"dims: expected positive (n_u, n_v), got {(n_u, n_v)}")
    rng = np.random.default_rng(config.seed)
    closed_rows, mc_rows, identity_rows = [], [], []
    for n_u, n_v in config.dims:
        for index in range(config.n_covariances):
            pair = random_gaussian_pair(n_u, n_v, seed=rng)
            case = {"n_u": n_u, "n_v": n_v, "covariance": index}
            logger.info("theory-check: n_u=%d n_v=%d covariance %d", n_u, n_v, index)
            for loss in LOSSES:
                for rank in range(1, min(n_u, n_v) + 1):
                    closed = optimal_alignment(pair, loss, rank, seed=rng)
                    fitted = numerical_alignment(pair, loss, rank, restarts=config.restarts, seed=rng, gtol=config.gtol)
                    errors = [_relative_error(fitted.A, closed.A)]
                    errors += [_relative_error(getattr(fitted, k), b) for k, b in _tilts(closed).items()]
                    closed_rows.append({
                        **case, "loss": loss, "rank": rank,
                        "A_relative_error": errors[0],
                        "B_relative_error": errors[1] if len(errors) > 1 else None,
                        "loss_closed_form": population_loss(pair, loss, closed.A, **_tilts(closed)),
                        "loss_numerical": population_loss(pair, loss, fitted.A, **_tilts(fitted)),
                    })
                closed = optimal_alignment(pair, loss, seed=rng)
                exact = population_loss(pair, loss, closed.A, **_tilts(closed))
                estimate, se = monte_carlo_loss(pair, loss, closed.A, **_tilts(closed), n=config.mc_samples, seed=rng)
                mc_rows.append({**case, "loss": loss, "population": exact, "monte_carlo": estimate,
                                "error": estimate - exact, "standard_error": se, "z": (estimate - exact) / se})
            violations, gaps, in_domain = 0, [], 0
            mi = pair.mutual_information()
            for _ in range(config.n_random_A):
                A = _random_A(pair, rng)
                l_cond, l_joint = population_loss(pair, "conditional", A), population_loss(pair, "joint", A)
                violations += int(l_cond > l_joint)
                in_domain += int(np.isfinite(l_joint))
                gaps.append(abs(conditional_kl_objective(pair, A) - l_cond - mi))
            identity_rows.append({**case, "n_random_A": config.n_random_A, "joint_finite": in_domain,
                                  "cond_above_joint": violations, "mutual_information": mi,
                                  "max_abs_error_J_minus_L_minus_MI": max(gaps)})

    max_rel = max(max(r["A_relative_error"], r["B_relative_error"] or 0.0) for r in closed_rows)
    max_z = max(abs(r["z"]) for r in mc_rows)
    metrics = {
        "closed_form_vs_numerical": closed_rows,
        "max_relative_error": max_rel,
        "relative_error_bound": REL_TOL,
        "closed_forms_pass": max_rel <= REL_TOL,
        "monte_carlo": mc_rows,
        "max_abs_z": max_z,
        "monte_carlo_within_4_se": sum(abs(r["z"]) <= Z_BOUND for r in mc_rows),
        "monte_carlo_checks": len(mc_rows),
        "theorem_3_10_and_3_2": identity_rows,
        "theorem_3_10_violations": sum(r["cond_above_joint"] for r in identity_rows),
        "theorem_3_2_max_abs_error": max(r["max_abs_error_J_minus_L_minus_MI"] for r in identity_rows),
    }
    run_dir.write_metrics(metrics)
    run_dir.write_text("report.md", _report(metrics, config))
    return Headline(rows=[
        ("max relative error, closed form vs numerical", max_rel, REL_TOL, "required bound (digest §12)"),
        ("max abs(MC error) / standard error", max_z, Z_BOUND, "4 standard errors"),
        ("L_cond > L_joint at random A (count)", metrics["theorem_3_10_violations"], 0, "Theorem 3.10"),
        ("max abs(J_cond - L_cond - I(u;v))", metrics["theorem_3_2_max_abs_error"], 0.0, "Theorem 3.2"),
    ])


def _report(metrics: dict, config: TheoryCheckConfig) -> str:
    closed = metrics["closed_form_vs_numerical"]
    lines = [
        "# theory-check: Gaussian closed forms of Baptista, Stuart & Tran (2025) against numerics",
        "",
        f"Random covariances C = XXᵀ/n + I/10 (seed {config.seed}), {config.n_covariances} per (n_u, n_v) in "
        f"{[tuple(d) for d in config.dims]}.",
        "",
        "## 1. Closed forms against numerical minimisation",
        "",
        "Each closed-form optimum (Theorem 5.1 `conditional`, Theorem 5.6 `joint`, Theorem 5.3 and (50a)/(50b) "
        "`quadratic_*`) at every rank against BFGS on the exact population loss over (G, H) "
        f"({config.restarts} random starts, gradient tolerance {config.gtol:g}). Relative Frobenius errors of A "
        "and of B (quadratic losses). The loss columns show the closed form is never beaten.",
        "",
        f"**Largest relative error: {metrics['max_relative_error']:.2e}; it must be <= {REL_TOL:g}: "
        f"{'PASS' if metrics['closed_forms_pass'] else 'FAIL'}.**",
        "",
        markdown_table(
            ["n_u", "n_v", "cov", "loss", "rank", "rel. err. A", "rel. err. B", "loss closed form", "loss numerical"],
            [[r["n_u"], r["n_v"], r["covariance"], r["loss"], r["rank"], f"{r['A_relative_error']:.2e}",
              "" if r["B_relative_error"] is None else f"{r['B_relative_error']:.2e}",
              f"{r['loss_closed_form']:.12g}", f"{r['loss_numerical']:.12g}"] for r in closed],
        ),
        "## 2. Population losses against Monte-Carlo",
        "",
        f"Mean of the per-sample loss over {config.mc_samples} draws (inner expectations exact by Lemma E.2) at "
        f"the full-rank optimum. {metrics['monte_carlo_within_4_se']} of {metrics['monte_carlo_checks']} within "
        f"4 standard errors; largest |error| / SE = {metrics['max_abs_z']:.2f}.",
        "",
        markdown_table(
            ["n_u", "n_v", "cov", "loss", "population", "Monte-Carlo", "error", "standard error", "error / SE"],
            [[r["n_u"], r["n_v"], r["covariance"], r["loss"], r["population"], r["monte_carlo"],
              f"{r['error']:.2e}", f"{r['standard_error']:.2e}", f"{r['z']:.2f}"] for r in metrics["monte_carlo"]],
        ),
        "## 3-4. Theorems 3.10 and 3.2 at random A",
        "",
        "Random A with ||C_uu^½ A C_vv^½||₂ uniform on (0, 1.2) (outside 1, L_joint = +inf). Theorem 3.10: "
        f"L_cond(A) <= L_joint(A); violations: {metrics['theorem_3_10_violations']}. Theorem 3.2: "
        f"J_cond(A) − L_cond(A) = I(u; v); largest absolute error {metrics['theorem_3_2_max_abs_error']:.2e} "
        "(float64 round-off).",
        "",
        markdown_table(
            ["n_u", "n_v", "cov", "random A", "L_joint finite", "L_cond > L_joint", "I(u; v)",
             "max abs(J − L − I)"],
            [[r["n_u"], r["n_v"], r["covariance"], r["n_random_A"], r["joint_finite"], r["cond_above_joint"],
              r["mutual_information"], f"{r['max_abs_error_J_minus_L_minus_MI']:.2e}"]
             for r in metrics["theorem_3_10_and_3_2"]],
        ),
    ]
    return "\n".join(lines)


EXPERIMENT = Experiment(
    name="theory-check",
    summary="every Gaussian closed form vs numerical minimisation and Monte-Carlo; Theorems 3.2, 3.10",
    config_type=TheoryCheckConfig,
    run=run,
)
