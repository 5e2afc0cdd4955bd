"""The GCA loss family and its target plans against naive float64 loops written from Chen et al. (2024)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from clipmath.multimodal import losses
from clipmath.multimodal.losses import gca
from clipmath.multimodal.losses.targets import class_positives, domain_prior, identity_pairs

B = 5
GCA_NAMES = ["ince", "gca_ince", "rince", "gca_rince", "gca_uot"]


def _embeddings(seed=0, batch=B, dtype=torch.float64, noise=0.7):
    gen = torch.Generator().manual_seed(seed)
    z_u = torch.randn(batch, 3, generator=gen, dtype=torch.float64)
    z_v = z_u + noise * torch.randn(batch, 3, generator=gen, dtype=torch.float64)
    return z_u.to(dtype), z_v.to(dtype)


def _naive_logits(z_u, z_v, tau):
    """S_ij = cos(z_u^i, z_v^j) / tau, by loops."""
    logits = torch.empty(len(z_u), len(z_v), dtype=torch.float64)
    for i in range(len(z_u)):
        for j in range(len(z_v)):
            logits[i, j] = z_u[i] @ z_v[j] / (z_u[i].norm() * z_v[j].norm() * tau)
    return logits


def _logits(seed=0, tau=0.2):
    return _naive_logits(*_embeddings(seed), tau)


def _naive_scalings(kernel, n_iter, mass=1.0, exponent=1.0):
    """Exp-domain (u, v) after each of n_iter row-then-column steps (Chen et al. 2024, §2 and §4.5)."""
    size = kernel.shape[0]
    v, history = torch.ones(size, dtype=torch.float64), []
    for _ in range(n_iter):
        u = torch.tensor([(mass / sum(kernel[i, j] * v[j] for j in range(size))) ** exponent for i in range(size)])
        v = torch.tensor([(mass / sum(kernel[i, j] * u[i] for i in range(size))) ** exponent for j in range(size)])
        history.append((u, v))
    return history


def _naive_half_steps(kernel, n_half):
    """P^(0) = K, then alternating row and column KL projections onto unit marginals."""
    plans = [kernel]
    for h in range(n_half):
        p = plans[-1]
        plans.append(p / p.sum(1, keepdim=True) if h % 2 == 0 else p / p.sum(0, keepdim=True))
    return plans


def _naive_generalized_kl(target, plan):
    total = 0.0
    for i in range(plan.shape[0]):
        for j in range(plan.shape[1]):
            t, p = float(target[i, j]), float(plan[i, j])
            total += (t * math.log(t / p) if t > 0 else 0.0) - t + p
    return total / plan.shape[0]


def _naive_robust(kernel_v, neg_u, target, lam, q):
    """(1/B) sum_i [(lam [P_tgt 1]_i / u_i)^q - (sum_j P_tgt_ij K_ij v_j)^q] / q, by loops."""
    total = 0.0
    for i in range(kernel_v.shape[0]):
        positive = sum(float(target[i, j] * kernel_v[i, j]) for j in range(kernel_v.shape[1]))
        total += ((lam * float(target[i].sum() * neg_u[i])) ** q - positive**q) / q
    return total / kernel_v.shape[0]


def _naive_rince(logits, lam, q):
    """RINCE of Chuang et al. (2022) as printed in §2 of Chen et al. (2024)."""
    total = 0.0
    for i in range(logits.shape[0]):
        negatives = sum(math.exp(float(logits[i, j])) for j in range(logits.shape[1]) if j != i)
        positive = math.exp(float(logits[i, i]))
        total += -(positive**q) / q + (lam * (positive + negatives)) ** q / q
    return total / logits.shape[0]


def test_generalized_kl_keeps_the_mass_terms():
    gen = torch.Generator().manual_seed(13)
    plan = torch.rand(B, B, generator=gen, dtype=torch.float64) + 0.05
    target = domain_prior(torch.tensor([0, 1, 0, 1, 1]), 0.3, 0.0, dtype=torch.float64)
    for dense, fast in ((identity_pairs(B, dtype=torch.float64), None), (target, target)):
        value = gca.generalized_kl(plan.log(), plan, fast).item()
        assert value == pytest.approx(_naive_generalized_kl(dense, plan), rel=1e-13)


def test_domain_prior_is_the_formula_in_the_requested_dtype():
    ids = torch.tensor([0, 1, 0, 1, 1])
    target = domain_prior(ids, 0.2, 0.05, dtype=torch.float64)
    assert target.dtype == torch.float64
    for i in range(5):
        for j in range(5):
            expected = 1.0 if i == j else (0.2 if ids[i] == ids[j] else 0.05)
            assert target[i, j].item() == expected  # exact: 0.2 is not rounded through float32
    assert domain_prior(ids, 0.2, 0.05).dtype == torch.float32


def test_ince_is_infonce_and_the_kl_of_one_row_step():
    logits = _logits()
    out = gca.ince_loss(logits)
    row_plan = _naive_half_steps(logits.exp(), 1)[1]
    torch.testing.assert_close(out.plan, row_plan, rtol=1e-13, atol=0)
    expected = _naive_generalized_kl(identity_pairs(B, dtype=torch.float64), row_plan)
    assert out.loss.item() == pytest.approx(expected, rel=1e-13)
    assert out.loss.item() == pytest.approx(F.cross_entropy(logits, torch.arange(B)).item(), rel=1e-13)


def test_clip_is_the_mean_of_the_two_ince_directions():
    z_u, z_v = _embeddings(1)
    scale = torch.tensor(math.log(1 / 0.3), dtype=torch.float64)
    clip = losses.build("clip")(z_u, z_v, logit_scale=scale).loss
    ince = losses.build("ince")
    both = 0.5 * (ince(z_u, z_v, logit_scale=scale).loss + ince(z_v, z_u, logit_scale=scale).loss)
    assert clip.item() == pytest.approx(both.item(), rel=1e-13)


@pytest.mark.parametrize("n_iter", [1, 3, 10])
def test_gca_ince_equals_naive_sinkhorn(n_iter):
    logits = _logits(2)
    plan = _naive_half_steps(logits.exp(), 2 * n_iter)[-1]
    out = gca.gca_ince_loss(logits, n_iter=n_iter)
    torch.testing.assert_close(out.plan, plan, rtol=1e-12, atol=0)
    assert out.n_iter == n_iter
    expected = -sum(math.log(float(plan[i, i])) for i in range(B)) / B
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_kl_to_identity_never_increases_over_half_steps(seed):
    """Pythagorean property of KL projections onto affine sets containing I (Chen et al. 2024, §5)."""
    gen = torch.Generator().manual_seed(seed)
    kernel = _logits(seed, tau=0.1).exp() if seed % 2 else torch.rand(B, B, generator=gen, dtype=torch.float64) + 0.01
    identity = identity_pairs(B, dtype=torch.float64)
    divergences = [_naive_generalized_kl(identity, plan) for plan in _naive_half_steps(kernel, 20)]
    for before, after in itertools.pairwise(divergences):
        assert after <= before + 1e-12 * abs(before)  # float64 round-off of B^2 terms
    assert divergences[-1] < divergences[1]  # the column steps do make progress
    loss = gca.gca_ince_loss(kernel.log(), n_iter=10).loss.item()
    assert loss == pytest.approx(divergences[20], rel=1e-12)


@pytest.mark.parametrize("n_iter", [2, 5, 20])
def test_gca_ince_is_at_most_ince(n_iter):
    for seed in range(5):
        logits = _logits(seed, tau=0.1)
        assert gca.gca_ince_loss(logits, n_iter=n_iter).loss <= gca.ince_loss(logits).loss + 1e-12


def test_rince_equals_the_formula_and_gca_rince_with_one_step():
    logits = _logits(3)
    rince = gca.rince_loss(logits, lam=0.05, q=0.6)
    assert rince.loss.item() == pytest.approx(_naive_rince(logits, 0.05, 0.6), rel=1e-13)
    one_step = gca.gca_rince_loss(logits, n_iter=1, lam=0.05, q=0.6)
    assert torch.equal(one_step.loss, rince.loss) and torch.equal(one_step.plan, rince.plan)


@pytest.mark.parametrize("n_iter", [2, 6])
def test_gca_rince_is_rince_on_the_column_reweighted_kernel(n_iter):
    logits = _logits(4)
    kernel = logits.exp()
    u, _ = _naive_scalings(kernel, n_iter)[-1]
    _, v_before = _naive_scalings(kernel, n_iter - 1)[-1]
    kernel_v = kernel * v_before[None, :]
    expected = _naive_robust(kernel_v, 1 / u, identity_pairs(B, dtype=torch.float64), 0.01, 0.6)
    out = gca.gca_rince_loss(logits, n_iter=n_iter, lam=0.01, q=0.6)
    assert out.loss.item() == pytest.approx(expected, rel=1e-11)
    # the plan is P^(2T-1), right after the T-th row step
    torch.testing.assert_close(out.plan, _naive_half_steps(kernel, 2 * n_iter - 1)[-1], rtol=1e-11, atol=0)


def test_gca_uot_equals_naive_scaling():
    tau, rho, n_iter, lam, q, w_kl, w_rince = 0.25, 0.2, 10, 0.01, 0.6, 1.0, 0.2
    logits = _logits(5, tau)
    kernel = logits.exp()
    u, v = _naive_scalings(kernel, n_iter, mass=1 / B, exponent=rho / (rho + tau))[-1]
    plan = u[:, None] * kernel * v[None, :]
    cross_entropy = -sum(math.log(float(plan[i, i] / plan[i].sum())) for i in range(B)) / B
    robust = sum(float(-((plan[i, i] / u[i]) ** q) / q + (lam / u[i]) ** q / q) for i in range(B)) / B
    out = gca.gca_uot_loss(logits, tau, n_iter=n_iter, rho=rho, lam=lam, q=q, w_kl=w_kl, w_rince=w_rince)
    torch.testing.assert_close(out.plan, plan, rtol=1e-12, atol=0)
    assert out.loss.item() == pytest.approx(w_kl * cross_entropy + w_rince * robust, rel=1e-12)


def test_target_builders_equal_loops():
    domains = torch.tensor([0, 1, 0, 2, 1])
    classes = torch.tensor([3, 3, 1, 0, 1])
    prior, positives = domain_prior(domains, 0.3, 0.05), class_positives(classes)
    for i in range(B):
        for j in range(B):
            expected = 1.0 if i == j else (0.3 if domains[i] == domains[j] else 0.05)
            assert prior[i, j].item() == pytest.approx(expected)
            assert positives[i, j].item() == (1.0 if classes[i] == classes[j] else 0.0)
    assert torch.equal(identity_pairs(B), torch.eye(B))


@pytest.mark.parametrize("name", ["ince", "gca_ince", "gca_rince", "gca_uot"])
def test_general_targets_equal_naive_loops(name):
    z_u, z_v = _embeddings(6)
    tau = 0.3
    logits = _naive_logits(z_u, z_v, tau)
    domains = torch.tensor([0, 1, 0, 1, 1])
    target = domain_prior(domains, 0.2, 0.1, dtype=torch.float64)
    kernel = logits.exp()
    if name == "ince":
        expected = _naive_generalized_kl(target, _naive_half_steps(kernel, 1)[1])
    elif name == "gca_ince":
        expected = _naive_generalized_kl(target, _naive_half_steps(kernel, 6)[-1])
    elif name == "gca_rince":
        u, _ = _naive_scalings(kernel, 3)[-1]
        _, v_before = _naive_scalings(kernel, 2)[-1]
        expected = _naive_robust(kernel * v_before[None, :], 1 / u, target, 0.01, 0.6)
    else:
        u, v = _naive_scalings(kernel, 3, mass=1 / B, exponent=0.2 / (0.2 + tau))[-1]
        plan = u[:, None] * kernel * v[None, :]
        expected = _naive_generalized_kl(target, plan / plan.sum(1, keepdim=True)) + 0.2 * _naive_robust(
            kernel * v[None, :], 1 / u, target, 0.01, 0.6
        )
    options = {} if name == "ince" else {"n_iter": 3}
    module = losses.build(name, target="domain", alpha=0.2, beta=0.1, **options)
    out = module(z_u, z_v, logit_scale=torch.tensor(math.log(1 / tau), dtype=torch.float64), domain_ids=domains)
    assert out.loss.item() == pytest.approx(expected, rel=1e-11)


def test_class_target_uses_every_same_class_pair():
    z_u, z_v = _embeddings(7)
    classes = torch.tensor([0, 0, 1, 1, 1])
    logits = _naive_logits(z_u, z_v, 0.5)
    expected = _naive_generalized_kl(class_positives(classes).double(), _naive_half_steps(logits.exp(), 1)[1])
    module = losses.build("ince", target="class")
    out = module(z_u, z_v, logit_scale=torch.tensor(math.log(2.0), dtype=torch.float64), class_ids=classes)
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", GCA_NAMES)
def test_gradcheck_float64(name):
    z_u, z_v = _embeddings(8, batch=4)
    scale = torch.tensor(math.log(1 / 0.4), dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_() for t in (z_u, z_v, scale))
    options = {} if name in ("ince", "rince") else {"n_iter": 3}
    module = losses.build(name, **options)

    def loss(z_u, z_v, scale):
        return module(z_u, z_v, logit_scale=scale).loss

    assert torch.autograd.gradcheck(loss, inputs)
    loss(*inputs).backward()
    assert inputs[2].grad.abs() > 1e-6  # logit_scale is trained by every GCA loss


@pytest.mark.parametrize("name", ["gca_ince", "gca_rince", "gca_uot"])
def test_envelope_forward_equals_unrolled(name):
    z_u, z_v = _embeddings(9)
    scale = torch.tensor(math.log(1 / 0.2), dtype=torch.float64)
    values = [losses.build(name, grad=grad)(z_u, z_v, logit_scale=scale).loss for grad in ("unrolled", "envelope")]
    assert values[0].item() == pytest.approx(values[1].item(), rel=1e-13)


@pytest.mark.parametrize(("name", "grad"), [("ince", None), ("gca_ince", "unrolled"), ("gca_ince", "envelope")])
def test_float32_small_temperature_is_finite(name, grad):
    z_u, z_v = _embeddings(10, batch=32, dtype=torch.float32, noise=2.0)
    z_u.requires_grad_()
    scale = torch.tensor(math.log(1 / 1e-3), requires_grad=True)
    out = losses.build(name, **({} if grad is None else {"grad": grad}))(z_u, z_v, logit_scale=scale)
    out.loss.backward()
    for tensor in (out.loss, out.plan, z_u.grad, scale.grad):
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("name", ["rince", "gca_rince", "gca_uot"])
def test_rince_family_overflow_is_an_error_not_inf(name):
    """exp(q S) exceeds float32 at tau = 1e-3 (q S ~ 600); at the model's clamp tau = 0.01 it fits."""
    z_u, z_v = _embeddings(11, batch=32, dtype=torch.float32, noise=2.0)
    module = losses.build(name)
    with pytest.raises(ValueError, match="logits: the RINCE terms"):
        module(z_u, z_v, logit_scale=torch.tensor(math.log(1 / 1e-3)))
    z_u.requires_grad_()
    out = module(z_u, z_v, logit_scale=torch.tensor(math.log(100.0)))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(out.plan).all() and torch.isfinite(z_u.grad).all()


def test_target_inputs_are_checked():
    z_u, z_v = _embeddings(12)
    scale = torch.tensor(1.0, dtype=torch.float64)
    domain = losses.build("gca_ince", target="domain", alpha=0.1, beta=0.0)
    with pytest.raises(ValueError, match="domain_ids: missing"):
        domain(z_u, z_v, logit_scale=scale)
    with pytest.raises(ValueError, match="class_ids: given"):
        domain(z_u, z_v, logit_scale=scale, domain_ids=torch.zeros(B, dtype=torch.long), class_ids=torch.zeros(B))
    with pytest.raises(ValueError, match="domain_ids: 3 ids for a batch of 5"):
        domain(z_u, z_v, logit_scale=scale, domain_ids=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="domain_ids: dtype"):
        domain(z_u, z_v, logit_scale=scale, domain_ids=torch.zeros(B))
    with pytest.raises(ValueError, match="domain_ids: given"):
        losses.build("ince")(z_u, z_v, logit_scale=scale, domain_ids=torch.zeros(B, dtype=torch.long))
    with pytest.raises(ValueError, match="class_ids: missing"):
        losses.build("rince", target="class")(z_u, z_v, logit_scale=scale)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("gca_ince", {"n_iter": 0}, "n_iter"),
        ("gca_ince", {"grad": "implicit"}, "grad"),
        ("rince", {"q": 0.0}, "q"),
        ("gca_rince", {"q": 1.5}, "q"),
        ("rince", {"lam": 0.0}, "lam"),
        ("gca_uot", {"rho": -1.0}, "rho"),
        ("gca_uot", {"w_kl": 0.0, "w_rince": 0.0}, "w_kl=0, w_rince=0"),
        ("gca_uot", {"w_rince": math.nan}, "w_rince"),
        ("ince", {"target": "pacs"}, "target"),
        ("ince", {"alpha": 0.1}, "alpha"),
        ("ince", {"target": "domain", "alpha": 0.1}, "beta"),
        ("ince", {"target": "domain", "alpha": -0.1, "beta": 0.0}, "alpha"),
    ],
)
def test_bad_hyperparameters_are_named(name, options, match):
    with pytest.raises(ValueError, match=match):
        losses.build(name, **options)


def test_bad_target_builder_input():
    with pytest.raises(ValueError, match="batch_size"):
        identity_pairs(0)
    with pytest.raises(ValueError, match="domain_ids"):
        domain_prior(torch.zeros(2, 2, dtype=torch.long), 0.1, 0.1)
    with pytest.raises(ValueError, match="beta"):
        domain_prior(torch.zeros(2, dtype=torch.long), 0.1, math.inf)
    with pytest.raises(ValueError, match="class_ids"):
        class_positives(torch.tensor([0.5, 1.0]))


def test_the_robust_terms_fall_without_bound_as_diagonal_dominant_logits_grow():
    # Why check_bounded_robust_term refuses inner-product logits: along S -> cS (epsilon = 1/c) with
    # the positives largest in their rows, -(1/q)(P_ii/u_i)^q outgrows (1/q)(lam/u_i)^q. Measured at
    # c = 50: about -1.9e18 (rince, gca_rince at lam = 0.01) and -1.1e10 (gca_uot at lam = 1).
    gen = torch.Generator().manual_seed(0)
    logits = 0.3 * torch.randn(8, 8, generator=gen, dtype=torch.float64) + torch.eye(8, dtype=torch.float64)

    def at(c, lam):
        s = c * logits
        uot = gca.gca_uot_loss(s, 1 / c, lam=lam, w_kl=0.0, w_rince=1.0).loss.item()
        return gca.rince_loss(s, lam=lam).loss.item(), gca.gca_rince_loss(s, lam=lam).loss.item(), uot

    rince, gca_rince, _ = at(50.0, 0.01)
    assert rince < -1e15 and gca_rince < -1e15
    assert at(50.0, 1.0)[2] < -1e8 < at(20.0, 1.0)[2] < 0  # the unbalanced one at lam = 1 too
    assert min(min(at(c, 1.0)[:2]) for c in (1.0, 5.0, 20.0, 50.0)) >= 0  # the balanced ones are >= 0 at lam >= 1
