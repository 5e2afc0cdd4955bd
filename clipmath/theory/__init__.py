"""Closed-form analysis of contrastive learning on Gaussian data (numpy/scipy only, never torch).

Section 5 and Appendices D-E of Baptista, Stuart & Tran (2025): the data law
(:class:`GaussianPair`), the population-optimal linear encoders of each loss
(:func:`optimal_alignment`, checked by :func:`numerical_alignment`), the model law they define
(:func:`tilted_model`), the exact population losses (:func:`population_loss`,
:func:`conditional_kl_objective`), the Gaussian lemmas, and the normalised 1-D sign model.
"""

from clipmath.theory.alignment import LOSSES, Alignment, h, optimal_alignment
from clipmath.theory.gaussian import GaussianPair, random_gaussian_pair
from clipmath.theory.lemmas import gaussian_kl, quadratic_exponential_moment
from clipmath.theory.losses import conditional_kl_objective, population_loss, population_loss_gradient
from clipmath.theory.model import tilted_model
from clipmath.theory.normalised import SignModel, sign_model
from clipmath.theory.numerical import numerical_alignment

__all__ = [
    "LOSSES",
    "Alignment",
    "GaussianPair",
    "SignModel",
    "conditional_kl_objective",
    "gaussian_kl",
    "h",
    "numerical_alignment",
    "optimal_alignment",
    "population_loss",
    "population_loss_gradient",
    "quadratic_exponential_moment",
    "random_gaussian_pair",
    "sign_model",
    "tilted_model",
]
