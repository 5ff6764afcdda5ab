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

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import Array
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

from ppl_dgp.collapse import is_collapsed, record, recorded_moments
from ppl_dgp.layers import gaussian_likelihood
from ppl_dgp.likelihoods import Bernoulli, Categorical, Gaussian, Likelihood, gauss_hermite
from ppl_dgp.observe import check_observations, to_distribution

__all__ = ["likelihood_site", "marginal_distribution", "has_marginal"]


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
