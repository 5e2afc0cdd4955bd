"""``clipmath run gaussian-2d`` end to end: metrics against the closed forms worked out by hand, files, errors."""

import json

import numpy as np
import pytest

from clipmath.experiments.cli import main
from clipmath.experiments.config import resolve
from clipmath.experiments.gaussian_2d import Gaussian2DConfig

FIGURES = [
    "fig1_joint_vs_product",
    "fig2_conditional",
    "fig3_quadratic_u_given_v",
    "fig4_joint",
    "fig5_model_densities",
    "fig6_sign_model",
    "fig7_quadratic_conditional",
    "fig8_quadratic_joint",
    "fig9_mmd_conditional",
    "fig10_mmd_joint",
    "fig5b_model_densities_new_losses",
]
# Section 5.4's example from Theorems 5.1, 5.3, 5.6 by hand, in exact fractions:
# (A, u|v coef, u|v var, v|u coef, v|u var, joint covariance).
TABLE = {
    "conditional": (4 / 9, 2 / 3, 1.5, 2 / 3, 1.5, [[2.7, 1.8], [1.8, 2.7]]),
    "quadratic_u_given_v": (0.8, 2 / 3, 5 / 6, 3 / 7, 15 / 28, [[7 / 6, 0.5], [0.5, 0.75]]),
    "joint": (1 / 3, 0.5, 1.5, 0.5, 1.5, [[2.0, 1.0], [1.0, 2.0]]),
}
KEYS = ("A", "u_given_v_mean", "u_given_v_var", "v_given_u_mean", "v_given_u_var", "joint_cov")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gaussian_2d") / "run"
    assert main(["run", "gaussian-2d", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_files(run_dir):
    for name in ["config.yaml", "metrics.json", "report.md"] + [f"{f}.png" for f in FIGURES]:
        assert (run_dir / name).stat().st_size > 0, name
    report = (run_dir / "report.md").read_text()
    for figure in FIGURES:
        assert f"({figure}.png)" in report
    assert "by hand" in report and "must be <= 1e-6: yes" in report


@pytest.mark.parametrize("learner", list(TABLE))
def test_learners_match_the_table_in_closed_form_and_numerically(metrics, learner):
    entry = metrics[learner]
    for key, expected in zip(KEYS, TABLE[learner], strict=False):
        np.testing.assert_allclose(entry[key], expected, rtol=1e-12, err_msg=key)
        # The numerical optimum agrees to the 1e-6 bar this package sets (theory_check.REL_TOL).
        np.testing.assert_allclose(entry[f"{key}_numerical"], expected, rtol=1e-6, err_msg=key)
        assert entry[f"{key}_relative_error"] <= 1e-6
    if learner.startswith("quadratic"):
        assert entry["B_u"] == pytest.approx(8 / 15, rel=1e-12)
        assert entry["B_u_numerical"] == pytest.approx(8 / 15, rel=1e-6)
    else:
        assert "B_u" not in entry


T = (np.sqrt(11 / 3) - 1 / 3) / (4 / 3)  # two-sided quadratic weight t(2/3), docs/theory/quadratic_conditional.md
# Beyond the paper, derived in docs/theory/ at σ = 2/3 (u and v have variance 1.5, so A = weight / 1.5):
NEW = {
    "quadratic_conditional": (T / 1.5, T / (1 + T), 1.5 / (1 + T), T / (1 + T), 1.5 / (1 + T)),
    "quadratic_joint": (2 / 3, 0.5, 0.75, 0.5, 0.75),
    "mmd_conditional": TABLE["conditional"][:5],  # Theorem 5.1 at full rank, every bandwidth
}


@pytest.mark.parametrize("learner", list(NEW))
def test_new_losses_closed_forms(metrics, learner):
    entry = metrics[learner]
    for key, expected in zip(KEYS, NEW[learner], strict=False):
        np.testing.assert_allclose(entry[key], expected, rtol=1e-12, err_msg=key)
        assert entry[f"{key}_relative_error"] <= 1e-6, key
    for name in ("B_u", "B_v"):
        if learner.startswith("quadratic"):
            assert entry[name] == pytest.approx(entry["A"], rel=1e-12)  # A = B_u = B_v in canonical weights
        else:
            assert name not in entry


def test_new_losses_model_laws(metrics):
    # Quadratic joint: KL(µ‖ν) = ½(σ − log(1 + σ)), below the inner-product joint optimum's.
    sigma = 2 / 3
    assert metrics["quadratic_joint"]["kl"] == pytest.approx(0.5 * (sigma - np.log1p(sigma)), rel=1e-12)
    assert metrics["quadratic_joint"]["kl"] < metrics["joint"]["kl"]
    np.testing.assert_allclose(metrics["quadratic_joint"]["joint_cov"], [[1.0, 0.5], [0.5, 1.0]], rtol=1e-12)
    # MMD joint: numerical, re-found from other starts; it shrinks the coupling below Theorem 5.6's.
    mmd = metrics["mmd_joint"]
    assert mmd["A_relative_error"] <= 1e-6 and 0 < mmd["A"] < metrics["joint"]["A"]
    assert mmd["u_given_v_var"] == pytest.approx(1.5, rel=1e-12)  # inner-product tilting: frozen at C_uu


def test_truth_and_sign_model(metrics):
    truth = metrics["truth"]
    np.testing.assert_allclose([truth[k] for k in KEYS[1:5]], [2 / 3, 5 / 6, 2 / 3, 5 / 6], rtol=1e-14)
    np.testing.assert_allclose(truth["joint_cov"], [[1.5, 1.0], [1.0, 1.5]], rtol=0)
    sign = metrics["sign_model"]
    assert sign["tau"] == 1.0
    assert round(sign["same_sign_probability"], 3) == 0.881
    assert metrics["max_relative_error"] <= 1e-6


def test_list_shows_both_theory_experiments(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "gaussian-2d" in out and "theory-check" in out


def test_paper_preset_resolves():
    config = resolve(Gaussian2DConfig, "gaussian-2d", "paper")
    assert config.fit.restarts == 16 and config.cov == [[1.5, 1.0], [1.0, 1.5]]


@pytest.mark.parametrize("cov,match", [("[[1.0]]", "cov="), ("[[1.0, 2.0], [2.0, 1.0]]", "cov_uv: joint covariance")])
def test_bad_covariance_is_a_clear_error(tmp_path, capsys, cov, match):
    assert main(["run", "gaussian-2d", "--set", f"cov={cov}", "--out", str(tmp_path / "r")]) == 2
    assert match in capsys.readouterr().err
