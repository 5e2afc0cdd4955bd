"""Seeded per-sample augmentation in the stream's workers keeps an interrupted run exact on resume."""

import numpy as np
import pytest
import torch

from clipmath.datasets import ShardStream, write_shards
from clipmath.experiments.rundir import RunDir
from clipmath.multimodal import encoders, losses
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.trainer import TrainConfig, train


def shifted_view(sample, generator):
    """A random translation by up to 3 pixels and a random intensity gain: a seeded augmentation."""
    shift = torch.randint(-3, 4, (2,), generator=generator).tolist()
    gain = 0.7 + 0.6 * torch.rand((), generator=generator)
    image = torch.roll(sample["image"].float() / 255.0, shifts=shift, dims=(1, 2)) * gain
    return {"u": image.clamp(0, 1), "v": sample["label"]}


class _Interrupted(Exception):
    pass


class _StopAfter:
    def __init__(self, stream, limit):
        self.stream, self.limit, self.served = stream, limit, 0
        self.batches_per_epoch = stream.batches_per_epoch

    def epoch(self, epoch, start_batch=0):
        for batch in self.stream.epoch(epoch, start_batch):
            if self.served == self.limit:
                raise _Interrupted
            self.served += 1
            yield batch


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("digits")
    from PIL import Image

    samples = (
        {
            "__key__": f"d{i:04d}",
            "image": Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)),
            "label": int(i % 10),
        }
        for i in range(96)
    )
    write_shards(samples, folder, max_count=24)
    return folder


def _model(seed):
    torch.manual_seed(seed)
    return BimodalModel(
        encoders.build("lenet", n_e=10),
        encoders.build("fixed", kind="one_hot", n_classes=10),
        metric="inner",
        tau=1.0,
        learn_tau=False,
    )


def _stream(shards, workers):
    return ShardStream(
        shards, batch_size=16, seed=5, fields=("image", "label"), transform=shifted_view, num_workers=workers
    )


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_with_augmentation_is_bitwise_identical(shards, tmp_path, workers):
    config = TrainConfig(epochs=2, lr=1e-3, checkpoint_every=3, device="cpu", threads=1)
    loss = losses.build("conditional", metric="inner", direction="v_given_u")
    full_model = _model(0)
    full = train(full_model, loss, _stream(shards, workers), config, RunDir("t", path=tmp_path / "full"))

    cut = RunDir("t", path=tmp_path / "cut")
    with pytest.raises(_Interrupted):
        train(_model(0), loss, _StopAfter(_stream(shards, workers), 8), config, cut)
    cut.resuming = True
    resumed_model = _model(7)  # the checkpoint must decide, not the initialisation
    resumed = train(resumed_model, loss, _stream(shards, workers), config, cut)

    assert resumed.resumed_at == 6 and resumed.steps == full.steps == 12
    assert resumed.epoch_losses == full.epoch_losses
    for p, q in zip(full_model.parameters(), resumed_model.parameters(), strict=False):
        assert torch.equal(p, q)


def test_augmentation_differs_between_epochs_and_not_between_calls(shards):
    stream = _stream(shards, 0)
    first, again, later = (next(stream.epoch(e))["u"] for e in (0, 0, 1))
    assert torch.equal(first, again)
    assert not torch.equal(first, later)
