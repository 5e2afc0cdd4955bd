"""``mnist-labels`` end to end on a few hundred real digits, and its measuring functions."""

import json
import math

import numpy as np
import pytest
import torch

from clipmath.experiments import cli
from clipmath.experiments.mnist_labels import expected_calibration_error, generation_statistics

TINY = [
    "--set",
    "data.n_train=400",
    "--set",
    "data.n_test=200",
    "--set",
    "train.epochs=12",
    "--set",
    "batch_size=64",
    "--set",
    "finetune.holdout=100",
    "--set",
    "finetune.sizes=[50, 100]",
    "--set",
    "train.checkpoint_every=0",
]


def test_quick_preset_on_a_few_hundred_digits(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "mnist-labels", "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 300 and metrics["n_finetune_pool"] == 100 and metrics["n_test"] == 200
    assert set(metrics["runs"]) == {"label|image", "image|label", "two-sided"}
    for name, r in metrics["runs"].items():
        assert r["loss"]["params"]["direction"] in ("v_given_u", "u_given_v", "two_sided")
        assert r["steps"] == 12 * (300 // 64) and r["skipped"] == 0
        # Chance is 0.1 (an untrained or mis-wired model); 300 images and 48 steps give 0.58-0.82 (measured).
        assert r["accuracy"] > 0.3, name
        assert 0 <= r["ece"] <= 1 and 1 <= r["mean_distinct"] <= 16
        assert 1 <= r["mean_ess"] <= 200 and 0 <= r["mean_entropy"] <= math.log(200) + 1e-9
        assert all(0 <= r[f"finetuned_{v}_accuracy_M{m}"] <= 1 for v in ("F", "GF") for m in (50, 100))
        assert len(r["figure_draws"]) == 16 and len(r["probabilities"]) == 3
    assert len(metrics["claims"]) == 3 and all(isinstance(c["held"], bool) for c in metrics["claims"])
    report = (out / "report.md").read_text()
    assert report.startswith("# mnist-labels") and "Fine-tuning" in report and "claims" in report
    for figure in ("fig11_label_probabilities.png", "fig12_samples.png"):
        assert (out / figure).stat().st_size > 0


def test_another_registry_loss_trains_by_config(tmp_path):
    out = tmp_path / "gca"
    args = [
        "--set",
        "loss.name=gca_ince",
        "--set",
        "loss.metric=inner",
        "--set",
        "loss.params={target: class}",
        "--set",
        "finetune.sizes=[]",
        "--set",
        "train.epochs=1",
    ]
    assert cli.main(["run", "mnist-labels", "--out", str(out), *TINY, *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["runs"]) == ["gca_ince"] and metrics["claims"] == []
    assert metrics["runs"]["gca_ince"]["loss"] == {"name": "gca_ince", "metric": "inner", "params": {"target": "class"}}


def test_bad_config_is_refused_before_training(tmp_path, capsys):
    assert cli.main(["run", "mnist-labels", "--out", str(tmp_path / "a"), "--set", "figure_label=10"]) != 0
    assert "figure_label=10" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "run",
                "mnist-labels",
                "--out",
                str(tmp_path / "b"),
                "--set",
                "finetune.holdout=50",
                "--set",
                "finetune.sizes=[100]",
            ]
        )
        != 0
    )
    assert "finetune.holdout=50" in capsys.readouterr().err


def test_expected_calibration_error_against_a_hand_count():
    probabilities = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 0, 0])
    # Bins of width 1/15: {0.95, 0.95} (accuracy 1/2, confidence 0.95) and {0.55, 0.55} (accuracy 1/2).
    expected = 0.5 * abs(0.5 - 0.95) + 0.5 * abs(0.5 - 0.55)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected, abs=1e-12)
    assert expected_calibration_error(torch.eye(3), torch.arange(3)) == pytest.approx(0.0, abs=1e-12)


def test_generation_statistics_at_the_two_extremes():
    bank_labels = torch.arange(40) % 2
    gen = torch.Generator().manual_seed(0)
    # Zero label embeddings: uniform weights, ESS = N, entropy = log N.
    stats, draws = generation_statistics(
        torch.zeros(2, 3), torch.randn(40, 3, dtype=torch.float64), bank_labels, 0.0, 16, gen, "inner"
    )
    assert draws.shape == (2, 16)
    for s in stats:
        assert s["ess"] == pytest.approx(40) and s["entropy"] == pytest.approx(math.log(40))
    # One bank item far above the rest for each label: every draw is that item.
    bank = torch.zeros(40, 2, dtype=torch.float64)
    bank[0, 0] = bank[1, 1] = 100.0
    stats, draws = generation_statistics(torch.eye(2, dtype=torch.float64), bank, bank_labels, 0.0, 16, gen, "inner")
    assert [s["distinct"] for s in stats] == [1, 1]
    assert [s["label_fraction"] for s in stats] == [1.0, 1.0]
    assert all(s["ess"] == pytest.approx(1.0) for s in stats)
    assert np.array_equal(draws[0].numpy(), np.zeros(16))
