"""The linearised (GLM) Laplace of a GP-layer program with a Gaussian likelihood.

A deep GP ``y_n | theta ~ N(m_n(theta), v_n(theta))`` (the last layer marginalised,
``v_n = sigma_L^2(x_n) + s2``), ``theta`` the inducing values ``u`` of every layer
(whitened: prior ``N(0, I)``), the hyperparameters and the noise held at their MAP and the
inner layers' per-datum noise ``eps`` at its mean ``0`` (what the MAP was found with), is
linearised in ``theta`` at the MAP (Immer, Korzepa & Bauer 2021; Laplace Redux's default
``pred_type="glm"``):

.. math::
    m^{lin}_n(\\theta) = m_n(\\hat\\theta) + J_n (\\theta - \\hat\\theta), \\qquad
    J_n = \\partial m_n / \\partial \\theta \\big|_{\\hat\\theta}, \\qquad
    y_n \\mid \\theta \\sim N(m^{lin}_n(\\theta), v_n(\\hat\\theta)).

The generalised Gauss-Newton Laplace ``P = J^T V^{-1} J + P_0`` (``V = diag(v)``, ``P_0`` the
Gaussian prior's precision) is the exact posterior of this linear-Gaussian model, so

- the predictive is Gaussian in closed form,
  ``y_* ~ N(m_*(\\hat\\theta), J_* P^{-1} J_*^T + v_*(\\hat\\theta))``: smooth in ``x_*``;
- the pointwise log-likelihood the LOO uses is that of the same linearised model at draws
  ``theta_s ~ N(theta_hat, P^{-1})``: ``log N(y_n | m^{lin}_n(theta_s), v_n)``, so PSIS's
  importance ratios are those of an exact posterior and the Pareto k reflects the
  observations' influence, not a wide Gaussian pushed through the nonlinear network.

For a program linear in ``theta`` (one GP layer) the linearisation is exact and the GLM
predictive is the Gaussian posterior predictive of ``u`` given the hyperparameters.

References:
    Immer, Korzepa & Bauer (2021), "Improving predictions of Bayesian neural nets via local
    linearization", AISTATS.
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS.
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.util import potential_energy

from ppl_dgp import curvature as C
from ppl_dgp.collapse import ROLE, GaussianOutput, collapse, gaussian_output
from ppl_dgp.laplace.structures import OutputJacobian
from ppl_dgp.laplace.subset import _constrained, _Layout, _normal_prior

__all__ = ["gaussian_moments", "inducing_sites", "is_gp_regression", "linearise"]


def inducing_sites(model_trace: dict) -> tuple[str, ...]:
    """The ``{layer}.u`` sample sites of a GP-layer program, in trace order."""
    return tuple(
        k for k, s in model_trace.items()
        if s["type"] == "sample" and s.get("infer", {}).get(ROLE) == "inducing"
    )  # fmt: skip


def is_gp_regression(model_trace: dict, likelihood_site: str) -> bool:
    """A GP-layer program whose observed ``likelihood_site`` is Normal (per datum)."""
    if not inducing_sites(model_trace) or likelihood_site not in model_trace:
        return False
    site = model_trace[likelihood_site]
    fn = site.get("fn")
    base = fn.base_dist if isinstance(fn, dist.Independent) else fn
    ndim = site["ndim"] if "ndim" in site else jnp.ndim(site["value"])
    return isinstance(base, dist.Normal) and ndim == 1


def _zero_layer_noise(site: dict) -> Array | None:
    """``substitute_fn``: the inner layers' ``eps`` at its prior mean ``0``."""
    if site["type"] == "sample" and site.get("infer", {}).get(ROLE) == "layer_noise":
        return jnp.zeros(site["fn"].shape())
    return None


def gaussian_moments(
    model: Callable, kw: dict, values: dict, params: dict, X: Array, site: str
) -> GaussianOutput:
    """``N(m_n, v_n)`` of the Gaussian ``site`` at ``X`` ``[N, D]`` with the global sites at
    ``values``, the params at ``params`` and every inner layer's ``eps = 0``.

    One pass under :class:`~ppl_dgp.collapse.collapse` without any ``q(u)`` (each layer's
    ``p(f | u)`` given ``u``), read by :func:`~ppl_dgp.collapse.gaussian_output`.

    Returns:
        :class:`~ppl_dgp.collapse.GaussianOutput`, ``mean``/``f_var``/``var`` ``[N]``.
    """
    with collapse(params=params):
        tr = trace(
            substitute(
                substitute(seed(model, 0), data={**params, **values}),
                substitute_fn=_zero_layer_noise,
            )  # fmt: skip
        ).get_trace(X, None, **kw)
    return gaussian_output(tr, site)


def linearise(
    model: Callable, kw: dict, layout: _Layout, values: dict, params: dict, X: Array, site: str
) -> tuple[GaussianOutput, Array]:
    """The moments at the MAP and ``J = d m / d theta`` ``[N, P]`` (forward mode: ``P`` is the
    number of inducing values, small).

    Args:
        layout: the subset ``theta`` (real-valued sites: the ``u`` of the layers).
        values: every global latent site at its (constrained) MAP.
    """
    theta = layout.ravel(values)

    def mean_of(t: Array) -> Array:  # [P] -> [N]
        return gaussian_moments(model, kw, {**values, **layout.unravel(t)}, params, X, site).mean

    J = jax.jacfwd(mean_of)(theta)
    return gaussian_moments(model, kw, values, params, X, site), J


@dataclasses.dataclass(frozen=True)
class _GPSpec:
    """The static key of :func:`_gp_core`."""

    structure: type  # a curvature type of structures.STRUCTURES
    layout: _Layout
    global_latent: tuple[str, ...]
    likelihood_site: str


def _gp_core(model: Callable, kw: dict, spec: _GPSpec, values: dict, params: dict, X: Array,
             y: Array) -> dict:  # fmt: skip
    """The GGN of the linearised program, its posterior precision and Laplace evidence.

    ``P = sum_n J_n^T J_n / v_n + diag(delta_0)``, ``delta_0`` the Normal prior's precision;
    the evidence is :func:`ppl_dgp.curvature.log_marglik` with
    ``log p(y | theta_hat) = sum_n log N(y_n | m_n, v_n)``.
    """
    layout = spec.layout
    tr = trace(substitute(seed(model, 0), data={**params, **values})).get_trace(X, y, **kw)
    priors = [_normal_prior(tr[n]["fn"], n) for n in layout.names]
    mu0 = jnp.concatenate([jnp.reshape(m, -1) for m, _ in priors])
    delta = jnp.concatenate([jnp.reshape(p, -1) for _, p in priors])
    g, J = linearise(model, kw, layout, values, params, X, spec.likelihood_site)
    curv = spec.structure.from_outer(OutputJacobian.of(J[:, None, :]), (1.0 / g.var)[:, None, None])
    precision = curv.posterior(jnp.asarray(1.0), delta)
    theta = layout.ravel(values)
    ll = jnp.sum(-0.5 * (jnp.log(2 * jnp.pi * g.var) + (y - g.mean) ** 2 / g.var))
    return {
        "precision": precision,
        "theta_map": theta,
        "delta": delta,
        "mu0": mu0,
        "sigma": jnp.sqrt(g.noise_variance),
        "lml": C.log_marglik(ll, precision.logdet(), delta, theta, mu0),
    }


def _evidence_loss(model: Callable, kw: dict, spec: _GPSpec, z: dict, fixed: dict,
                   params: dict, delta: Array, X: Array, y: Array) -> Array:  # fmt: skip
    """``[U(z) + 1/2 logdet P(stop_grad(u), h)] / N``: what the evidence tuning descends.

    ``U`` is the potential (hyperpriors included), ``P = J^T V^-1 J + diag(delta)`` the GGN
    posterior precision of ``u``. Its gradient in ``u`` is the potential's (the MAP condition
    ``u = u*(h)``) and in the hyperparameters ``h`` that of ``U + 1/2 logdet P``, the negative
    log Laplace evidence with its hyperprior at ``u*(h)`` (envelope theorem: ``dU/du = 0``
    there); so a stationary point has ``u`` at the MAP given ``h`` and ``h`` at a stationary
    point of ``log p(y | h) + log p(h)`` (Immer et al. 2021's alternation, in one descent).
    """
    zz = {**fixed, **z}
    U = potential_energy(model, (X, y), kw, zz, enum=False)
    values = _constrained(model, zz, params, X, y, kw)
    values = {k: values[k] for k in spec.global_latent}
    frozen = {n: jax.lax.stop_gradient(values[n]) for n in spec.layout.names}
    g, J = linearise(model, kw, spec.layout, {**values, **frozen}, params, X, spec.likelihood_site)
    P = J.T @ (J / g.var[:, None]) + jnp.diag(delta)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(P))))
    return (U + 0.5 * logdet) / X.shape[0]


def glm_moments(
    model: Callable, kw: dict, layout: _Layout, values: dict, params: dict, precision: Any,
    X: Array, site: str,
) -> tuple[GaussianOutput, Array, Array]:  # fmt: skip
    """``(moments at the MAP, J [N, P], J P^-1 J^T diagonal [N])`` at ``X``."""
    g, J = linearise(model, kw, layout, values, params, X, site)
    cov = precision.glm_cov(OutputJacobian.of(J[:, None, :]))[:, 0, 0]
    return g, J, cov
