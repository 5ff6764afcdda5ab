"""The likelihood of a GP program as a NumPyro sub-program, for any likelihood value.

:func:`likelihood_site` observes ``y ~ p(y | F)`` (or, given the last layer's marginals
``(F, F_var)``, the marginal ``p(y | F, F_var) = int p(y | f) N(f | F, F_var) df``) in the
data plate, for a likelihood value of :mod:`ppl_dgp.likelihoods`. Under
:class:`~ppl_dgp.collapse.collapse` it also records the variational expectation

.. math:: \\mathbb E_{q(f_n)}[\\log p(y_n \\mid f_n)], \\qquad q(f_n) = N(m_n, v_n)

as the observed site's ``{name}.var_exp`` term, which
:class:`~ppl_dgp.elbo.DoublyStochasticELBO` reads in place of the one-sample ``log_prob``: the
bound of Hensman, Matthews & Ghahramani (2015) for one layer and of Salimbeni & Deisenroth
(2017) for a deep GP. A :class:`~ppl_dgp.likelihoods.Gaussian` goes through
:func:`~ppl_dgp.layers.gaussian_likelihood` unchanged (its closed form and sites).

The marginal exists in a form that is a deterministic function of ``(F, F_var)`` for the
Bernoulli likelihood (probit: ``Phi(m / sqrt(1 + v))``; logit: Gauss–Hermite quadrature) and
the robust-max categorical (``q(f_y is the largest)`` by quadrature), so the last layer of
such a program can be marginalised as for regression (:func:`~ppl_dgp.layers.gp_output_layer`:
a proper joint with ``N`` fewer latent dimensions). The softmax has no such form: sample the
last layer (:func:`~ppl_dgp.layers.gp_layer`) and pass its ``layer`` name instead.

Several Gaussian outputs per datum (``y [N, P]``) go through :func:`multi_gaussian_site`:
``P`` independent outputs of the last layer, or ``Q`` latent GPs mixed by the linear model of
coregionalisation ``f = W g`` (:class:`LMC`, :func:`lmc_moments`; exact MVN marginal, the
bound's closed form per output).

``output_site`` records the logits of the observed distribution ``[N, K]`` (``K = 1`` for a
Bernoulli) as a deterministic site: the class probabilities given the global latents are its
``sigmoid``/``softmax`` and the observed site's natural parameter equals it, which is what
:func:`ppl_dgp.predictive.predict_proba` and the Laplace GGN read.

Example:
    A probit Bernoulli on the marginals of a last layer; collapsed, the bound's term appears
    (here ``E_{N(f | 0, 1)}[log Phi(f)] = int_0^1 log u du = -1``):

    >>> import jax.numpy as jnp, numpyro
    >>> from numpyro.handlers import seed, trace
    >>> from ppl_dgp.collapse import collapse
    >>> from ppl_dgp.likelihoods import Bernoulli
    >>> def model(F, F_var, y=None):
    ...     data = numpyro.plate("data", F.shape[0])
    ...     likelihood_site("y", Bernoulli(), F, y, plate=data, F_var=F_var, output_site="f")
    >>> F, F_var, y = jnp.zeros((3, 1)), jnp.ones((3, 1)), jnp.array([0.0, 1.0, 1.0])
    >>> with collapse():
    ...     tr = trace(seed(model, 0)).get_trace(F, F_var, y)
    >>> tr["f"]["value"].shape, [round(float(v), 4) for v in tr["y.var_exp"]["value"]]
    ((3, 1), [-1.0, -1.0, -1.0])
    >>> likelihood_site("y", Bernoulli(), F, jnp.array([0.0, 2.0, 1.0]),
    ...                 plate=numpyro.plate("data", 3))
    Traceback (most recent call last):
    ...
    ValueError: y: Bernoulli observations must be 0 or 1; received 2.0 (entry 1)

References:
    Hensman, Matthews & Ghahramani (2015), "Scalable Variational Gaussian Process
    Classification", AISTATS; Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational
    Inference for Deep Gaussian Processes", NeurIPS, eq. (4)-(5); GPflow ``ndiagquad``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

from ppl_dgp.collapse import is_collapsed, record, recorded_moments
from ppl_dgp.layers import gaussian_likelihood
from ppl_dgp.likelihoods import (
    Bernoulli,
    Categorical,
    Gaussian,
    Likelihood,
    gauss_hermite,
    gaussian_variational_expectations,
)
from ppl_dgp.observe import check_observations, to_distribution

__all__ = [
    "LMC",
    "check_output_width",
    "has_marginal",
    "likelihood_site",
    "lmc_moments",
    "marginal_distribution",
    "multi_gaussian_site",
]


def has_marginal(likelihood: Likelihood) -> bool:
    """Whether :func:`marginal_distribution` takes ``likelihood`` (a deterministic marginal)."""
    if isinstance(likelihood, Gaussian | Bernoulli):
        return True
    return isinstance(likelihood, Categorical) and likelihood.link == "robustmax"


def _log_gauss_hermite(log_fun, f_mean: Array, f_var: Array, num_points: int) -> Array:
    """``log E_{N(f | m, v)}[exp(log_fun(f))]`` ``[N]`` by Gauss–Hermite, in log space."""
    x, w = gauss_hermite(num_points)
    nodes = f_mean[None] + jnp.sqrt(f_var)[None] * jnp.asarray(x)[:, None]  # [H, N]
    return logsumexp(jnp.log(jnp.asarray(w))[:, None] + log_fun(nodes), axis=0)


def marginal_distribution(
    likelihood: Likelihood,
    F: Array,  # [N, L]
    F_var: Array,  # [N, L]
) -> dist.Distribution:
    """``p(y_n | F_n, F_var_n) = int p(y_n | f) N(f | F_n, F_var_n) df`` as a distribution.

    - Gaussian: ``N(F, F_var + s2)``;
    - Bernoulli, probit: ``p(y = 1) = Phi(m / sqrt(1 + v))`` (exact); logit: Gauss–Hermite
      quadrature of ``log p(y | f)`` in log space; returned on logits;
    - Categorical, robust-max: ``p(y = k) = P_k (1 - eps) + (1 - P_k) eps / (K - 1)`` with
      ``P_k = q(f_k is the largest)`` by quadrature; returned on (normalised) logits.

    Args:
        likelihood: one of the above (see :func:`has_marginal`).
        F: means of the latent functions ``[N, L]`` (``L = likelihood.latent_dim``).
        F_var: their variances ``[N, L]``.

    Returns:
        A distribution with batch shape ``[N]``.

    Raises:
        ValueError: no deterministic marginal (softmax, Poisson, Student-t, ...): sample the
            last layer instead.
    """
    if isinstance(likelihood, Gaussian):
        return dist.Normal(F[:, 0], jnp.sqrt(F_var[:, 0] + likelihood.variance))
    if isinstance(likelihood, Bernoulli):
        m, v = F[:, 0], F_var[:, 0]
        if likelihood.link == "probit":
            a = m / jnp.sqrt(1.0 + v)
            return dist.BernoulliLogits(norm.logcdf(a) - norm.logcdf(-a))
        H = likelihood.num_gauss_hermite
        log_p1 = _log_gauss_hermite(lambda f: likelihood.log_prob(1.0, f), m, v, H)
        log_p0 = _log_gauss_hermite(lambda f: likelihood.log_prob(0.0, f), m, v, H)
        return dist.BernoulliLogits(log_p1 - log_p0)
    if isinstance(likelihood, Categorical) and likelihood.link == "robustmax":
        p, _ = likelihood.predict_mean_and_var(F, F_var)  # [N, K]
        return dist.CategoricalLogits(jax.nn.log_softmax(jnp.log(p), axis=-1))
    raise ValueError(
        f"likelihood: {type(likelihood).__name__} "
        f"{getattr(likelihood, 'link', '')!s} has no deterministic marginal over a Gaussian "
        "latent; sample the last layer (gp_layer) and pass its name as layer= instead of F_var"
    )


def _logits(d: dist.Distribution) -> Array:  # [N, K]
    """The natural parameter of a Bernoulli/categorical distribution, ``[N, K]``."""
    if isinstance(d, dist.BernoulliLogits):
        return d.logits[:, None]
    if isinstance(d, dist.CategoricalLogits):
        return d.logits
    if isinstance(d, dist.CategoricalProbs):
        return jnp.log(d.probs)
    raise ValueError(f"output_site: {type(d).__name__} has no logits (not a classifier)")


def likelihood_site(
    name: str,
    likelihood: Likelihood,
    F: Array,  # [N, L]
    y: Array | None,  # [N]
    *,
    plate: numpyro.plate,
    F_var: Array | None = None,  # [N, L]
    layer: str | None = None,
    output_site: str | None = None,
) -> Array:
    """Observe ``y_n ~ p(y_n | F_n)`` in the data plate for a likelihood value.

    ``F`` holds ``L = likelihood.latent_dim`` latent functions per datum (1 for a Bernoulli,
    ``K`` for a categorical). With ``F_var`` the moments ``(F, F_var)`` of the last layer's
    marginals (:func:`~ppl_dgp.layers.gp_output_layer`) are integrated out:
    ``y_n ~ p(y_n | F_n, F_var_n)`` (:func:`marginal_distribution`).

    Under :class:`~ppl_dgp.collapse.collapse`, when ``y`` is observed, it records
    ``{name}.var_exp`` ``[N]`` = ``likelihood.variational_expectations(y, m, v)`` (the ELBO's
    likelihood term, scaled by the plate like the site) for the moments of ``q(f_n)``: ``(F,
    F_var)`` when ``F_var`` is given; those that GP layer ``layer`` recorded when ``F`` is its
    sampled output; otherwise ``(F, 0)``. A Monte Carlo expectation (softmax) draws its key
    with ``numpyro.prng_key()``. A :class:`~ppl_dgp.likelihoods.Gaussian` is handed to
    :func:`~ppl_dgp.layers.gaussian_likelihood` (same sites and closed forms).

    Args:
        name: the observed site (``"y"``).
        likelihood: a likelihood value.
        F: latent input ``[N, L]`` (a sample, or the mean when ``F_var`` is given).
        y: observations ``[N]`` or ``None``; concrete values are checked against the
            likelihood's support (a ``ValueError`` naming ``name``).
        plate: the data plate.
        F_var: the variance of ``F`` ``[N, L]``.
        layer: the GP layer whose sampled output ``F`` is (ignored when ``F_var`` is given).
        output_site: record the logits of the observed distribution ``[N, K]`` under this
            name (classifiers only).

    Returns:
        The site's value ``[N]``.
    """
    L = likelihood.latent_dim
    if F.ndim != 2 or F.shape[1] != L:
        raise ValueError(
            f"{name}: F must have shape [N, {L}] ({type(likelihood).__name__} takes {L} latent "
            f"function(s) per datum); received {F.shape}"
        )
    if F_var is not None and F_var.shape != F.shape:
        raise ValueError(f"{name}: F_var must have F's shape {F.shape}; received {F_var.shape}")
    check_observations(likelihood, y, name=name)
    if isinstance(likelihood, Gaussian):
        out = gaussian_likelihood(name, F, y, likelihood.variance, plate=plate, F_var=F_var,
                                  layer=layer)  # fmt: skip
        if output_site is not None:
            numpyro.deterministic(output_site, F)
        return out
    if y is not None and isinstance(likelihood, Categorical):
        y = jnp.asarray(y).astype(jnp.int32)  # labels index the classes
    if F_var is None:
        d = to_distribution(likelihood, F[:, 0] if L == 1 else F)
    else:
        d = marginal_distribution(likelihood, F, F_var)
    if is_collapsed() and y is not None:
        if F_var is not None:
            mean, var = F, F_var
        elif layer is not None:
            mean, var = recorded_moments(layer)
        else:
            mean, var = F, jnp.zeros_like(F)
        if L == 1:
            mean, var = mean[:, 0], var[:, 0]
        needs_key = isinstance(likelihood, Categorical) and likelihood.link == "softmax"
        key = numpyro.prng_key() if needs_key else None
        var_exp = likelihood.variational_expectations(y, mean, var, key)
        record(f"{name}.var_exp", var_exp, role="var_exp", of=name)
    if output_site is not None:
        numpyro.deterministic(output_site, _logits(d))
    with plate:
        return numpyro.sample(name, d, obs=y)


# -- several outputs: independent, or mixed by a linear model of coregionalisation -------------


@dataclasses.dataclass(frozen=True)
class LMC:
    """The linear model of coregionalisation on a last layer of ``Q`` latent GPs.

    ``P`` outputs mix ``Q`` independent latent functions through ``W [P, Q]``:

    .. math:: f_p(x) = \\sum_{q=1}^Q W_{pq}\\, g_q(x), \\qquad
        \\operatorname{Cov}[f(x), f(x')] = \\sum_q k_q(x, x')\\, w_q w_q^\\top

    (Journel & Huijbregts 1978; Álvarez, Rosasco & Lawrence 2012, section 4.2; GPflow's
    ``LinearCoregionalization``). ``W`` is the sample site ``name`` with a
    ``Normal(0, prior_scale)`` prior per entry (a proper joint), a ``param`` when
    ``prior_scale`` is ``None``, or the constant ``W_init`` when ``fixed``.

    Args:
        num_outputs: ``P``.
        W_init: initial (or fixed) ``W [P, Q]``; ``None``: standard normal entries from a
            fixed seed (GPflow's examples' ``np.random.randn(P, Q)``).
        prior_scale: prior standard deviation of each entry, or ``None`` for a param.
        fixed: keep ``W_init`` constant (no site).
    """

    num_outputs: int
    W_init: Any = None
    prior_scale: float | None = 1.0
    fixed: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.num_outputs, int | np.integer) or self.num_outputs < 1:
            raise ValueError(f"LMC.num_outputs must be an int >= 1; received {self.num_outputs!r}")
        if self.W_init is not None and np.ndim(self.W_init) != 2:
            raise ValueError(f"LMC.W_init must have shape [P, Q]; received {np.shape(self.W_init)}")
        if self.W_init is not None and np.shape(self.W_init)[0] != self.num_outputs:
            raise ValueError(
                f"LMC.W_init must have shape [P, Q] with P = num_outputs = {self.num_outputs}; "
                f"received {np.shape(self.W_init)}"
            )
        if self.fixed and self.W_init is None:
            raise ValueError("LMC(fixed=True) needs W_init")

    def initial(self, num_latent: int) -> np.ndarray:  # [P, Q]
        """``W_init`` (checked against ``Q = num_latent``) or the seeded default."""
        if self.W_init is None:
            return np.random.default_rng(0).normal(size=(self.num_outputs, num_latent))
        W = np.asarray(self.W_init, dtype=float)
        if W.shape[1] != num_latent:
            raise ValueError(
                f"LMC.W_init must have shape [P, Q] = [{self.num_outputs}, {num_latent}] (Q: the "
                f"last layer's num_outputs); received {W.shape}"
            )
        return W

    def sample(self, name: str, num_latent: int) -> Array:  # [P, Q]
        """Declare ``W`` (see the class) and return its value."""
        W0 = jnp.asarray(self.initial(num_latent))
        if self.fixed:
            return W0
        if self.prior_scale is None:
            return numpyro.param(name, W0)
        prior = dist.Normal(jnp.zeros_like(W0), self.prior_scale).to_event(2)
        return numpyro.sample(name, prior, infer={"init": W0})


def lmc_moments(
    mean: Array,  # [N, Q]
    var: Array,  # [N, Q]
    W: Array,  # [P, Q]
) -> tuple[Array, Array, Array]:  # [N, P], [N, P], [N, P, P]
    """Moments of ``f_n = W g_n`` for independent ``g_nq ~ N(mean_nq, var_nq)``.

    .. math:: E[f_n] = W m_n, \\quad \\operatorname{Cov}[f_n] = W \\operatorname{diag}(v_n)
        W^\\top, \\quad \\operatorname{Var}[f_{np}] = \\sum_q W_{pq}^2 v_{nq}

    Returns:
        ``(mean [N, P], marginal variance [N, P], covariance [N, P, P])``.
    """
    f_mean = mean @ W.T
    f_var = var @ jnp.square(W).T
    f_cov = jnp.einsum("pq,nq,rq->npr", W, var, W)
    return f_mean, f_var, f_cov


def check_output_width(owner: str, y: Any, num_latent: int, lmc: LMC | None = None) -> int | None:
    """The number of outputs ``P`` a regression model has, checked against ``y``'s width.

    ``P`` is ``lmc.num_outputs`` with an LMC, else the last layer's ``num_latent``. ``y [N]``
    goes with one output (returns ``None``: the single-output program; ``y [N, 1]`` is refused
    there, so that fit and predict run the same program); ``y [N, P]`` or ``y = None`` with
    ``P > 1`` (or an LMC) returns ``P``.

    Raises:
        ValueError: ``y`` of the wrong width (naming ``y``: expected and received shapes).
    """
    P = num_latent if lmc is None else lmc.num_outputs
    shape = None if y is None else np.shape(y)
    if shape is not None and len(shape) == 1 and (P > 1 or lmc is not None):
        if lmc is None:
            raise ValueError(
                f"y must have shape [N, P] = [{shape[0]}, {P}] ({owner}: the last layer has "
                f"num_outputs={P}; for y of shape [N], the last layer must have num_outputs=1); "
                f"received {shape}"
            )
        raise ValueError(
            f"y must have shape [N, P] = [{shape[0]}, {P}] ({owner}: an LMC of P = {P} "
            f"outputs); received {shape}"
        )
    if shape is not None and len(shape) == 2 and P == 1 and lmc is None:
        # one output is the single-output program at fit and at predict time alike
        raise ValueError(
            f"y must have shape [N] = [{shape[0]}]; received {shape} ({owner}: the last layer "
            "has one output; pass y[:, 0], or build the model with num_outputs=P for y [N, P])"
        )
    if shape is not None and len(shape) == 2 and shape[1] != P:
        raise ValueError(
            f"y must have shape [N, P] = [{shape[0]}, {P}] ({owner}: P = {P} outputs); "
            f"received {shape}"
        )
    if shape is not None and len(shape) not in (1, 2):
        raise ValueError(f"y must have shape [N] or [N, P]; received {shape}")
    if lmc is None and P == 1 and (shape is None or len(shape) == 1):
        return None
    return P


def multi_gaussian_site(
    name: str,
    F: Array,  # [N, Q]
    y: Array | None,  # [N, P]
    noise_variance: Array,  # [] or [P]
    *,
    plate: numpyro.plate,
    F_var: Array | None = None,  # [N, Q]
    layer: str | None = None,
    W: Array | None = None,  # [P, Q]
) -> Array:  # [N, P]
    """Observe ``P`` Gaussian outputs per datum: ``y_n ~ N(f_n, diag(s2))``, ``f_n = F_n`` or
    ``W F_n`` (LMC).

    With ``F_var`` (the last layer marginalised) the site is the exact marginal
    ``N(W m_n, W diag(v_n) W^T + diag(s2))`` (a ``MultivariateNormal``; independent Normals
    without ``W``); otherwise ``F`` is layer ``layer``'s sample and the site
    ``N(W F_n, diag(s2))``. Under :class:`~ppl_dgp.collapse.collapse` with ``y`` observed it
    records the bound's term (Hensman et al. 2013, eq. 9, per output)

    .. math:: \\mathbb E_{q}[\\log p(y_n \\mid f_n)] = \\sum_p \\log N(y_{np} \\mid
        \\bar m_{np}, s^2_p) - \\frac{\\bar v_{np}}{2 s^2_p},

    ``(bar m, bar v)`` the moments of ``f`` (:func:`lmc_moments`), as ``{name}.var_exp``
    ``[N]``; and, always, the latent variance ``bar v`` as ``{name}.latent_var`` ``[N, P]``
    (the predictive's ``f_variances``).

    Returns:
        The site's value ``[N, P]``.
    """
    if F.ndim != 2:
        raise ValueError(f"{name}: F must have shape [N, Q]; received {F.shape}")
    if F_var is not None and F_var.shape != F.shape:
        raise ValueError(f"{name}: F_var must have F's shape {F.shape}; received {F_var.shape}")
    s2 = jnp.asarray(noise_variance)
    if is_collapsed():
        if F_var is not None:
            mean, var = F, F_var
        elif layer is not None:
            mean, var = recorded_moments(layer)
        else:
            mean, var = F, jnp.zeros_like(F)
        if W is not None:
            mean, var, _ = lmc_moments(mean, var, W)
        record(f"{name}.latent_var", var, role="latent_var", of=name)
        if y is not None:
            var_exp = jnp.sum(gaussian_variational_expectations(y, mean, var, s2), axis=-1)
            record(f"{name}.var_exp", var_exp, role="var_exp", of=name)
    if F_var is None:
        loc = F if W is None else F @ W.T
        d = dist.Normal(loc, jnp.broadcast_to(jnp.sqrt(s2), loc.shape)).to_event(1)
    elif W is None:
        d = dist.Normal(F, jnp.sqrt(F_var + s2)).to_event(1)
    else:
        loc, _, cov = lmc_moments(F, F_var, W)
        P = W.shape[0]
        cov = cov + jnp.broadcast_to(s2, (P,)) * jnp.eye(P, dtype=cov.dtype)
        d = dist.MultivariateNormal(loc, covariance_matrix=cov)
    with plate:
        return numpyro.sample(name, d, obs=y)
