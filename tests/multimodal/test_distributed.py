"""Two gloo ranks on the CPU, each with half of a global batch, reproduce single-process training."""

import os
import socket

import pytest
import torch
import torch.nn.functional as F

from clipmath.multimodal.distributed import gather_with_grad, init_from_env, world_info

B, N_U, N_V, N_E, WORLD_SIZE = 12, 5, 4, 3, 2


def _clip_loss(z_u, z_v, logit_scale):
    """Eq. 7: mean of the row and column cross-entropies of exp(logit_scale) * cosine."""
    logits = logit_scale.exp() * F.normalize(z_u, dim=1) @ F.normalize(z_v, dim=1).T
    targets = torch.arange(logits.shape[0])
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def _model_and_batch():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {"g_u": torch.nn.Linear(N_U, N_E, dtype=torch.float64), "g_v": torch.nn.Linear(N_V, N_E, dtype=torch.float64)}
    )
    model.logit_scale = torch.nn.Parameter(torch.tensor(1.3, dtype=torch.float64))
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(B, N_U, generator=gen, dtype=torch.float64)
    v = torch.randn(B, N_V, generator=gen, dtype=torch.float64)
    return model, u, v


def _loss_and_grads(model, u, v, gather):
    loss = _clip_loss(gather(model.g_u(u)), gather(model.g_v(v)), model.logit_scale)
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(WORLD_SIZE), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    assert init_from_env() == (rank, WORLD_SIZE)
    model, u, v = _model_and_batch()
    local = slice(rank * B // WORLD_SIZE, (rank + 1) * B // WORLD_SIZE)
    loss, grads = _loss_and_grads(model, u[local], v[local], gather_with_grad)
    for grad in grads.values():
        # What DistributedDataParallel does to every parameter gradient.
        torch.distributed.all_reduce(grad)
        grad /= WORLD_SIZE
    torch.save({"loss": loss, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_match_the_global_batch(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    model, u, v = _model_and_batch()
    want_loss, want_grads = _loss_and_grads(model, u, v, lambda z: z)
    for rank in range(WORLD_SIZE):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        # float64 throughout: any surviving difference is round-off (~1e-15), far inside 1e-6.
        torch.testing.assert_close(got["loss"], want_loss, rtol=0, atol=1e-6)
        assert got["grads"].keys() == want_grads.keys()
        for name, grad in want_grads.items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=0, atol=1e-6, msg=name)


def test_single_process_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env() == (0, 1)
    assert world_info() == (0, 1)
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


def test_missing_environment_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match="MASTER_PORT"):
        init_from_env()


def test_unknown_backend_is_named(monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="backend='nonesuch'"):
        init_from_env("nonesuch")
