"""Feature-cache gradient accumulation: the gradient of the whole batch, micro-batch by micro-batch.

Reference: one forward of the whole batch and ``loss.backward()``, in float64. The accumulated
step sums the same terms in another order (the loss's gradient with respect to the embeddings
once, then each micro-batch's encoder backward), so the two agree to round-off: float64's
2.2e-16 per operation over sums of a few dozen terms is ~1e-14 relative; the tolerance 1e-11
relative to the largest gradient entry leaves a 1000-fold margin.
"""

import pytest
import torch
from torch import nn

from clipmath.multimodal import encoders, losses
from clipmath.multimodal.accumulation import accumulated_step, micro_batch_bounds
from clipmath.multimodal.model import BimodalModel

B, N_U, N_V, N_E = 12, 5, 4, 3
RTOL = 1e-11

CASES = {
    "clip": ({"name": "clip"}, {}),
    "clip_tiled": ({"name": "clip", "tile_size": 5}, {}),
    "siglip": ({"name": "siglip"}, {"tau": 0.5, "bias": -2.0}),
    "gca_uot_class": ({"name": "gca_uot", "target": "class"}, {}),
    "gca_ince_domain": ({"name": "gca_ince", "target": "domain", "alpha": 0.3, "beta": 0.1}, {}),
    "mmd_conditional": ({"name": "mmd_conditional"}, {}),
}


def _model(**tilting):
    torch.manual_seed(0)
    g_u = encoders.build("mlp", n_in=N_U, n_e=N_E, hidden=[6])
    g_v = encoders.build("linear", n_in=N_V, n_e=N_E)
    return BimodalModel(g_u, g_v, metric="cosine", **{"tau": 0.3, **tilting}).double()


def _batch():
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(B, N_U, generator=gen, dtype=torch.float64)
    v = u[:, :N_V] + 0.5 * torch.randn(B, N_V, generator=gen, dtype=torch.float64)
    return {"u": u, "v": v, "class_ids": torch.arange(B) % 3, "domain_ids": torch.arange(B) % 2, "key": list(range(B))}


def _one_batch(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    out = model(batch["u"], batch["v"])
    extras = {name: batch[name] for name in loss_fn.reads}
    loss = loss_fn(out.z_u, out.z_v, logit_scale=out.logit_scale, logit_bias=out.logit_bias, **extras).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def _accumulated(model, loss_fn, batch, micro_batches):
    model.zero_grad(set_to_none=True)
    result = accumulated_step(model, loss_fn, batch, micro_batches)
    return result.loss, {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def _assert_same(grads, reference):
    assert grads.keys() == reference.keys()
    for name, grad in grads.items():
        scale = reference[name].abs().max().clamp(min=1e-300)
        torch.testing.assert_close(grad, reference[name], rtol=0, atol=RTOL * float(scale), msg=name)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("micro_batches", [1, 4, 5, B])
def test_gradient_equals_one_batch_gradient(case, micro_batches):
    loss_params, tilting = CASES[case]
    params = dict(loss_params)
    loss_fn = losses.build(params.pop("name"), **params)
    model, batch = _model(**tilting), _batch()
    loss, reference = _one_batch(model, loss_fn, batch)
    assert reference["logit_scale"].abs() > 0  # the temperature's gradient is part of the check
    acc_loss, grads = _accumulated(model, loss_fn, batch, micro_batches)
    torch.testing.assert_close(acc_loss, loss, rtol=1e-14, atol=0)
    _assert_same(grads, reference)


def test_temperature_gradient_counted_once():
    # open_clip's loop adds dL/ds once per micro-batch; here the sum must equal the one-batch value.
    loss_fn = losses.build("clip")
    model, batch = _model(), _batch()
    _, reference = _one_batch(model, loss_fn, batch)
    _, grads = _accumulated(model, loss_fn, batch, 4)
    torch.testing.assert_close(grads["logit_scale"], reference["logit_scale"], rtol=1e-12, atol=0)


def test_dict_inputs_and_gradients_accumulate_onto_existing_ones():
    class DictEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_e = N_E
            self.linear = nn.Linear(N_V, N_E, dtype=torch.float64)

        def forward(self, v):
            return self.linear(v["x"]) * v["w"][:, None]

    torch.manual_seed(0)
    model = BimodalModel(encoders.build("linear", n_in=N_U, n_e=N_E), DictEncoder(), tau=0.3).double()
    batch = _batch()
    batch["v"] = {"x": batch["v"], "w": torch.linspace(0.5, 1.5, B, dtype=torch.float64)}
    loss_fn = losses.build("clip")
    _, reference = _one_batch(model, loss_fn, batch)
    model.zero_grad(set_to_none=True)
    accumulated_step(model, loss_fn, batch, 3)
    accumulated_step(model, loss_fn, batch, 2)  # a second call adds, as backward does
    grads = {name: p.grad / 2 for name, p in model.named_parameters()}
    _assert_same(grads, reference)


class _Dropout(nn.Module):
    """A linear encoder with dropout: its output depends on the RNG."""

    def __init__(self, n_in):
        super().__init__()
        self.n_e = N_E
        self.linear = nn.Linear(n_in, N_E, dtype=torch.float64)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.linear(self.drop(x))


def test_random_layers_draw_the_same_numbers_twice():
    # Reference: the micro-batches embedded with gradient in order (the draws the cache sees),
    # concatenated, and the loss of the whole batch back-propagated.
    torch.manual_seed(0)
    model = BimodalModel(_Dropout(N_U), _Dropout(N_V), tau=0.3).double()
    batch, loss_fn, m = _batch(), losses.build("clip"), 3
    bounds = micro_batch_bounds(B, m)
    torch.manual_seed(5)
    outs = [model(batch["u"][a:b], batch["v"][a:b]) for a, b in bounds]
    z_u, z_v = torch.cat([o.z_u for o in outs]), torch.cat([o.z_v for o in outs])
    loss = loss_fn(z_u, z_v, logit_scale=outs[0].logit_scale).loss
    loss.backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters()}
    after = torch.rand(())
    torch.manual_seed(5)
    acc_loss, grads = _accumulated(model, loss_fn, batch, m)
    torch.testing.assert_close(acc_loss, loss.detach(), rtol=1e-14, atol=0)
    _assert_same(grads, reference)
    assert torch.rand(()) == after  # the RNG continues as after one pass over the batch


def test_frozen_tower_gets_no_gradient():
    model, batch, loss_fn = _model(), _batch(), losses.build("clip")
    for p in model.g_v.parameters():
        p.requires_grad_(False)
    _, reference = _one_batch(model, loss_fn, batch)
    model.zero_grad(set_to_none=True)
    accumulated_step(model, loss_fn, batch, 4)
    assert all(p.grad is None for p in model.g_v.parameters())
    _assert_same({n: p.grad for n, p in model.named_parameters() if p.requires_grad}, reference)


def test_bad_input():
    model, batch, loss_fn = _model(), _batch(), losses.build("clip")
    with pytest.raises(ValueError, match="micro_batches=0"):
        accumulated_step(model, loss_fn, batch, 0)
    with pytest.raises(ValueError, match=f"micro_batches={B + 1}"):
        accumulated_step(model, loss_fn, batch, B + 1)
    with pytest.raises(ValueError, match="'u' and 'v'"):
        accumulated_step(model, loss_fn, {"u": batch["u"]}, 2)
    with pytest.raises(ValueError, match="expected pairs"):
        accumulated_step(model, loss_fn, {"u": batch["u"], "v": batch["v"][:-1]}, 2)
    gca = losses.build("gca_uot", target="class")
    with pytest.raises(ValueError, match="class_ids"):
        accumulated_step(model, gca, {"u": batch["u"], "v": batch["v"]}, 2)


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank, port, out_dir, micro_batches):
    import os

    from clipmath.multimodal.distributed import init_from_env

    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    init_from_env("gloo")
    model, batch = _model(), _batch()
    loss_fn = losses.build("gca_uot", target="class")  # reads class_ids, gathered like the embeddings
    net = nn.parallel.DistributedDataParallel(model)
    local = slice(rank * B // 2, (rank + 1) * B // 2)
    result = accumulated_step(net, loss_fn, {name: value[local] for name, value in batch.items()}, micro_batches)
    grads = {name: p.grad for name, p in model.named_parameters()}
    torch.save({"loss": result.loss, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_ranks_with_ddp_match_the_global_batch(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(_free_port(), str(tmp_path), 2), nprocs=2, join=True)
    loss, reference = _one_batch(_model(), losses.build("gca_uot", target="class"), _batch())
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["loss"], loss, rtol=1e-13, atol=0)
        _assert_same(got["grads"], reference)
