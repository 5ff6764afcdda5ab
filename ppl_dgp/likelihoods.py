"""Gaussian likelihood expectations and predictive densities (math only).

References:
    GPflow ``gpflow.likelihoods.Gaussian``; Hensman et al. (2013), eq. (9).

Example:
    With ``f`` known (``f_var = 0``) the expectation is the log density itself; a mixture of
    one component is that component:

    >>> import jax.numpy as jnp
    >>> y, m = jnp.array([[0.5]]), jnp.array([[0.0]])
    >>> float(gaussian_variational_expectations(y, m, jnp.zeros((1, 1)), 1.0)[0, 0]) == float(
    ...     gaussian_log_density(y, m, 1.0)[0, 0])
    True
    >>> round(float(gaussian_mixture_log_density(jnp.zeros(1), jnp.zeros((1, 1)),
    ...                                          jnp.ones((1, 1)))[0]), 4)  # -log(2 pi) / 2
    -0.9189
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import Array
from jax.scipy.special import logsumexp

__all__ = [
    "gaussian_log_density",
    "gaussian_variational_expectations",
    "gaussian_mixture_log_density",
]

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(y: Array, mean: Array, var: Array) -> Array:
    """``log N(y | mean, var)``, elementwise."""
    return -0.5 * (_LOG_2PI + jnp.log(var) + jnp.square(y - mean) / var)


def gaussian_variational_expectations(
    y: Array,  # [N, Q]
    f_mean: Array,  # [N, Q]
    f_var: Array,  # [N, Q]
    noise_variance: Array,  # [] or [Q]
) -> Array:  # [N, Q]
    """``E_{N(f | f_mean, f_var)}[log N(y | f, noise_variance)]`` in closed form.

    .. math:: -\\tfrac12 \\log(2\\pi\\sigma^2) - \\tfrac{(y - \\mu)^2 + v}{2\\sigma^2}
    """
    return -0.5 * (
        _LOG_2PI + jnp.log(noise_variance) + (jnp.square(y - f_mean) + f_var) / noise_variance
    )


def gaussian_mixture_log_density(
    y: Array,  # [N] or [N, Q]
    means: Array,  # [S, N] or [S, N, Q]
    variances: Array,  # [S, N] or [S, N, Q]
) -> Array:  # [N] (or [N, Q])
    """Log density of an equally weighted Gaussian mixture over ``S`` components.

    .. math:: \\log p(y) = \\operatorname{logsumexp}_s \\log N(y | m_s, v_s) - \\log S
    """
    S = means.shape[0]
    return logsumexp(gaussian_log_density(y[None], means, variances), axis=0) - math.log(S)
