"""``ocean`` end to end on a few hundred pairs (synthetic and the real sea), and its measuring functions."""

import json

import numpy as np
import pytest
import torch

from clipmath.experiments import cli
from clipmath.experiments.ocean import KS, pooled_recall
from clipmath.multimodal.inference import recall_at_k

SMALL = [
    "--set",
    "data.n_train=384",
    "--set",
    "data.n_test=256",
    "--set",
    "eval.n_train_eval=256",
    "--set",
    "generation.queries=32",
    "--set",
    "generation.grid=16",
    "--set",
    "train.epochs=2",
    "--set",
    "train.eval_every=3",
    "--set",
    "train.warmup_steps=0",
    "--set",
    "train.checkpoint_every=0",
    "--set",
    'g_v.params={"d_model": 16, "n_blocks": 1, "n_heads": 2}',
]
RECALL_KEYS = {
    f"{split}_{pool}_{d}@{k}"
    for split in ("train", "test")
    for pool in ("pool", "all")
    for d in ("u_to_v", "v_to_u")
    for k in KS
}


def _check_run(out, n_train, n_test, tokens):
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["n_train"] == n_train and metrics["data"]["n_test"] == n_test
    assert metrics["data"]["tokens"] == tokens
    assert metrics["steps"] == 2 * (n_train // 128)
    assert set(metrics["recall"]) == RECALL_KEYS
    assert all(0 <= v <= 1 for v in metrics["recall"].values())
    for bank in ("test", "train"):
        g = metrics["generation"][bank]
        assert 1 <= g["median_ess"] <= (n_test if bank == "test" else n_train) + 1e-6
        assert 0 < g["mean_max_weight"] <= 1
        assert g["mean_relative_error_posterior_mean"] > 0 and g["mean_relative_error_mode"] > 0
    # Evaluation over training (Fig. 14): steps 3 and the final 6, each with every recall.
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in history if "final" in r]
    assert [r["step"] for r in evaluated] == [3, 6] and all(RECALL_KEYS <= set(r) for r in evaluated)
    report = (out / "report.md").read_text()
    assert report.startswith("# ocean") and "Crossmodal generation (eq. 28)" in report
    for figure in ("fig13_pairs.png", "fig14_recall.png", "fig15_retrieval.png"):
        assert (out / figure).stat().st_size > 0
    return metrics


def test_quick_preset_on_a_few_hundred_pairs(tmp_path):
    out = tmp_path / "quick"
    assert cli.main(["run", "ocean", "--preset", "quick", "--out", str(out), *SMALL]) == 0
    metrics = _check_run(out, 384, 256, 100)
    assert metrics["data"]["step_check_max_deviation"] < 1e-6
    assert metrics["generation"]["test"]["mode_is_truth"] is not None


def test_med_preset_on_a_few_hundred_pairs(tmp_path):
    out = tmp_path / "med"
    args = ["--set", "data.sea.n_modes=32", "--set", "data.sea.n_points=24", "--set", "data.sea.dt=0.1666666666666666"]
    assert cli.main(["run", "ocean", "--preset", "med", "--out", str(out), *SMALL, *args]) == 0
    metrics = _check_run(out, 384, 256, 24)
    data = metrics["data"]
    assert 0 <= data["beached_train"] <= 384 and 0 <= data["beached_test"] <= 256
    assert 0.5 < data["eof_explained_variance"] <= 1
    assert "Beached drifters (kept, flagged)" in (out / "report.md").read_text()


@pytest.mark.slow
def test_another_registry_loss_and_a_learned_g_u_train_by_config(tmp_path):
    out = tmp_path / "siglip"
    args = [
        "--set",
        "loss.name=siglip",
        "--set",
        "g_u.name=mlp",
        "--set",
        "g_u.params={}",
        "--set",
        "n_e=32",
        "--set",
        "data.drifters.n_points=20",
    ]
    assert cli.main(["run", "ocean", "--out", str(out), *SMALL, *args]) == 0
    config = (out / "config.yaml").read_text()
    assert "siglip" in config and "mlp" in config
    _check_run(out, 384, 256, 20)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.source=atlantic", "data.source='atlantic'"),
        ("loss.name=nope", "loss.name='nope'"),
        ("loss.metric=l1", "loss.metric='l1'"),
        ("g_v.name=nope", "g_v.name='nope'"),
        ("data.n_test=100", "data.n_test=100"),
        ("eval.pool_size=4", "eval.pool_size=4"),
        ("eval.n_train_eval=70000", "eval.n_train_eval=70000"),
        ("generation.queries=0", "generation.queries=0"),
        ("data.drifters.dt=0.003", "DrifterConfig.dt"),
        ("data.sea.t_final=2.5", "RealSeaConfig.t_final"),
    ],
)
def test_bad_config_is_refused_with_one_line_before_anything_is_written(tmp_path, capsys, override, message):
    out = tmp_path / "bad"
    assert cli.main(["run", "ocean", "--out", str(out), "--set", override]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_pooled_recall_averages_disjoint_pools():
    generator = torch.Generator().manual_seed(0)
    z_u = torch.randn(300, 6, dtype=torch.float64, generator=generator)
    z_v = z_u + 0.7 * torch.randn(300, 6, dtype=torch.float64, generator=generator)
    # Identical embeddings: every pair ranks first in its pool.
    assert set(pooled_recall(z_u, z_u, 128, 0, "cosine").values()) == {1.0}
    # Two pools of 128 from a seeded permutation (44 pairs left out): the mean of their recalls.
    order = torch.randperm(300, generator=torch.Generator().manual_seed(5))
    pools = [recall_at_k(z_u[order[i * 128 : (i + 1) * 128]], z_v[order[i * 128 : (i + 1) * 128]], KS) for i in (0, 1)]
    got = pooled_recall(z_u, z_v, 128, 5, "cosine")
    for key in got:
        assert got[key] == pytest.approx(np.mean([p[key] for p in pools]), abs=1e-15)
