"""``gca-bimodal``: sub-run configs, the headline readers, an experiment not yet committed, the CLI on tiny data."""

import json

import pytest

from clipmath.experiments import cli, registry
from clipmath.experiments.gca_bimodal import (
    GcaBimodalConfig,
    has_robust_term,
    headline_metrics,
    sub_config,
    takes_target,
)

TINY = [
    'overrides={mnist-labels: [data.n_train=300, data.n_test=200, train.epochs=1, "finetune.sizes=[20]", '
    "finetune.holdout=100], image-text: [data.limit=60, data.n_test=40, train.epochs=1, batch_size=32]}"
]


def test_a_sub_run_is_the_quick_preset_with_the_overrides_and_the_loss():
    config = GcaBimodalConfig(losses=["gca_ince"], overrides={"mnist-labels": ["train.epochs=2"]})
    sub = sub_config(config, "mnist-labels", "gca_ince", shards_dir="/tmp/s")
    assert sub.loss.name == "gca_ince" and sub.loss.metric == "inner" and sub.train.epochs == 2
    assert sub.stream.shards_dir == "/tmp/s" and sub.seed == 0


def test_the_losses_with_a_rince_term_get_cosine_logits_at_a_fixed_tau_and_q_from_q_per_tau():
    assert [has_robust_term(n) for n in ("clip", "ince", "gca_ince", "rince", "gca_rince", "gca_uot")] == [
        False,
        False,
        False,
        True,
        True,
        True,
    ]
    config = GcaBimodalConfig(overrides={"image-text": ["tau=0.25"]})
    text = sub_config(config, "image-text", "gca_uot")
    assert (text.loss.metric, text.learn_tau, text.tau, text.loss.params) == ("cosine", False, 0.25, {"q": 0.3})
    mnist = sub_config(config, "mnist-labels", "rince")  # tau = 1: q/tau = 1.2 would be q > 1
    assert (mnist.loss.metric, mnist.learn_tau, mnist.loss.params) == ("cosine", False, {"target": "class", "q": 1.0})
    assert sub_config(config, "image-text", "clip").learn_tau is True  # the others keep the experiment's


def test_the_losses_that_take_a_target_get_the_experiments_one_and_the_others_keep_theirs():
    assert [takes_target(name) for name in ("clip", "siglip", "ince", "gca_ince", "rince", "gca_rince", "gca_uot")] == [
        False,
        False,
        True,
        True,
        True,
        True,
        True,
    ]
    config = GcaBimodalConfig()
    assert sub_config(config, "mnist-labels", "gca_ince").loss.params == {"target": "class"}
    assert sub_config(config, "mnist-labels", "clip").loss.params == {}
    assert sub_config(config, "image-text", "gca_ince").loss.params == {}  # identity: one caption per image
    assert sub_config(GcaBimodalConfig(targets={}), "mnist-labels", "gca_ince").loss.params == {}


def test_the_headline_readers():
    mnist = {"runs": {"clip": {"accuracy": 0.9, "ece": 0.02, "mean_distinct": 3.0}}}
    assert headline_metrics("mnist-labels", mnist) == {"classifier accuracy": 0.9, "ECE": 0.02}
    text = {
        "retrieval": {"twemoji": {"text_to_image_R@5": 0.3, "image_to_text_R@5": 0.4, "n": 10}},
        "zero_shot": {"twemoji": {"acc1": 0.5, "n": 10}},
    }
    assert headline_metrics("image-text", text) == {
        "twemoji text→image R@5": 0.3,
        "twemoji image→text R@5": 0.4,
        "twemoji zero-shot acc1": 0.5,
    }
    ocean = {
        "recall": {
            "test_pool_u_to_v@1": 0.1,
            "test_pool_u_to_v@5": 0.3,
            "test_pool_v_to_u@1": 0.2,
            "test_pool_v_to_u@5": 0.4,
            "train_pool_u_to_v@1": 0.9,
        }
    }
    assert headline_metrics("ocean", ocean) == {
        "test R@1 u→v": 0.1,
        "test R@5 u→v": 0.3,
        "test R@1 v→u": 0.2,
        "test R@5 v→u": 0.4,
    }
    # Any other experiment: the accuracy / recall / ECE numbers of its metrics, by path.
    other = {
        "summary": {"test_accuracy": 0.7, "steps": 10, "retrieval": {"R@1": 0.2}, "ece": float("nan")},
        "runs": [{"mean_rank": 3.0, "recall": 0.5}],
    }
    assert headline_metrics("another", other) == {
        "summary.test_accuracy": 0.7,
        "summary.retrieval.R@1": 0.2,
        "runs[0].recall": 0.5,
    }


@pytest.mark.parametrize(
    "override, named",
    [
        ("losses=[clip, nope]", "'nope' unknown"),
        ("experiments=[gca-bimodal]", "experiments"),
        ("experiments=[pacs]", "'pacs' unknown"),
        ("overrides={mnist-labels: [train.epochs=0]}", "train.epochs"),
        ("overrides={image-text: [bogus=1]}", "bogus"),
        ("targets={mnist-labels: nope}", "nope"),
        ("robust_q_per_tau=0", "robust_q_per_tau"),
    ],
)
def test_bad_config_is_refused_before_the_run_directory_is_touched(tmp_path, capsys, override, named):
    out = tmp_path / "never"
    assert cli.main(["run", "gca-bimodal", "--out", str(out), "--set", override]) != 0
    assert named in capsys.readouterr().err
    assert not out.exists()


def test_an_experiment_not_committed_yet_is_named_not_run(tmp_path, monkeypatch):
    monkeypatch.delitem(registry._MODULES, "ocean", raising=False)  # as before ocean was committed
    out = tmp_path / "run"
    assert cli.main(["run", "gca-bimodal", "--out", str(out), "--set", "experiments=[ocean]"]) == 0
    assert json.loads((out / "metrics.json").read_text())["not_run"] == {
        "ocean": "not registered (its experiment is not committed yet)"
    }
    assert "## ocean\n\nNot run" in (out / "report.md").read_text()


@pytest.mark.slow
def test_quick_preset_through_the_cli_on_a_few_hundred_samples(tmp_path):
    pytest.importorskip("open_clip")
    out = tmp_path / "run"
    args = [
        "run",
        "gca-bimodal",
        "--out",
        str(out),
        "--set",
        "losses=[clip, gca_ince, gca_uot]",
        "--set",
        "experiments=[mnist-labels, image-text]",
        "--set",
        *TINY,
    ]
    assert cli.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    table = metrics["table"]
    assert set(table) == {"mnist-labels", "image-text"} and all(
        list(t) == ["clip", "gca_ince", "gca_uot"] for t in table.values()
    )
    for values in table["mnist-labels"].values():
        assert 0 <= values["classifier accuracy"] <= 1 and 0 <= values["ECE"] <= 1
    for values in table["image-text"].values():
        assert all(0 <= v <= 1 for v in values.values()) and "twemoji text→image R@5" in values
    for experiment in table:
        assert (out / experiment / "gca_uot" / "report.md").exists()
    # Resuming reads the finished sub-runs instead of training them again.
    first = (out / "image-text" / "clip" / "metrics.json").stat().st_mtime_ns
    assert cli.main(["run", "--resume", str(out), "gca-bimodal"]) == 0
    assert (out / "image-text" / "clip" / "metrics.json").stat().st_mtime_ns == first
    assert json.loads((out / "metrics.json").read_text())["table"] == table
