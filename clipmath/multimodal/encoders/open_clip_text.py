r"""open_clip's text tower as the encoder :math:`g_v` of captions (registered ``open_clip_text``).

The tower is open_clip's ``TextTransformer``, built from a named open_clip architecture or a
small explicit config exactly as ``open_clip.CLIP`` builds its text parts (``CLIP`` keeps the
same modules, ``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
``text_projection`` and the causal ``attn_mask``, as its own attributes). Its forward is
``CLIP.encode_text``: token embedding plus positions, the causal transformer, the final layer
norm, the feature of the end-of-text token (the largest id of each row, ``pool_type="argmax"``)
and the projection. Token ids come from open_clip's tokenizer
(:class:`clipmath.datasets.tokens.TokenizeCaptions`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from clipmath.multimodal.encoders._inputs import check_token_ids
from clipmath.multimodal.encoders.base import register
from clipmath.multimodal.encoders.open_clip_adapter import (
    load_tower,
    named_config,
    override,
    read_open_clip_state,
    refuse_remote,
    resolve_embed_dim,
    tower_state,
)

_REQUIRED = ("width", "heads", "layers")


@register("open_clip_text")
class OpenClipText(nn.Module):
    r"""open_clip text tower :math:`g_v: \{0, \dots, V-1\}^{L} \to \mathbb R^{n_e}`.

    Either ``model_name`` (an open_clip architecture such as ``"ViT-B-32"``, built from scratch,
    no download) or the explicit config (``width``, ``heads``, ``layers``; ``context_length`` and
    ``vocab_size`` default to open_clip's 77 and 49,408, the sizes of its ``SimpleTokenizer``)
    describes the tower; explicit values override named ones. ``pretrained`` loads local weights
    strictly, from an open_clip checkpoint of the whole model (its text entries) or of the tower
    alone.

    Args:
        model_name: an open_clip architecture name (``open_clip.list_models()``), or None.
        n_e: embedding dimension (open_clip's ``embed_dim``); None takes the named one.
        context_length: L, tokens per caption (the tokenizer must pad to it).
        vocab_size: V, size of the token embedding (must exceed every id the tokenizer makes).
        width: transformer width.
        heads: attention heads (a divisor of ``width``).
        layers: transformer blocks.
        mlp_ratio: MLP hidden width over ``width`` (open_clip's default 4).
        pretrained: path of a local checkpoint, or None.

    Raises:
        ValueError: for an unknown ``model_name`` (or one whose text tower is a Hugging Face
            model), a missing or non-positive size, ``heads`` not dividing ``width``, or weights
            that do not fit.
    """

    def __init__(
        self,
        model_name: str | None = None,
        n_e: int | None = None,
        context_length: int | None = None,
        vocab_size: int | None = None,
        width: int | None = None,
        heads: int | None = None,
        layers: int | None = None,
        mlp_ratio: float | None = None,
        pretrained: str | None = None,
    ):
        super().__init__()
        from open_clip.model import _build_text_tower  # what open_clip.CLIP builds its text parts with

        config = named_config(model_name)
        self.n_e = resolve_embed_dim(config, n_e)
        text_cfg = dict(config.get("text_cfg", {}))
        refuse_remote(text_cfg, model_name)
        values = {
            "context_length": context_length,
            "vocab_size": vocab_size,
            "width": width,
            "heads": heads,
            "layers": layers,
            "mlp_ratio": mlp_ratio,
        }
        text_cfg = override(text_cfg, values, _REQUIRED, named=model_name is not None)
        text_cfg.setdefault("context_length", 77)
        text_cfg.setdefault("vocab_size", 49408)
        if text_cfg.get("width", 512) % text_cfg.get("heads", 8):
            raise ValueError(
                f"heads={text_cfg.get('heads', 8)}: expected a divisor of width={text_cfg.get('width', 512)}"
            )
        self.text = _build_text_tower(self.n_e, text_cfg, quick_gelu=bool(config.get("quick_gelu", False)))
        self.context_length = int(text_cfg["context_length"])
        self.vocab_size = int(text_cfg["vocab_size"])
        if pretrained is not None:
            state = read_open_clip_state(pretrained)
            load_tower(self.text, tower_state(state, "text"), f"pretrained={str(pretrained)!r} (text tower)")

    def forward(self, text: Any) -> Tensor:
        """Embed captions, as ``open_clip.CLIP.encode_text``.

        Args:
            text: ``{"ids": (B, L)}`` or (B, L) integer token ids, L = ``context_length``, each row
                open_clip's start token, the caption's tokens, the end token (the row's largest
                id) and zero padding.

        Returns:
            (B, n_e) text embeddings (not normalised).
        """
        out = self.text(check_token_ids(text, self.context_length, self.vocab_size))
        return out[0] if isinstance(out, tuple) else out

    def extra_repr(self) -> str:
        """The sizes shown by ``repr``."""
        return f"n_e={self.n_e}, context_length={self.context_length}, vocab_size={self.vocab_size}"
