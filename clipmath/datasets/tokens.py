"""Captions to token ids with open_clip's tokenizer, offline, as a ShardStream collate or transform.

open_clip's ``SimpleTokenizer`` (the byte-pair encoding of CLIP, Radford et al. 2021) reads its
vocabulary from a file shipped inside the ``open_clip_torch`` package, so it works without a
network (``HF_HUB_OFFLINE=1``). Each caption becomes one row of ``context_length`` int64 ids:
the start token 49406, the caption's tokens (lower-cased, whitespace cleaned, cut to fit), the end
token 49407 (the row's largest id, where open_clip's text tower pools) and zeros.

:class:`TokenizeCaptions` is picklable (the tokenizer itself is rebuilt lazily in each DataLoader
worker rather than pickled), so it can run in the workers of
:class:`~clipmath.datasets.ShardStream`, either as its ``collate`` (the whole batch at once: one
call of the tokenizer per batch) or, through its ``transform`` method, per sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


class TokenizeCaptions:
    """Tokenize the caption field of samples into open_clip token ids.

    As a ``collate`` (``ShardStream(..., collate=TokenizeCaptions())``) it forms the batch: the
    captions of ``caption_field`` become ``batch[output_field] = {"ids": (B, L) int64}`` (the
    input that ``open_clip_text`` takes), and every other field is collated as the stream's
    default does (tensors of one shape and dtype stacked to (B, ...), anything else a list of B
    values). As a transform (``ShardStream(..., transform=tokenize.transform)``) it sets the
    sample's ``output_field`` to its (L,) ids, which the default collate stacks to a (B, L) tensor
    (``open_clip_text`` takes that too); a caption given as a list of strings (several templates or
    reference captions) is then drawn from the sample's seeded generator, so the choice is
    reproducible.

    Args:
        context_length: L, ids per caption (the text tower's ``context_length``), at least 2.
        model_name: None for open_clip's ``SimpleTokenizer``, or an open_clip architecture whose
            tokenizer ``open_clip.get_tokenizer`` builds (it must be available offline).
        caption_field: the sample field holding the caption (``txt`` in the img2dataset layout).
        output_field: the field the ids go to (``v`` when captions are the second modality).
        keep_captions: keep the caption strings under ``caption_field`` (as a list in the batch)
            when it differs from ``output_field``, e.g. for retrieval reports.

    Raises:
        ValueError: for a bad ``context_length`` or field name, or a tokenizer that cannot be built.
    """

    def __init__(
        self,
        context_length: int = 77,
        model_name: str | None = None,
        caption_field: str = "txt",
        output_field: str = "v",
        keep_captions: bool = True,
    ):
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
            raise ValueError(f"context_length={context_length!r}: expected an integer >= 2 (start and end tokens)")
        for name, value in (("caption_field", caption_field), ("output_field", output_field)):
            if not isinstance(value, str) or not value or value == "key":
                raise ValueError(f"{name}={value!r}: expected a field name other than 'key'")
        if model_name is not None and not isinstance(model_name, str):
            raise ValueError(f"model_name={model_name!r}: expected None or an open_clip architecture name")
        self.context_length = context_length
        self.model_name = model_name
        self.caption_field = caption_field
        self.output_field = output_field
        self.keep_captions = bool(keep_captions)
        self._tokenizer = None
        self._build()  # fail here, in the main process, rather than in a worker

    def _build(self) -> Any:
        if self._tokenizer is None:
            import open_clip

            try:
                if self.model_name is None:
                    self._tokenizer = open_clip.SimpleTokenizer(context_length=self.context_length)
                elif open_clip.get_model_config(self.model_name) is None:
                    # get_tokenizer would fall back to SimpleTokenizer with only a log warning.
                    raise KeyError("not an open_clip architecture (open_clip.list_models())")
                else:
                    self._tokenizer = open_clip.get_tokenizer(self.model_name, context_length=self.context_length)
            except Exception as err:  # an unknown name, or a tokenizer that needs the network
                raise ValueError(
                    f"model_name={self.model_name!r}: cannot build its open_clip tokenizer offline "
                    f"({type(err).__name__}: {err})"
                ) from None
        return self._tokenizer

    def __getstate__(self) -> dict:
        # The tokenizer (a 2 MB vocabulary) is rebuilt in each worker instead of being pickled.
        return {**self.__dict__, "_tokenizer": None}

    def tokenize(self, captions: list[str]) -> Tensor:
        """Token ids of captions.

        Args:
            captions: B strings.

        Returns:
            (B, context_length) int64 ids.
        """
        ids = self._build()(list(captions), context_length=self.context_length)
        return torch.as_tensor(ids, dtype=torch.int64)

    def _caption(self, sample: dict, generator: torch.Generator | None) -> str:
        if self.caption_field not in sample:
            raise ValueError(
                f"caption_field={self.caption_field!r}: sample {sample.get('key')!r} has only the fields "
                f"{sorted(sample)}"
            )
        caption = sample[self.caption_field]
        if isinstance(caption, (list, tuple)) and caption and all(isinstance(c, str) for c in caption):
            if generator is None:
                raise ValueError(
                    f"{self.caption_field}: sample {sample.get('key')!r} holds {len(caption)} captions; "
                    "choose one per sample with the transform (TokenizeCaptions(...).transform)"
                )
            caption = caption[int(torch.randint(len(caption), (), generator=generator))]
        if not isinstance(caption, str):
            raise ValueError(
                f"{self.caption_field}: sample {sample.get('key')!r} holds a {type(caption).__name__}; "
                "expected a caption string (or, in the transform, a list of them)"
            )
        return caption

    def __call__(self, samples: list[dict]) -> dict:
        """Collate a batch, tokenizing its captions (the ShardStream ``collate`` contract).

        Args:
            samples: B sample dicts, each with a caption string under ``caption_field``.

        Returns:
            The batch: ``{output_field: {"ids": (B, L) int64}, other fields collated}``.
        """
        if not samples:
            raise ValueError("samples: expected at least one sample")
        captions = [self._caption(sample, None) for sample in samples]
        names = [name for name in samples[0] if name not in ("key", self.output_field)]
        if not self.keep_captions:
            names = [name for name in names if name != self.caption_field]
        batch = {name: _collate_field([sample.get(name) for sample in samples]) for name in names}
        batch[self.output_field] = {"ids": self.tokenize(captions)}
        return batch

    def transform(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        """Tokenize one sample's caption (the ShardStream ``transform`` contract).

        Args:
            sample: a sample dict with a caption (or a list of captions) under ``caption_field``.
            generator: the sample's seeded generator, used to draw among several captions.

        Returns:
            The sample with ``output_field`` set to its (L,) int64 ids.
        """
        caption = self._caption(sample, generator)
        out = dict(sample)
        if not self.keep_captions and self.caption_field != self.output_field:
            out.pop(self.caption_field)
        out[self.output_field] = self.tokenize([caption])[0]
        return out

    def __repr__(self) -> str:
        return (
            f"TokenizeCaptions(context_length={self.context_length}, model_name={self.model_name!r}, "
            f"caption_field={self.caption_field!r}, output_field={self.output_field!r})"
        )


def _collate_field(values: list) -> Any:
    """One field of a batch as ShardStream's default collate forms it: stacked or a list."""
    if values and all(isinstance(v, (Tensor, np.ndarray)) for v in values):
        tensors = [torch.as_tensor(v) for v in values]
        if all(t.shape == tensors[0].shape and t.dtype == tensors[0].dtype for t in tensors):
            return torch.stack(tensors)
        return tensors
    return list(values)
