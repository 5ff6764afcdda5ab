"""Likelihoods as values: log densities, variational expectations and predictives (math only).

A likelihood is a frozen dataclass registered as a JAX pytree (numeric fields are leaves,
links and quadrature sizes are static), so it crosses ``jit``/``vmap``/``grad`` as a value.
Priors on its parameters belong to the program; :mod:`ppl_dgp.observe` turns a likelihood
into its NumPyro distribution.

Shapes. ``y`` is ``[...]`` (one entry per observation, e.g. ``[N]`` or ``[N, P]``). A
likelihood consumes ``latent_dim`` latent functions per observation: with ``latent_dim == 1``
the latent ``f`` has the shape of ``y``; otherwise ``f`` is ``[..., latent_dim]``
(:class:`HeteroscedasticGaussian`: 2, :class:`Categorical`: ``num_classes``). ``log_prob``
and ``variational_expectations`` return ``[...]``, elementwise (no sum over observations).

Expectations ``E_{N(f | m, v)}[log p(y | f)]`` under a factorised Gaussian ``q(f)`` are in
closed form where one exists (Gaussian, heteroscedastic Gaussian, Poisson with the exp
link), by Gauss–Hermite quadrature with ``num_gauss_hermite`` points (default 20) for one
latent function per observation, by one-dimensional Gauss–Hermite quadrature of
``q(f_y is the largest)`` for the robust-max (GPflow's ``RobustMax``), and by Monte Carlo
with ``num_mc_samples`` draws (needs ``key``) for the softmax.

References:
    GPflow ``gpflow.likelihoods`` (``ndiagquad``, ``Gaussian``, ``StudentT``, ``Bernoulli``,
    ``Poisson``, ``MultiClass``/``RobustMax``, ``Softmax``); Hensman et al. (2013), eq. (9);
    Hensman, Matthews & Ghahramani (2015), *Scalable variational GP classification*.

Example:
    With ``f`` known (``f_var = 0``) the expectation is the log density itself; a mixture of
    one component is that component:

    >>> import jax.numpy as jnp
    >>> y, m = jnp.array([[0.5]]), jnp.array([[0.0]])
    >>> float(gaussian_variational_expectations(y, m, jnp.zeros((1, 1)), 1.0)[0, 0]) == float(
    ...     gaussian_log_density(y, m, 1.0)[0, 0])
    True
    >>> round(float(gaussian_mixture_log_density(jnp.zeros(1), jnp.zeros((1, 1)),
    ...                                          jnp.ones((1, 1)))[0]), 4)  # -log(2 pi) / 2
    -0.9189
    >>> HeteroscedasticGaussian().num_latent(3)  # (mean, log sd) per output
    6
    >>> lik = Bernoulli(link="probit")  # Phi(0 / sqrt(1 + 1)) = 1/2
    >>> [round(float(a), 4) for a in lik.predict_mean_and_var(jnp.zeros(1), jnp.ones(1))[0]]
    [0.5]
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import gammaln, logsumexp
from jax.scipy.stats import norm

__all__ = [
    "gaussian_log_density",
    "gaussian_variational_expectations",
    "gaussian_mixture_log_density",
    "gauss_hermite",
    "gauss_hermite_expectation",
    "monte_carlo_expectation",
    "Likelihood",
    "Gaussian",
    "HeteroscedasticGaussian",
    "StudentT",
    "Bernoulli",
    "Categorical",
    "Poisson",
]

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(y: Array, mean: Array, var: Array) -> Array:
    """``log N(y | mean, var)``, elementwise."""
    return -0.5 * (_LOG_2PI + jnp.log(var) + jnp.square(y - mean) / var)


def gaussian_variational_expectations(
    y: Array,  # [N, Q]
    f_mean: Array,  # [N, Q]
    f_var: Array,  # [N, Q]
    noise_variance: Array,  # [] or [Q]
) -> Array:  # [N, Q]
    """``E_{N(f | f_mean, f_var)}[log N(y | f, noise_variance)]`` in closed form.

    .. math:: -\\tfrac12 \\log(2\\pi\\sigma^2) - \\tfrac{(y - \\mu)^2 + v}{2\\sigma^2}
    """
    return -0.5 * (
        _LOG_2PI + jnp.log(noise_variance) + (jnp.square(y - f_mean) + f_var) / noise_variance
    )


def gaussian_mixture_log_density(
    y: Array,  # [N] or [N, Q]
    means: Array,  # [S, N] or [S, N, Q]
    variances: Array,  # [S, N] or [S, N, Q]
) -> Array:  # [N] (or [N, Q])
    """Log density of an equally weighted Gaussian mixture over ``S`` components.

    .. math:: \\log p(y) = \\operatorname{logsumexp}_s \\log N(y | m_s, v_s) - \\log S
    """
    S = means.shape[0]
    return logsumexp(gaussian_log_density(y[None], means, variances), axis=0) - math.log(S)


# --- expectations under a factorised Gaussian -------------------------------------------


@functools.lru_cache(maxsize=32)
def gauss_hermite(num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights ``(x, w)``, each ``[H]``, with ``sum_h w_h g(x_h) ~ E_{N(0,1)}[g]``.

    GPflow's ``ndiagquad`` convention: ``hermgauss`` nodes times ``sqrt(2)``, weights divided
    by ``sqrt(pi)``; exact for polynomials of degree below ``2 H``.
    """
    t, w = np.polynomial.hermite.hermgauss(num_points)
    return t * math.sqrt(2.0), w / math.sqrt(math.pi)


def _leading(a: Any, ndim: int) -> Array:
    """A ``[H]`` array as ``[H, 1, ..., 1]`` with ``ndim`` trailing ones (no rank promotion)."""
    return jnp.reshape(jnp.asarray(a), (-1,) + (1,) * ndim)


def gauss_hermite_expectation(
    fun: Callable[[Array], Array],  # [H, ...] -> [H, ...]
    f_mean: Array,  # [...]
    f_var: Array,  # [...]
    num_points: int = 20,
) -> Array:  # [...]
    """``E_{N(f | f_mean, f_var)}[fun(f)]`` elementwise, by Gauss–Hermite quadrature.

    ``fun`` receives the nodes ``f_h = m + sqrt(v) x_h`` stacked on a leading axis ``[H, ...]``
    (index ``y`` as ``y[None]`` inside it) and returns ``[H, ...]``.
    """
    x, w = gauss_hermite(num_points)
    nodes = f_mean[None] + jnp.sqrt(f_var)[None] * _leading(x, f_mean.ndim)
    return jnp.sum(_leading(w, f_mean.ndim) * fun(nodes), axis=0)


def monte_carlo_expectation(
    fun: Callable[[Array], Array],  # [S, ...] -> [S, ...]
    f_mean: Array,  # [...]
    f_var: Array,  # [...]
    key: Array,
    num_samples: int,
) -> Array:
    """``E_{N(f | f_mean, f_var)}[fun(f)]`` by the mean of ``num_samples`` reparameterised
    draws ``f_s = m + sqrt(v) eps_s`` stacked on a leading axis ``[S, ...]``."""
    if key is None:
        raise ValueError("key: this expectation is by Monte Carlo and needs a PRNG key")
    eps = jax.random.normal(key, (num_samples, *f_mean.shape), dtype=f_mean.dtype)
    return jnp.mean(fun(f_mean[None] + jnp.sqrt(f_var)[None] * eps), axis=0)


# --- likelihood values -----------------------------------------------------------------


def _register(cls: type) -> type:
    """Frozen dataclass + pytree: fields listed in ``cls.static`` are auxiliary data, the
    others leaves; rebuilding from leaves skips ``__post_init__`` (tracers, gradients)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    leaves_, static = [n for n in names if n not in cls.static], [n for n in cls.static]

    def flatten(lik: Any) -> tuple[tuple, tuple]:
        return tuple(getattr(lik, n) for n in leaves_), tuple(getattr(lik, n) for n in static)

    def unflatten(aux: tuple, leaves: tuple) -> Any:
        obj = object.__new__(cls)
        for n, v in zip([*leaves_, *static], [*leaves, *aux], strict=True):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_node(cls, flatten, unflatten)
    return cls


def _check(owner: str, name: str, value: Any, ok: Callable[[np.ndarray], Any], what: str):
    """Raise a clear ``ValueError`` for a concrete parameter failing ``ok`` (skip tracers)."""
    if isinstance(value, jax.core.Tracer):
        return
    a = np.asarray(value)
    if not (np.all(np.isfinite(a)) and np.all(ok(a))):
        raise ValueError(f"{owner}: {name} must be {what}; received {a.tolist()}")


def _check_link(owner: str, link: str, links: tuple[str, ...]) -> None:
    if link not in links:
        raise ValueError(f"{owner}: link must be one of {links}; received {link!r}")


class Likelihood:
    """Base: ``log_prob``, ``dist_params`` and (by default) quadrature expectations.

    Subclasses with one latent function per observation implement ``log_prob(y, f)`` and
    ``conditional_mean_and_var(f)`` (mean and variance of ``y`` given ``f``); the base gives
    ``variational_expectations`` and ``predict_mean_and_var`` by Gauss–Hermite quadrature.
    Likelihoods with ``latent_dim > 1`` override both. ``static`` names the fields that are
    configuration (pytree auxiliary data: links, sizes); the other fields are pytree leaves.
    """

    static: ClassVar[tuple[str, ...]] = ()
    latent_dim: ClassVar[int] = 1
    num_gauss_hermite: int = 20

    def num_latent(self, num_outputs: int = 1) -> int:
        """Latent functions consumed by ``num_outputs`` observed outputs."""
        return self.latent_dim * num_outputs

    def log_prob(self, y: Array, f: Array) -> Array:  # [...]
        raise NotImplementedError

    def dist_params(self, f: Array) -> dict[str, Array]:
        """Arrays parameterising ``p(y | f)``, keyed by the NumPyro distribution's arguments."""
        raise NotImplementedError

    def conditional_mean_and_var(self, f: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def variational_expectations(
        self, y: Array, f_mean: Array, f_var: Array, key: Array | None = None
    ) -> Array:  # [...]
        """``E_{N(f | f_mean, f_var)}[log p(y | f)]``, elementwise (``key`` unused here)."""
        return gauss_hermite_expectation(
            lambda f: self.log_prob(y[None], f), f_mean, f_var, self.num_gauss_hermite
        )

    def predict_mean_and_var(
        self, f_mean: Array, f_var: Array, key: Array | None = None
    ) -> tuple[Array, Array]:
        """Mean and variance of ``y`` under ``int p(y | f) N(f | f_mean, f_var) df``."""

        def second_moment(f: Array) -> Array:
            mean, var = self.conditional_mean_and_var(f)
            return var + jnp.square(mean)

        H = self.num_gauss_hermite
        m1 = gauss_hermite_expectation(
            lambda f: self.conditional_mean_and_var(f)[0], f_mean, f_var, H
        )
        m2 = gauss_hermite_expectation(second_moment, f_mean, f_var, H)
        return m1, m2 - jnp.square(m1)


@_register
class Gaussian(Likelihood):
    """``p(y | f) = N(y | f, variance)``; ``variance`` is ``[]`` or broadcasts to ``y``.

    Closed forms: ``E[log p] = -log(2 pi s2) / 2 - ((y - m)^2 + v) / (2 s2)``; predictive
    ``N(y | m, v + s2)``. Reference: GPflow ``Gaussian``.
    """

    variance: Any = 1.0

    def __post_init__(self) -> None:
        _check("Gaussian", "variance", self.variance, lambda a: a > 0, "positive and finite")

    def log_prob(self, y: Array, f: Array) -> Array:
        return gaussian_log_density(y, f, self.variance)

    def dist_params(self, f: Array) -> dict[str, Array]:
        return {"loc": f, "scale": jnp.broadcast_to(jnp.sqrt(self.variance), f.shape)}

    def conditional_mean_and_var(self, f: Array) -> tuple[Array, Array]:
        return f, jnp.broadcast_to(self.variance, f.shape)

    def variational_expectations(self, y, f_mean, f_var, key=None):
        return gaussian_variational_expectations(y, f_mean, f_var, self.variance)

    def predict_mean_and_var(self, f_mean, f_var, key=None):
        return f_mean, f_var + self.variance


@_register
class HeteroscedasticGaussian(Likelihood):
    """``p(y | f) = N(y | f[..., 0], exp(f[..., 1])^2)``: latent mean and log standard deviation.

    Two latent functions per observation (``f`` is ``[..., 2]``). With ``q`` factorised over
    them, ``E[(y - f0)^2 exp(-2 f1)] = ((y - m0)^2 + v0) exp(-2 m1 + 2 v1)``, so

    .. math:: E[\\log p] = -\\tfrac12\\log 2\\pi - m_1
              - \\tfrac12((y - m_0)^2 + v_0)\\,e^{-2 m_1 + 2 v_1}

    and the predictive has mean ``m0`` and variance ``v0 + exp(2 m1 + 2 v1)``.
    Reference: Saul et al. (2016), *Chained Gaussian processes*; GPflow ``HeteroskedasticTFP``.
    """

    latent_dim: ClassVar[int] = 2

    def log_prob(self, y: Array, f: Array) -> Array:
        return (
            -0.5 * _LOG_2PI
            - f[..., 1]
            - 0.5 * jnp.square(y - f[..., 0]) * jnp.exp(-2.0 * f[..., 1])
        )

    def dist_params(self, f: Array) -> dict[str, Array]:
        return {"loc": f[..., 0], "scale": jnp.exp(f[..., 1])}

    def variational_expectations(self, y, f_mean, f_var, key=None):
        m0, m1, v0, v1 = f_mean[..., 0], f_mean[..., 1], f_var[..., 0], f_var[..., 1]
        return -0.5 * _LOG_2PI - m1 - 0.5 * (jnp.square(y - m0) + v0) * jnp.exp(2 * (v1 - m1))

    def predict_mean_and_var(self, f_mean, f_var, key=None):
        return f_mean[..., 0], f_var[..., 0] + jnp.exp(2 * (f_mean[..., 1] + f_var[..., 1]))


@_register
class StudentT(Likelihood):
    """``p(y | f) = StudentT(y | df, loc=f, scale)``: heavy-tailed regression.

    .. math:: \\log p = \\log\\Gamma(\\tfrac{\\nu+1}{2}) - \\log\\Gamma(\\tfrac{\\nu}{2})
              - \\tfrac12\\log(\\nu\\pi s^2)
              - \\tfrac{\\nu+1}{2}\\log(1 + \\tfrac{(y-f)^2}{\\nu s^2})

    Expectations by Gauss–Hermite quadrature; predictive variance ``v + s^2 nu / (nu - 2)``
    (infinite for ``nu <= 2``). Reference: GPflow ``StudentT``.
    """

    df: Any = 3.0
    scale: Any = 1.0
    num_gauss_hermite: int = 20
    static: ClassVar[tuple[str, ...]] = ("num_gauss_hermite",)

    def __post_init__(self) -> None:
        _check("StudentT", "df", self.df, lambda a: a > 0, "positive and finite")
        _check("StudentT", "scale", self.scale, lambda a: a > 0, "positive and finite")

    def log_prob(self, y: Array, f: Array) -> Array:
        nu, s = self.df, self.scale
        z2 = jnp.square((y - f) / s) / nu
        const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * jnp.log(nu * math.pi * s**2)
        return const - 0.5 * (nu + 1) * jnp.log1p(z2)

    def dist_params(self, f: Array) -> dict[str, Array]:
        return {
            "df": jnp.broadcast_to(self.df, f.shape),
            "loc": f,
            "scale": jnp.broadcast_to(self.scale, f.shape),
        }

    def conditional_mean_and_var(self, f: Array) -> tuple[Array, Array]:
        nu = jnp.asarray(self.df, dtype=jnp.result_type(f, float))
        var = jnp.where(nu > 2, self.scale**2 * nu / jnp.where(nu > 2, nu - 2, 1.0), jnp.inf)
        return f, jnp.broadcast_to(var, f.shape)

    def predict_mean_and_var(self, f_mean, f_var, key=None):
        _, var = self.conditional_mean_and_var(f_mean)
        return f_mean, f_var + var


@_register
class Bernoulli(Likelihood):
    """``p(y = 1 | f) = link^{-1}(f)``, ``y in {0, 1}``; ``link`` is ``"probit"`` (``Phi``) or
    ``"logit"`` (``sigmoid``).

    ``log p(y | f) = log Phi((2y - 1) f)`` (probit) or ``-softplus(-(2y - 1) f)`` (logit),
    computed in log space. Expectations by Gauss–Hermite quadrature; the probit predictive is
    closed form, ``p = Phi(m / sqrt(1 + v))``, variance ``p (1 - p)``.
    Reference: GPflow ``Bernoulli``; Rasmussen & Williams (2006), eq. (3.82).
    """

    link: str = "probit"
    num_gauss_hermite: int = 20
    static: ClassVar[tuple[str, ...]] = ("link", "num_gauss_hermite")

    def __post_init__(self) -> None:
        _check_link("Bernoulli", self.link, ("probit", "logit"))

    def _log_p1(self, f: Array) -> Array:  # log p(y = 1 | f)
        return norm.logcdf(f) if self.link == "probit" else jax.nn.log_sigmoid(f)

    def log_prob(self, y: Array, f: Array) -> Array:
        return self._log_p1((2.0 * y - 1.0) * f)

    def dist_params(self, f: Array) -> dict[str, Array]:
        # the log-odds log p1 - log p0 is stable in both tails (a probability is not)
        return {"logits": self._log_p1(f) - self._log_p1(-f)}

    def conditional_mean_and_var(self, f: Array) -> tuple[Array, Array]:
        p = jnp.exp(self._log_p1(f))
        return p, p * (1.0 - p)

    def predict_mean_and_var(self, f_mean, f_var, key=None):
        if self.link != "probit":
            return super().predict_mean_and_var(f_mean, f_var)
        p = norm.cdf(f_mean / jnp.sqrt(1.0 + f_var))
        return p, p * (1.0 - p)


@_register
class Categorical(Likelihood):
    """``p(y = k | f)`` over ``num_classes`` classes from ``K`` latent functions (``f [..., K]``,
    ``y [...]`` integer labels).

    ``link="softmax"``: ``p = softmax(f)``; expectations by Monte Carlo (``num_mc_samples``
    draws, needs ``key``). ``link="robustmax"`` (GPflow ``RobustMax``; Hernández-Lobato et al.
    2011): ``p(y = k | f) = 1 - epsilon`` if ``k = argmax f`` else ``epsilon / (K - 1)``, so

    .. math:: E[\\log p] = P_y \\log(1-\\epsilon) + (1 - P_y) \\log\\tfrac{\\epsilon}{K-1},\\quad
              P_y = \\int N(x | m_y, v_y) \\prod_{k \\ne y} \\Phi\\big(\\tfrac{x - m_k}
              {\\sqrt{v_k}}\\big)\\,dx

    with ``P_y = q(f_y is the largest)`` by Gauss–Hermite quadrature (deterministic). The
    integrand sharpens when the ``v_k`` differ a lot: raise ``num_gauss_hermite`` then (with
    the default 20 the predictive class probabilities can sum to ``1 - 1e-4``).
    """

    num_classes: int = 2
    link: str = "softmax"
    epsilon: Any = 1e-3
    num_gauss_hermite: int = 20
    num_mc_samples: int = 100
    static: ClassVar[tuple[str, ...]] = (
        "num_classes", "link", "num_gauss_hermite", "num_mc_samples",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 2:
            raise ValueError(
                f"Categorical: num_classes must be an int >= 2; received {self.num_classes!r}"
            )
        _check_link("Categorical", self.link, ("softmax", "robustmax"))
        _check("Categorical", "epsilon", self.epsilon, lambda a: (a > 0) & (a < 1), "in (0, 1)")

    @property
    def latent_dim(self) -> int:  # type: ignore[override]
        return self.num_classes

    def _robust_log(self, is_max: Array) -> Array:
        K, eps = self.num_classes, self.epsilon
        return jnp.where(is_max, jnp.log1p(-eps), jnp.log(eps / (K - 1)))

    def probs(self, f: Array) -> Array:  # [..., K]
        """``p(y = k | f)`` for every class ``k``; sums to one over the last axis."""
        if self.link == "softmax":
            return jax.nn.softmax(f, axis=-1)
        is_max = jax.nn.one_hot(jnp.argmax(f, axis=-1), self.num_classes, dtype=bool)
        K, eps = self.num_classes, self.epsilon
        return jnp.where(is_max, 1.0 - eps, eps / (K - 1)).astype(f.dtype)

    def log_prob(self, y: Array, f: Array) -> Array:
        onehot = jax.nn.one_hot(y, self.num_classes, dtype=f.dtype)
        if self.link == "softmax":
            return jnp.sum(onehot * jax.nn.log_softmax(f, axis=-1), axis=-1)
        return self._robust_log(jnp.argmax(f, axis=-1) == jnp.asarray(y, dtype=int))

    def dist_params(self, f: Array) -> dict[str, Array]:
        return {"logits": f} if self.link == "softmax" else {"probs": self.probs(f)}

    def prob_is_largest(self, y: Array, f_mean: Array, f_var: Array) -> Array:  # [...]
        """``q(f_y > f_k for all k != y)`` under independent ``N(f_k | m_k, v_k)``."""
        onehot = jax.nn.one_hot(y, self.num_classes, dtype=f_mean.dtype)  # [..., K]
        m_y, v_y = (jnp.sum(onehot * a, axis=-1) for a in (f_mean, f_var))
        sd = jnp.sqrt(jnp.maximum(f_var, jnp.finfo(f_var.dtype).tiny))[None]  # [1, ..., K]

        def all_below(x: Array) -> Array:  # [H, ...] -> [H, ...]
            log_cdf = norm.logcdf((x[..., None] - f_mean[None]) / sd)
            return jnp.exp(jnp.sum((1.0 - onehot[None]) * log_cdf, axis=-1))

        return gauss_hermite_expectation(all_below, m_y, v_y, self.num_gauss_hermite)

    def variational_expectations(self, y, f_mean, f_var, key=None):
        if self.link == "softmax":
            return monte_carlo_expectation(
                lambda f: self.log_prob(y[None], f), f_mean, f_var, key, self.num_mc_samples
            )
        p = self.prob_is_largest(y, f_mean, f_var)
        K, eps = self.num_classes, self.epsilon
        return p * jnp.log1p(-eps) + (1.0 - p) * jnp.log(eps / (K - 1))

    def predict_mean_and_var(self, f_mean, f_var, key=None):
        """Mean and variance of the one-hot ``y`` (``[..., K]`` each); softmax: Monte Carlo."""
        if self.link == "softmax":
            p = monte_carlo_expectation(self.probs, f_mean, f_var, key, self.num_mc_samples)
        else:
            labels = jnp.arange(self.num_classes)
            P = jax.vmap(
                lambda k: self.prob_is_largest(jnp.full(f_mean.shape[:-1], k), f_mean, f_var),
                out_axes=-1,
            )(labels)
            K, eps = self.num_classes, self.epsilon
            p = P * (1.0 - eps) + (1.0 - P) * eps / (K - 1)
        return p, p * (1.0 - p)


@_register
class Poisson(Likelihood):
    """``p(y | f) = Poisson(y | binsize * link^{-1}(f))``, ``y`` counts; ``link`` is ``"exp"``
    or ``"softplus"``.

    With the exp link the expectation and predictive are closed form:
    ``E[log p] = y (log b + m) - b exp(m + v / 2) - log y!``, predictive mean
    ``mu = b exp(m + v / 2)`` and variance ``mu + mu^2 (exp(v) - 1)``; softplus uses
    Gauss–Hermite quadrature. Reference: GPflow ``Poisson``.
    """

    link: str = "exp"
    binsize: Any = 1.0
    num_gauss_hermite: int = 20
    static: ClassVar[tuple[str, ...]] = ("link", "num_gauss_hermite")

    def __post_init__(self) -> None:
        _check_link("Poisson", self.link, ("exp", "softplus"))
        _check("Poisson", "binsize", self.binsize, lambda a: a > 0, "positive and finite")

    def _log_rate(self, f: Array) -> Array:
        log_inv = f if self.link == "exp" else jnp.log(jax.nn.softplus(f))
        return jnp.log(self.binsize) + log_inv

    def log_prob(self, y: Array, f: Array) -> Array:
        log_rate = self._log_rate(f)
        return y * log_rate - jnp.exp(log_rate) - gammaln(y + 1.0)

    def dist_params(self, f: Array) -> dict[str, Array]:
        return {"rate": jnp.exp(self._log_rate(f))}

    def conditional_mean_and_var(self, f: Array) -> tuple[Array, Array]:
        rate = jnp.exp(self._log_rate(f))
        return rate, rate

    def variational_expectations(self, y, f_mean, f_var, key=None):
        if self.link != "exp":
            return super().variational_expectations(y, f_mean, f_var)
        b = self.binsize
        return y * (jnp.log(b) + f_mean) - b * jnp.exp(f_mean + f_var / 2) - gammaln(y + 1.0)

    def predict_mean_and_var(self, f_mean, f_var, key=None):
        if self.link != "exp":
            return super().predict_mean_and_var(f_mean, f_var)
        mu = self.binsize * jnp.exp(f_mean + f_var / 2)
        return mu, mu + jnp.square(mu) * jnp.expm1(f_var)
