"""The finite-batch floor (issue 11, §3): the SAA optimum of the expected two-sided batch loss."""

import numpy as np
import pytest
import torch

from clipmath.multimodal import losses
from clipmath.theory import ConvergenceError, optimal_alignment, random_gaussian_pair
from clipmath.theory.finite_batch import _batch_losses_and_gradients, batch_optimum, epoch_batches, gaussian_batches


@pytest.fixture
def pair():
    return random_gaussian_pair(3, 2, seed=4)


def test_batch_loss_is_the_trained_conditional_loss_and_its_gradient(pair):
    u, v = gaussian_batches(pair, 16, 3, seed=0)
    A = optimal_alignment(pair, "conditional").A + 0.1
    values, grads = _batch_losses_and_gradients(A, u, v)
    module = losses.build("conditional", metric="inner", direction="two_sided")
    for k in range(3):
        a = torch.tensor(A, requires_grad=True)
        uu, vv = torch.tensor(u[k]), torch.tensor(v[k])
        out = module(uu @ a, vv, torch.tensor(0.0, dtype=torch.float64)).loss  # S_ij = u_i A v_j
        out.backward()
        assert values[k] == pytest.approx(out.item(), rel=1e-12)
        np.testing.assert_allclose(grads[k], a.grad.numpy(), atol=1e-12)


def test_batch_optimum_is_stationary_and_tends_to_the_population_optimum(pair):
    star = optimal_alignment(pair, "conditional").A
    gaps = []
    for b in (8, 128):
        fit = batch_optimum(pair, *gaussian_batches(pair, b, 2**15 // b, seed=[1, b]))
        _, grads = _batch_losses_and_gradients(fit.A, *gaussian_batches(pair, b, 2**15 // b, seed=[1, b]))
        assert np.abs(grads.mean(axis=0)).max() < 1e-8 * np.abs(star).max()
        se = np.sqrt(np.trace(fit.covariance))
        gaps.append((np.linalg.norm(fit.A - star), se))
    # The bias is O(1/B): at B = 8 it is many standard errors, at B = 128 far smaller.
    (gap_8, se_8), (gap_128, se_128) = gaps
    assert gap_8 > 5 * se_8 and gap_128 < 0.5 * gap_8


def test_epoch_batches_are_permutations_without_the_partial_batch():
    u, v = np.arange(10.0)[:, None], -np.arange(10.0)[:, None]
    bu, bv = epoch_batches(u, v, 3, 7, seed=0)
    assert bu.shape == (7, 3, 1) and np.array_equal(bu, -bv)
    first_epoch = bu[:3].ravel()
    assert len(set(first_epoch)) == 9  # one epoch: 3 batches of 3 distinct pairs, 1 pair left out
    with pytest.raises(ValueError, match="batch_size=11"):
        epoch_batches(u, v, 11, 2, seed=0)


def test_bad_batches_and_unreachable_tolerance(pair):
    u, v = gaussian_batches(pair, 8, 4, seed=0)
    with pytest.raises(ValueError, match="v: expected shape"):
        batch_optimum(pair, u, v[:, :, :1])
    with pytest.raises(ValueError, match="at least 2 batches"):
        batch_optimum(pair, u[:1], v[:1])
    with pytest.raises(ConvergenceError, match="batch_optimum"):
        batch_optimum(pair, u, v, rtol=1e-300, max_iterations=3)
