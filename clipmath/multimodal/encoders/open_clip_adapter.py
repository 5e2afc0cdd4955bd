r"""Between open_clip and clipmath: tower configs, local weights, and the logit-scale convention.

The encoders ``open_clip_vision`` and ``open_clip_text`` wrap the towers of an open_clip ``CLIP``
model (Radford et al. 2021; Cherti et al. 2023); this module holds what they share and the one
place where open_clip's conventions are converted to clipmath's.

**The temperature.** Both packages learn :math:`s = \log(1/\tau)`, but they hand it on
differently. open_clip stores :math:`s` in its parameter ``logit_scale`` and passes
:math:`e^{s} = 1/\tau` (what ``CLIP.forward`` returns as its third output, ``logit_scale.exp()``)
to ``ClipLoss``, which multiplies the cosine similarities by it. clipmath passes :math:`s` itself
(``BimodalOutput.logit_scale``) and every loss exponentiates it (eq. 13 of Baptista, Stuart & Tran
(2025): the score :math:`S_{ij} = e^{s}\,\mathrm{sim}(z_u^i, z_v^j) + b`). Feeding clipmath a
value in open_clip's convention would give a temperature of :math:`1/\log(1/\tau)` instead
of :math:`\tau`; :func:`clipmath_logit_scale` is the single conversion. open_clip's
``logit_bias`` (SigLIP) is additive in both and passes unchanged.

**Weights.** :func:`read_open_clip_state` reads a local checkpoint (never a download),
:func:`tower_state` picks one tower's entries out of a whole-model state dict, and
:func:`load_open_clip_weights` loads a whole open_clip model (towers, scale and bias) into a
:class:`~clipmath.multimodal.model.BimodalModel` whose encoders are open_clip towers.

``open_clip`` is imported inside the functions that need it, so importing the encoder package
stays light.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from clipmath.multimodal.encoders.base import check_positive_int

#: Whole-model entries that belong to neither tower.
_MODEL_KEYS = ("logit_scale", "logit_bias")


def clipmath_logit_scale(source: Any) -> Tensor:
    r"""Clipmath's ``logit_scale`` :math:`= \log(1/\tau)` from open_clip's convention.

    Two kinds of ``source``, read differently:

    - the scale open_clip hands its losses (a number or tensor :math:`e^{s} = 1/\tau`: what
      ``CLIP.forward`` returns third and ``ClipLoss`` receives as ``logit_scale``): its
      logarithm is returned;
    - an open_clip model (``nn.Module``) or its state dict (a mapping): its stored parameter
      ``logit_scale`` is already :math:`s = \log(1/\tau)`, i.e. the logarithm of what its
      ``forward`` hands on, and is returned as it is (taking ``log(exp(s))`` would only add
      round-off).

    Args:
        source: a positive scalar (shape (), (1,)) scale :math:`1/\tau`, or an open_clip model or
            state dict holding ``logit_scale``.

    Returns:
        Scalar float tensor (shape ()) :math:`\log(1/\tau)`, detached, in the source's floating
        dtype (float32 for a Python number), to pass as ``logit_scale`` to a clipmath loss or
        copy into ``BimodalModel.logit_scale``.

    Raises:
        ValueError: for a scale that is not a positive finite scalar, or a model or state dict
            without a finite scalar ``logit_scale``.
    """
    if isinstance(source, (nn.Module, Mapping)):
        stored = getattr(source, "logit_scale", None) if isinstance(source, nn.Module) else source.get("logit_scale")
        value = _scalar(stored, "logit_scale (open_clip's stored log(1/tau))")
        if not math.isfinite(float(value)):
            raise ValueError(f"logit_scale={float(value)}: the open_clip model's stored log(1/tau) is not finite")
        return value
    value = _scalar(source, "open_clip_scale")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(
            f"open_clip_scale={float(value)}: expected the positive, finite scale 1/tau that open_clip "
            "passes to its losses (exp of its logit_scale parameter)"
        )
    return torch.log(value)


def _scalar(value: Any, name: str) -> Tensor:
    """``value`` as a detached floating tensor of shape (); ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
        raise ValueError(f"{name}={value!r:.60}: expected a scalar number or tensor")
    tensor = torch.as_tensor(value).detach()
    if tensor.numel() != 1:
        raise ValueError(f"{name}: a tensor of shape {tuple(tensor.shape)}; expected a scalar")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    return tensor.reshape(()).clone()


def read_open_clip_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict stored in a local open_clip checkpoint file.

    Reads ``torch.save`` files (``.pt``, ``.pth``, ``.bin``; tensors only, ``weights_only=True``)
    and ``.safetensors``; a training checkpoint's ``{"state_dict": ...}`` is unwrapped and the
    ``module.`` prefix that DistributedDataParallel adds is removed, as open_clip does.

    Args:
        path: the checkpoint file.

    Returns:
        ``{name: tensor}``, a whole model's or one tower's entries.

    Raises:
        ValueError: for a missing or unreadable file, or one that holds no state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"pretrained={path!r}: no such file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader error is a bad file for the user, not a bug here
        raise ValueError(f"pretrained={path!r}: cannot read it as a checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"pretrained={path!r}: expected a state dict of tensors")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return dict(state)


def tower_state(state: Mapping[str, Tensor], tower: str) -> dict[str, Tensor]:
    """One tower's entries of an open_clip state dict, with the tower prefix removed.

    The layouts recognised: open_clip's ``CLIP`` (vision under ``visual.``, the text tower's
    ``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final`` and
    ``text_projection`` at the top level), ``CustomTextCLIP`` (text under ``text.``), the state
    dict of a clipmath ``open_clip_vision`` / ``open_clip_text`` encoder (the same prefixes), and
    a bare tower's own state dict (taken whole).

    Args:
        state: ``{name: tensor}`` from :func:`read_open_clip_state` or ``model.state_dict()``.
        tower: ``"visual"`` or ``"text"``.

    Returns:
        ``{name: tensor}`` to load into the open_clip tower module.
    """
    if tower not in ("visual", "text"):
        raise ValueError(f"tower={tower!r}: expected 'visual' or 'text'")
    has_visual = any(key.startswith("visual.") for key in state)
    if tower == "visual":
        if not has_visual:
            return dict(state)
        return {key[len("visual.") :]: value for key, value in state.items() if key.startswith("visual.")}
    if any(key.startswith("text.") for key in state):
        return {key[len("text.") :]: value for key, value in state.items() if key.startswith("text.")}
    if has_visual:
        return {key: value for key, value in state.items() if not key.startswith("visual.") and key not in _MODEL_KEYS}
    return dict(state)


def load_tower(module: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """Load ``state`` into a tower strictly; a mismatch is a ValueError naming ``what`` and the keys."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        own = set(module.state_dict())
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        detail = f"missing {missing[:5]}, unexpected {unexpected[:5]}" if missing or unexpected else str(err)
        raise ValueError(f"{what}: the weights do not fit this tower ({detail})") from None


def load_open_clip_weights(model: nn.Module, source: Any) -> nn.Module:
    r"""Load an open_clip model's towers, temperature and bias into a clipmath bimodal model.

    Each of ``model.g_u``, ``model.g_v`` that is an ``open_clip_vision`` encoder gets the vision
    tower, each ``open_clip_text`` encoder the text tower (strictly: every entry must fit);
    ``model.logit_scale`` gets :func:`clipmath_logit_scale` of the source, clamped to ``log 100``
    as the model requires, and ``model.logit_bias`` the source's bias. Afterwards
    ``model.scores(*model(images, ids)[:2])`` equals open_clip's ``logits_per_image`` (and the
    clipmath ``clip`` loss open_clip's ``ClipLoss``) for the same images and token ids, with the
    images given to clipmath as uint8 and to open_clip normalised.

    Args:
        model: a :class:`~clipmath.multimodal.model.BimodalModel` (anything with ``g_u``,
            ``g_v``, ``logit_scale`` and ``logit_bias``) with at least one open_clip encoder,
            built with the source's architecture.
        source: an open_clip model (``open_clip.CLIP`` or ``CustomTextCLIP``), its state dict, or
            the path of a local checkpoint.

    Returns:
        ``model``, loaded in place.

    Raises:
        ValueError: if no encoder is an open_clip tower, the weights do not fit, or the source has
            a ``logit_bias`` that the model lacks.
    """
    from clipmath.multimodal.encoders.open_clip_text import OpenClipText
    from clipmath.multimodal.encoders.open_clip_vision import OpenClipVision
    from clipmath.multimodal.model import MAX_LOGIT_SCALE

    if isinstance(source, nn.Module):
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = dict(source)
    else:
        state = read_open_clip_state(source)
    loaded = 0
    for name in ("g_u", "g_v"):
        encoder = getattr(model, name, None)
        for cls, tower in ((OpenClipVision, "visual"), (OpenClipText, "text")):
            if isinstance(encoder, cls):
                load_tower(getattr(encoder, tower), tower_state(state, tower), f"{name} ({tower} tower)")
                loaded += 1
    if not loaded:
        raise ValueError("model: neither g_u nor g_v is an open_clip_vision or open_clip_text encoder")
    with torch.no_grad():
        if "logit_scale" in state:
            value = clipmath_logit_scale(state).clamp(max=MAX_LOGIT_SCALE)
            model.logit_scale.copy_(value.to(model.logit_scale))
        if "logit_bias" in state:
            if getattr(model, "logit_bias", None) is None:
                raise ValueError(
                    f"model: the open_clip weights carry logit_bias={float(state['logit_bias'].reshape(-1)[0]):.4g}, "
                    "but the model has no bias; build it with bias=... (e.g. a SigLIP model)"
                )
            model.logit_bias.copy_(_scalar(state["logit_bias"], "logit_bias").to(model.logit_bias))
    return model


# --- configs shared by the two encoders -------------------------------------------------------


def named_config(model_name: str | None) -> dict:
    """open_clip's model config for ``model_name`` (a deep copy), or {} for None.

    Raises:
        ValueError: for a name open_clip does not know.
    """
    if model_name is None:
        return {}
    import open_clip

    if not isinstance(model_name, str) or open_clip.get_model_config(model_name) is None:
        raise ValueError(
            f"model_name={model_name!r}: not an open_clip architecture; expected a name from "
            "open_clip.list_models(), e.g. 'ViT-B-32'"
        )
    return open_clip.get_model_config(model_name)


def resolve_embed_dim(config: dict, n_e: Any) -> int:
    """``n_e`` if given, else the named config's ``embed_dim``; ValueError when neither is there."""
    if n_e is None:
        if "embed_dim" not in config:
            raise ValueError("n_e=None: expected the embedding dimension (or a model_name that sets it)")
        return int(config["embed_dim"])
    return check_positive_int("n_e", n_e)


def override(tower_cfg: dict, values: dict[str, Any], required: tuple[str, ...], named: bool) -> dict:
    """``tower_cfg`` with the given (non-None) ``values`` set, each checked to be a positive integer.

    Without a named config every ``required`` one must be given. ``heads`` is turned into
    open_clip's ``head_width`` for a vision tower by the caller.
    """
    if not named:
        missing = [name for name in required if values.get(name) is None]
        if missing:
            raise ValueError(
                f"{', '.join(f'{name}=None' for name in missing)}: expected positive integers for a tower "
                "built from an explicit config (or a model_name such as 'ViT-B-32')"
            )
    out = dict(tower_cfg)
    for name, value in values.items():
        if value is None:
            continue
        if name == "layers" and isinstance(value, (list, tuple)):  # open_clip's ModifiedResNet: four stages
            if len(value) != 4:
                raise ValueError(f"layers={list(value)!r}: expected one integer (a ViT) or four (a ResNet's stages)")
            out[name] = tuple(check_positive_int(name, item) for item in value)
        elif name == "mlp_ratio":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"mlp_ratio={value!r}: expected a positive number")
            out[name] = float(value)
        else:
            out[name] = check_positive_int(name, value)
    return out


def refuse_remote(tower_cfg: dict, model_name: str | None) -> None:
    """Refuse configs whose tower comes from Hugging Face (weights fetched at build time)."""
    if tower_cfg.get("hf_model_name"):
        raise ValueError(
            f"model_name={model_name!r}: its text tower is the Hugging Face model "
            f"{tower_cfg['hf_model_name']!r}, built by download; expected an open_clip transformer tower"
        )
    if tower_cfg.get("timm_model_name"):
        import importlib.util

        if importlib.util.find_spec("timm") is None:
            raise ValueError(
                f"model_name={model_name!r}: its vision tower is the timm model {tower_cfg['timm_model_name']!r}, "
                "and timm is not installed"
            )
