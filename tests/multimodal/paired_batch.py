"""A small correlated paired batch shared by the loss tests."""

import torch


def paired_batch(dtype, seed=0, size=5, n_e=3):
    """(z_u, z_v) of shape (size, n_e) with z_v = z_u + 0.7 noise, drawn in float64, cast to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    z_u = torch.randn(size, n_e, generator=gen, dtype=torch.float64)
    z_v = z_u + 0.7 * torch.randn(size, n_e, generator=gen, dtype=torch.float64)
    return z_u.to(dtype), z_v.to(dtype)
