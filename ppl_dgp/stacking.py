"""Stacking of chains: one predictive from MCMC chains that do not mix.

Math stratum: NumPy and SciPy only. When the chains of a sampler sit in different modes, the
pooled draws weight each mode by the number of chains that happened to land there, which has
nothing to do with the posterior mass of the mode. Yao, Vehtari & Gelman (2022) stack the
chains instead: each chain ``k`` is a predictive ``p_k(y | x) = (1/D) sum_d p(y | x, theta_kd)``,
and the weights ``w`` on the simplex maximise the leave-one-out log score of the mixture

.. math::
    \\hat w = \\arg\\max_{w \\in \\Delta^{K-1}} \\sum_{i=1}^{N}
        \\log \\sum_{k=1}^{K} w_k \\, p_k(y_i \\mid y_{-i}),

with ``p_k(y_i | y_{-i})`` from PSIS-LOO of chain ``k`` alone (Vehtari et al. 2024). The
objective is concave in ``w``; it is maximised here over ``w = softmax(z)`` by L-BFGS in
log space (no ``exp`` of log densities, so points the chains all find unlikely do not
underflow). The stacked predictive is ``sum_k w_k p_k``.

Example:
    A chain that predicts every point worse than the other gets (almost) no weight:

    >>> import numpy as np
    >>> lpd = np.stack([np.full(20, -1.0), np.full(20, -3.0)], axis=1)  # [N, K]
    >>> w = stacking_weights(lpd)
    >>> bool(w[0] > 0.999), round(stacked_log_score(lpd, w), 6)
    (True, -1.0)

References:
    Yao, Vehtari & Gelman (2022), Stacking for non-mixing Bayesian computations: the curse and
    blessing of multimodal posteriors, JMLR 23(79).
    Yao, Vehtari, Simpson & Gelman (2018), Using stacking to average Bayesian predictive
    distributions, Bayesian Analysis 13(3).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, logsumexp, softmax

__all__ = ["stacked_log_density", "stacked_log_score", "stacking_weights"]

#: Gradient tolerance of the L-BFGS search (the objective is a mean over points).
GTOL = 1e-10


def _check(lpd: np.ndarray, owner: str) -> np.ndarray:
    lpd = np.asarray(lpd, dtype=np.float64)
    if lpd.ndim != 2 or lpd.shape[0] < 1 or lpd.shape[1] < 1:
        raise ValueError(
            f"{owner}: lpd must be [N, K] log predictive densities (N points, K chains); "
            f"received shape {lpd.shape}"
        )
    if np.isnan(lpd).any() or np.isposinf(lpd).any():
        raise ValueError(f"{owner}: lpd has NaN or +inf entries")
    if np.isneginf(lpd).all(axis=1).any():
        raise ValueError(f"{owner}: some point has log density -inf under every chain")
    return lpd


def stacked_log_density(
    lpd: np.ndarray,  # [N, K]
    weights: np.ndarray,  # [K]
) -> np.ndarray:  # [N]
    """``log sum_k w_k p_k(y_i)`` per point, from ``lpd[i, k] = log p_k(y_i)``.

    Args:
        lpd: log predictive densities ``[N, K]`` of ``N`` points under ``K`` chains.
        weights: the chains' weights ``[K]`` (non-negative, summing to 1).

    Returns:
        ``[N]`` log densities of the mixture.
    """
    lpd = _check(lpd, "stacked_log_density")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (lpd.shape[1],) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise ValueError(
            f"stacked_log_density: weights must be [K] = [{lpd.shape[1]}], non-negative and "
            f"summing to 1; received {w}"
        )
    with np.errstate(divide="ignore"):
        return logsumexp(lpd + np.log(w), axis=1)


def stacked_log_score(lpd: np.ndarray, weights: np.ndarray) -> float:
    """Mean over points of :func:`stacked_log_density` (e.g. a test MLPD)."""
    return float(np.mean(stacked_log_density(lpd, weights)))


def stacking_weights(lpd: np.ndarray) -> np.ndarray:  # [K]
    """Stacking weights maximising ``sum_i log sum_k w_k exp(lpd[i, k])`` over the simplex.

    The search runs over ``w = softmax(z)`` from ``z = 0`` (equal weights) with the
    gradient ``d/dz_j = mean_i r_ij - w_j``, where ``r_ij = w_j p_j(y_i) / sum_k w_k p_k(y_i)``
    (at the optimum every chain's mean responsibility equals its weight). Chains with
    identical columns keep equal weights (the search never separates them); a chain that
    is worse at every point tends to weight 0.

    Args:
        lpd: ``[N, K]`` leave-one-out log predictive densities ``log p_k(y_i | y_{-i})`` of
            ``N`` training points under each of ``K`` chains (PSIS-LOO per chain).

    Returns:
        The weights ``[K]`` (non-negative, summing to 1).

    Raises:
        ValueError: ``lpd`` is not ``[N, K]`` or has NaN / +inf entries.

    References:
        Yao, Vehtari & Gelman (2022), JMLR 23(79), section 3.
    """
    lpd = _check(lpd, "stacking_weights")
    N, K = lpd.shape
    if K == 1:
        return np.ones(1)

    def neg(z: np.ndarray) -> tuple[float, np.ndarray]:
        logw = log_softmax(z)
        joint = lpd + logw  # [N, K]
        dens = logsumexp(joint, axis=1, keepdims=True)  # [N, 1]
        r = np.exp(joint - dens)  # responsibilities [N, K]
        return -float(np.mean(dens)), -(r.mean(axis=0) - np.exp(logw))

    res = minimize(neg, np.zeros(K), jac=True, method="L-BFGS-B",
                   options={"gtol": GTOL, "ftol": 1e-15, "maxiter": 10_000})  # fmt: skip
    return softmax(res.x)
