"""Closed-form analysis of contrastive learning on Gaussian data (numpy/scipy only, never torch).

Section 5 and Appendices D-E of Baptista, Stuart & Tran (2025): the data law
(:class:`GaussianPair`), the population-optimal linear encoders of each loss
(:func:`optimal_alignment`, closed forms at every rank, with :func:`quadratic_minimum` and
:func:`unique_minimiser`; checked by the certified numerical oracles :func:`numerical_alignment`
and :func:`numerical_quadratic_alignment`, which raise :class:`ConvergenceError` rather than
return an unconverged answer), the model law they define
(:func:`tilted_model`), the exact population losses (:func:`population_loss`,
:func:`conditional_kl_objective`; :func:`monte_carlo_loss` estimates them from samples), the
Gaussian lemmas of Appendix E, and the normalised 1-D sign model of Fig. 6. Beyond the
paper: the two-sided quadratic conditional loss, the quadratic joint loss and the MMD
conditional and joint losses (:mod:`clipmath.theory.mmd`), by name in the same functions
(derivations in ``docs/theory/``).
"""

from clipmath.theory._optimise import ConvergenceError, FlatMinimumWarning
from clipmath.theory.alignment import (
    LOSSES,
    MMD_LOSSES,
    Alignment,
    h,
    optimal_alignment,
    quadratic_minimum,
    unique_minimiser,
)
from clipmath.theory.gaussian import GaussianPair, gaussian_pair_with_correlations, random_gaussian_pair
from clipmath.theory.lemmas import gaussian_kl, log_quadratic_exponential_moment, quadratic_exponential_moment
from clipmath.theory.losses import conditional_kl_objective, population_loss, population_loss_gradient
from clipmath.theory.model import alignment_model, model_gaps, tilted_model
from clipmath.theory.monte_carlo import monte_carlo_loss
from clipmath.theory.normalised import SignModel, sign_model
from clipmath.theory.numerical import numerical_alignment, numerical_quadratic_alignment

__all__ = [
    "LOSSES",
    "MMD_LOSSES",
    "Alignment",
    "ConvergenceError",
    "FlatMinimumWarning",
    "GaussianPair",
    "SignModel",
    "conditional_kl_objective",
    "gaussian_kl",
    "gaussian_pair_with_correlations",
    "h",
    "log_quadratic_exponential_moment",
    "monte_carlo_loss",
    "numerical_alignment",
    "numerical_quadratic_alignment",
    "optimal_alignment",
    "population_loss",
    "population_loss_gradient",
    "quadratic_exponential_moment",
    "quadratic_minimum",
    "random_gaussian_pair",
    "sign_model",
    "tilted_model",
    "alignment_model",
    "model_gaps",
    "unique_minimiser",
]
