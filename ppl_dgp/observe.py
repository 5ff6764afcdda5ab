"""Likelihood values as NumPyro distributions, and checks of the observations' support.

The math stratum (:mod:`ppl_dgp.likelihoods`) gives each likelihood's ``dist_params(f)``,
the arrays that parameterise ``p(y | f)``; this adapter builds the NumPyro distribution from
them. Both functions dispatch on the likelihood's type with :func:`functools.singledispatch`,
so a new likelihood registers itself::

    @to_distribution.register
    def _(likelihood: MyLikelihood, f):
        return dist.Gamma(**likelihood.dist_params(f))

Example:
    >>> import jax.numpy as jnp
    >>> from ppl_dgp.likelihoods import Bernoulli
    >>> lik = Bernoulli(link="logit")
    >>> y = check_observations(lik, jnp.array([0.0, 1.0]))
    >>> d = to_distribution(lik, jnp.zeros(2))
    >>> [round(float(a), 4) for a in d.log_prob(y)]  # log(1/2)
    [-0.6931, -0.6931]
    >>> check_observations(lik, jnp.array([0.0, 2.0]))
    Traceback (most recent call last):
    ...
    ValueError: y: Bernoulli observations must be 0 or 1; received 2.0 (entry 1)
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
import numpyro.distributions as dist
from jax import Array

from ppl_dgp.likelihoods import (
    Bernoulli,
    Categorical,
    Gaussian,
    HeteroscedasticGaussian,
    Likelihood,
    Poisson,
    StudentT,
)

__all__ = ["to_distribution", "check_observations"]


def _check_latent(likelihood: Likelihood, f: Array) -> None:
    L = likelihood.latent_dim
    if L > 1 and (f.ndim == 0 or f.shape[-1] != L):
        raise ValueError(
            f"f: {type(likelihood).__name__} takes {L} latent functions per observation, "
            f"f must have shape [..., {L}]; received {f.shape}"
        )


@functools.singledispatch
def to_distribution(likelihood: Any, f: Array) -> dist.Distribution:
    """The NumPyro distribution of ``y`` given the latent ``f`` under ``likelihood``.

    Args:
        likelihood: a likelihood value from :mod:`ppl_dgp.likelihoods` (or one registered
            here with ``@to_distribution.register``).
        f: latent values, ``[...]`` (the shape of ``y``) for one latent function per
            observation, ``[..., latent_dim]`` otherwise.

    Returns:
        A distribution with batch shape ``[...]`` whose ``log_prob(y)`` equals
        ``likelihood.log_prob(y, f)``.
    """
    raise TypeError(
        f"likelihood: no NumPyro distribution is registered for {type(likelihood).__name__}; "
        "register one with @ppl_dgp.observe.to_distribution.register"
    )


def _register_simple(cls: type, family: Any) -> None:
    @to_distribution.register(cls)
    def _(likelihood: Likelihood, f: Array) -> dist.Distribution:
        _check_latent(likelihood, f)
        return family(**likelihood.dist_params(f))


_register_simple(Gaussian, dist.Normal)
_register_simple(HeteroscedasticGaussian, dist.Normal)
_register_simple(StudentT, dist.StudentT)
_register_simple(Bernoulli, dist.BernoulliLogits)
_register_simple(Poisson, dist.Poisson)
_register_simple(Categorical, dist.Categorical)  # logits (softmax) or probs (robust-max)


# --- the observations' support ----------------------------------------------------------


def _concrete(y: Any) -> np.ndarray | None:
    """``y`` as a NumPy array, or ``None`` when it cannot be inspected (absent, traced)."""
    if y is None or isinstance(y, jax.core.Tracer):
        return None
    return np.asarray(y)


def _fail(name: str, a: np.ndarray, bad: np.ndarray, what: str) -> None:
    if np.any(bad):
        idx = np.argwhere(bad)[0]
        where = ", ".join(str(int(i)) for i in idx)
        raise ValueError(f"{name}: {what}; received {a[tuple(idx)].item()!r} (entry {where})")


@functools.singledispatch
def check_observations(likelihood: Any, y: Any, *, name: str = "y") -> Any:
    """Raise a ``ValueError`` naming ``name`` if a concrete ``y`` is outside the support.

    ``y = None`` (prediction) and traced values pass through unchecked. Continuous
    likelihoods require finite values; Bernoulli labels in ``{0, 1}``; Categorical integer
    labels in ``range(num_classes)``; Poisson non-negative integer counts.

    Returns:
        ``y`` unchanged, so the check can sit inline.
    """
    a = _concrete(y)
    if a is not None:
        _fail(name, a, ~np.isfinite(a), "observations must be finite")
    return y


@check_observations.register
def _(likelihood: Bernoulli, y: Any, *, name: str = "y") -> Any:
    a = _concrete(y)
    if a is not None:
        _fail(name, a, (a != 0) & (a != 1), "Bernoulli observations must be 0 or 1")
    return y


@check_observations.register
def _(likelihood: Categorical, y: Any, *, name: str = "y") -> Any:
    a = _concrete(y)
    if a is not None:
        K = likelihood.num_classes
        what = f"Categorical labels must be integers in range({K})"
        _fail(name, a, ~np.isin(a, np.arange(K)), what)
    return y


@check_observations.register
def _(likelihood: Poisson, y: Any, *, name: str = "y") -> Any:
    a = _concrete(y)
    if a is not None:
        bad = ~np.isfinite(a) | (a < 0) | (np.round(a) != a)
        _fail(name, a, bad, "Poisson observations must be non-negative integer counts")
    return y
