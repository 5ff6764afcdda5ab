"""What a Laplace fit leaves: the Gaussian at the MAP, typed (:class:`LaplaceApprox`).

``q(theta) = N(theta_MAP, P^{-1})`` over the subset ``theta`` (flattened in the order of
``layout``), with the posterior precision ``P`` in one of three structures:

- :class:`FullPrecision`: the lower Cholesky factor ``L`` of ``P = L L^T`` ``[P, P]``;
- :class:`DiagPrecision`: the posterior variances ``diag(P)^{-1}`` ``[P]``;
- :class:`KronPrecision`: per dense layer the eigendecompositions of the KFAC factors
  (:class:`~ppl_dgp.curvature.KronBlock`), the scale ``s`` and the prior precisions, with
  ``P = s (A ⊗ B) + delta`` per block.

The three are values with methods (``logdet``, ``marginal_variance``, ``sample``,
``glm_cov``), defined in :mod:`ppl_dgp.laplace.structures`.

Every other global latent site is held at its MAP (``map``); the linearised predictive reads
``theta_map``, the precision, the prior precision ``delta`` and the curvature scale ``s``.

References:
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ppl_dgp.laplace.structures import DiagPrecision, FullPrecision, KronPrecision
from ppl_dgp.posterior import approx_type

__all__ = ["DiagPrecision", "FullPrecision", "KronPrecision", "LaplaceApprox", "Layout"]


@approx_type
@dataclasses.dataclass(frozen=True)
class Layout:
    """The subset ``theta``: site names in trace order and their shapes."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]


@approx_type(static=("layout", "likelihood", "curvature", "dense_layers", "output_site",
                     "num_clipped", "prior_groups", "predictive"))  # fmt: skip
@dataclasses.dataclass(frozen=True)
class LaplaceApprox:
    """The Laplace Gaussian at the MAP and what its predictives need.

    Attributes:
        theta_map: the MAP of the subset ``[P]`` (constrained values, flattened).
        precision: :class:`FullPrecision`, :class:`DiagPrecision` or :class:`KronPrecision`.
        prior_precision: ``delta`` per parameter ``[P]`` (tuned or the prior's).
        prior_mean: ``[P]``.
        sigma_noise: a Gaussian likelihood's noise scale (1 otherwise).
        log_marglik: the Laplace evidence at the end of the fit.
        curvature_scale: ``s`` multiplying the likelihood curvature (``1/sigma^2``).
        map: ``{site: constrained MAP}`` of every global latent site.
        layout: the subset's :class:`Layout`.
        likelihood: ``"gaussian"``, ``"bernoulli"``, ``"categorical"`` (``None`` for the
            exact Hessian, which needs none).
        curvature: the curvature used: ``"hessian"``, ``"ggn"`` or ``"ef"``.
        dense_layers: ``((layer, (W site, b site)), ...)`` of the subset's dense layers.
        output_site: the network output site ``f``.
        num_clipped: eigenvalues repaired to make the Hessian positive definite.
        prior_groups: names of the tuned prior-precision groups.
        predictive: what :func:`~ppl_dgp.predictive.predict` and the LOO's pointwise
            log-likelihood use: ``"glm"``, the GP-layer program linearised in ``u`` at the
            MAP (:mod:`ppl_dgp.laplace.gp`), or ``"sampled"``, the program at the draws.
    """

    theta_map: Any
    precision: FullPrecision | DiagPrecision | KronPrecision
    prior_precision: Any
    prior_mean: Any
    sigma_noise: Any
    log_marglik: Any
    curvature_scale: Any
    map: dict[str, Any]
    layout: Layout
    likelihood: str | None
    curvature: str
    dense_layers: tuple[tuple[str, tuple[str, ...]], ...]
    output_site: str
    num_clipped: int
    prior_groups: tuple[str, ...]
    predictive: str = "sampled"

    def pointwise_log_likelihood(
        self, rng_key: Any, model: Any, posterior: Any, X: Any, y: Any, *,
        likelihood_site: str = "y", **model_kwargs: Any,
    ) -> tuple[Any, Any] | None:  # fmt: skip
        """The LOO's ``(log_lik, y_rep)`` ``(chain, draw, N)`` for ``predictive="glm"``: the
        linearised program's likelihood at the draws
        (:func:`~ppl_dgp.laplace.predictive.glm_pointwise_log_likelihood`); ``None``
        otherwise (the program at the draws, as for any method)."""
        if self.predictive != "glm":
            return None
        from ppl_dgp.laplace.predictive import glm_pointwise_log_likelihood

        return glm_pointwise_log_likelihood(
            rng_key, model, posterior, X, y, likelihood_site=likelihood_site, **model_kwargs
        )
