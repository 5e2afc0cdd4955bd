"""``clipmath run theory-check`` end to end on its quick preset."""

import json

import pytest

from clipmath.experiments.cli import main
from clipmath.experiments.config import resolve
from clipmath.experiments.theory_check import TheoryCheckConfig
from clipmath.theory import LOSSES


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory_check") / "run"
    assert main(["run", "theory-check", "--out", str(out)]) == 0
    return out


def test_every_check_passes(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = TheoryCheckConfig()
    assert metrics["max_relative_error"] <= 1e-6 and metrics["closed_forms_pass"] is True
    expected_rows = config.n_covariances * len(LOSSES) * sum(min(d) for d in config.dims)
    assert len(metrics["closed_form_vs_numerical"]) == expected_rows
    # The closed form is a minimiser: no numerical fit beats it beyond round-off.
    for row in metrics["closed_form_vs_numerical"]:
        assert row["loss_closed_form"] <= row["loss_numerical"] + 1e-12 * (1 + abs(row["loss_numerical"]))
    assert metrics["monte_carlo_checks"] == config.n_covariances * len(LOSSES) * len(config.dims)
    assert metrics["monte_carlo_within_4_se"] == metrics["monte_carlo_checks"]
    assert metrics["theorem_3_10_violations"] == 0
    assert metrics["theorem_3_2_max_abs_error"] <= 1e-12  # O(1) terms in float64
    report = (run_dir / "report.md").read_text()
    assert "must be <= 1e-06: PASS" in report
    assert (run_dir / "config.yaml").exists()


def test_paper_preset_is_larger():
    quick, paper = TheoryCheckConfig(), resolve(TheoryCheckConfig, "theory-check", "paper")
    assert len(paper.dims) > len(quick.dims) and paper.n_covariances > quick.n_covariances
    assert paper.dims[-1] == (8, 8)


def test_bad_dimensions_are_named(tmp_path, capsys):
    assert main(["run", "theory-check", "--set", "dims=[[0, 2]]", "--out", str(tmp_path / "r")]) == 2
    assert "dims" in capsys.readouterr().err
