"""TokenizeCaptions: open_clip's tokenizer offline, picklable, as a ShardStream collate or transform."""

import pickle
import socket

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from clipmath.datasets import ShardStream, write_shards  # noqa: E402
from clipmath.datasets.tokens import TokenizeCaptions  # noqa: E402

SOT, EOT = 49406, 49407
CAPTIONS = ["a grinning face", "Smiling  Face with HEART-eyes", "red apple", "x " * 40]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails, so the tokenizer must work offline."""

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_ids_are_open_clips_tokens_offline(no_network):
    tokenize = TokenizeCaptions(context_length=16)
    ids = tokenize.tokenize(CAPTIONS)
    assert ids.dtype == torch.int64 and ids.shape == (len(CAPTIONS), 16)
    torch.testing.assert_close(ids, open_clip.SimpleTokenizer(context_length=16)(CAPTIONS))
    assert (ids[:, 0] == SOT).all()
    # The end token is each row's largest id, where open_clip's text tower pools (argmax).
    assert (ids.gather(1, ids.argmax(1, keepdim=True)) == EOT).all()
    assert ids[-1, -1] == EOT  # a long caption is cut and still ends with the end token
    assert ids[0, 5] == EOT and (ids[0, 6:] == 0).all()  # "a grinning face": 4 tokens, start, end, zeros


def test_named_models_tokenizer_offline(no_network):
    ids = TokenizeCaptions(context_length=77, model_name="ViT-B-32").tokenize(CAPTIONS[:2])
    torch.testing.assert_close(ids, open_clip.tokenize(CAPTIONS[:2]))


def test_collate_tokenizes_and_collates_the_rest():
    tokenize = TokenizeCaptions(context_length=8)
    samples = [
        {"u": torch.full((3, 2, 2), i, dtype=torch.uint8), "txt": c, "label": torch.tensor(i), "key": f"k{i}"}
        for i, c in enumerate(CAPTIONS[:3])
    ]
    batch = tokenize(samples)
    assert set(batch) == {"u", "txt", "label", "v"}
    torch.testing.assert_close(batch["v"]["ids"], tokenize.tokenize(CAPTIONS[:3]))
    assert batch["u"].shape == (3, 3, 2, 2) and batch["u"].dtype == torch.uint8
    torch.testing.assert_close(batch["label"], torch.arange(3))
    assert batch["txt"] == CAPTIONS[:3]
    assert "txt" not in TokenizeCaptions(context_length=8, keep_captions=False)(samples)


def test_transform_draws_one_of_several_captions_reproducibly():
    tokenize = TokenizeCaptions(context_length=8, caption_field="captions", output_field="ids")
    sample = {"captions": ["a photo of the digit seven", "7", "seven"], "key": "s"}
    draws = [tokenize.transform(sample, torch.Generator().manual_seed(seed))["ids"] for seed in range(20)]
    assert all(d.shape == (8,) and d.dtype == torch.int64 for d in draws)
    assert len({tuple(d.tolist()) for d in draws}) == 3  # every template is drawn
    again = tokenize.transform(sample, torch.Generator().manual_seed(3))["ids"]
    torch.testing.assert_close(again, draws[3])
    with pytest.raises(ValueError, match="choose one per sample"):
        tokenize([sample])


def test_picklable_without_its_vocabulary():
    tokenize = TokenizeCaptions(context_length=8)
    data = pickle.dumps(tokenize)
    assert len(data) < 10_000  # the 2 MB tokenizer is rebuilt, not shipped to each worker
    torch.testing.assert_close(pickle.loads(data).tokenize(CAPTIONS), tokenize.tokenize(CAPTIONS))


@pytest.mark.parametrize("use", ["collate", "transform"])
def test_in_a_shard_stream_with_a_worker(tmp_path, use, no_network):
    rng = np.random.default_rng(0)
    samples = [
        {"__key__": f"s{i:03d}", "jpg": rng.integers(0, 256, (3, 4, 4), dtype=np.uint8), "txt": f"caption number {i}"}
        for i in range(12)
    ]
    write_shards(samples, tmp_path, max_count=6)
    tokenize = TokenizeCaptions(context_length=10)
    option = {"collate": tokenize} if use == "collate" else {"transform": tokenize.transform}
    stream = ShardStream(
        tmp_path, batch_size=4, shuffle_buffer=0, num_workers=1, fields={"u": "jpg", "txt": "txt"}, **option
    )
    batches = list(stream.epoch(0))
    assert len(batches) == 3
    for batch in batches:
        ids = batch["v"]["ids"] if use == "collate" else batch["v"]
        assert ids.shape == (4, 10) and ids.dtype == torch.int64
        torch.testing.assert_close(ids, tokenize.tokenize(batch["txt"]))
        assert batch["u"].shape == (4, 3, 4, 4)
        assert [f"caption number {int(key[1:])}" for key in batch["key"]] == batch["txt"]


def test_bad_input():
    with pytest.raises(ValueError, match="context_length=1"):
        TokenizeCaptions(context_length=1)
    with pytest.raises(ValueError, match="output_field='key'"):
        TokenizeCaptions(output_field="key")
    with pytest.raises(ValueError, match="model_name='no-such-model'"):
        TokenizeCaptions(model_name="no-such-model")
    tokenize = TokenizeCaptions(context_length=8)
    with pytest.raises(ValueError, match="caption_field='txt'"):
        tokenize([{"caption": "x", "key": "a"}])
    with pytest.raises(ValueError, match="holds a int"):
        tokenize([{"txt": 3, "key": "a"}])
