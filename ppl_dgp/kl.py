"""Gaussian KL divergences between inducing-point posteriors and priors.

.. math::
    \\mathrm{KL}[\\mathcal N(m, S) \\,\\|\\, \\mathcal N(0, K)] = \\tfrac12 \\sum_{q=1}^{Q}
    \\big[\\operatorname{tr}(K^{-1} S_q) + m_q^T K^{-1} m_q - M + \\log|K| - \\log|S_q|\\big]

with ``S_q = L_q L_q^T`` (``L_q = q_sqrt[q]``) and ``K = I`` in the whitened parameterisation.

References:
    GPflow ``gpflow.kullback_leiblers.gauss_kl``.

Example:
    ``KL[q || p]`` is zero for ``q = p``, whitened (``p = N(0, I)``) or not:

    >>> import jax.numpy as jnp
    >>> float(gauss_kl(jnp.zeros((3, 1)), jnp.eye(3)[None]))
    0.0
    >>> K = 2.0 * jnp.eye(3)
    >>> float(gauss_kl(jnp.zeros((3, 1)), jnp.sqrt(K)[None], K))
    0.0
    >>> round(float(gauss_kl(jnp.ones((3, 1)), jnp.eye(3)[None])), 6)  # half the squared mean
    1.5
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from ppl_dgp.linalg import DEFAULT_JITTER, cholesky, solve_triangular

__all__ = ["gauss_kl", "prior_kl"]


def gauss_kl(
    q_mu: Array,  # [M, Q]
    q_sqrt: Array,  # [Q, M, M] lower-triangular, or [M, Q] diagonal
    K: Array | None = None,  # [M, M] prior covariance (jitter included); None = whitened
    *,
    K_cholesky: Array | None = None,  # [M, M] alternative to K
) -> Array:  # []
    """``sum_q KL[N(q_mu[:, q], S_q) || N(0, K)]`` (``K = I`` when both ``K`` are ``None``).

    Args:
        q_mu: means ``[M, Q]``.
        q_sqrt: ``[Q, M, M]`` lower-triangular factors (lower triangle read) or ``[M, Q]``
            standard deviations.
        K: prior covariance shared by the outputs, ``[M, M]``; ``None`` for whitened.
        K_cholesky: its lower Cholesky factor instead of ``K``.

    Returns:
        The KL summed over outputs, a scalar.
    """
    M, Q = q_mu.shape
    white = K is None and K_cholesky is None
    diag = q_sqrt.ndim == 2
    if diag:
        if q_sqrt.shape != (M, Q):
            raise ValueError(
                f"gauss_kl: q_sqrt must have shape [{M}, {Q}]; received {q_sqrt.shape}"
            )
        Lq_diag = q_sqrt.T  # [Q, M]
    else:
        if q_sqrt.shape != (Q, M, M):
            raise ValueError(
                f"gauss_kl: q_sqrt must have shape [{Q}, {M}, {M}]; received {q_sqrt.shape}"
            )
        Lq = jnp.tril(q_sqrt)  # [Q, M, M]
        Lq_diag = jnp.diagonal(Lq, axis1=-2, axis2=-1)  # [Q, M]
    if white:
        alpha = q_mu  # [M, Q]
    else:
        Lp = K_cholesky if K_cholesky is not None else cholesky(K, jitter=0.0)
        alpha = solve_triangular(Lp, q_mu, lower=True)  # [M, Q]
    mahalanobis = jnp.sum(alpha * alpha)
    logdet_qcov = jnp.sum(jnp.log(Lq_diag * Lq_diag))
    if white:
        trace = jnp.sum(Lq_diag * Lq_diag) if diag else jnp.sum(Lq * Lq)
    else:
        if diag:
            Lp_inv = solve_triangular(Lp, jnp.eye(M, dtype=q_mu.dtype), lower=True)  # [M, M]
            trace = jnp.sum(jnp.sum(Lp_inv * Lp_inv, axis=0)[None, :] * Lq_diag * Lq_diag)
        else:
            LpiLq = solve_triangular(jnp.broadcast_to(Lp, Lq.shape), Lq, lower=True)  # [Q, M, M]
            trace = jnp.sum(LpiLq * LpiLq)
    twoKL = mahalanobis - M * Q + trace - logdet_qcov
    if not white:
        log_sqdiag_Lp = jnp.log(jnp.square(jnp.diagonal(Lp)))
        twoKL = twoKL + Q * jnp.sum(log_sqdiag_Lp)
    return 0.5 * twoKL


def prior_kl(
    kernel,
    Z: Array,  # [M, D]
    q_mu: Array,  # [M, Q]
    q_sqrt: Array,  # [Q, M, M] or [M, Q]
    *,
    whiten: bool,
    jitter: float = DEFAULT_JITTER,
) -> Array:
    """``KL[q(u) || p(u)]`` for a layer, ``p(u) = N(0, k(Z, Z) + jitter I)``.

    GPflow's ``prior_kl``: whitened layers compare ``q(v)`` with ``N(0, I)``.
    """
    if whiten:
        return gauss_kl(q_mu, q_sqrt)
    return gauss_kl(q_mu, q_sqrt, K_cholesky=cholesky(kernel.K(Z), jitter))
