"""The Laplace evidence and the tuning of the prior precision (and Gaussian noise) by it.

``log p(D | delta, sigma) ~ log p(y | theta_MAP, sigma) - 1/2 [logdet P - logdet P0 +
(theta_MAP - mu0)^T P0 (theta_MAP - mu0)]``, ``P = s H + P0``, ``P0 = diag(delta)``, with
``logdet P`` from the curvature value's ``logdet(s, delta)`` (any structure of
:mod:`ppl_dgp.laplace.structures`). :func:`tune` maximises it over one prior precision per
group (``delta = exp(log_delta)[groups]``) and optionally ``sigma``:

- ``"marglik"``: Adam (lr 0.1) on the negative evidence in log space, as laplace-torch's
  ``optimize_prior_precision(method="marglik")``;
- ``"fixed_point"``: MacKay's update ``delta_g = gamma_g / |theta_g|^2``,
  ``gamma_g = sum_{p in g} (1 - delta_p [P^-1]_pp)`` (and ``sigma^2 = SSE / (N - gamma)``);
- ``"grid"``: the best of a grid of scalar prior precisions.

References:
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS.
    MacKay (1992), "A Practical Bayesian Framework for Backpropagation Networks", Neural Comp.
    Immer et al. (2021), "Scalable Marginal Likelihood Estimation for Model Selection in Deep
    Learning", ICML.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from ppl_dgp import curvature as C

__all__ = ["log_marglik", "tune"]


def log_marglik(curv: Any, lik: str, f_map: Array, y: Array, sigma: Array, scale: Array,
                delta: Array, theta: Array, mu0: Array) -> Array:  # fmt: skip
    """The Laplace evidence (module docstring) for the curvature value ``curv``.

    Args:
        curv: a curvature of :mod:`ppl_dgp.laplace.structures`.
        lik: the likelihood's name (:data:`ppl_dgp.curvature.LIKELIHOODS`).
        f_map: the network output at the MAP ``[N, K]``; y: targets ``[N]``.
        sigma: the Gaussian noise scale (ignored otherwise).
        scale: ``s`` multiplying the curvature; delta: prior precision ``[P]``.
        theta: the MAP ``[P]``; mu0: the prior mean ``[P]``.
    """
    ll = C.log_likelihood(lik, f_map, y, sigma)
    return C.log_marglik(ll, curv.logdet(scale, delta), delta, theta, mu0)


def tune(
    how: str, curv: Any, lik: str, unit: bool, f_map: Array, y: Array, theta: Array,
    mu0: Array, log_d: Array, log_s: Array, groups: np.ndarray, G: int, *, tune_noise: bool,
    tune_steps: int, grid: tuple[float, ...],
) -> tuple[Array, Array]:  # fmt: skip
    """``(log delta [G], log sigma)`` maximising the evidence (``how``: module docstring).

    ``unit``: the curvature was computed at ``sigma = 1`` (a Gaussian GGN), so
    ``s = 1 / sigma^2``; otherwise ``s = 1``. ``groups`` ``[P]`` maps parameters to the ``G``
    tuned precisions; ``log_d`` ``[G]``, ``log_s`` the starting point.
    """

    def scale_of(log_s: Array) -> Array:
        return 1.0 / jnp.exp(log_s) ** 2 if unit else jnp.asarray(1.0)

    def evidence(log_d: Array, log_s: Array) -> Array:
        d = jnp.exp(log_d)[groups]
        return log_marglik(curv, lik, f_map, y, jnp.exp(log_s), scale_of(log_s), d, theta, mu0)

    if how == "marglik":
        return _adam(evidence, log_d, log_s, tune_steps, tune_noise and lik == "gaussian")
    if how == "fixed_point":
        N = f_map.shape[0]

        def mackay(carry: tuple, _: None) -> tuple:
            log_d, log_s = carry
            d = jnp.exp(log_d)[groups]
            var = curv.posterior(scale_of(log_s), d).marginal_variance()
            log_d = jnp.log(C.mackay_fixed_point(d, var, theta - mu0, groups, G))
            if tune_noise:
                gamma = jnp.sum(1.0 - d * var)
                sse = jnp.sum((f_map[:, 0] - y) ** 2)
                log_s = 0.5 * jnp.log(sse / jnp.maximum(N - gamma, 1e-12))
            return (log_d, log_s), None

        return jax.lax.scan(mackay, (log_d, log_s), None, length=tune_steps)[0]
    if how == "grid":
        lg = jnp.log(jnp.asarray(grid))
        vals = jax.vmap(lambda g: evidence(g[None], log_s))(lg)
        return lg[jnp.nanargmax(vals)][None], log_s
    return log_d, log_s


def _adam(
    evidence: Callable, log_d: Array, log_s: Array, steps: int, tune_s: bool
) -> tuple[Array, Array]:
    """Adam (lr 0.1) on the negative evidence over log prior precision (and log noise)."""
    opt = optax.adam(0.1)

    def loss(p: tuple) -> Array:
        return -evidence(p[0], p[1] if tune_s else jax.lax.stop_gradient(p[1]))

    def step(carry: tuple, _: None) -> tuple:
        p, st = carry
        g = jax.grad(loss)(p)
        u, st = opt.update(g, st, p)
        return (optax.apply_updates(p, u), st), None

    (p, _), _ = jax.lax.scan(step, ((log_d, log_s), opt.init((log_d, log_s))), None, length=steps)
    return p
