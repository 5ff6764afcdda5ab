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
(``y_n | u ~ N(mu_n, sigma_n^2 + s2)``, no ``eps``; the zoo's default). Under the NumPyro
handler :class:`~ppl_dgp.collapse.collapse` (what :class:`~ppl_dgp.elbo.DoublyStochasticELBO`
and the SVI predictive use) the same program runs *collapsed*: each layer integrates ``u`` out
analytically against the guide's ``q(u)`` and propagates ``f_n = mu_q + sigma_q eps_n``, and a
Gaussian likelihood uses the closed-form expectation in the last layer, all recorded as trace
sites: exactly the doubly-stochastic bound of Salimbeni & Deisenroth (2017). The layers learn
that they run collapsed from a message through the handler stack, never from a global.

References:
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS. Hensman, Matthews & Ghahramani (2015), "Scalable Variational Gaussian
    Process Classification", AISTATS.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions import constraints

from ppl_dgp import kernels as K
from ppl_dgp.collapse import ROLE, collapse, inducing_posterior, is_collapsed, record
from ppl_dgp.collapse import recorded_moments as _recorded_moments
from ppl_dgp.conditionals import base_conditional_with_lm, conditional
from ppl_dgp.kl import prior_kl
from ppl_dgp.likelihoods import gaussian_variational_expectations
from ppl_dgp.linalg import DEFAULT_JITTER, cholesky
from ppl_dgp.mean_functions import MeanFunction, Zero
from ppl_dgp.validation import check_positive, check_positive_int

__all__ = [
    "Hyper",
    "LayerSpec",
    "hyper",
    "gp_layer",
    "gp_output_layer",
    "gaussian_likelihood",
    "collapse",
    "ROLE",
    "KERNELS",
]

KERNELS: dict[str, type] = {
    "se": K.SquaredExponential,
    "matern12": K.Matern12,
    "matern32": K.Matern32,
    "matern52": K.Matern52,
}


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

    def __post_init__(self) -> None:
        check_positive("Hyper", "init", self.init)
        if self.prior is not None:
            if not isinstance(self.prior, dist.Distribution):
                raise TypeError(
                    f"Hyper.prior must be a NumPyro distribution or None; received {self.prior!r}"
                )
            support = getattr(self.prior.support, "base_constraint", self.prior.support)
            lower = getattr(support, "lower_bound", None)
            if lower is None or not np.all(np.asarray(lower) >= 0):
                raise ValueError(
                    f"Hyper.prior must have positive support (LogNormal, Gamma, HalfNormal, "
                    f"...): the hyperparameter is positive; received {self.prior!r} with "
                    f"support {self.prior.support}"
                )
        if not isinstance(self.fixed, bool | np.bool_):
            raise TypeError(f"Hyper.fixed must be a bool; received {self.fixed!r}")


def hyper(name: str, spec: Hyper | Any) -> Array:
    """Declare hyperparameter ``name`` according to ``spec`` and return its value.

    Raises:
        ValueError: a fixed value (``spec`` not a :class:`Hyper`) that is not finite and
            positive, naming ``name`` (a zero noise variance would otherwise surface as a NaN
            loss).
    """
    if not isinstance(spec, Hyper):
        check_positive("hyper", name, spec)
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
        if Z.shape[0] < 1 or Z.shape[1] < 1:
            raise ValueError(f"LayerSpec.Z must have M >= 1 rows and D >= 1; received {Z.shape}")
        if Z.dtype.kind != "f":
            raise TypeError(f"LayerSpec.Z must be a float array [M, D]; received dtype {Z.dtype}")
        check_positive_int("LayerSpec", "num_outputs", self.num_outputs)
        for name in ("variance", "lengthscales"):
            value = getattr(self, name)
            if not isinstance(value, Hyper):  # a Hyper checks itself
                check_positive("LayerSpec", name, value)
        check_positive("LayerSpec", "q_sqrt_init", self.q_sqrt_init)
        check_positive("LayerSpec", "jitter", self.jitter, allow_zero=True)
        if not callable(self.mean_function):
            raise TypeError(
                f"LayerSpec.mean_function must be a mean function m(X) -> [N, Q]; received "
                f"{self.mean_function!r}"
            )

    @property
    def M(self) -> int:
        return int(np.shape(self.Z)[0])


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
        >>> import jax.numpy as jnp, numpyro
        >>> from numpyro.handlers import seed, trace
        >>> spec = LayerSpec(num_outputs=2, Z=jnp.linspace(-1.0, 1.0, 3)[:, None])
        >>> def model(X):
        ...     data = numpyro.plate("data", X.shape[0], subsample_size=4)
        ...     with data as idx:
        ...         Xb = X[idx]
        ...     return gp_layer("layer0", Xb, spec, plate=data)
        >>> with trace() as tr:
        ...     F = seed(model, 0)(jnp.linspace(-1.0, 1.0, 8)[:, None])
        >>> F.shape, tr["layer0.u"]["value"].shape, tr["layer0.eps"]["value"].shape
        ((4, 2), (2, 3), (4, 2))
    """
    mean, var, collapsed = _layer_moments(name, X, spec)
    with plate:
        eps = numpyro.sample(
            f"{name}.eps",
            dist.Normal(jnp.zeros(mean.shape, X.dtype), 1.0).to_event(1),
            infer={ROLE: "layer_noise"},
        )  # [N, Q]
    F = mean + jnp.sqrt(var) * eps
    if collapsed:
        _record_layer(name, F, mean, var)
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
    mean, var, collapsed = _layer_moments(name, X, spec)
    if collapsed:
        _record_layer(name, mean, mean, var)  # F is the mean: the output is not sampled
    return mean, var


def _record_layer(name: str, F: Array, mean: Array, var: Array) -> None:
    """Record a collapsed layer's output and moments (``[N, Q]`` each) as trace sites."""
    record(f"{name}.f", F, role="f", of=name)
    record(f"{name}.f_mean", mean, role="f_mean", of=name)
    record(f"{name}.f_var", var, role="f_var", of=name)


def _layer_moments(name: str, X: Array, spec: LayerSpec) -> tuple[Array, Array, bool]:
    """Declare the layer's global sites; return the marginals of its conditional at ``X``.

    Under :class:`~ppl_dgp.collapse.collapse` with a ``q(u)`` for this layer, the marginals are
    those of ``q(f) = int p(f | u) q(u) du`` and ``{name}.kl`` is recorded; otherwise those of
    ``p(f | u)`` given the sampled ``u``. The flag says whether the run is collapsed.
    """
    _check_layer_input(name, X, spec)
    Q, M = spec.num_outputs, spec.M
    variance = hyper(f"{name}.variance", spec.variance)
    lengthscales = hyper(f"{name}.lengthscales", spec.lengthscales)
    kernel = KERNELS[spec.kernel](variance=variance, lengthscales=lengthscales)
    Z0 = jnp.asarray(spec.Z, dtype=X.dtype)
    Z = numpyro.param(f"{name}.Z", Z0) if spec.learn_Z else Z0
    mean_X = spec.mean_function(X)  # [N, Q] or [N, 1]

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

    q = inducing_posterior(name)  # None outside a collapse handler
    if q is not None and q.q_mu is not None:
        q_mu, q_sqrt = q.q_mu, q.q_sqrt  # [M, Q], [Q, M, M]
        mean, var = conditional(kernel, X, Z, q_mu, q_sqrt, whiten=spec.whiten, jitter=spec.jitter)
        kl = prior_kl(kernel, Z, q_mu, q_sqrt, whiten=spec.whiten, jitter=spec.jitter)
        record(f"{name}.kl", kl, role="kl", of=name)
    else:
        if Lmm is None:  # unwhitened layers factorised Kmm above already
            Lmm = cholesky(_gram(kernel, Z), spec.jitter)
        mean, var = _prior_conditional(kernel, Z, X, Lmm, u, white=spec.whiten)
    mean = mean + mean_X
    var = jnp.maximum(var, 0.0)
    return mean, var, q is not None


def gaussian_likelihood(
    name: str,
    F: Array,  # [N, 1]
    y: Array | None,  # [N]
    noise_variance: Array,
    *,
    plate: numpyro.plate,
    F_var: Array | None = None,  # [N, 1]
    layer: str | None = None,
) -> Array:
    """``y_n ~ N(F_n, noise_variance)`` (or ``N(F_n, F_var_n + noise_variance)``) per datum.

    ``F_var`` is given with the moments of :func:`gp_output_layer` (the last layer's output
    marginalised).

    Under :class:`~ppl_dgp.collapse.collapse` the likelihood records the moments of its latent
    input ``q(f_n) = N(m_n, v_n)`` (``{name}.f_mean``, ``{name}.f_var``), ``{name}.noise_variance``
    and, when ``y`` is observed, the closed-form expectation (Hensman et al. 2013, eq. 9)

    .. math:: \\mathbb E_{q(f_n)}[\\log N(y_n \\mid f_n, s^2)]
        = \\log N(y_n \\mid m_n, s^2) - \\frac{v_n}{2 s^2}

    as ``{name}.var_exp`` (the likelihood term of
    :class:`~ppl_dgp.elbo.DoublyStochasticELBO`). The input moments are stated, never guessed:
    ``(F, F_var)`` when ``F_var`` is given; the moments that GP layer ``layer`` recorded when
    ``F`` is that layer's sampled output (:func:`gp_layer` as the last layer); otherwise
    ``(F, 0)``, a point mass on the given ``F`` (the one-sample value).

    Args:
        name: the observed site (e.g. ``"y"``).
        F: the latent input ``[N, 1]`` (a sample, or the mean when ``F_var`` is given).
        y: targets ``[N]`` or ``None``.
        noise_variance: ``s2``, scalar.
        plate: the data plate.
        F_var: the variance of ``F`` ``[N, 1]`` (the output of :func:`gp_output_layer`).
        layer: the GP layer whose sampled output ``F`` is (ignored when ``F_var`` is given).

    Returns:
        The site's value ``[N]``.

    References:
        Hensman, Fusi & Lawrence (2013), "Gaussian Processes for Big Data", UAI, eq. (9);
        Salimbeni & Deisenroth (2017), eq. (5).
    """
    if F.ndim != 2 or F.shape[1] != 1:
        raise ValueError(f"{name}: F must have shape [N, 1]; received {F.shape}")
    if is_collapsed():
        if F_var is not None:
            mean, var = F, F_var
        elif layer is not None:
            mean, var = _recorded_moments(layer)
        else:
            mean, var = F, jnp.zeros_like(F)
        s2 = jnp.asarray(noise_variance)
        record(f"{name}.f_mean", mean[:, 0], role="f_mean", of=name)
        record(f"{name}.f_var", var[:, 0], role="f_var", of=name)
        record(f"{name}.noise_variance", s2, role="noise_variance", of=name)
        if y is not None:
            var_exp = gaussian_variational_expectations(y[:, None], mean, var, s2)[:, 0]
            record(f"{name}.var_exp", var_exp, role="var_exp", of=name)
    variance = noise_variance if F_var is None else F_var[:, 0] + noise_variance
    with plate:
        return numpyro.sample(name, dist.Normal(F[:, 0], jnp.sqrt(variance)), obs=y)
