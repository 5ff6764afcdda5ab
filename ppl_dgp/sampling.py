"""Pathwise function samples of sparse GP layers: random Fourier features plus the inducing update.

One draw of a sparse GP layer is a *function*, held as a small value, that can be evaluated at
any inputs, any number of times, consistently. Decoupled sampling (Wilson et al. 2020, eq. 13)
writes a draw of ``f | u`` as a prior draw plus a data-dependent update:

.. math::
    f(x) = m(x) + \\underbrace{\\phi(x)^\\top w}_{\\text{prior, } L \\text{ features}}
         + k(x, Z)\\, \\underbrace{(K_{mm} + \\epsilon I)^{-1}
           \\big(u - \\Phi_Z w - \\sqrt{\\epsilon}\\, e\\big)}_{\\text{update coefficients } c},
    \\qquad w \\sim N(0, I_L),\\ e \\sim N(0, I_M),\\ u \\sim q(u),

with random Fourier features (Rahimi & Recht 2007)
``phi_l(x) = sqrt(2 s^2 / L) cos(omega_l^T (x / l) + b_l)``, ``omega_l`` drawn from the
kernel's normalised spectral density and ``b_l ~ U[0, 2 pi)``. ``e`` is the jitter's share of
the prior draw at ``Z``: the model's ``u`` has covariance ``Kmm + eps I`` (:mod:`ppl_dgp.layers`),
so with it the draws' mean and covariance equal the analytic ones of
:func:`~ppl_dgp.conditionals.conditional` for any ``L``, averaged over fresh features; each draw
gets its own features, and ``L`` only sets how close one draw's prior part is to a GP.

Conventions are those of :mod:`ppl_dgp.conditionals`: ``u`` is ``[M, Q]`` (the transpose of the
program's ``{layer}.u`` site), ``whiten`` means ``u = Lmm v`` and the given value is ``v``; the
``Q`` outputs share the kernel and ``Z``. Evaluating a draw at ``N`` inputs costs
``O(N (L + M) D + N (L + M) Q)``: no Cholesky of the inputs.

Spectral densities (unit lengthscale, ``D`` inputs): squared exponential ``N(0, I_D)``;
Matérn-``nu`` the multivariate Student-t with ``2 nu`` degrees of freedom,
``omega = g sqrt(nu / gamma)``, ``g ~ N(0, I_D)``, ``gamma ~ Gamma(nu, 1)`` shared by the ``D``
coordinates (Rasmussen & Williams 2006, eq. 4.15); for the half-integer ``nu`` here
``2 gamma ~ chi^2_{2 nu}`` is a sum of ``2 nu`` squared standard normals.

Example:
    >>> import jax
    >>> from ppl_dgp.kernels import Matern52
    >>> k = Matern52(variance=1.0, lengthscales=jnp.array([0.5, 2.0]))
    >>> Z = jnp.array([[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # [M, D]
    >>> u = jnp.array([[0.5], [-0.3], [1.0]])  # [M, Q]
    >>> draw = sample_layer_function(jax.random.key(0), k, Z, u, num_features=256)
    >>> X = jnp.array([[0.3, 0.1], [2.0, -1.0]])
    >>> f = evaluate(draw, X)
    >>> f.shape, bool(jnp.all(f == evaluate(draw, X)))
    ((2, 1), True)
    >>> # f(Z) = u up to the jitter's share sqrt(eps) e of u (eps = 1e-6: about 1e-3)
    >>> bool(jnp.allclose(evaluate(draw, Z), u, atol=1e-2))
    True

References:
    Wilson, Borovitskiy, Terenin, Mostowsky & Deisenroth (2020), "Efficiently Sampling
    Functions from Gaussian Process Posteriors", ICML, eq. (13); GPflux ``gpflux/sampling/``.
    Rahimi & Recht (2007), "Random Features for Large-Scale Kernel Machines", NeurIPS.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl_dgp.kernels import Kernel, Matern12, Matern32, Matern52, SquaredExponential
from ppl_dgp.linalg import DEFAULT_JITTER, cholesky, solve_triangular
from ppl_dgp.mean_functions import MeanFunction

__all__ = [
    "Features",
    "FunctionSample",
    "evaluate",
    "evaluate_draws",
    "feature_map",
    "rff_features",
    "sample_inducing",
    "sample_layer_function",
    "sample_variational_function",
    "spectral_frequencies",
]

#: Matérn smoothness ``nu`` per kernel type; ``None`` is the squared exponential (``nu -> oo``).
_SMOOTHNESS: dict[type, float | None] = {
    SquaredExponential: None,
    Matern12: 0.5,
    Matern32: 1.5,
    Matern52: 2.5,
}


class Features(NamedTuple):
    """Random Fourier features of a unit-lengthscale stationary kernel.

    Attributes:
        omega: spectral frequencies ``[L, D]`` (scaled by the lengthscales at evaluation).
        phase: phases ``b [L]``, uniform on ``[0, 2 pi)``.
    """

    omega: Array  # [L, D]
    phase: Array  # [L]


class FunctionSample(NamedTuple):
    """One pathwise draw of a GP layer's function (a pytree: ``vmap`` it over draws).

    ``f(x) = m(x) + phi(x)^T weights + k(x, Z) update``, evaluated by :func:`evaluate`.

    Attributes:
        kernel: the layer's kernel (its hyperparameters for this draw).
        Z: inducing inputs ``[M, D]``.
        features: the draw's :class:`Features` (``L`` of them).
        weights: prior weights ``w [L, Q]``.
        update: ``c = (Kmm + eps I)^{-1} (u - Phi_Z w - sqrt(eps) e)`` ``[M, Q]``.
        mean_function: ``m(X) -> [N, Q]`` (or ``[N, 1]``), or ``None`` for zero.
    """

    kernel: Kernel
    Z: Array  # [M, D]
    features: Features
    weights: Array  # [L, Q]
    update: Array  # [M, Q]
    mean_function: MeanFunction | None = None


def _smoothness(kernel: Kernel) -> float | None:
    try:
        return _SMOOTHNESS[type(kernel)]
    except KeyError:
        raise TypeError(
            f"random Fourier features need a stationary kernel with a known spectral density "
            f"({', '.join(k.__name__ for k in _SMOOTHNESS)}); received {type(kernel).__name__}"
        ) from None


def spectral_frequencies(
    kernel: Kernel, key: Array, num_features: int, input_dim: int
) -> Array:  # [L, D]
    """Draw ``L`` frequencies from the kernel's normalised spectral density (unit lengthscale).

    Squared exponential: ``omega ~ N(0, I_D)``. Matérn-``nu``: multivariate Student-t with
    ``2 nu`` degrees of freedom, ``omega = g sqrt(nu / gamma)``, ``g ~ N(0, I_D)``,
    ``gamma ~ Gamma(nu, 1)`` (one ``gamma`` per frequency, shared by its ``D`` coordinates,
    which is what makes the kernel a function of the Euclidean distance ``r``), drawn as half a
    sum of ``2 nu`` squared standard normals.

    Args:
        kernel: ``SquaredExponential`` or ``Matern12/32/52``.
        key: PRNG key.
        num_features: ``L``.
        input_dim: ``D``.

    Returns:
        ``omega [L, D]``.

    References:
        Rasmussen & Williams (2006), eq. (4.15); Rahimi & Recht (2007).
    """
    nu = _smoothness(kernel)
    k_g, k_gamma = jax.random.split(key)
    g = jax.random.normal(k_g, (num_features, input_dim))
    if nu is None:
        return g
    # gamma ~ Gamma(nu, 1) = chi^2_{2 nu} / 2: for half-integer nu a sum of 2 nu squared
    # normals (exact, and far faster than jax.random.gamma's rejection loop under vmap)
    h = jax.random.normal(k_gamma, (num_features, round(2 * nu)), dtype=g.dtype)
    gamma = 0.5 * jnp.sum(h * h, axis=1, keepdims=True)  # [L, 1]
    return g * jnp.sqrt(nu / gamma)


def rff_features(kernel: Kernel, key: Array, num_features: int, input_dim: int) -> Features:
    """``L`` random Fourier features for ``kernel``'s family (frequencies and phases).

    The features depend on the kernel's family only; its variance and lengthscales enter at
    evaluation (:func:`feature_map`), so one draw of features serves any hyperparameters.

    Args:
        kernel: ``SquaredExponential`` or ``Matern12/32/52``.
        key: PRNG key.
        num_features: ``L``.
        input_dim: ``D``.

    Returns:
        :class:`Features` with ``omega [L, D]`` and ``phase [L]``.
    """
    if num_features < 1:
        raise ValueError(f"rff_features: num_features must be >= 1; received {num_features}")
    k_omega, k_phase = jax.random.split(key)
    omega = spectral_frequencies(kernel, k_omega, num_features, input_dim)
    phase = jax.random.uniform(k_phase, (num_features,), maxval=2.0 * math.pi)
    return Features(omega, phase)


def feature_map(kernel: Kernel, features: Features, X: Array) -> Array:  # [N, L]
    """``phi(X) [N, L]`` with ``phi_l(x) = sqrt(2 s^2 / L) cos(omega_l^T (x / l) + b_l)``.

    ``E[phi(x)^T phi(x')] = k(x, x')`` over the features (Bochner's theorem).

    Args:
        kernel: the kernel whose ``variance`` ``s^2`` and ARD ``lengthscales`` ``l`` apply.
        features: :class:`Features` (``omega [L, D]``, ``phase [L]``).
        X: inputs ``[N, D]``.

    Returns:
        ``phi(X) [N, L]``.
    """
    L, D = features.omega.shape
    if X.ndim != 2 or X.shape[1] != D:
        raise ValueError(f"feature_map: X must have shape [N, {D}]; received {X.shape}")
    ls = jnp.asarray(kernel.lengthscales)
    ls = ls[None, :] if ls.ndim == 1 else ls  # [1, D] or []
    proj = (X / ls) @ features.omega.T + features.phase[None, :]  # [N, L]
    return jnp.sqrt(2.0 * kernel.variance / L) * jnp.cos(proj)


def sample_inducing(
    key: Array,
    q_mu: Array,  # [M, Q]
    q_sqrt: Array,  # [Q, M, M] lower-triangular, or [M, Q] diagonal
) -> Array:  # [M, Q]
    """One draw ``u ~ N(q_mu, q_sqrt q_sqrt^T)`` per output (only ``tril(q_sqrt)`` is read).

    Args:
        key: PRNG key.
        q_mu: means ``[M, Q]``.
        q_sqrt: ``[Q, M, M]`` factors or ``[M, Q]`` standard deviations.

    Returns:
        ``u [M, Q]`` (of ``v`` when ``q`` is whitened).
    """
    eps = jax.random.normal(key, q_mu.shape, dtype=q_mu.dtype)  # [M, Q]
    if q_sqrt.ndim == 2:
        return q_mu + q_sqrt * eps
    if q_sqrt.ndim != 3:
        raise ValueError(f"q_sqrt must have shape [Q, M, M] or [M, Q]; received {q_sqrt.shape}")
    return q_mu + jnp.einsum("qmk,kq->mq", jnp.tril(q_sqrt), eps)


def sample_layer_function(
    key: Array,
    kernel: Kernel,
    Z: Array,  # [M, D]
    u: Array,  # [M, Q]
    *,
    num_features: int,
    mean_function: MeanFunction | None = None,
    whiten: bool = False,
    jitter: float = DEFAULT_JITTER,
    Lmm: Array | None = None,  # [M, M]
) -> FunctionSample:
    """A pathwise draw of ``f | u`` (Wilson et al. 2020, eq. 13) for given inducing values.

    .. math:: f(x) = m(x) + \\phi(x)^\\top w + k(x, Z)(K_{mm} + \\epsilon I)^{-1}
        (u - \\Phi_Z w - \\sqrt{\\epsilon}\\, e)

    This is the draw for a sample of ``u`` (NUTS, HMC, SGHMC, Laplace, MAP); for ``q(u)``
    use :func:`sample_variational_function`. ``eps`` is the jitter that :func:`cholesky`
    actually added (read off the factor, so an escalated jitter is matched too).

    Args:
        key: PRNG key (features, ``w`` and ``e``).
        kernel: the layer's kernel (``SquaredExponential`` or ``Matern12/32/52``).
        Z: inducing inputs ``[M, D]``.
        u: inducing values ``[M, Q]`` (whitened ``v`` if ``whiten``, then ``u = Lmm v``).
        num_features: ``L``, random Fourier features of the prior part.
        mean_function: the layer's mean function (``None``: zero).
        whiten: whether ``u`` is the whitened ``v``.
        jitter: added to ``Kmm`` (as the layer does).
        Lmm: the factor ``cholesky(kernel.K(Z), jitter)`` if already at hand. Under ``vmap``
            over draws pass it, computed batched outside the ``vmap``: the jitter ladder of
            :func:`~ppl_dgp.linalg.cholesky` runs both branches per draw there (tens of
            seconds to compile for a thousand draws, against one second batched).

    Returns:
        :class:`FunctionSample`.
    """
    if Z.ndim != 2 or u.ndim != 2 or u.shape[0] != Z.shape[0]:
        raise ValueError(
            f"sample_layer_function: Z must be [M, D] and u [M, Q]; received {Z.shape}, {u.shape}"
        )
    (M, D), Q = Z.shape, u.shape[1]
    k_feat, k_w, k_e = jax.random.split(key, 3)
    features = rff_features(kernel, k_feat, num_features, D)
    w = jax.random.normal(k_w, (num_features, Q), dtype=Z.dtype)  # [L, Q]
    e = jax.random.normal(k_e, (M, Q), dtype=Z.dtype)  # [M, Q]
    Kmm = kernel.K(Z)
    Lmm = cholesky(Kmm, jitter) if Lmm is None else Lmm  # Lmm Lmm^T = Kmm + eps I
    if whiten:
        u = Lmm @ u
    eps = jnp.maximum(jnp.sum(Lmm * Lmm, axis=1) - jnp.diagonal(Kmm), 0.0)  # [M]
    prior_Z = feature_map(kernel, features, Z) @ w + jnp.sqrt(eps)[:, None] * e  # [M, Q]
    c = solve_triangular(Lmm, solve_triangular(Lmm, u - prior_Z), trans=True)  # [M, Q]
    return FunctionSample(kernel, Z, features, w, c, mean_function)


def sample_variational_function(
    key: Array,
    kernel: Kernel,
    Z: Array,  # [M, D]
    q_mu: Array,  # [M, Q]
    q_sqrt: Array,  # [Q, M, M] or [M, Q]
    *,
    num_features: int,
    mean_function: MeanFunction | None = None,
    whiten: bool = False,
    jitter: float = DEFAULT_JITTER,
    Lmm: Array | None = None,  # [M, M]
) -> FunctionSample:
    """A pathwise draw of ``q(f) = int p(f | u) q(u) du``: ``u ~ q(u)``, then
    :func:`sample_layer_function` (same arguments; ``Lmm`` as there). Its marginals are those
    of :func:`~ppl_dgp.conditionals.conditional` with the same ``q_mu``, ``q_sqrt``, ``whiten``.

    Example:
        >>> import jax
        >>> from ppl_dgp.kernels import SquaredExponential
        >>> Z = jnp.linspace(-1.0, 1.0, 4)[:, None]
        >>> q_mu, q_sqrt = jnp.ones((4, 2)), 0.1 * jnp.eye(4)[None].repeat(2, axis=0)
        >>> draws = jax.vmap(lambda key: sample_variational_function(
        ...     key, SquaredExponential(), Z, q_mu, q_sqrt, num_features=64, whiten=True))(
        ...     jax.random.split(jax.random.key(0), 5))
        >>> evaluate_draws(draws, jnp.zeros((3, 1))).shape  # [S, N, Q]
        (5, 3, 2)
    """
    k_u, k_f = jax.random.split(key)
    u = sample_inducing(k_u, q_mu, q_sqrt)
    return sample_layer_function(
        k_f, kernel, Z, u, num_features=num_features, mean_function=mean_function,
        whiten=whiten, jitter=jitter, Lmm=Lmm,
    )  # fmt: skip


def evaluate(sample: FunctionSample, X: Array) -> Array:  # [N, Q]
    """``f(X) = m(X) + phi(X) w + k(X, Z) c`` for one draw, ``O(N (L + M))`` per output.

    Args:
        sample: one :class:`FunctionSample` (no leading draw axis: use :func:`evaluate_draws`
            or ``jax.vmap`` for many).
        X: inputs ``[N, D]``.

    Returns:
        ``f(X) [N, Q]``; the same ``X`` always gives the same values.
    """
    f = feature_map(sample.kernel, sample.features, X) @ sample.weights  # [N, Q]
    f = f + sample.kernel.K(X, sample.Z) @ sample.update
    if sample.mean_function is not None:
        f = f + sample.mean_function(X)
    return f


def _compose(layers: Sequence[FunctionSample], X: Array) -> Array:
    H = X
    for layer in layers:
        H = evaluate(layer, H)
    return H


def evaluate_draws(
    samples: FunctionSample | Sequence[FunctionSample],
    X: Array,  # [N, D]
    *,
    batch_size: int | None = None,
) -> Array:  # [S, N, Q]
    """Evaluate ``S`` draws (leading axis ``S`` on every leaf) at ``X``.

    A sequence of layers is one deep draw per ``s``, composed as
    ``f_L^{(s)}(... f_1^{(s)}(X))`` (each layer's mean function included), so every input sees
    the same functions.

    Args:
        samples: a batched :class:`FunctionSample` or a sequence of them (one per layer).
        X: inputs ``[N, D]``.
        batch_size: evaluate this many draws at a time (``jax.lax.map``) to bound memory
            (``S x N x L`` features at once otherwise).

    Returns:
        ``[S, N, Q]``.
    """
    layers = (samples,) if isinstance(samples, FunctionSample) else tuple(samples)
    if not layers:
        raise ValueError("evaluate_draws: no layers")
    return _evaluate_draws(layers, X, batch_size=batch_size)


@functools.partial(jax.jit, static_argnames="batch_size")
def _evaluate_draws(layers: tuple, X: Array, *, batch_size: int | None) -> Array:
    """Compiled once per (layer structure, shapes, batch size): not op by op under ``vmap``."""

    def one(draw: Any) -> Array:
        return _compose(draw, X)

    if batch_size is None:
        return jax.vmap(one)(layers)
    return jax.lax.map(one, layers, batch_size=batch_size)
