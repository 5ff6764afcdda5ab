"""The traced pieces of a Laplace fit that :class:`~ppl_dgp.laplace.fit.LaplaceFitter` compiles.

Every function takes the data ``(X, y)`` as arguments (never closed over), and its static
arguments are only what it reads, so a compiled piece is reused across data of the same
shapes and across configurations that differ elsewhere (``num_steps`` does not reach the
curvature core, ``num_samples`` reaches only the draws):

- :func:`_init_point`: the initial point in unconstrained space, as
  :func:`~ppl_dgp.infer.initialize` finds it (:data:`~ppl_dgp.guides.init_to_model_init`);
- :func:`_map_loss`: ``potential / N``, what the MAP (the shared loop driver) minimises;
- :func:`_ggn_core`: the GGN / EF curvature in its structure, the evidence tuning and the
  posterior precision;
- :func:`_draws`: ``theta_MAP + P^-1/2 eps``;
- :func:`_hessian`, :func:`_potential`: the exact-Hessian path.

References:
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import block, seed, substitute, trace
from numpyro.infer.util import potential_energy

from ppl_dgp.guides import init_to_model_init
from ppl_dgp.laplace import evidence
from ppl_dgp.laplace.curvature import likelihood_curvature, output_jacobian
from ppl_dgp.laplace.subset import _constrained, _Layout, _likelihood, _normal_prior

__all__: list[str] = []


def _potential(model: Callable, kw: dict, z: dict, X: Array, y: Array) -> Array:
    """``U(z) = -log p(y, z | X)`` in unconstrained space (NumPyro's ``potential_energy``)."""
    return potential_energy(model, (X, y), kw, z, enum=False)


def _init_point(model: Callable, kw: dict, latent: tuple[str, ...], key: Array, X: Array,
                y: Array) -> tuple[dict, dict, Array]:  # fmt: skip
    """``(z0, params, U(z0))``: the initial point of ``latent``, the param sites there."""
    with block():
        tr = trace(substitute(seed(model, jax.random.split(key)[1]),
                              substitute_fn=init_to_model_init)).get_trace(X, y, **kw)  # fmt: skip
    z = {k: biject_to(tr[k]["fn"].support).inv(tr[k]["value"]) for k in latent}
    params = {k: s["value"] for k, s in tr.items() if s["type"] == "param"}
    return z, params, _potential(model, {**kw}, z, X, y)


def _map_loss(model: Callable, kw: dict, z: dict, fixed: dict, X: Array, y: Array) -> Array:
    """``U({**fixed, **z}) / N``, the MAP's loss per datum (the shared loop driver runs it)."""
    return _potential(model, kw, {**fixed, **z}, X, y) / X.shape[0]


def _hessian(model: Callable, kw: dict, layout: _Layout, theta: Array, z: dict, X: Array,
             y: Array) -> Array:  # fmt: skip
    """``d^2 U / d theta^2`` ``[P, P]`` over the subset, the other sites of ``z`` held."""
    return jax.hessian(lambda t: _potential(model, kw, {**z, **layout.unravel(t)}, X, y))(theta)


def _draws(precision: Any, theta_map: Array, key: Array, num_samples: int) -> Array:
    """``theta_MAP + P^-1/2 eps`` ``[S, P]``."""
    return theta_map + precision.sample(key, num_samples)


@dataclasses.dataclass(frozen=True)
class _CoreSpec:
    """The static key of :func:`_ggn_core`: exactly the configuration it reads."""

    structure: type  # a curvature type of structures.STRUCTURES
    kind: str  # "ggn" or "ef"
    lik: str
    layout: _Layout
    layers: tuple[tuple[str, tuple[str, ...]], ...]
    groups: tuple[int, ...]
    G: int
    global_latent: tuple[str, ...]
    output_site: str
    likelihood_site: str
    tune: str
    tune_noise: bool
    tune_steps: int
    grid: tuple[float, ...]
    memory_limit_gb: float


def _ggn_core(model: Callable, kw: dict, spec: _CoreSpec, z_map: dict, params: dict, X: Array,
              y: Array) -> dict:  # fmt: skip
    """Curvature, evidence tuning and the posterior precision of a GGN/EF Laplace fit.

    ``z_map``: the unconstrained MAP of every latent site; ``params``: the param sites.
    Returns the ``precision`` (a structure value), ``theta_map [P]``, the prior mean ``mu0``
    and precision ``delta [P]``, ``sigma``, the curvature scale, the evidence ``lml``, the
    constrained MAP ``cmap`` of the global latent sites and the likelihood/output check.
    """
    layout, layers, out = spec.layout, dict(spec.layers), spec.output_site
    groups, G = np.asarray(spec.groups, dtype=np.int32), spec.G
    values = {**params, **_constrained(model, z_map, params, X, y, kw)}
    theta_map = layout.ravel(values)

    def f_sites(over: dict) -> Array:  # sites replaced -> [N, K]
        data = {**values, **over}
        return trace(substitute(seed(model, 0), data=data)).get_trace(X, y, **kw)[out]["value"]

    def f_of(theta: Array) -> Array:  # [P] -> [N, K]
        return f_sites(layout.unravel(theta))

    tr = trace(substitute(seed(model, 0), data=values)).get_trace(X, y, **kw)
    cmap = {k: v["value"] for k, v in tr.items() if v["type"] in ("sample", "deterministic")}
    priors = [_normal_prior(tr[n]["fn"], n) for n in layout.names]
    mu0 = jnp.concatenate([jnp.reshape(m, -1) for m, _ in priors])
    delta0 = jnp.concatenate([jnp.reshape(p, -1) for _, p in priors])
    _, eta, sigma = _likelihood(tr[spec.likelihood_site]["fn"], spec.likelihood_site)
    f_map = cmap[out]  # [N, K]
    sigma = jnp.ravel(jnp.asarray(sigma))[0]
    jac = output_jacobian(
        f_of, f_sites, theta_map, cmap, lambda: {k: cmap[f"{k}.input"] for k in layers},
        layout, layers, f_map.shape, spec.memory_limit_gb,
    )  # fmt: skip
    curv = likelihood_curvature(spec.structure, spec.kind, spec.lik, f_map, y, sigma, jac)
    unit = spec.lik == "gaussian" and spec.kind == "ggn"  # curvature at sigma = 1
    log_d = jnp.log(jax.ops.segment_sum(delta0, groups, G) / np.bincount(groups, minlength=G))
    log_s = jnp.log(sigma)
    if spec.tune == "none":  # the model's own prior precisions, per parameter
        delta = delta0
    else:
        if G == 1:  # delta stays uniform: logdet by one eigendecomposition
            curv = curv.with_eigvals()
        log_d, log_s = evidence.tune(
            spec.tune, curv, spec.lik, unit, f_map, y, theta_map, mu0, log_d, log_s, groups, G,
            tune_noise=spec.tune_noise, tune_steps=spec.tune_steps, grid=spec.grid,
        )  # fmt: skip
        delta = jnp.exp(log_d)[groups]
    sigma = jnp.exp(log_s)
    scale = 1.0 / sigma**2 if unit else jnp.asarray(1.0)
    return {
        "precision": curv.posterior(scale, delta),
        "delta": delta,
        "sigma": sigma,
        "scale": scale,
        "lml": evidence.log_marglik(curv, spec.lik, f_map, y, sigma, scale, delta, theta_map, mu0),
        "eta_f_gap": jnp.max(jnp.abs(jnp.reshape(eta, f_map.shape) - f_map)),
        "f_scale": jnp.max(jnp.abs(f_map)),
        "theta_map": theta_map,
        "mu0": mu0,
        "cmap": {n: values[n] for n in spec.global_latent},
    }
