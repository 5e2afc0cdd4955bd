"""The frozen linear probe and the Wang & Isola alignment and uniformity."""

import math

import pytest
import torch

from clipmath.multimodal.probe import (
    alignment,
    extract,
    fit_linear_probe,
    linear_probe,
    select_l2,
    stratified_holdout,
    uniformity,
)


def blobs(n_per_class, k, d, spread, seed):
    """K Gaussian clusters in d dimensions with centres 5 apart: separable for a small spread."""
    g = torch.Generator().manual_seed(seed)
    centres = 5.0 * torch.randn(k, d, generator=g, dtype=torch.float64)
    labels = torch.arange(k).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), d, generator=g, dtype=torch.float64), labels


def test_separable_clusters_are_classified_perfectly():
    x, y = blobs(60, 5, 8, 0.3, seed=0)
    x_test, y_test = blobs(40, 5, 8, 0.3, seed=0)  # same centres (same seed), fresh draws of the noise
    x_test = x_test + 0.01 * torch.randn(x_test.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    result = linear_probe(x.float(), y, x_test.float(), y_test, seed=1)
    assert result["train_accuracy"] == 1.0 and result["test_accuracy"] == 1.0


def test_random_labels_give_chance_accuracy_on_held_out_data():
    g = torch.Generator().manual_seed(3)
    x, x_test = torch.randn(600, 16, generator=g), torch.randn(2000, 16, generator=g)
    y, y_test = torch.randint(0, 4, (600,), generator=g), torch.randint(0, 4, (2000,), generator=g)
    result = linear_probe(x, y, x_test, y_test, seed=0)
    # Chance is 1/4; 2,000 test labels give a binomial standard error of about 0.0097.
    assert abs(result["test_accuracy"] - 0.25) < 0.04


def test_the_fit_matches_scikit_learn_at_the_same_penalty():
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = blobs(50, 3, 4, 3.0, seed=2)  # overlapping clusters: a finite, non-trivial optimum
    l2 = 1e-2
    probe = fit_linear_probe(x, y, l2=l2, tol=1e-10, max_iter=1000)
    # Ours: mean cross-entropy + l2/2 |W|^2 on standardised features; scikit-learn: C * sum + |W|^2 / 2.
    standardised = (x - x.mean(0)) / x.std(0, unbiased=False)
    reference = sklearn.LogisticRegression(C=1.0 / (len(x) * l2), tol=1e-12, max_iter=10000).fit(
        standardised.numpy(), y.numpy()
    )
    ours = torch.softmax(probe.logits(x), dim=1)
    theirs = torch.from_numpy(reference.predict_proba(standardised.numpy()))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_the_penalty_is_chosen_on_training_data_only():
    x, y = blobs(40, 4, 6, 2.0, seed=5)
    l2, scores = select_l2(x, y, grid=[1e-4, 1e-1, 10.0], seed=0)
    assert set(scores) == {1e-4, 1e-1, 10.0} and l2 in scores
    assert scores[l2] == max(scores.values())
    fit, val = stratified_holdout(y, 0.25, seed=0)
    assert len(fit) + len(val) == len(y) and len(set(fit.tolist()) & set(val.tolist())) == 0
    assert torch.bincount(y[val]).tolist() == [10, 10, 10, 10]


def test_bad_input_is_named():
    x, y = blobs(5, 2, 3, 0.1, seed=0)
    with pytest.raises(ValueError, match="l2=0"):
        fit_linear_probe(x, y, l2=0)
    with pytest.raises(ValueError, match=r"labels=\(9,\)"):
        fit_linear_probe(x, y[:9])
    with pytest.raises(ValueError, match="NaN"):
        fit_linear_probe(torch.full((10, 3), math.nan), y)
    with pytest.raises(ValueError, match="n_classes=2"):
        fit_linear_probe(x, y + 1, n_classes=2)


def naive_uniformity(z, t):
    z = torch.nn.functional.normalize(z.double(), dim=1)
    terms = [math.exp(-t * float((z[i] - z[j]).square().sum())) for i in range(len(z)) for j in range(len(z)) if i != j]
    return math.log(sum(terms) / len(terms))


def test_alignment_and_uniformity_against_their_definitions():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 5, generator=g)
    assert alignment(z, 3.0 * z) == pytest.approx(0.0, abs=1e-12)
    assert alignment(z, -z) == pytest.approx(4.0)
    w = torch.randn(12, 5, generator=g)
    naive = (
        sum(float((a / a.norm() - b / b.norm()).norm()) ** 3 for a, b in zip(z.double(), w.double(), strict=False)) / 12
    )
    assert alignment(z, w, alpha=3) == pytest.approx(naive, rel=1e-12)
    assert uniformity(z, t=1.5) == pytest.approx(naive_uniformity(z, 1.5), rel=1e-12)
    assert uniformity(torch.ones(4, 3)) == pytest.approx(0.0, abs=1e-12)
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)


def test_extract_is_the_function_on_the_whole_input():
    x = torch.randn(10, 3)
    assert torch.equal(extract(lambda a: 2 * a, x, batch_size=3), 2 * x)
