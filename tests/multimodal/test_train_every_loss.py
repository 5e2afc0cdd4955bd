"""Every registered loss, with every target plan, trains through the one ``train()``.

A loss that reads batch fields (``reads``: the raw u and v of the MMD losses, the class or domain
ids of the GCA target plans) gets them from the batch; under two gloo ranks they are gathered
like the embeddings, so the distributed run repeats the one-process run.
"""

import os
import socket

import pytest
import torch

from clipmath.multimodal import losses
from clipmath.multimodal.encoders import LinearEncoder
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.trainer import TensorStream, TrainConfig, loss_inputs, train

N, B, N_U, N_V, N_E = 48, 12, 4, 3, 2
#: GCA target plans and the options each needs.
TARGETS = {"identity": {}, "domain": {"alpha": 0.3, "beta": 0.1}, "class": {}}
GCA = ("ince", "gca_ince", "rince", "gca_rince", "gca_uot")
CASES = [(name, {}) for name in losses.names() if name not in GCA] + [
    (name, {"target": target, **options}) for name in GCA for target, options in TARGETS.items()
]


def _ids(case):
    name, params = case
    return f"{name}-{params.get('target', '')}".rstrip("-")


def _data(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(N, N_U, generator=gen, dtype=torch.float64)
    v = u[:, :N_V] + 0.5 * torch.randn(N, N_V, generator=gen, dtype=torch.float64)
    fields = {"class_ids": torch.arange(N) % 3, "domain_ids": torch.arange(N) % 2}
    return u.to(dtype), v.to(dtype), fields


def _model(dtype=torch.float32):
    torch.manual_seed(1)
    model = BimodalModel(LinearEncoder(N_U, N_E), LinearEncoder(N_V, N_E), metric="cosine", tau=0.5)
    return model.to(dtype)


def _config(steps_epochs=1):
    return TrainConfig(epochs=steps_epochs, lr=0.05, device="cpu", log_every=1, threads=1)


def test_every_registered_loss_is_covered():
    assert {name for name, _ in CASES} == set(losses.names())


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_one_step_of_each_loss_and_target(case):
    name, params = case
    u, v, fields = _data()
    stream = TensorStream(u, v, batch_size=B, seed=3, fields=fields)
    loss_fn = losses.build(name, metric="cosine", **params)
    model = _model()
    # The loss of the first batch, computed by hand from the batch fields the loss declares.
    first = next(stream.epoch(0))
    out = model(first["u"], first["v"])
    expected = loss_fn(
        out.z_u, out.z_v, logit_scale=out.logit_scale, logit_bias=out.logit_bias, **{k: first[k] for k in loss_fn.reads}
    ).loss.item()
    before = [p.detach().clone() for p in model.parameters()]

    class OneBatch:
        batches_per_epoch = 1

        def epoch(self, epoch, start_batch=0):
            yield first

    result = train(model, loss_fn, OneBatch(), _config())
    assert result.steps == 1
    assert result.last_loss == pytest.approx(expected, rel=1e-6, abs=1e-7)
    moved = [not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True)]
    assert any(moved), "the step changed no parameter"


def test_a_missing_field_is_named():
    u, v, _ = _data()
    loss_fn = losses.build("gca_ince", target="class")
    with pytest.raises(ValueError, match=r"class_ids.*lacks"):
        loss_inputs(loss_fn, {"u": u, "v": v})
    with pytest.raises(ValueError, match=r"class_ids"):
        train(_model(), loss_fn, TensorStream(u, v, batch_size=B), _config())


def test_nan_never_passes_for_a_loss():
    u, v, _ = _data()
    bad = u.clone()
    bad[:] = float("nan")
    with pytest.raises(ValueError, match="NaN"):  # the loss's own check of the embeddings
        train(_model(), losses.build("clip"), TensorStream(bad, v, batch_size=B), _config())

    class Overflowing(losses.PairLoss):
        def loss_from_logits(self, logits):
            return logits.sum() * float("inf")

    with pytest.raises(FloatingPointError, match="step 1"):
        train(_model(), Overflowing(), TensorStream(u, v, batch_size=B), _config())


def test_weight_decay_spares_vectors_and_the_temperature():
    from clipmath.multimodal.trainer import parameter_groups

    model = BimodalModel(torch.nn.Linear(N_U, N_E), LinearEncoder(N_V, N_E), tau=0.5, bias=-1.0)
    decayed, spared = parameter_groups(model, 0.1)
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(decayed) == {id(model.g_u.weight), id(model.g_v.weight)}
    assert ids(spared) == {id(model.g_u.bias), id(model.logit_scale), id(model.logit_bias)}


# ---------------------------------------------------------------- two gloo ranks

#: The losses that read batch fields, each a different kind of field (float data, integer ids).
READING = [
    ("mmd_conditional", {}),
    ("mmd_joint", {}),
    ("gca_ince", {"target": "class"}),
    ("gca_uot", {"target": "domain", "alpha": 0.3, "beta": 0.1}),
]


def _train_world(name, params, rank=0, world_size=1):
    u, v, fields = _data(torch.float64)
    stream = TensorStream(u, v, batch_size=B, seed=3, rank=rank, world_size=world_size, fields=fields)
    model = _model(torch.float64)
    result = train(model, losses.build(name, **params), stream, _config(steps_epochs=2))
    return result, {k: p.detach().clone() for k, p in model.state_dict().items()}


def _worker(rank, port, out_dir):
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.distributed.init_process_group("gloo")
    try:
        for index, (name, params) in enumerate(READING):
            result, state = _train_world(name, params, rank, 2)
            torch.save(
                {"epoch_losses": result.epoch_losses, "state": state}, os.path.join(out_dir, f"{index}-{rank}.pt")
            )
    finally:
        torch.distributed.destroy_process_group()


def test_losses_reading_fields_match_one_process_under_two_gloo_ranks(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for index, (name, params) in enumerate(READING):
        result, state = _train_world(name, params)
        for rank in range(2):
            got = torch.load(tmp_path / f"{index}-{rank}.pt")
            # float64 throughout: only the order of reductions differs (round-off ~1e-15).
            assert got["epoch_losses"] == pytest.approx(result.epoch_losses, rel=1e-9), name
            for key, value in state.items():
                torch.testing.assert_close(got["state"][key], value, rtol=1e-9, atol=1e-12, msg=f"{name}: {key}")
