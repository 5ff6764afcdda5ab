"""The subset ``theta`` of a model's latent sites that the Laplace Gaussian is over.

:class:`_Layout` flattens the subset (site names in trace order) into one vector ``[P]``; the
readers below take what the curvature needs from a model trace: the dense layers, the Normal
priors' means and precisions, the likelihood family and its natural parameter, the tuned
prior's groups. Private to :mod:`ppl_dgp.laplace`.

References:
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS
    (``subset_of_weights``, ``prior_structure``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import seed, substitute, trace

from ppl_dgp.dense import DENSE
from ppl_dgp.layers import ROLE

__all__: list[str] = []


@dataclasses.dataclass(frozen=True)
class _Layout:
    """The subset ``theta``: site names in trace order, shapes, offsets into ``[P]``."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(s)) for s in self.shapes]

    @property
    def P(self) -> int:
        return sum(self.sizes)

    def offsets(self) -> dict[str, tuple[int, int]]:
        out, o = {}, 0
        for n, k in zip(self.names, self.sizes, strict=True):
            out[n] = (o, o + k)
            o += k
        return out

    def ravel(self, values: dict) -> Array:  # {site: array} -> [P]
        return jnp.concatenate([jnp.reshape(values[n], -1) for n in self.names])

    def unravel_batch(self, thetas: Array) -> dict:  # [S, P] -> {site: [S, ...]}
        S = thetas.shape[0]
        return {
            n: thetas[:, a:b].reshape((S, *s))
            for (n, (a, b)), s in zip(self.offsets().items(), self.shapes, strict=True)
        }

    def unravel(self, theta: Array) -> dict:  # [P] -> {site: array}
        return {
            n: theta[a:b].reshape(s)
            for (n, (a, b)), s in zip(self.offsets().items(), self.shapes, strict=True)
        }


def _dense_layers(model_trace: dict) -> dict[str, list[str]]:
    """``{layer: [W site, b site]}`` of the dense layers, in trace order."""
    layers: dict[str, list[str]] = {}
    for name, site in model_trace.items():
        if site["type"] == "sample" and site["infer"].get(ROLE) == DENSE:
            layers.setdefault(name.rsplit(".", 1)[0], []).append(name)
    return layers


def _normal_prior(fn: Any, site: str) -> tuple[Array, Array]:
    """``(mean, precision)`` broadcast to the site's shape, for a (wrapped) Normal prior."""
    base = _normal_base(fn, site)
    shape = fn.shape()
    return jnp.broadcast_to(base.loc, shape), jnp.broadcast_to(1.0 / base.scale**2, shape)


def _normal_base(fn: Any, site: str) -> dist.Normal:
    """The ``Normal`` under ``Independent`` / ``expand`` wrappers, or a clear error."""
    base = fn
    while isinstance(base, dist.Independent | dist.ExpandedDistribution):
        base = base.base_dist
    if not isinstance(base, dist.Normal):
        raise ValueError(
            f"Laplace(curvature='ggn'/'ef'): site {site!r} needs a Normal prior (its precision "
            f"enters the posterior); received {type(base).__name__}. Use curvature='hessian' "
            "or leave the site out of subset_of_weights"
        )
    return base


def _likelihood(fn: Any, site: str) -> tuple[str, Array, Array]:
    """``(name, natural parameter [N, K], sigma)`` of the likelihood site's distribution."""
    name = _likelihood_name(fn, site)
    if isinstance(fn, dist.Independent):
        fn = fn.base_dist
    if name == "gaussian":
        return name, fn.loc[..., None], jnp.asarray(fn.scale)
    if name == "bernoulli":
        return name, fn.logits[..., None], jnp.asarray(1.0)
    return name, fn.logits, jnp.asarray(1.0)


def _likelihood_name(fn: Any, site: str) -> str:
    """``"gaussian"``, ``"bernoulli"`` or ``"categorical"``: the likelihood site's family."""
    if isinstance(fn, dist.Independent):
        fn = fn.base_dist
    if isinstance(fn, dist.Normal):
        return "gaussian"
    if isinstance(fn, dist.BernoulliLogits):
        return "bernoulli"
    if isinstance(fn, dist.CategoricalLogits):
        return "categorical"
    raise ValueError(
        f"Laplace(curvature='ggn'/'ef'): the likelihood site {site!r} must be Normal, "
        f"Bernoulli(logits=) or Categorical(logits=); received {type(fn).__name__}"
    )


def _groups(
    prior_structure: str, layout: _Layout, layers: dict
) -> tuple[np.ndarray, int, list[str]]:
    """Group index per parameter ``[P]`` for the tuned prior precision, ``G``, group names."""
    if prior_structure == "scalar":
        return np.zeros(layout.P, dtype=np.int32), 1, ["all"]
    site_layer = {s: layer for layer, ss in layers.items() for s in ss}
    names: list[str] = []
    idx = []
    for site, k in zip(layout.names, layout.sizes, strict=True):
        g = site_layer.get(site, site)
        if g not in names:
            names.append(g)
        idx.append(np.full(k, names.index(g), dtype=np.int32))
    return np.concatenate(idx), len(names), names


def _constrained(model: Callable, z: dict, params: dict, X: Array, y: Array, kw: dict) -> dict:
    """The constrained value of every sample site given unconstrained ``z`` (and ``params``)."""

    def value(site: dict) -> Array | None:
        name = site["name"]
        if site["type"] == "sample" and name in z:
            return biject_to(site["fn"].support)(z[name])
        return params.get(name)

    tr = trace(substitute(seed(model, 0), substitute_fn=value)).get_trace(X, y, **kw)
    return {k: v["value"] for k, v in tr.items() if v["type"] == "sample" and k in z}
