r"""A bag-of-words text encoder on token ids (registered ``bag_of_words``).

The simplest text tower that composes: a caption's embedding is a linear map of the mean of its
tokens' vectors, so a caption of seen words in an unseen combination ("red" and "pear" seen
apart) lands where its words point, whatever their order. It reads the same token ids as
``open_clip_text`` (:class:`clipmath.datasets.tokens.TokenizeCaptions`, padding id 0), so the two
towers swap by config alone: the baseline against which a text transformer trained from
scratch can be judged.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from clipmath.multimodal.encoders._inputs import check_token_ids
from clipmath.multimodal.encoders.base import check_positive_int, register

#: The id that pads a caption's row of token ids (open_clip's tokenizer pads with 0).
PADDING_ID = 0


@register("bag_of_words")
class BagOfWords(nn.Module):
    r"""Bag-of-words tower :math:`g_v(t) = W\,\mathrm{LN}\big(\tfrac{1}{|t|}\sum_{i \in t} e_{t_i}\big) + b`.

    The mean runs over the caption's tokens that are not padding (open_clip's start and end
    tokens, in every caption, included); a row of padding alone embeds as the mean of nothing,
    zero, before the layer norm.

    Args:
        n_e: embedding dimension.
        width: dimension of the token vectors :math:`e`.
        context_length: L, tokens per caption (the tokenizer must pad to it).
        vocab_size: V, number of token vectors (open_clip's tokenizer makes ids below 49,408).

    Raises:
        ValueError: for a non-positive size.
    """

    def __init__(self, n_e: int, width: int = 64, context_length: int = 77, vocab_size: int = 49408):
        super().__init__()
        self.n_e = check_positive_int("n_e", n_e)
        self.context_length = check_positive_int("context_length", context_length)
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.token_embedding = nn.Embedding(self.vocab_size, check_positive_int("width", width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)  # open_clip's token-embedding init
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, self.n_e)

    def forward(self, text: Any) -> Tensor:
        """Embed captions.

        Args:
            text: ``{"ids": (B, L)}`` or (B, L) integer token ids, L = ``context_length``, ids in
                [0, vocab_size), 0 for padding.

        Returns:
            (B, n_e) text embeddings (not normalised).

        Raises:
            ValueError: for ids of the wrong shape, dtype or range.
        """
        ids = check_token_ids(text, self.context_length, self.vocab_size)
        mask = (ids != PADDING_ID).unsqueeze(-1).to(self.token_embedding.weight.dtype)
        total = (self.token_embedding(ids) * mask).sum(dim=1)
        mean = total / mask.sum(dim=1).clamp(min=1.0)
        return self.proj(self.norm(mean))

    def extra_repr(self) -> str:
        """The sizes shown by ``repr``."""
        return f"n_e={self.n_e}, context_length={self.context_length}, vocab_size={self.vocab_size}"
