"""GP layers and likelihoods as NumPyro sub-programs.

A layer is a function that takes a name and inputs, declares its sites under that name and
returns its outputs (like ``numpyro.contrib.hsgp``). Site names are the public contract
(``.`` is the divider, since netCDF rejects ``/``):

=====================  ==========================================  ====================
site                   meaning                                     shape
=====================  ==========================================  ====================
``{name}.variance``    kernel variance (sample site or param)      ``[]``
``{name}.lengthscales`` ARD lengthscales (sample site or param)    ``[D]``
``{name}.Z``           inducing inputs (param)                     ``[M, D]``
``{name}.u``           inducing values, whitened ``v`` if whiten    ``[Q, M]``
``{name}.eps``         standard-normal layer noise (data plate)    ``[N, Q]``
=====================  ==========================================  ====================

The default program is a proper joint density (non-centred):

.. math::
    v \\sim N(0, I), \\quad u = L_{mm} v, \\quad
    f_n = m(x_n) + \\mu_n(u) + \\sqrt{\\sigma^2_n}\\, \\epsilon_n, \\quad \\epsilon_n \\sim N(0, 1)

where ``mu_n(u), sigma_n^2`` are the marginals of the prior conditional ``p(f_n | u)``, so NUTS,
HMC, SGHMC and Laplace see the same target that SVI bounds. The last layer may instead be
:func:`gp_output_layer`, whose output is integrated out of a Gaussian likelihood exactly
(``y_n | u ~ N(mu_n, sigma_n^2 + s2)``, no ``eps``; the zoo's default). Under
:class:`~ppl_dgp.elbo.DoublyStochasticELBO` (SVI only) the same program runs *collapsed*: each
layer integrates ``u`` out analytically against the guide's ``q(u)`` and propagates
``f_n = mu_q + sigma_q eps_n``, and a Gaussian likelihood uses the closed-form expectation in the
last layer: exactly the doubly-stochastic bound of Salimbeni & Deisenroth (2017).

References:
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS. Hensman, Matthews & Ghahramani (2015), "Scalable Variational Gaussian
    Process Classification", AISTATS.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions import constraints

from ppl_dgp import kernels as K
from ppl_dgp.conditionals import base_conditional_with_lm, conditional
from ppl_dgp.kl import prior_kl
from ppl_dgp.likelihoods import gaussian_variational_expectations
from ppl_dgp.linalg import DEFAULT_JITTER, cholesky
from ppl_dgp.mean_functions import MeanFunction, Zero

__all__ = [
    "Hyper",
    "LayerSpec",
    "hyper",
    "gp_layer",
    "gaussian_likelihood",
    "collapsed",
    "KERNELS",
]

KERNELS: dict[str, type] = {
    "se": K.SquaredExponential,
    "matern12": K.Matern12,
    "matern32": K.Matern32,
    "matern52": K.Matern52,
}

ROLE = "ppl_dgp_role"  # key in a site's ``infer`` dict: "inducing", "layer_noise"


@dataclasses.dataclass(frozen=True)
class Hyper:
    """How a positive hyperparameter enters the program.

    Args:
        init: initial (or fixed) value, scalar or array.
        prior: a NumPyro distribution with positive support: the hyperparameter becomes a
            ``sample`` site (a proper joint for MCMC and Laplace). ``None`` makes it a
            ``param`` (type-II maximum likelihood, GPflux's default).
        fixed: keep ``init`` constant (no site at all).
    """

    init: Any
    prior: dist.Distribution | None = None
    fixed: bool = False


def hyper(name: str, spec: Hyper | Any) -> Array:
    """Declare hyperparameter ``name`` according to ``spec`` and return its value."""
    if not isinstance(spec, Hyper):
        return jnp.asarray(spec)
    init = jnp.asarray(spec.init)
    if np.any(np.asarray(spec.init) <= 0):
        raise ValueError(f"{name}: the initial value must be positive; received {spec.init}")
    if spec.fixed:
        return init
    if spec.prior is None:
        # softplus, as GPflow's default positive bijector (exp moves small values too slowly)
        return numpyro.param(name, init, constraint=constraints.softplus_positive)
    prior = spec.prior
    if init.ndim > 0 and prior.batch_shape != init.shape:
        prior = prior.expand(init.shape).to_event(init.ndim)
    return numpyro.sample(name, prior, infer={"init": init})


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Static description of one GP layer (shapes, kernel family, initial values).

    Args:
        num_outputs: ``Q``, the layer's width.
        Z: initial inducing inputs ``[M, D]`` (shared by the ``Q`` outputs).
        kernel: kernel family, one of :data:`KERNELS` (``"se"``, ``"matern12/32/52"``).
        variance: the kernel variance (:class:`Hyper` or a fixed number).
        lengthscales: ARD lengthscales (:class:`Hyper` or fixed), scalar or ``[D]``.
        mean_function: ``m(X) -> [N, Q]``; identity/PCA on inner layers, zero on the last.
        whiten: ``u = Lmm v`` parameterisation.
        q_sqrt_init: scale of the guide's initial ``q_sqrt`` (1e-5 for inner layers).
        learn_Z: make ``Z`` a ``param`` (else fixed at ``Z``).
        jitter: added to ``Kmm``.
    """

    num_outputs: int
    Z: Any
    kernel: str = "se"
    variance: Any = Hyper(1.0)
    lengthscales: Any = Hyper(1.0)
    mean_function: MeanFunction = Zero()
    whiten: bool = True
    q_sqrt_init: float = 1.0
    learn_Z: bool = True
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(
                f"LayerSpec.kernel must be one of {sorted(KERNELS)}; received {self.kernel!r}"
            )
        Z = np.asarray(self.Z)
        if Z.ndim != 2:
            raise ValueError(f"LayerSpec.Z must have shape [M, D]; received {Z.shape}")
        if not np.all(np.isfinite(Z)):
            raise ValueError("LayerSpec.Z contains NaN or inf")
        if self.num_outputs < 1:
            raise ValueError(f"LayerSpec.num_outputs must be >= 1; received {self.num_outputs}")
        if not self.q_sqrt_init > 0:
            raise ValueError(f"LayerSpec.q_sqrt_init must be > 0; received {self.q_sqrt_init}")

    @property
    def M(self) -> int:
        return int(np.shape(self.Z)[0])


class _Collapsed:
    """State of a collapsed (doubly-stochastic) run: ``q(u)`` in, KLs and moments out."""

    def __init__(self, params: dict[str, Array]):
        self.params = params
        self.kl: dict[str, Array] = {}
        self.moments: dict[str, tuple[Array, Array, Array]] = {}  # name -> (f, mean, var)
        self.last: str | None = None
        self.var_exp: dict[str, Array] = {}
        self.noise: dict[str, Array] = {}


_COLLAPSED: list[_Collapsed] = []


@contextmanager
def collapsed(params: dict[str, Array]) -> Iterator[_Collapsed]:
    """Run GP layers collapsed: marginalise ``u`` against ``q(u)`` read from ``params``.

    ``params`` holds each layer's ``{name}.q_mu`` ``[M, Q]`` and ``{name}.q_sqrt`` ``[Q, M, M]``
    (the :class:`~ppl_dgp.guides.InducingPointGuide` parameters). Used by
    :class:`~ppl_dgp.elbo.DoublyStochasticELBO` and the SVI predictive; not a density.
    """
    state = _Collapsed(params)
    _COLLAPSED.append(state)
    try:
        yield state
    finally:
        _COLLAPSED.pop()


def _collapsed_state() -> _Collapsed | None:
    return _COLLAPSED[-1] if _COLLAPSED else None


def _check_layer_input(name: str, X: Array, spec: LayerSpec) -> None:
    D = np.shape(spec.Z)[1]
    if X.ndim != 2 or X.shape[1] != D:
        raise ValueError(f"{name}: input X must have shape [N, {D}] (Z's D); received {X.shape}")


# Jitted pieces of the layer: under an outer jit they inline; run eagerly (NumPyro's
# initialisation and site inspection trace the model op by op) each compiles once as a unit
# instead of as dozens of single-op programs (seconds saved per fit on a 2-layer DGP).
@jax.jit
def _gram(kernel: K.Kernel, Z: Array) -> Array:  # [M, M]
    return kernel.K(Z)


@functools.partial(jax.jit, static_argnames="white")
def _prior_conditional(
    kernel: K.Kernel, Z: Array, X: Array, Lmm: Array, u: Array, *, white: bool
) -> tuple[Array, Array]:  # [N, Q], [N, Q]
    """``p(f | u)`` at ``X`` given ``u [Q, M]`` (see :func:`base_conditional_with_lm`)."""
    return base_conditional_with_lm(kernel.K(Z, X), Lmm, kernel.K_diag(X), u.T, white=white)


def gp_layer(name: str, X: Array, spec: LayerSpec, *, plate: numpyro.plate) -> Array:  # [N, Q]
    """One sparse GP layer with inducing points, as a NumPyro sub-program.

    Call it outside the data plate and pass the plate: the global sites (hyperparameters,
    ``Z``, ``u``) are declared outside it and the local ``eps`` site inside it.

    Args:
        name: prefix of the layer's sites (e.g. ``"layer0"``).
        X: inputs ``[N, D]`` (the plate's current batch: ``X[idx]`` when subsampling).
        spec: the layer's :class:`LayerSpec`.
        plate: the data plate (``numpyro.plate("data", N, subsample_size=B)``).

    Returns:
        ``F [N, Q]``: one sample of the layer's output at ``X``.

    Example:
        >>> # data = numpyro.plate("data", N, subsample_size=B)
        >>> # with data as idx: Xb = X[idx]
        >>> # F = gp_layer("layer0", Xb, spec, plate=data)
    """
    mean, var = _layer_moments(name, X, spec)
    with plate:
        eps = numpyro.sample(
            f"{name}.eps",
            dist.Normal(jnp.zeros(mean.shape, X.dtype), 1.0).to_event(1),
            infer={ROLE: "layer_noise"},
        )  # [N, Q]
    F = mean + jnp.sqrt(var) * eps
    state = _collapsed_state()
    if state is not None:
        state.moments[name] = (F, mean, var)
        state.last = name
    return F


def gp_output_layer(
    name: str, X: Array, spec: LayerSpec, *, plate: numpyro.plate
) -> tuple[Array, Array]:  # [N, Q], [N, Q]
    """The last GP layer with its output marginalised: the moments of ``p(f | u)`` at ``X``.

    Same sites as :func:`gp_layer` except ``{name}.eps``: for a Gaussian likelihood the layer
    output integrates out exactly, ``y_n | u ~ N(mu_n(u), sigma_n^2(u) + s2)`` (pass the moments
    to :func:`gaussian_likelihood` as ``F`` and ``F_var``). The joint stays proper and exact,
    with ``N`` fewer latent dimensions, and NUTS no longer has to trade the likelihood noise
    against per-datum ``eps`` (a funnel). Under a collapsed run (SVI) the bound is unchanged:
    the likelihood still takes GPflux's closed-form expectation.

    Returns:
        ``(mean, var)``, each ``[N, Q]``.
    """
    del plate  # no per-datum site: the plate is the likelihood's
    mean, var = _layer_moments(name, X, spec)
    state = _collapsed_state()
    if state is not None:
        state.moments[name] = (mean, mean, var)  # F is the mean: the output is not sampled
        state.last = name
    return mean, var


def _layer_moments(name: str, X: Array, spec: LayerSpec) -> tuple[Array, Array]:
    """Declare the layer's global sites; return the marginals of its conditional at ``X``."""
    _check_layer_input(name, X, spec)
    Q, M = spec.num_outputs, spec.M
    variance = hyper(f"{name}.variance", spec.variance)
    lengthscales = hyper(f"{name}.lengthscales", spec.lengthscales)
    kernel = KERNELS[spec.kernel](variance=variance, lengthscales=lengthscales)
    Z0 = jnp.asarray(spec.Z, dtype=X.dtype)
    Z = numpyro.param(f"{name}.Z", Z0) if spec.learn_Z else Z0
    mean_X = spec.mean_function(X)  # [N, Q] or [N, 1]

    state = _collapsed_state()
    # Inducing values: whitened v ~ N(0, I), or u ~ N(0, Kmm), independently per output.
    Lmm = None
    if spec.whiten:
        u_prior = dist.Normal(jnp.zeros((Q, M), X.dtype), 1.0).to_event(2)
    else:
        Lmm = cholesky(kernel.K(Z), spec.jitter)
        u_prior = dist.MultivariateNormal(
            jnp.zeros((Q, M), X.dtype), scale_tril=jnp.broadcast_to(Lmm, (Q, M, M))
        ).to_event(1)
    u = numpyro.sample(
        f"{name}.u",
        u_prior,
        infer={ROLE: "inducing", "whiten": spec.whiten, "q_sqrt_init": spec.q_sqrt_init},
    )  # [Q, M]

    if state is not None and f"{name}.q_mu" in state.params:
        q_mu = state.params[f"{name}.q_mu"]  # [M, Q]
        q_sqrt = state.params[f"{name}.q_sqrt"]  # [Q, M, M]
        mean, var = conditional(kernel, X, Z, q_mu, q_sqrt, whiten=spec.whiten, jitter=spec.jitter)
        state.kl[name] = prior_kl(kernel, Z, q_mu, q_sqrt, whiten=spec.whiten, jitter=spec.jitter)
    else:
        if Lmm is None:  # unwhitened layers factorised Kmm above already
            Lmm = cholesky(_gram(kernel, Z), spec.jitter)
        mean, var = _prior_conditional(kernel, Z, X, Lmm, u, white=spec.whiten)
    mean = mean + mean_X
    var = jnp.maximum(var, 0.0)
    return mean, var


def gaussian_likelihood(
    name: str,
    F: Array,  # [N, 1]
    y: Array | None,  # [N]
    noise_variance: Array,
    *,
    plate: numpyro.plate,
    F_var: Array | None = None,  # [N, 1]
) -> Array:
    """``y_n ~ N(F_n, noise_variance)`` (or ``N(F_n, F_var_n + noise_variance)``) per datum.

    ``F_var`` is given with the moments of :func:`gp_output_layer` (the last layer's output
    marginalised).

    Under a collapsed run where ``F`` is the output of the last GP layer, the ELBO uses the
    closed-form ``E_q[log N(y | f, s2)]`` (recorded for
    :class:`~ppl_dgp.elbo.DoublyStochasticELBO`) instead of the one-sample value.
    """
    if F.ndim != 2 or F.shape[1] != 1:
        raise ValueError(f"{name}: F must have shape [N, 1]; received {F.shape}")
    state = _collapsed_state()
    if state is not None and state.last is not None:
        state.noise[name] = noise_variance
        f_last, mean, var = state.moments[state.last]
        if f_last is F and y is not None:
            state.var_exp[name] = gaussian_variational_expectations(
                y[:, None], mean, var, noise_variance
            )[:, 0]
    variance = noise_variance if F_var is None else F_var[:, 0] + noise_variance
    with plate:
        return numpyro.sample(name, dist.Normal(F[:, 0], jnp.sqrt(variance)), obs=y)
