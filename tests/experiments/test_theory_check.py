"""``clipmath run theory-check`` end to end on its quick preset."""

import json

import pytest

from clipmath.experiments.cli import main
from clipmath.experiments.config import resolve
from clipmath.experiments.theory_check import ADVERSARIAL, QUADRATIC_REL_TOL, TheoryCheckConfig
from clipmath.theory import LOSSES, MMD_LOSSES


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory_check") / "run"
    assert main(["run", "theory-check", "--out", str(out)]) == 0
    return out


def test_every_check_passes(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = TheoryCheckConfig()
    assert metrics["max_relative_error"] <= 1e-6 and metrics["closed_forms_pass"] is True
    problems = len(LOSSES) - len(MMD_LOSSES) + len(MMD_LOSSES) * len(config.mmd_bandwidths)
    expected_rows = config.n_covariances * problems * sum(min(d) for d in config.dims)
    assert len(metrics["closed_form_vs_numerical"]) == expected_rows
    # The closed form is a minimiser: no numerical fit beats it beyond round-off; on these random
    # pairs every fit is certified and determined.
    assert metrics["numerical_refused"] == 0 and metrics["numerical_flat"] == 0
    for row in metrics["closed_form_vs_numerical"]:
        assert row["loss_closed_form"] <= row["loss_numerical"] + 1e-12 * (1 + abs(row["loss_numerical"]))
    assert {r["loss"] for r in metrics["closed_form_vs_numerical"]} == set(LOSSES)
    assert metrics["monte_carlo_checks"] == config.n_covariances * problems * len(config.dims)
    assert metrics["monte_carlo_within_4_se"] == metrics["monte_carlo_checks"]
    assert metrics["theorem_3_10_violations"] == 0
    assert metrics["theorem_3_2_max_abs_error"] <= 1e-12  # O(1) terms in float64
    report = (run_dir / "report.md").read_text()
    assert "must be <= 1e-06: PASS" in report
    assert "must be <= 1e-08 with none refused: PASS" in report
    assert (run_dir / "config.yaml").exists()


def test_rank_r_quadratic_section(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = metrics["rank_r_quadratic_vs_50b"]
    assert metrics["rank_r_quadratic_pass"] is True and metrics["rank_r_quadratic_refused"] == 0
    assert metrics["rank_r_quadratic_max_relative_error"] <= QUADRATIC_REL_TOL
    # Every adversarial case at every rank, both directions; the random ones likewise.
    for name, (_sigma, n_u, n_v) in ADVERSARIAL.items():
        assert len([r for r in rows if r["case"] == name]) == 2 * min(n_u, n_v), name
    assert len({r["case"] for r in rows if r["kind"] == "random"}) == TheoryCheckConfig().quadratic_random
    for row in rows:
        assert row["loss_closed_form"] == pytest.approx(row["minimum"], rel=1e-12)  # ½ Σ_{i<=r} log(1 − σ_i²)
        # Never beaten beyond round-off, whose scale is that of the loss's terms, Σ_{i<=r} 1/(1 − σ_i²)
        # (5e3 at σ = 0.9999, where they cancel to a loss of −7.5).
        terms = sum(1 / (1 - x**2) for x in row["sigma"][: row["rank"]])
        assert row["loss_closed_form"] <= row["loss_oracle"] + 1e-14 * terms
        # Exact ties are compared by value (the minimiser is a family); resolvable unique ones by matrices.
        if not row["unique"]:
            assert row["compared"] == "loss value"
        resolvable = ("near-tie 1e-4", "sigma 0.9999", "rank-deficient C_uv", "weak 1e-6")
        if row["case"] in resolvable or row["kind"] == "random":
            assert row["compared"] == "matrices", (row["case"], row["rank"])


def test_model_law_section(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = metrics["model_law"]
    by = {(r["n_u"], r["n_v"], r["covariance"], r["loss"]): r for r in rows}
    for (*_, loss), row in by.items():
        assert row["kl"] > 0  # ν = µ is out of reach of every tilting (docs/theory/)
        if loss in ("conditional", "mmd_conditional"):  # Corollary 5.2: both means exact
            assert row["u_given_v_mean"] < 1e-10 and row["v_given_u_mean"] < 1e-10
        if loss == "quadratic_u_given_v":  # Corollary 5.4: the u|v conditional exact
            assert row["u_given_v_mean"] < 1e-10 and row["u_given_v_cov"] < 1e-10
        if loss == "quadratic_conditional":  # neither conditional exact
            assert min(row["u_given_v_mean"], row["v_given_u_mean"]) > 1e-3
    assert "## 6. The model law at each full-rank optimum" in (run_dir / "report.md").read_text()


def test_paper_preset_is_larger():
    quick, paper = TheoryCheckConfig(), resolve(TheoryCheckConfig, "theory-check", "paper")
    assert len(paper.dims) > len(quick.dims) and paper.n_covariances > quick.n_covariances
    assert paper.dims[-1] == (8, 8)


def test_bad_dimensions_are_named(tmp_path, capsys):
    assert main(["run", "theory-check", "--set", "dims=[[0, 2]]", "--out", str(tmp_path / "r")]) == 2
    assert "dims" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override,named",
    [
        ("quadratic_max_dim=1", "quadratic_max_dim"),
        ("quadratic_random=-1", "quadratic_random"),
        ("mmd_bandwidths=[0.0]", "mmd_bandwidths"),
        ("mmd_bandwidths=[]", "mmd_bandwidths"),
    ],
)
def test_bad_quadratic_settings_are_named(tmp_path, capsys, override, named):
    assert main(["run", "theory-check", "--set", override, "--out", str(tmp_path / "r")]) == 2
    assert named in capsys.readouterr().err
