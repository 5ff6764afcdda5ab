"""Curvature and evidence for the Laplace approximation: arrays in, arrays out (no NumPyro).

Notation: ``N`` data points, ``K`` network outputs (``f_n in R^K``), ``P`` parameters
``theta``; ``J_n = d f_n / d theta`` ``[K, P]``; ``Lam_n = -d^2 log p(y_n | f_n) / d f_n^2``
``[K, K]``; ``delta`` the prior precision (per parameter, ``[P]``), prior ``N(mu0, diag(1/delta))``.

- Generalised Gauss-Newton (GGN): ``G = sum_n J_n^T Lam_n J_n`` (exact Hessian of the
  log-likelihood when the network is linear in ``theta``).
- Empirical Fisher (EF): ``F = sum_n g_n g_n^T``, ``g_n = J_n^T d(-log p(y_n | f_n)) / d f_n``.
- KFAC per dense layer ``z = a W + b`` (``W [D_in, D_out]``, flattened row-major so that
  ``W[i, o]`` sits at ``D_out i + o``): ``G_W ~ kron(A, B)`` with ``A = (1/N) sum_n a_n a_n^T``,
  ``B = sum_n sum_{kl} (dz_n/df)...``, i.e. ``B = sum_n J_{z,n}^T Lam_n J_{z,n}`` where
  ``J_{z,n} = d f_n / d z_n`` ``[K, D_out]``; the bias block is ``B`` itself. (laplace-torch's
  convention: the input factor is averaged, the output factor summed.)
- Log marginal likelihood (evidence) of the Laplace approximation at the MAP:
  ``log p(D) ~ log p(y | theta) - 1/2 [logdet P - logdet P0 + (theta - mu0)^T P0 (theta - mu0)]``
  with ``P = H + P0`` the posterior precision.
- Linearised (GLM) predictive: ``f* ~ N(f(x*; theta), J* P^-1 J*^T)``; probit approximation
  ``p(y=1) ~ sigmoid(f / sqrt(1 + pi/8 v))``; Laplace bridge for the softmax.

References:
    Daxberger, Kristiadi, Immer, Eschenhagen, Bauer & Hennig (2021), "Laplace Redux --
    Effortless Bayesian Deep Learning", NeurIPS.
    Martens & Grosse (2015), "Optimizing Neural Networks with Kronecker-factored Approximate
    Curvature", ICML.
    MacKay (1992), "A Practical Bayesian Framework for Backpropagation Networks", Neural Comp.
    Immer, Korzepa & Bauer (2021), "Improving predictions of Bayesian neural nets via local
    linearization", AISTATS.
    Hobbhahn, Kristiadi & Hennig (2022), "Fast Predictive Uncertainty for Classification with
    Bayesian Deep Networks", UAI (the Laplace bridge).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "LIKELIHOODS",
    "KronBlock",
    "bernoulli_log_likelihood",
    "categorical_log_likelihood",
    "ef_diag",
    "ef_full",
    "ggn_diag",
    "ggn_full",
    "gaussian_log_likelihood",
    "glm_f_cov_full",
    "glm_f_var_diag",
    "glm_f_cov_kron",
    "kron_block",
    "kron_logdet",
    "laplace_bridge",
    "log_likelihood",
    "log_marglik",
    "loss_gradient",
    "loss_hessian",
    "mackay_fixed_point",
    "make_positive_definite",
    "probit",
]

#: Likelihoods with a closed-form output Hessian (the GGN is exact for these).
LIKELIHOODS = ("gaussian", "bernoulli", "categorical")


def _check_likelihood(likelihood: str) -> None:
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}; received {likelihood!r}")


# -- the likelihood in the output space --------------------------------------------------------


def gaussian_log_likelihood(f: Array, y: Array, sigma: Array) -> Array:  # [N, 1], [N] -> []
    """``sum_n log N(y_n | f_n, sigma^2)``."""
    r = y - f[:, 0]
    n = y.shape[0]
    return -0.5 * jnp.sum(r**2) / sigma**2 - n * jnp.log(sigma) - 0.5 * n * math.log(2 * math.pi)


def bernoulli_log_likelihood(f: Array, y: Array) -> Array:  # [N, 1], [N] in {0,1} -> []
    """``sum_n y_n log s(f_n) + (1 - y_n) log(1 - s(f_n))``, ``s`` the logistic sigmoid."""
    z = f[:, 0]
    return jnp.sum(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))


def categorical_log_likelihood(f: Array, y: Array) -> Array:  # [N, K], [N] int -> []
    """``sum_n log softmax(f_n)[y_n]``."""
    logp = jax.nn.log_softmax(f, axis=-1)
    return jnp.sum(jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1))


def log_likelihood(likelihood: str, f: Array, y: Array, sigma: Array | float = 1.0) -> Array:
    """``log p(y | f)`` summed over the data for one of :data:`LIKELIHOODS`."""
    _check_likelihood(likelihood)
    if likelihood == "gaussian":
        return gaussian_log_likelihood(f, y, sigma)
    if likelihood == "bernoulli":
        return bernoulli_log_likelihood(f, y)
    return categorical_log_likelihood(f, y)


def loss_hessian(likelihood: str, f: Array, sigma: Array | float = 1.0) -> Array:
    """``Lam_n = -d^2 log p(y_n | f_n) / d f_n^2`` ``[N, K, K]`` (independent of ``y``).

    Gaussian: ``I / sigma^2``; Bernoulli: ``s (1 - s)``; categorical: ``diag(p) - p p^T``.
    """
    _check_likelihood(likelihood)
    N, K = f.shape
    if likelihood == "gaussian":
        return jnp.broadcast_to(jnp.eye(K) / sigma**2, (N, K, K))
    if likelihood == "bernoulli":
        s = jax.nn.sigmoid(f)
        return (s * (1 - s))[:, :, None]
    p = jax.nn.softmax(f, axis=-1)
    return jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]


def loss_gradient(likelihood: str, f: Array, y: Array, sigma: Array | float = 1.0) -> Array:
    """``d(-log p(y_n | f_n)) / d f_n`` ``[N, K]``."""
    _check_likelihood(likelihood)
    if likelihood == "gaussian":
        return (f - y[:, None]) / sigma**2
    if likelihood == "bernoulli":
        return jax.nn.sigmoid(f) - y[:, None]
    K = f.shape[1]
    return jax.nn.softmax(f, axis=-1) - jax.nn.one_hot(y, K, dtype=f.dtype)


# -- GGN, empirical Fisher, KFAC ---------------------------------------------------------------


def ggn_full(J: Array, Lam: Array) -> Array:  # [N, K, P], [N, K, K] -> [P, P]
    """``sum_n J_n^T Lam_n J_n``."""
    return jnp.einsum("nkp,nkl,nlq->pq", J, Lam, J)


def ggn_diag(J: Array, Lam: Array) -> Array:  # [N, K, P], [N, K, K] -> [P]
    """``diag(sum_n J_n^T Lam_n J_n)`` without forming ``[P, P]``."""
    return jnp.einsum("nkp,nkl,nlp->p", J, Lam, J)


def ef_full(J: Array, grad_f: Array) -> Array:  # [N, K, P], [N, K] -> [P, P]
    """Empirical Fisher ``sum_n g_n g_n^T``, ``g_n = J_n^T grad_f_n``."""
    g = jnp.einsum("nkp,nk->np", J, grad_f)
    return g.T @ g


def ef_diag(J: Array, grad_f: Array) -> Array:  # [N, K, P], [N, K] -> [P]
    """``diag`` of :func:`ef_full`."""
    g = jnp.einsum("nkp,nk->np", J, grad_f)
    return jnp.sum(g**2, axis=0)


class KronBlock(NamedTuple):
    """Eigendecomposed KFAC factors of one dense layer.

    The weight block is ``kron(A, B)`` (``W`` row-major, ``[D_in D_out]``), the bias block ``B``.

    Attributes:
        A_eigvals: ``[D_in]``; A_eigvecs: ``[D_in, D_in]``; B_eigvals: ``[D_out]``;
        B_eigvecs: ``[D_out, D_out]``.
    """

    A_eigvals: Array
    A_eigvecs: Array
    B_eigvals: Array
    B_eigvecs: Array


def kron_block(a: Array, Jz: Array, Lam: Array) -> KronBlock:
    """KFAC factors from the layer inputs ``a [N, D_in]`` and ``J_z = df/dz`` ``[N, K, D_out]``.

    ``A = (1/N) sum_n a_n a_n^T``, ``B = sum_n J_{z,n}^T Lam_n J_{z,n}`` (for the empirical
    Fisher pass ``Lam_n = grad_n grad_n^T``); both symmetric PSD, eigendecomposed.
    """
    N = a.shape[0]
    A = a.T @ a / N
    B = jnp.einsum("nko,nkl,nlp->op", Jz, Lam, Jz)
    la, qa = jnp.linalg.eigh(A)
    lb, qb = jnp.linalg.eigh(B)
    return KronBlock(jnp.maximum(la, 0.0), qa, jnp.maximum(lb, 0.0), qb)


def kron_logdet(block: KronBlock, scale: Array, delta_W: Array, delta_b: Array) -> Array:
    """``logdet(scale kron(A, B) + delta_W I) + logdet(scale B + delta_b I)`` (scalars)."""
    lw = scale * jnp.outer(block.A_eigvals, block.B_eigvals) + delta_W
    lb = scale * block.B_eigvals + delta_b
    return jnp.sum(jnp.log(lw)) + jnp.sum(jnp.log(lb))


# -- positive definiteness ---------------------------------------------------------------------


def make_positive_definite(
    H: Array, min_eig: float = 0.0, floor: float | None = None
) -> tuple[Array, Array]:  # [P, P] -> [P, P], []
    """Repair the eigenvalues ``lam <= min_eig`` of the symmetric ``H [P, P]``.

    ``floor=None`` clips them to ``max(min_eig, 1e-8 max|lam|)``. With a ``floor`` they become
    ``max(|lam|, floor)`` (the saddle-free absolute value, Dauphin et al. 2014, bounded below):
    for the Hessian of a potential in unconstrained coordinates a floor of 1 (the curvature of
    a unit-scale prior) keeps a flat or concave direction from giving the Gaussian an
    unbounded variance there (draws of ``exp(z)`` would overflow).

    Returns:
        ``(H_pd, n_repaired)``: the repaired matrix and how many eigenvalues were at or below
        ``min_eig`` (0: ``H`` is returned symmetrised, unchanged otherwise).
    """
    H = 0.5 * (H + H.T)
    lam, Q = jnp.linalg.eigh(H)
    bad = jnp.sum(lam <= min_eig)
    if floor is None:
        fixed = jnp.maximum(lam, jnp.maximum(min_eig, 1e-8 * jnp.max(jnp.abs(lam))))
    else:
        fixed = jnp.where(lam <= min_eig, jnp.maximum(jnp.abs(lam), floor), lam)
    H_pd = jnp.where(bad > 0, (Q * fixed[None, :]) @ Q.T, H)
    return H_pd, bad


# -- evidence ----------------------------------------------------------------------------------


def log_marglik(
    log_lik: Array, logdet_post: Array, delta: Array, theta: Array, mu0: Array | float = 0.0
) -> Array:
    """Laplace evidence ``log p(y|th) - 1/2 [logdet P - logdet P0 + (th-mu0)^T P0 (th-mu0)]``.

    Args:
        log_lik: ``log p(y | theta_MAP)``.
        logdet_post: ``logdet P`` of the posterior precision.
        delta: prior precision per parameter ``[P]`` (``P0 = diag(delta)``).
        theta: MAP ``[P]``; mu0: prior mean.
    """
    d = theta - mu0
    return log_lik - 0.5 * (logdet_post - jnp.sum(jnp.log(delta)) + jnp.sum(delta * d**2))


def mackay_fixed_point(
    delta: Array, post_var_diag: Array, theta: Array, groups: Array, num_groups: int
) -> Array:
    """One MacKay update of the prior precision per group: ``delta_g = gamma_g / |theta_g|^2``.

    ``gamma_g = sum_{p in g} (1 - delta_p Sigma_pp)`` is the effective number of parameters.

    Args:
        delta: current precision per parameter ``[P]``.
        post_var_diag: ``diag(P^-1)`` ``[P]``.
        theta: MAP ``[P]`` (prior mean zero).
        groups: group index per parameter ``[P]`` (int, ``< num_groups``).
        num_groups: ``G``.

    Returns:
        New precision per group ``[G]``.
    """
    gamma = jax.ops.segment_sum(1.0 - delta * post_var_diag, groups, num_groups)
    sq = jax.ops.segment_sum(theta**2, groups, num_groups)
    return jnp.maximum(gamma, 1e-12) / jnp.maximum(sq, 1e-12)


# -- linearised predictive ---------------------------------------------------------------------


def glm_f_cov_full(J: Array, P_chol: Array) -> Array:  # [N, K, P], [P, P] -> [N, K, K]
    """``J_n P^-1 J_n^T`` with ``P = L L^T`` (``P_chol = L`` lower)."""
    N, K, Pn = J.shape
    V = jax.scipy.linalg.solve_triangular(P_chol, J.reshape(N * K, Pn).T, lower=True)
    V = V.T.reshape(N, K, Pn)
    return jnp.einsum("nkp,nlp->nkl", V, V)


def glm_f_var_diag(J: Array, post_var: Array) -> Array:  # [N, K, P], [P] -> [N, K, K]
    """``J_n diag(post_var) J_n^T``."""
    return jnp.einsum("nkp,p,nlp->nkl", J, post_var, J)


def glm_f_cov_kron(
    a: Array, Jz: Array, block: KronBlock, scale: Array, delta_W: Array, delta_b: Array
) -> Array:  # [N, D_in], [N, K, D_out] -> [N, K, K]
    """One dense layer's contribution ``J_n P^-1 J_n^T`` under the KFAC posterior.

    ``d f / d W[i, o] = a_i J_z[:, o]``, so in the eigenbases
    ``(Q_A ⊗ Q_B)^T vec(J) = (Q_A^T a) ⊗ (Q_B^T J_z)`` and the variance is a weighted sum.
    """
    at = a @ block.A_eigvecs  # [N, D_in]
    jt = Jz @ block.B_eigvecs  # [N, K, D_out]
    inv_w = 1.0 / (scale * jnp.outer(block.A_eigvals, block.B_eigvals) + delta_W)
    inv_b = 1.0 / (scale * block.B_eigvals + delta_b)
    w = jnp.einsum("ni,io->no", at**2, inv_w)  # [N, D_out]
    cov_w = jnp.einsum("nko,no,nlo->nkl", jt, w, jt)
    cov_b = jnp.einsum("nko,o,nlo->nkl", jt, inv_b, jt)
    return cov_w + cov_b


def probit(f: Array, v: Array) -> Array:  # [N], [N] -> [N]
    """``p(y=1) ~ sigmoid(f / sqrt(1 + pi v / 8))`` (MacKay 1992)."""
    return jax.nn.sigmoid(f / jnp.sqrt(1.0 + math.pi * v / 8.0))


def laplace_bridge(f: Array, f_cov: Array) -> Array:  # [N, K], [N, K, K] -> [N, K]
    """Expected softmax via the Laplace bridge to a Dirichlet (Hobbhahn et al. 2022).

    ``alpha_k = (1 - 2/K + exp(f_k)/K^2 sum_l exp(-f_l)) / Sigma_kk``; returns
    ``alpha / sum(alpha)`` (the Dirichlet mean).
    """
    K = f.shape[-1]
    var = jnp.diagonal(f_cov, axis1=-2, axis2=-1)
    sum_exp = jnp.sum(jnp.exp(-f), axis=-1, keepdims=True)
    alpha = (1.0 - 2.0 / K + jnp.exp(f) / K**2 * sum_exp) / var
    return alpha / jnp.sum(alpha, axis=-1, keepdims=True)
