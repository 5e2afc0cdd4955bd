"""The training loop (clipmath.multimodal.trainer): exact updates, records, hooks, checkpoints, in-process resume."""

import json
import math

import numpy as np
import pytest
import torch

from clipmath.datasets import ShardStream, write_shards
from clipmath.experiments.rundir import RunDir
from clipmath.multimodal import encoders, losses
from clipmath.multimodal.checkpoint import load_checkpoint
from clipmath.multimodal.encoders import LinearEncoder
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.trainer import TensorStream, TrainConfig, lr_factor, train

N_U, N_V, N_E = 3, 2, 2


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(240, N_U, generator=gen)
    v = u[:, :N_V] + 0.5 * torch.randn(240, N_V, generator=gen)
    return u, v


def _model(seed=1):
    torch.manual_seed(seed)
    return BimodalModel(LinearEncoder(N_U, N_E), LinearEncoder(N_V, N_E), metric="inner", tau=1.0, learn_tau=True)


def _loss():
    return losses.build("conditional", metric="inner", direction="two_sided")


def _run_dir(tmp_path, name="run", resuming=False):
    run_dir = RunDir("t", path=tmp_path / name)
    run_dir.resuming = resuming
    return run_dir


def _records(run_dir):
    return [json.loads(line) for line in open(run_dir.file("metrics.jsonl"))]


class _Interrupted(Exception):
    pass


class _StopAfter:
    """A stream that raises after ``limit`` batches, as a killed process would stop."""

    def __init__(self, stream, limit):
        self.stream, self.limit, self.served = stream, limit, 0
        self.batches_per_epoch = stream.batches_per_epoch

    @property
    def skipped(self):
        return getattr(self.stream, "skipped", {})

    def epoch(self, epoch, start_batch=0):
        for batch in self.stream.epoch(epoch, start_batch):
            if self.served == self.limit:
                raise _Interrupted
            self.served += 1
            yield batch


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("optimizer", "lbfgs"),
        ("lr", 0.0),
        ("weight_decay", -1.0),
        ("momentum", 1.0),
        ("schedule", "step"),
        ("warmup_steps", -1),
        ("grad_clip", 0.0),
        ("device", "tpu"),
        ("checkpoint_every", -1),
        ("eval_every", -2),
        ("log_every", 0),
        ("seed", -1),
        ("threads", 0),
        ("max_skipped_fraction", -0.1),
        ("max_skipped_fraction", 1.5),
        ("max_skipped_fraction", "0.1"),
        ("micro_batches", 0),
        ("micro_batches", 2.0),
        ("micro_batches", True),
        ("precision", "fp16"),
    ],
)
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"train.{field}="):
        TrainConfig(**{field: value})


def test_lr_factor_schedules():
    warm = TrainConfig(schedule="cosine", warmup_steps=4)
    assert [lr_factor(s, 14, warm) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 14, warm) == 1.0
    assert lr_factor(9, 14, warm) == pytest.approx(0.5, abs=1e-15)  # halfway through the cosine
    assert lr_factor(14, 14, warm) == pytest.approx(0.0, abs=1e-15)
    linear = TrainConfig(schedule="linear")
    assert lr_factor(5, 20, linear) == 0.75
    assert lr_factor(7, 20, TrainConfig()) == 1.0


def test_tensor_stream_ranks_split_the_global_batch(data):
    u, v = data
    whole = TensorStream(u, v, batch_size=40, seed=3)
    ranks = [TensorStream(u, v, batch_size=40, seed=3, rank=r, world_size=2) for r in range(2)]
    assert whole.batches_per_epoch == ranks[0].batches_per_epoch == 6
    for batch, part0, part1 in zip(whole.epoch(2), ranks[0].epoch(2), ranks[1].epoch(2), strict=False):
        assert torch.equal(batch["u"], torch.cat([part0["u"], part1["u"]]))
        assert torch.equal(batch["v"], torch.cat([part0["v"], part1["v"]]))


def test_tensor_stream_order_depends_on_seed_epoch_and_start(data):
    u, v = data
    stream = TensorStream(u, v, batch_size=40, seed=3)
    first = [b["key"] for b in stream.epoch(0)]
    assert first == [b["key"] for b in stream.epoch(0)]
    assert first != [b["key"] for b in stream.epoch(1)]
    assert first != [b["key"] for b in TensorStream(u, v, batch_size=40, seed=4).epoch(0)]
    assert [b["key"] for b in stream.epoch(0, start_batch=4)] == first[4:]
    assert sorted(k for keys in first for k in keys) == list(range(240))  # each row once


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size=0"),
        (dict(batch_size=41, world_size=2), "batch_size=41"),
        (dict(batch_size=40, rank=2, world_size=2), "rank=2"),
    ],
)
def test_tensor_stream_rejects_bad_arguments(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TensorStream(*data, **kwargs)


def test_train_equals_a_hand_written_loop(data):
    """Same batches, Adam with warmup and cosine schedule: bitwise the same parameters."""
    u, v = data
    config = TrainConfig(epochs=3, lr=0.05, schedule="cosine", warmup_steps=3, device="cpu", seed=5)
    stream = TensorStream(u, v, batch_size=40, seed=0)
    model = _model()
    result = train(model, _loss(), stream, config)

    reference, loss_fn = _model(), _loss()
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.05)
    total = 3 * stream.batches_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, config))
    losses_seen = []
    for epoch in range(3):
        for batch in stream.epoch(epoch):
            out = reference(batch["u"], batch["v"])
            loss = loss_fn(out.z_u, out.z_v, logit_scale=out.logit_scale, logit_bias=out.logit_bias).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            reference.clamp_logit_scale_()
            losses_seen.append(loss.item())
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=False):
        assert torch.equal(p, q), name
    assert result.steps == total
    assert result.last_loss == losses_seen[-1]
    assert result.epoch_losses == [float(np.mean(losses_seen[i * 6 : (i + 1) * 6])) for i in range(3)]


def test_records_hooks_and_checkpoint_contents(data, tmp_path):
    run_dir = _run_dir(tmp_path)
    calls = []

    def evaluate(model):
        calls.append((model.training, torch.is_grad_enabled()))
        return {"norm": model.g_u.weight.norm()}

    config = TrainConfig(epochs=2, lr=0.01, log_every=4, eval_every=5, checkpoint_every=3, device="cpu")
    result = train(_model(), _loss(), TensorStream(*data, batch_size=20), config, run_dir, evaluate=evaluate, tag="a")
    records = _records(run_dir)
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "norm" in r]
    assert [r["step"] for r in steps] == [4, 8, 12, 16, 20, 24]
    assert set(steps[0]) == {"run", "step", "epoch", "loss", "logit_scale", "lr", "data_s", "compute_s", "skipped"}
    assert all(r["run"] == "a" and r["data_s"] >= 0 and r["compute_s"] > 0 for r in steps)
    assert [(r["step"], r["final"]) for r in evals] == [(5, False), (10, False), (15, False), (20, False), (24, True)]
    assert calls == [(False, False)] * 5
    assert result.evaluation == {"norm": evals[-1]["norm"]}
    saved = load_checkpoint(run_dir.file("checkpoints/a.pt"))
    assert {"model", "optimizer", "scheduler", "step", "epoch", "position", "rng", "config", "done"} <= set(saved)
    assert (saved["step"], saved["done"], saved["config"]["lr"]) == (24, True, 0.01)


@pytest.mark.parametrize("stop_after", [7, 12])  # mid-epoch, and right at an epoch's end
def test_resume_after_interruption_is_bitwise_identical(data, tmp_path, stop_after):
    u, v = data
    config = TrainConfig(epochs=3, lr=0.02, schedule="linear", warmup_steps=2, checkpoint_every=6, device="cpu")

    full_dir = _run_dir(tmp_path, "full")
    full_model = _model()
    full = train(full_model, _loss(), TensorStream(u, v, batch_size=40), config, full_dir)

    run_dir = _run_dir(tmp_path, "cut")
    with pytest.raises(_Interrupted):
        train(_model(), _loss(), _StopAfter(TensorStream(u, v, batch_size=40), stop_after), config, run_dir)
    run_dir.resuming = True
    resumed_model = _model(seed=99)  # the checkpoint, not the initialisation, must decide
    resumed = train(resumed_model, _loss(), TensorStream(u, v, batch_size=40), config, run_dir)

    assert resumed.resumed_at == 6 * (stop_after // 6)
    for p, q in zip(full_model.parameters(), resumed_model.parameters(), strict=False):
        assert torch.equal(p, q)
    assert (resumed.last_loss, resumed.epoch_losses) == (full.last_loss, full.epoch_losses)

    def strip(rs):
        return [{k: r[k] for k in ("step", "epoch", "loss", "lr", "logit_scale")} for r in rs]

    assert strip(_records(run_dir)) == strip(_records(full_dir))


def test_resuming_a_finished_run_loads_it_without_training(data, tmp_path):
    run_dir = _run_dir(tmp_path)
    config = TrainConfig(epochs=2, lr=0.02, device="cpu")
    trained = _model()
    first = train(trained, _loss(), TensorStream(*data, batch_size=40), config, run_dir, evaluate=lambda m: {"x": 1.0})
    lines = open(run_dir.file("metrics.jsonl")).read()
    run_dir.resuming = True
    again = _model(seed=7)
    second = train(again, _loss(), TensorStream(*data, batch_size=40), config, run_dir, evaluate=lambda m: {"x": 2.0})
    assert open(run_dir.file("metrics.jsonl")).read() == lines
    assert (second.steps, second.last_loss, second.epoch_losses, second.evaluation) == (
        first.steps,
        first.last_loss,
        first.epoch_losses,
        {"x": 1.0},
    )
    for p, q in zip(trained.parameters(), again.parameters(), strict=False):
        assert torch.equal(p, q)


def test_resume_with_another_batch_count_is_refused(data, tmp_path):
    run_dir = _run_dir(tmp_path)
    config = TrainConfig(epochs=2, lr=0.02, checkpoint_every=2, device="cpu")
    with pytest.raises(_Interrupted):
        train(_model(), _loss(), _StopAfter(TensorStream(*data, batch_size=40), 3), config, run_dir)
    run_dir.resuming = True
    with pytest.raises(ValueError, match="batches per epoch"):
        train(_model(), _loss(), TensorStream(*data, batch_size=30), config, run_dir)


def test_grad_clip_bounds_the_sgd_step(data):
    u, v = data
    before = [p.detach().clone() for p in _model().parameters()]

    def step_norm(clip):
        model = _model()
        stream = TensorStream(u, v, batch_size=240)
        train(model, _loss(), stream, TrainConfig(epochs=1, optimizer="sgd", lr=1.0, grad_clip=clip, device="cpu"))
        return math.sqrt(sum(((p - q) ** 2).sum().item() for p, q in zip(model.parameters(), before, strict=False)))

    assert step_norm(None) > 0.1
    assert step_norm(1e-3) == pytest.approx(1e-3, rel=1e-5)  # float32 round-off of the clip factor


def test_threads_are_set_for_training_and_restored(data):
    seen = []

    def evaluate(model):
        seen.append(torch.get_num_threads())
        return {}

    before = torch.get_num_threads()
    config = TrainConfig(epochs=1, lr=0.01, device="cpu", threads=before + 1)
    train(_model(), _loss(), TensorStream(*data, batch_size=120), config, evaluate=evaluate)
    assert seen == [before + 1]
    assert torch.get_num_threads() == before


def test_stream_without_batches_is_refused():
    class Empty:
        batches_per_epoch = 0

    with pytest.raises(ValueError, match="batches_per_epoch=0"):
        train(_model(), _loss(), Empty(), TrainConfig(device="cpu"))


# Damaged data: the skip counts, the fraction a run may skip, and resume.


class _Skipping:
    """A TensorStream whose reading skips ``per_batch(epoch, index)`` samples of ``bad.tar`` before each batch.

    Like ShardStream, the counts are cumulative over the stream's life, and ``start_batch``
    reads (and counts) the batches before it again.
    """

    def __init__(self, stream, per_batch):
        self.stream, self.per_batch, self.skipped = stream, per_batch, {}
        self.batches_per_epoch = stream.batches_per_epoch

    def epoch(self, epoch, start_batch=0):
        for index, batch in enumerate(self.stream.epoch(epoch)):
            if self.per_batch(epoch, index):
                self.skipped = {"bad.tar": self.skipped.get("bad.tar", 0) + self.per_batch(epoch, index)}
            if index >= start_batch:
                yield batch


def test_a_run_that_skips_more_than_max_skipped_fraction_fails_naming_the_shards(data):
    # 40-sample batches, one skipped before each: 1/41 = 2.4% of the samples read.
    def stream(per_batch=lambda epoch, index: 1):
        return _Skipping(TensorStream(*data, batch_size=40), per_batch)

    config = TrainConfig(epochs=3, lr=0.01, device="cpu")
    with pytest.raises(ValueError, match=r"skipped 6 of the 246 samples.*max_skipped_fraction=0\.01.*bad\.tar \(6\)"):
        train(_model(), _loss(), stream(), config)  # after the first epoch
    config = TrainConfig(epochs=3, lr=0.01, device="cpu", max_skipped_fraction=0.025)
    result = train(_model(), _loss(), stream(), config)
    assert result.skipped == {"bad.tar": 18} and result.steps == 18
    strict = TrainConfig(epochs=2, lr=0.01, device="cpu", max_skipped_fraction=0.0)
    assert train(_model(), _loss(), TensorStream(*data, batch_size=40), strict).skipped == {}
    with pytest.raises(ValueError, match=r"skipped 1 of the 481 samples .*max_skipped_fraction=0\.0"):
        train(_model(), _loss(), stream(lambda epoch, index: int((epoch, index) == (1, 2))), strict)


def _shards(path, n=60, count=10):
    gen = np.random.default_rng(0)
    samples = [
        {
            "__key__": f"s{i:03d}",
            "u": gen.standard_normal(N_U).astype(np.float32),
            "v": gen.standard_normal(N_V).astype(np.float32),
        }
        for i in range(n)
    ]
    write_shards(samples, path, max_count=count)
    return sorted(p.name for p in path.glob("*.tar"))


def test_a_run_on_all_damaged_shards_fails_naming_them(tmp_path):
    names = _shards(tmp_path / "s")
    for name in names:
        (tmp_path / "s" / name).write_bytes(np.random.default_rng(1).bytes(2048))
    stream = ShardStream(tmp_path / "s", batch_size=10)
    with pytest.raises(ValueError, match=r"skipped 60 of the 60 samples .*shard-000000\.tar \(10\)"):
        train(_model(), _loss(), stream, TrainConfig(epochs=2, lr=0.01, device="cpu"))
    with pytest.raises(ValueError, match=r"learned from no data .*'shard-000005\.tar': 20"):
        train(_model(), _loss(), stream, TrainConfig(epochs=2, lr=0.01, device="cpu", max_skipped_fraction=1.0))


# 5 batches per epoch, a checkpoint every 2 steps: resumed mid-epoch 0, right at the end of epoch 1
# (position == batches_per_epoch), and in epoch 2.
@pytest.mark.parametrize("stop_after", [3, 10, 13])
def test_skip_counts_survive_a_resume_and_reach_metrics_and_report(tmp_path, stop_after):
    names = _shards(tmp_path / "s")
    damaged = tmp_path / "s" / names[2]
    data = bytearray(damaged.read_bytes())
    data[1024 * 7 : 1024 * 7 + 8] = bytes(b ^ 0xFF for b in data[1024 * 7 : 1024 * 7 + 8])  # sample 3's u header
    damaged.write_bytes(bytes(data))
    config = TrainConfig(epochs=3, lr=0.01, checkpoint_every=2, log_every=1, device="cpu", max_skipped_fraction=0.05)

    def stream():
        return ShardStream(tmp_path / "s", batch_size=12, shuffle_buffer=20, drop_last=False)

    full_dir = _run_dir(tmp_path, "full")
    full = train(_model(), _loss(), stream(), config, full_dir)
    assert full.skipped == {names[2]: 3}  # one sample in each of 3 epochs
    run_dir = _run_dir(tmp_path, "cut")
    with pytest.raises(_Interrupted):
        train(_model(), _loss(), _StopAfter(stream(), stop_after), config, run_dir)
    run_dir.resuming = True
    resumed = train(_model(), _loss(), stream(), config, run_dir)
    assert resumed.resumed_at == 2 * (stop_after // 2) and resumed.skipped == full.skipped

    def counts(d):
        return [(r["step"], r["skipped"]) for r in _records(d) if "loss" in r]

    assert counts(run_dir) == counts(full_dir)
    assert load_checkpoint(run_dir.file("checkpoints/train.pt"))["skipped"] == {names[2]: 3}
    for d in (full_dir, run_dir):
        d.write_metrics({"x": 1})
        d.write_text("report.md", "# report\n")
    assert json.loads(run_dir.file("metrics.json").read_text())["skipped_samples"] == {
        "total": 3,
        "by_run": {"train": {names[2]: 3}},
    }
    assert run_dir.file("metrics.json").read_text() == full_dir.file("metrics.json").read_text()
    report = run_dir.file("report.md").read_text()
    assert report.startswith("# report\n") and "## Skipped samples" in report
    assert f"| train | {names[2]} | 3 |" in report
    again = _run_dir(tmp_path, "cut", resuming=True)  # a finished run resumed again reports the same
    assert train(_model(), _loss(), stream(), config, again).skipped == full.skipped
    assert again.skipped == {"train": {names[2]: 3}}


def test_clean_runs_say_no_sample_was_skipped(data, tmp_path):
    run_dir = _run_dir(tmp_path)
    train(_model(), _loss(), TensorStream(*data, batch_size=40), TrainConfig(epochs=1, device="cpu"), run_dir)
    run_dir.write_metrics({})
    run_dir.write_text("report.md", "# r")
    expected = {"skipped_samples": {"total": 0, "by_run": {"train": {}}}}
    assert json.loads(run_dir.file("metrics.json").read_text()) == expected
    report = run_dir.file("report.md").read_text()
    assert report.endswith("No sample was skipped as damaged or corrupt (1 training runs).\n")


# Micro-batches (the feature cache of clipmath.multimodal.accumulation) through train().


def _cosine_model():
    torch.manual_seed(1)
    g_u = encoders.build("mlp", n_in=N_U, n_e=3, hidden=[6])
    return BimodalModel(g_u, LinearEncoder(N_V, 3), metric="cosine", tau=0.3, learn_tau=True)


def _class_stream(data, batch_size=40):
    u, v = data
    return TensorStream(u, v, batch_size=batch_size, fields={"class_ids": torch.arange(len(u)) % 3})


#: SGD with momentum, clipping, warmup and cosine decay: every step the m = 1 path takes after the backward.
MICRO_CONFIG = dict(
    epochs=2, optimizer="sgd", lr=0.05, momentum=0.9, grad_clip=1.0, schedule="cosine", warmup_steps=2, device="cpu"
)
#: Float32 parameters of size ~1 after 12 steps: the accumulated and the one-batch gradients sum the
#: same terms in another order (relative round-off ~1e-7 each), and SGD passes differences on
#: unamplified (momentum 0.9 sums at most 10 of them, times lr 0.05). Measured: at most 6e-8
#: (half an ulp of 1 to one ulp); 1e-5 leaves a >100-fold margin and is far below the 1e-2
#: the parameters move.
MICRO_ATOL = 1e-5


@pytest.mark.parametrize("loss", [{"name": "clip"}, {"name": "gca_uot", "target": "class"}])
def test_micro_batches_give_the_one_batch_updates(data, tmp_path, loss):
    loss_fn = losses.build(**loss)
    assert loss["name"] == "clip" or loss_fn.reads == ("class_ids",)  # the gca case reads a batch field
    start = [p.detach().clone() for p in _cosine_model().parameters()]
    models, records = [], []
    for m in (1, 4):
        run_dir = _run_dir(tmp_path, f"m{m}")
        model = _cosine_model()
        train(model, loss_fn, _class_stream(data), TrainConfig(micro_batches=m, **MICRO_CONFIG), run_dir)
        models.append(model)
        records.append(_records(run_dir))
    moved = max(float((p.detach() - q).abs().max()) for p, q in zip(models[0].parameters(), start, strict=False))
    assert moved > 1e-2
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters(), strict=False):
        torch.testing.assert_close(q, p, rtol=0, atol=MICRO_ATOL, msg=name)
    for one, many in zip(*records, strict=False):  # the loss and the logit scale used are logged alike
        assert one["step"] == many["step"]
        assert many["loss"] == pytest.approx(one["loss"], rel=1e-5)
        assert many["logit_scale"] == pytest.approx(one["logit_scale"], abs=MICRO_ATOL)


def test_resume_with_micro_batches_is_bitwise_identical(data, tmp_path):
    config = TrainConfig(micro_batches=4, checkpoint_every=3, **MICRO_CONFIG)
    loss_fn = losses.build("gca_uot", target="class")
    full_model = _cosine_model()
    full = train(full_model, loss_fn, _class_stream(data), config, _run_dir(tmp_path, "full"))
    run_dir = _run_dir(tmp_path, "cut")
    with pytest.raises(_Interrupted):
        train(_cosine_model(), loss_fn, _StopAfter(_class_stream(data), 7), config, run_dir)
    run_dir.resuming = True
    resumed_model = _cosine_model()
    resumed = train(resumed_model, loss_fn, _class_stream(data), config, run_dir)
    assert resumed.resumed_at == 6
    for p, q in zip(full_model.parameters(), resumed_model.parameters(), strict=False):
        assert torch.equal(p, q)
    assert (resumed.last_loss, resumed.epoch_losses) == (full.last_loss, full.epoch_losses)


def test_micro_batches_that_do_not_divide_the_batch_are_refused(data):
    config = TrainConfig(epochs=1, micro_batches=3, device="cpu")
    with pytest.raises(ValueError, match=r"train.micro_batches=3: expected a divisor of the batch's 40 rows"):
        train(_cosine_model(), losses.build("clip"), _class_stream(data), config)
