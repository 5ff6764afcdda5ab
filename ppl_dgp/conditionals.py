"""Inducing-point conditionals, with GPflow's conventions, in one place.

Nobody else in the library writes ``Kmm^{-1}``: layers, guides, prediction and tests all call
:func:`conditional` (or :func:`base_conditional` when the kernel matrices are at hand).

Given inducing outputs ``u = f(Z)`` with ``q(u) = N(q_mu, q_sqrt q_sqrt^T)`` per output (or, when
``whiten``, ``u = Lmm v`` with ``q(v) = N(q_mu, q_sqrt q_sqrt^T)``), the marginal of ``f(X)`` is

.. math::
    \\mu = K_{nm} K_{mm}^{-1} m, \\qquad
    \\Sigma = K_{nn} - K_{nm} K_{mm}^{-1} K_{mn} + K_{nm} K_{mm}^{-1} S K_{mm}^{-1} K_{mn},

computed stably with ``A = Lmm^{-1} Kmn``. With ``q_sqrt=None`` it is the prior conditional
``p(f | u = q_mu)`` (``S = 0``): the model's conditional that NUTS and HMC sample.

References:
    GPflow ``gpflow.conditionals.util.base_conditional``; Titsias (2009); Hensman et al. (2013,
    2015); Salimbeni & Deisenroth (2017).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from ppl_dgp.kernels import Kernel
from ppl_dgp.linalg import (
    DEFAULT_JITTER,
    cholesky,
    solve_triangular,
    sum_sq_LtA,
    triangular_inverse,
)

__all__ = [
    "base_conditional",
    "base_conditional_with_lm",
    "conditional",
    "exact_gp_log_marginal_likelihood",
    "exact_gp_predict",
]


def base_conditional_with_lm(
    Kmn: Array,  # [M, N]
    Lmm: Array,  # [M, M]
    Knn: Array,  # [N, N] if full_cov else [N]
    f: Array,  # [M, Q]
    *,
    q_sqrt: Array | None = None,  # [Q, M, M] lower-triangular, or [M, Q] diagonal
    white: bool = False,
    full_cov: bool = False,
) -> tuple[Array, Array]:  # mean [N, Q]; var [N, Q] or cov [Q, N, N]
    """GPflow's ``base_conditional`` given the Cholesky factor ``Lmm`` of ``Kmm``.

    .. math::
        A = L_{mm}^{-1} K_{mn};\\ \\text{(unwhitened: } A \\leftarrow L_{mm}^{-T} A);\\
        \\mu = A^T f;\\ \\Sigma_q = K_{nn} - A_0^T A_0 + (L_q^T A)^T (L_q^T A)

    Args:
        Kmn: cross covariance ``k(Z, X)``, ``[M, N]``.
        Lmm: lower Cholesky factor of ``k(Z, Z) + jitter I``, ``[M, M]``.
        Knn: prior covariance ``[N, N]`` (``full_cov``) or its diagonal ``[N]``.
        f: inducing means ``[M, Q]`` (whitened ``v`` if ``white``).
        q_sqrt: ``[Q, M, M]`` lower-triangular factors (only the lower triangle is read) or
            ``[M, Q]`` standard deviations; ``None`` for the prior conditional.
        white: whether ``f`` and ``q_sqrt`` describe the whitened ``v`` with ``u = Lmm v``.
        full_cov: return the full covariance per output instead of the marginals.

    Returns:
        ``(mean [N, Q], var [N, Q])`` or ``(mean [N, Q], cov [Q, N, N])``.
    """
    Q = f.shape[1]
    Lmm_inv = triangular_inverse(Lmm)  # [M, M]; products with it are GEMMs
    A = Lmm_inv @ Kmn  # [M, N] = Lmm^{-1} Kmn
    if full_cov:
        fvar = Knn - A.T @ A  # [N, N]
        fvar = jnp.broadcast_to(fvar[None], (Q, *fvar.shape))  # [Q, N, N]
    else:
        fvar = Knn - jnp.sum(A * A, axis=0)  # [N]
        fvar = jnp.broadcast_to(fvar[None], (Q, fvar.shape[0]))  # [Q, N]
    if not white:
        A = Lmm_inv.T @ A  # Kmm^{-1} Kmn
    fmean = A.T @ f  # [N, Q]
    if q_sqrt is not None:
        if q_sqrt.ndim == 2:
            LTA = q_sqrt.T[:, :, None] * A[None]  # [Q, M, N]
        elif q_sqrt.ndim != 3:
            raise ValueError(f"q_sqrt must have shape [Q, M, M] or [M, Q]; received {q_sqrt.shape}")
        if full_cov:
            if q_sqrt.ndim == 3:
                LTA = jnp.einsum("qlm,ln->qmn", jnp.tril(q_sqrt), A)  # [Q, M, N]
            fvar = fvar + jnp.einsum("qmn,qmk->qnk", LTA, LTA)
        elif q_sqrt.ndim == 3:
            fvar = fvar + sum_sq_LtA(q_sqrt, A)  # [Q, N]; reads tril(q_sqrt), GEMMs
        else:
            fvar = fvar + jnp.sum(LTA * LTA, axis=1)
    if not full_cov:
        fvar = fvar.T  # [N, Q]
    return fmean, fvar


def base_conditional(
    Kmn: Array,  # [M, N]
    Kmm: Array,  # [M, M] (jitter not yet added)
    Knn: Array,  # [N, N] or [N]
    f: Array,  # [M, Q]
    *,
    q_sqrt: Array | None = None,
    white: bool = False,
    full_cov: bool = False,
    jitter: float = DEFAULT_JITTER,
) -> tuple[Array, Array]:
    """:func:`base_conditional_with_lm` with ``Lmm = cholesky(Kmm + jitter I)``."""
    Lmm = cholesky(Kmm, jitter)
    return base_conditional_with_lm(Kmn, Lmm, Knn, f, q_sqrt=q_sqrt, white=white, full_cov=full_cov)


def _check_conditional_shapes(Xnew: Array, Z: Array, q_mu: Array, q_sqrt: Array | None) -> None:
    if Xnew.ndim != 2:
        raise ValueError(f"conditional: Xnew must have shape [N, D]; received {Xnew.shape}")
    if Z.ndim != 2 or Z.shape[1] != Xnew.shape[1]:
        raise ValueError(
            f"conditional: Z must have shape [M, {Xnew.shape[1]}] (same D as Xnew); "
            f"received {Z.shape}"
        )
    M = Z.shape[0]
    if q_mu.ndim != 2 or q_mu.shape[0] != M:
        raise ValueError(f"conditional: q_mu must have shape [{M}, Q]; received {q_mu.shape}")
    Q = q_mu.shape[1]
    if q_sqrt is not None and q_sqrt.shape not in ((Q, M, M), (M, Q)):
        raise ValueError(
            f"conditional: q_sqrt must have shape [{Q}, {M}, {M}] or [{M}, {Q}]; "
            f"received {q_sqrt.shape}"
        )


def conditional(
    kernel: Kernel,
    Xnew: Array,  # [N, D]
    Z: Array,  # [M, D]
    q_mu: Array,  # [M, Q]
    q_sqrt: Array | None = None,  # [Q, M, M] or [M, Q]
    *,
    whiten: bool = False,
    full_cov: bool = False,
    jitter: float = DEFAULT_JITTER,
) -> tuple[Array, Array]:  # mean [N, Q]; var [N, Q] or cov [Q, N, N]
    """Predictive of ``f(Xnew)`` given ``q(u)`` at inducing inputs ``Z`` (kernel shared by outputs).

    This is GPflow's ``conditional`` for a ``SharedIndependent`` kernel with
    ``SharedIndependentInducingVariables`` (GPflux's default DGP layer). The mean function is not
    included: add ``mean_function(Xnew)`` to the returned mean.

    Args:
        kernel: covariance function shared by the ``Q`` outputs.
        Xnew: inputs ``[N, D]``.
        Z: inducing inputs ``[M, D]``.
        q_mu: inducing means ``[M, Q]`` (of ``v`` when ``whiten``).
        q_sqrt: ``[Q, M, M]`` lower-triangular, ``[M, Q]`` diagonal, or ``None`` (prior
            conditional ``p(f | u = q_mu)``).
        whiten: ``u = Lmm v`` parameterisation.
        full_cov: full ``[Q, N, N]`` covariance instead of ``[N, Q]`` marginals.
        jitter: added to ``Kmm`` (GPflow default ``1e-6``).

    Returns:
        ``(mean, var)`` as in :func:`base_conditional_with_lm`.

    Example:
        >>> from ppl_dgp.kernels import SquaredExponential
        >>> k = SquaredExponential()
        >>> Z = jnp.linspace(-1, 1, 5)[:, None]
        >>> m, v = conditional(k, jnp.zeros((3, 1)), Z, jnp.zeros((5, 2)), whiten=True)
        >>> m.shape, v.shape
        ((3, 2), (3, 2))
    """
    _check_conditional_shapes(Xnew, Z, q_mu, q_sqrt)
    Kmm = kernel.K(Z)
    Kmn = kernel.K(Z, Xnew)
    Knn = kernel.K(Xnew) if full_cov else kernel.K_diag(Xnew)
    return base_conditional(
        Kmn, Kmm, Knn, q_mu, q_sqrt=q_sqrt, white=whiten, full_cov=full_cov, jitter=jitter
    )


def exact_gp_predict(
    kernel: Kernel,
    X: Array,  # [N, D]
    y: Array,  # [N]
    Xnew: Array,  # [N*, D]
    noise_variance: float | Array,
    *,
    full_cov: bool = False,
    jitter: float = 0.0,
) -> tuple[Array, Array]:  # mean [N*]; var [N*] or cov [N*, N*]
    """Exact GP regression posterior of ``f(Xnew)``: a conditional on ``y`` with ``Kmm = K + s2 I``.

    .. math:: \\mu_* = K_{*n}(K_{nn} + \\sigma^2 I)^{-1} y, \\quad
        \\Sigma_* = K_{**} - K_{*n}(K_{nn} + \\sigma^2 I)^{-1} K_{n*}

    Returns:
        ``(mean [N*], var [N*])`` or ``(mean [N*], cov [N*, N*])``.

    References:
        Rasmussen & Williams (2006), eq. (2.25)-(2.26).
    """
    _check_conditional_shapes(Xnew, X, y[:, None], None)
    Ky = kernel.K(X) + noise_variance * jnp.eye(X.shape[0], dtype=X.dtype)
    Knn = kernel.K(Xnew) if full_cov else kernel.K_diag(Xnew)
    mean, var = base_conditional(
        kernel.K(X, Xnew), Ky, Knn, y[:, None], full_cov=full_cov, jitter=jitter
    )
    return mean[:, 0], var[0] if full_cov else var[:, 0]


def exact_gp_log_marginal_likelihood(
    kernel: Kernel,
    X: Array,  # [N, D]
    y: Array,  # [N]
    noise_variance: float | Array,
    *,
    jitter: float = 0.0,
) -> Array:
    """``log N(y | 0, K + s2 I)`` (Rasmussen & Williams 2006, eq. 2.30)."""
    N = X.shape[0]
    L = cholesky(kernel.K(X) + noise_variance * jnp.eye(N, dtype=X.dtype), jitter)
    alpha = solve_triangular(L, y[:, None], lower=True)[:, 0]
    return -0.5 * (
        jnp.sum(alpha * alpha) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(L))) + N * jnp.log(2.0 * jnp.pi)
    )
