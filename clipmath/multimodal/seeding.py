"""One seed for Python, NumPy and torch, and the random state a checkpoint must carry.

Data order is not drawn from these global generators: every batch source seeds its own
shuffles (and its workers) from ``(seed, epoch)``, so that resuming at a stream position
reproduces the same batches without replaying the generators.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: a non-negative integer below 2**32 (NumPy's limit).

    Raises:
        ValueError: if ``seed`` is not such an integer.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r}: expected an integer in [0, 2**32)")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    """The state of every global generator, for a checkpoint.

    Returns:
        dict with ``python``, ``numpy``, ``torch_cpu`` and ``torch_cuda`` (a list, one state per
        device; empty without CUDA).
    """
    # NumPy's key goes into a tensor so that checkpoints load with ``weights_only=True``.
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    return {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore the generators from :func:`rng_state`'s output.

    CUDA states are restored only when the saved run had CUDA and this process has it too;
    bitwise reproducibility is promised on CPU only.
    """
    random.setstate(state["python"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = dict(numpy_state["state"])
    numpy_state["state"]["key"] = numpy_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch_cpu"])
    if state["torch_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
