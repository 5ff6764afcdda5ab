"""Predictives for a Posterior from any method, dispatched on the type of its approximation.

- :func:`predict`: the Gaussian-mixture predictive of ``y`` (a
  :class:`~ppl_dgp.predict.MixturePredictive`, ``S`` components);
- :func:`predict_proba`: class probabilities of a classifier;
- :func:`predict_distribution`: for any likelihood, the mixture of the observation site's
  distributions over draws (or passes) (a :class:`~ppl_dgp.predict.LikelihoodMixture`): the
  held-out log predictive density by log-sum-exp over components, and the task's metrics;
  :func:`log_predictive_density` is its ``log_density``.

Each dispatches on ``type(posterior.approx)`` (``functools.singledispatch``): the default uses
the draws (NUTS, HMC, SGHMC, MAP, ensembles, Laplace draws, any guide's draws); the SVI
inducing guide's :class:`~ppl_dgp.infer.svi.InducingApprox` integrates ``u`` out against
``q(u)``; the Laplace package registers its linearised (GLM) class probabilities. A new
approximation registers its own with :func:`register_predict` / :func:`register_proba`; no
predictive tests a method's name.

Example:
    >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
    >>> from ppl_dgp.infer import MAP, NUTS, fit
    >>> def model(X, y=None):
    ...     w = numpyro.sample("w", dist.Normal(0.0, 10.0))
    ...     with numpyro.plate("data", X.shape[0]):
    ...         numpyro.sample("y", dist.Normal(w * X[:, 0], 0.1), obs=y)
    >>> X = np.linspace(-1.0, 1.0, 10)[:, None]; y = 2.0 * X[:, 0]
    >>> post = fit(NUTS(num_warmup=50, num_samples=20, num_chains=1), jax.random.key(0),
    ...            model, X, y)
    >>> pred = predict(jax.random.key(1), model, post, np.array([[0.5]]), num_samples=10)
    >>> pred.means.shape, round(float(pred.mean[0]), 1)
    ((10, 1), 1.0)

    A classifier's class probabilities, here from a MAP point estimate:

    >>> def classifier(X, y=None):
    ...     w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    ...     f = numpyro.deterministic("f", w * X)  # [N, 1]: one logit
    ...     with numpyro.plate("data", X.shape[0]):
    ...         numpyro.sample("y", dist.Bernoulli(logits=f[:, 0]), obs=y)
    >>> Xc = np.array([[-2.0], [-1.0], [1.0], [2.0]]); yc = np.array([0, 0, 1, 1])
    >>> post_map = fit(MAP(num_steps=100, learning_rate=0.1), jax.random.key(0), classifier,
    ...                Xc, yc)
    >>> p = predict_proba(classifier, post_map, Xc)  # p(y = 1 | x)
    >>> p.shape, bool(np.all(np.diff(p) > 0))
    ((4,), True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax import Array
from numpyro.handlers import block, seed, substitute, trace

from ppl_dgp.collapse import ROLE, gaussian_output
from ppl_dgp.infer.core import ModelSites, accepts_batch_size, positive_int
from ppl_dgp.infer.svi import InducingApprox
from ppl_dgp.linalg import full_precision_matmuls
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import LikelihoodMixture, MixturePredictive, propagate_layers, propagate_site
from ppl_dgp.validation import check_regression_data, check_rng_key

__all__ = [
    "check_posterior",
    "default_link",
    "log_predictive_density",
    "predict",
    "predict_distribution",
    "predict_from_draws",
    "predict_proba",
    "register_predict",
    "register_proba",
    "spread",
]

_LINKS = ("probit", "mc", "bridge", "nn", "plugin")


def spread(total: int, num: int) -> np.ndarray:
    """``min(num, total)`` indices spread evenly over ``range(total)`` (chain-major order)."""
    if num >= total:
        return np.arange(total)
    return np.round(np.linspace(0, total - 1, num)).astype(int)


def _draws(posterior: Posterior, num: int, owner: str) -> dict[str, Array]:
    flat = posterior.flat()
    if not flat:
        raise ValueError(f"{owner}: the {posterior.name!r} posterior has no draws")
    idx = spread(next(iter(flat.values())).shape[0], num)
    return {k: jnp.asarray(v[idx]) for k, v in flat.items()}


# -- the posterior must fit the model -----------------------------------------------------------


def check_posterior(
    model: Callable,
    posterior: Posterior,
    X_new: Array,
    *,
    owner: str = "predict",
    likelihood_site: str = "y",
    **model_kwargs: Any,
) -> None:
    """Check that ``posterior`` holds every global latent and param site of ``model``.

    A predictive substitutes the posterior's draws and params into the model; a latent site
    without draws would be sampled from its prior, a param without a value would take the
    model's initial value (a 1-layer posterior predicted through a 2-layer model, a renamed
    site, a file with an entry left out), and nothing would say so. Per-datum latent sites
    (inside a plate, such as a DGP's ``{layer}.eps``) are drawn afresh by design, and the
    likelihood site is the prediction. One trace of the model at (a row of) ``X_new``.

    Args:
        model: the program the predictive runs.
        posterior: the posterior substituted into it.
        X_new: the prediction inputs ``[N, D]``.
        owner: the caller, for the message.
        likelihood_site: the observation site (not a latent of the posterior).
        **model_kwargs: the model's further keywords.

    Raises:
        ValueError: listing the model's sites the posterior lacks, the posterior's sites the
            model does not have, and sites whose shapes differ.

    Example:
        >>> import numpy as np, numpyro, numpyro.distributions as dist
        >>> from ppl_dgp.infer import NUTS
        >>> def model(X, y=None):
        ...     w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        ...     b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("data", X.shape[0]):
        ...         numpyro.sample("y", dist.Normal(w * X[:, 0] + b, 0.1), obs=y)
        >>> post = Posterior(draws={"w": np.zeros((1, 4))}, method=NUTS(num_chains=1))
        >>> check_posterior(model, post, np.ones((3, 1)))
        Traceback (most recent call last):
            ...
        ValueError: predict: the 'nuts' posterior does not fit the model: no draws of the model's latent site(s) ['b'] ...
    """  # noqa: E501
    X_new = jnp.asarray(X_new)
    try:  # the global sites' shapes do not depend on N: one row is enough (and cheap)
        sites, shape = _site_shapes(model, (1, *X_new.shape[1:]), X_new.dtype, model_kwargs)
    except Exception:  # noqa: BLE001 - a model that needs more rows: trace all of them
        sites, shape = _site_shapes(model, X_new.shape, X_new.dtype, model_kwargs)
    latent = [k for k in sites.global_latent if k != likelihood_site]
    problems = []
    missing = [k for k in latent if k not in posterior.draws]
    if missing:
        problems.append(
            f"no draws of the model's latent site(s) {missing} (they would be drawn from the prior)"
        )
    unexpected = [k for k in posterior.draws if k not in latent]
    if unexpected:
        problems.append(f"draws of site(s) {unexpected} that are not latent sites of the model")
    missing = [k for k in sites.params if k not in posterior.params]
    if missing:
        problems.append(
            f"no value of the model's param site(s) {missing} (the model's initial value would "
            "be used)"
        )
    unexpected = [k for k in posterior.params if k not in sites.params]
    if unexpected:
        problems.append(f"params {unexpected} that are not param sites of the model")
    shapes = [
        f"{k}: {np.shape(posterior.draws[k])[2:]} vs {shape[k]}"
        for k in latent
        if k in posterior.draws and np.shape(posterior.draws[k])[2:] != shape[k]
    ] + [
        f"{k}: {np.shape(posterior.params[k])} vs {shape[k]}"
        for k in sites.params
        if k in posterior.params and np.shape(posterior.params[k]) != shape[k]
    ]
    if shapes:
        problems.append(f"site shapes that differ (posterior vs model): {shapes}")
    approx = posterior.approx
    if isinstance(approx, InducingApprox):
        if list(approx.q_mu) != list(sites.gp_layers):
            problems.append(
                f"q(u) of layer(s) {list(approx.q_mu)} for the model's GP layers "
                f"{list(sites.gp_layers)}"
            )
        inducing = {f"{layer}.u" for layer in approx.q_mu}
        missing = [k for k in latent if k not in approx.medians and k not in inducing]
        if missing:
            problems.append(f"no fitted value (approx.medians) of site(s) {missing}")
    if problems:
        raise ValueError(
            f"{owner}: the {posterior.name!r} posterior does not fit the model: "
            + "; ".join(problems)
            + f". The model's global latent sites are {latent} and its params "
            f"{list(sites.params)} (per-datum sites {list(sites.local_latent)} are drawn "
            "afresh); predict with the model the posterior was fitted to"
        )


def _site_shapes(
    model: Callable, shape: tuple, dtype: Any, model_kwargs: dict
) -> tuple[ModelSites, dict[str, tuple]]:
    """``(ModelSites, {site: shape})`` of ``model(X, None)`` for ``X`` of this shape and
    dtype, traced abstractly (``jax.eval_shape``: no op is run or compiled) and cached per
    model and static keywords. ``ModelSites.params`` holds the params' names only."""
    items = tuple(sorted(model_kwargs.items()))
    try:
        return _site_shapes_cached(model, tuple(shape), np.dtype(dtype), items)
    except TypeError:  # an unhashable model or keyword: trace for this call only
        return _site_shapes_cached.__wrapped__(model, tuple(shape), np.dtype(dtype), items)


@functools.lru_cache(maxsize=64)
def _site_shapes_cached(
    model: Callable, shape: tuple, dtype: np.dtype, kw_items: tuple
) -> tuple[ModelSites, dict[str, tuple]]:
    glob, local, layers, params, shapes = [], [], [], {}, {}

    def run(key: Array, X: Array) -> Array:
        with block():
            tr = trace(seed(model, key)).get_trace(X, None, **dict(kw_items))
        for name, site in tr.items():
            if site["type"] == "param":
                params[name] = None
            elif site["type"] == "sample" and not site["is_observed"]:
                (local if site["cond_indep_stack"] else glob).append(name)
                if site["infer"].get(ROLE) == "inducing":
                    layers.append(name.rsplit(".", 1)[0])
            else:
                continue
            shapes[name] = tuple(jnp.shape(site["value"]))
        return jnp.zeros(())

    jax.eval_shape(run, jax.random.key(0), jax.ShapeDtypeStruct(shape, dtype))
    return ModelSites(tuple(glob), tuple(local), params, tuple(layers), ()), shapes


# -- the mixture predictive of y -------------------------------------------------------------


@full_precision_matmuls()
def predict(
    rng_key: Array,
    model: Callable,
    posterior: Posterior,
    X_new: Array,
    *,
    num_samples: int = 100,
    likelihood_site: str = "y",
    **model_kwargs: Any,
) -> MixturePredictive:
    """The mixture predictive of ``y`` at ``X_new`` for a Posterior from any method.

    .. math::
        p(y_* \\mid x_*) \\approx \\frac1S \\sum_{s=1}^S N(y_* \\mid m_s(x_*), v_s(x_*))

    - Draws (the default): ``S = min(num_samples, chains * draws)`` draws spread evenly over
      the chains; per draw the model runs at ``X_new`` with the draw and ``posterior.params``
      substituted and fresh layer noise. For a GP program the component is the last layer's
      conditional ``N(mean, var + noise)`` given the draw's ``u``; for any other model with a
      Normal ``likelihood_site``, its ``loc`` and ``scale**2``.
    - The inducing guide (SVI): ``u`` integrated out against ``q(u)``, ``num_samples`` passes
      through the inner layers, the other sites at their medians (Salimbeni & Deisenroth
      2017, section 3.1).

    Args:
        rng_key: key for the layer noise.
        model: the program that was fitted.
        posterior: from :func:`~ppl_dgp.infer.fit` (or :meth:`Posterior.load`).
        X_new: inputs ``[N, D]``.
        num_samples: mixture components ``S``.
        likelihood_site: the Gaussian observation site.
        **model_kwargs: further model keywords (``batch_size`` is forced to ``None``).

    Returns:
        :class:`~ppl_dgp.predict.MixturePredictive`, ``means``/``variances`` ``[S, N]``.

    Raises:
        ValueError: the posterior does not fit ``model`` (:func:`check_posterior`: a global
            latent or param site of the model without a value in it, or a site the model does
            not have); only per-datum sites such as a DGP's ``{layer}.eps`` are drawn afresh.
    """
    check_rng_key(rng_key, owner="predict")
    positive_int("predict", num_samples=num_samples)
    check_regression_data(X_new, None)
    X_new = jnp.asarray(X_new)
    if accepts_batch_size(model):
        model_kwargs = {**model_kwargs, "batch_size": None}
    check_posterior(model, posterior, X_new, likelihood_site=likelihood_site, **model_kwargs)
    return _predict(
        posterior.approx, rng_key, model, posterior, X_new, num_samples=num_samples,
        likelihood_site=likelihood_site, model_kwargs=model_kwargs,
    )  # fmt: skip


@functools.singledispatch
def _predict(
    approx: Any, rng_key: Array, model: Callable, posterior: Posterior, X_new: Array, *,
    num_samples: int, likelihood_site: str, model_kwargs: dict,
) -> MixturePredictive:  # fmt: skip
    """The predictive from the draws (any approximation without a registered predictive)."""
    del approx
    draws = _draws(posterior, num_samples, "predict")
    params = {k: jnp.asarray(v) for k, v in posterior.params.items()}
    S = next(iter(draws.values())).shape[0]
    sites = propagate_layers(
        rng_key, model, draws, params, X_new, num_samples=S, **model_kwargs
    )  # compiled once per model; layers without q(u) use p(f | u) given the drawn u
    if f"{likelihood_site}.f_mean" in sites:
        g = gaussian_output(sites, likelihood_site)
        return MixturePredictive(g.mean, g.var, g.f_var)
    if any(name.endswith(".f_var") for name in sites):  # GP layers, another Gaussian site
        components, extra = propagate_site(
            rng_key, model, draws, params, X_new, num_samples=S, site=likelihood_site,
            **model_kwargs,
        )  # fmt: skip
        loc, var = _normal_marginals(components, likelihood_site)
        return MixturePredictive(loc, var, extra.get("latent_var", jnp.zeros_like(loc)))

    def one(key: Array, draw: dict[str, Array]) -> tuple[Array, Array, Array]:
        tr = trace(substitute(seed(model, key), data={**params, **draw})).get_trace(
            X_new, None, **model_kwargs
        )
        site = tr.get(likelihood_site)
        fn = None if site is None else site["fn"]
        loc, var = _normal_marginals(fn, likelihood_site)
        return loc, var, jnp.zeros_like(loc)

    keys = jax.random.split(rng_key, S)
    means, variances, f_variances = jax.jit(jax.vmap(one))(keys, draws)
    return MixturePredictive(means, variances, f_variances)


@_predict.register
def _predict_inducing(
    approx: InducingApprox, rng_key: Array, model: Callable, posterior: Posterior,
    X_new: Array, *, num_samples: int, likelihood_site: str, model_kwargs: dict,
) -> MixturePredictive:  # fmt: skip
    """``u`` integrated out against the fitted ``q(u)``; the other sites at their medians."""
    params = {k: jnp.asarray(v) for k, v in posterior.params.items()}
    for layer in approx.q_mu:
        params[f"{layer}.q_mu"] = jnp.asarray(approx.q_mu[layer])
        params[f"{layer}.q_sqrt"] = jnp.asarray(approx.q_sqrt[layer])
    medians = {k: jnp.asarray(v) for k, v in approx.medians.items()}
    sites = propagate_layers(
        rng_key, model, medians, params, X_new, num_samples=num_samples,
        values_per_pass=False, **model_kwargs,
    )  # fmt: skip  # the passes share the medians: the first layer's marginals are computed once
    if f"{likelihood_site}.f_mean" not in sites:  # Normal marginals of another Gaussian site
        values = {k: jnp.broadcast_to(v, (num_samples, *v.shape)) for k, v in medians.items()}
        components, extra = propagate_site(
            rng_key, model, values, params, X_new, num_samples=num_samples,
            site=likelihood_site, **model_kwargs,
        )  # fmt: skip
        loc, var = _normal_marginals(components, likelihood_site)
        return MixturePredictive(loc, var, extra.get("latent_var", jnp.zeros_like(loc)))
    g = gaussian_output(sites, likelihood_site)
    return MixturePredictive(g.mean, g.var, g.f_var)


def _normal_marginals(fn: Any, site: str) -> tuple[Array, Array]:
    """``(loc, variance)`` per entry of a Normal (or independent Normals, or multivariate
    normal: its marginals) observation; ``NotImplementedError`` for any other family."""
    dist = numpyro.distributions
    base = fn.base_dist if isinstance(fn, dist.Independent) else fn
    if isinstance(base, dist.Normal):
        shape = base.batch_shape
        return jnp.broadcast_to(base.loc, shape), jnp.broadcast_to(base.scale, shape) ** 2
    if isinstance(base, dist.MultivariateNormal):
        return base.loc, jnp.sum(jnp.square(base.scale_tril), axis=-1)  # diag(L L^T)
    raise NotImplementedError(
        f"predict: site {site!r} is not a Normal observation ({type(fn).__name__}); this "
        "mixture predictive is for Gaussian likelihoods. For a classifier use "
        "ppl_dgp.predictive.predict_proba (any method); for any likelihood, "
        "ppl_dgp.predictive.predict_distribution"
    )


#: Register a mixture predictive for an approximation type:
#: ``@register_predict(MyApprox) def f(approx, rng_key, model, posterior, X_new, *,
#: num_samples, likelihood_site, model_kwargs) -> MixturePredictive``.
register_predict = _predict.register


@full_precision_matmuls()
def predict_from_draws(
    approx: Any, rng_key: Array, model: Callable, posterior: Posterior, X_new: Array, *,
    num_samples: int, likelihood_site: str, model_kwargs: dict,
) -> MixturePredictive:  # fmt: skip
    """The predictive built from the Posterior's draws (what :func:`predict` does for an
    approximation without its own): for an approximation whose own predictive falls back to
    its draws in some configurations (e.g. Laplace with ``predictive="sampled"``)."""
    return _predict.dispatch(object)(
        approx, rng_key, model, posterior, X_new, num_samples=num_samples,
        likelihood_site=likelihood_site, model_kwargs=model_kwargs,
    )  # fmt: skip


# -- class probabilities -----------------------------------------------------------------------


@full_precision_matmuls()
def predict_proba(
    model: Callable,
    posterior: Posterior,
    X_new: Array,
    *,
    link: str | None = None,
    rng_key: Array | None = None,
    num_samples: int = 100,
    output_site: str = "f",
    **model_kwargs: Any,
) -> Array:
    """Predictive class probabilities of a classifier for a Posterior from any method.

    The default (draws of NUTS, HMC, SVI, SGHMC, MAP, ensembles, or ``link="nn"``): the mean of
    ``sigmoid``/``softmax`` of the output site over ``num_samples`` draws spread over the
    chains, ``p = (1/S) sum_s softmax(f(x; theta_s))``. A Laplace posterior uses its linearised
    predictive with ``link`` (``"probit"``, ``"mc"``, ``"bridge"``, ``"plugin"``; see
    :mod:`ppl_dgp.laplace.predictive`).

    Args:
        model: the fitted program (``y=None`` gives predictions).
        posterior: from :func:`~ppl_dgp.infer.fit`.
        X_new: inputs ``[N, D]``.
        link: the Laplace link (ignored for draws); ``None``: the approximation's own default
            (:func:`default_link`: ``"nn"`` for a GP classifier's Laplace over its inducing
            values, ``"probit"`` for a network's).
        rng_key: key for ``link="mc"`` and for each draw's per-datum noise (a DGP's
            inner-layer ``eps``, dropout masks; default ``jax.random.key(0)``).
        num_samples: MC samples / draws used.
        output_site: the network output site (logits) ``[N, K]``.

    Returns:
        ``p(y=1) [N]`` for one logit, ``[N, K]`` class probabilities otherwise.

    Raises:
        ValueError: the posterior does not fit ``model`` (:func:`check_posterior`).
    """
    if link is not None and link not in _LINKS:
        raise ValueError(
            f"predict_proba: link must be one of {_LINKS} (or None: the default); received {link!r}"
        )
    positive_int("predict_proba", num_samples=num_samples)
    link = default_link(posterior.approx) if link is None else link
    X_new = X_new if isinstance(X_new, np.ndarray | jax.Array) else np.asarray(X_new)
    check_regression_data(X_new, None)  # X [N, D], float, finite: before any tracing
    check_posterior(model, posterior, X_new, owner="predict_proba", **model_kwargs)
    kw = dict(link=link, rng_key=rng_key, num_samples=num_samples, output_site=output_site,
              model_kwargs=model_kwargs)  # fmt: skip
    if link == "nn":
        return _proba_draws(None, model, posterior, X_new, **kw)
    return _proba(posterior.approx, model, posterior, X_new, **kw)


def _proba_draws(
    approx: Any, model: Callable, posterior: Posterior, X_new: Array, *, link: str,
    rng_key: Array | None, num_samples: int, output_site: str, model_kwargs: dict,
) -> Array:  # fmt: skip
    """The mean of sigmoid/softmax of ``f`` over the draws."""
    del approx, link
    draws = _draws(posterior, num_samples, "predict_proba")
    S = next(iter(draws.values())).shape[0]
    keys = jax.random.split(jax.random.key(0) if rng_key is None else rng_key, S)
    params = {k: v for k, v in posterior.params.items()}
    spec = (output_site, tuple(sorted(model_kwargs.items())))
    try:
        hash((model, spec))
        fn = functools.partial(_outputs_jit, model, spec)
    except TypeError:  # unhashable model keywords: compile for this call only
        fn = jax.jit(functools.partial(_outputs_core, model, spec))
    f = fn(params, draws, X_new, keys)
    return jnp.mean(_probs(f), axis=0)


_proba = functools.singledispatch(_proba_draws)


@functools.singledispatch
def default_link(approx: Any) -> str:
    """The link :func:`predict_proba` uses when none is given, per approximation type:
    ``"probit"`` (ignored by draws and by SVI's exact marginal). An approximation registers its
    own with ``@register_default_link(MyApprox)``."""
    del approx
    return "probit"


register_default_link = default_link.register

#: Register class probabilities for an approximation type:
#: ``@register_proba(MyApprox) def f(approx, model, posterior, X_new, *, link, rng_key,
#: num_samples, output_site, model_kwargs) -> Array``.
register_proba = _proba.register


@register_proba(InducingApprox)
def _proba_inducing(
    approx: InducingApprox, model: Callable, posterior: Posterior, X_new: Array, *, link: str,
    rng_key: Array | None, num_samples: int, output_site: str, model_kwargs: dict,
) -> Array:  # fmt: skip
    """SVI's inducing guide: ``u`` integrated out against ``q(u)`` exactly, the inner layers by
    ``num_samples`` passes, the other sites at the guide's medians (GPflow's / GPflux's
    ``predict_y``): the mean over passes of the likelihood's marginal class probabilities,
    e.g. ``Phi(m / sqrt(1 + v))`` for the probit with ``q(f_*) = N(m, v)`` (Hensman et al.
    2015, eq. 13). Deterministic for a one-layer model; no Monte Carlo error from draws of
    ``u``. A model whose observation site ``y`` is not a classifier's falls back to the
    draws."""
    key = jax.random.key(0) if rng_key is None else rng_key
    mixture = predict_distribution(key, model, posterior, X_new, num_samples=num_samples,
                                   **model_kwargs)  # fmt: skip
    try:
        return mixture.probs
    except ValueError:  # not a classifier's site: the draws' sigmoid/softmax of output_site
        return _proba_draws(approx, model, posterior, X_new, link=link, rng_key=rng_key,
                            num_samples=num_samples, output_site=output_site,
                            model_kwargs=model_kwargs)  # fmt: skip


def _probs(f: Array) -> Array:  # [..., N, K] -> [..., N] (K = 1) or [..., N, K]
    return jax.nn.sigmoid(f[..., 0]) if f.shape[-1] == 1 else jax.nn.softmax(f, axis=-1)


def _outputs_core(
    model: Callable, spec: tuple, params: dict, draws: dict, X_new: Array, keys: Array
) -> Array:
    """``f`` at ``X_new`` per draw ``[S, N, K]``; draw ``s`` runs with its own key ``keys[s]``
    (fresh per-datum noise per draw: a DGP's inner-layer ``eps``, dropout masks)."""
    output_site, kwargs = spec

    def one(key: Array, draw: dict) -> Array:
        tr = trace(substitute(seed(model, key), data={**params, **draw})).get_trace(
            X_new, None, **dict(kwargs)
        )
        if output_site not in tr:
            raise ValueError(f"predict_proba: the model has no output site {output_site!r}")
        return tr[output_site]["value"]

    return jax.vmap(one)(keys, draws)


#: Compiled once per (model object, output site and keywords), cached by ``jax.jit``.
_outputs_jit = jax.jit(_outputs_core, static_argnums=(0, 1))


# -- any likelihood: the mixture of the observation's distributions ---------------------------


@full_precision_matmuls()
def predict_distribution(
    rng_key: Array,
    model: Callable,
    posterior: Posterior,
    X_new: Array,
    *,
    num_samples: int = 100,
    likelihood_site: str = "y",
    **model_kwargs: Any,
) -> LikelihoodMixture:
    """The predictive of ``y`` at ``X_new`` for any likelihood, as a mixture of components.

    .. math:: p(y_* \\mid x_*) \\approx \\frac1S \\sum_{s=1}^S p(y_* \\mid \\theta_s, x_*)

    Component ``s`` is the observation site's distribution in one run of the model at
    ``X_new``: for draws (NUTS, HMC, SGHMC, MAP, ensembles, Laplace draws) with draw ``s``
    substituted (``S = min(num_samples, chains * draws)`` spread over the chains); for the
    inducing guide (SVI), ``u`` integrated out against ``q(u)`` in each of ``S = num_samples``
    passes, the other sites at their medians. A marginalised last layer gives the exact
    marginal per component (e.g. ``Phi(m / sqrt(1 + v))``); a sampled one, the likelihood
    given the sample. The held-out log density
    ``log p(y_n) = logsumexp_s log p(y_n | theta_s) - log S`` is
    :meth:`~ppl_dgp.predict.LikelihoodMixture.log_density`, and
    :meth:`~ppl_dgp.predict.LikelihoodMixture.metrics` gives the task's metrics.

    Args:
        rng_key: key for the layer noise.
        model: the fitted program.
        posterior: from :func:`~ppl_dgp.infer.fit`.
        X_new: inputs ``[N, D]``.
        num_samples: components ``S``.
        likelihood_site: the observation site.
        **model_kwargs: further model keywords (``batch_size`` is forced to ``None``).

    Returns:
        :class:`~ppl_dgp.predict.LikelihoodMixture` with components of batch ``[S, N]``.

    Raises:
        ValueError: the posterior does not fit ``model`` (:func:`check_posterior`).
    """
    check_rng_key(rng_key, owner="predict_distribution")
    positive_int("predict_distribution", num_samples=num_samples)
    check_regression_data(X_new, None)
    X_new = jnp.asarray(X_new)
    if accepts_batch_size(model):
        model_kwargs = {**model_kwargs, "batch_size": None}
    check_posterior(model, posterior, X_new, owner="predict_distribution",
                    likelihood_site=likelihood_site, **model_kwargs)  # fmt: skip
    approx = posterior.approx
    params = {k: jnp.asarray(v) for k, v in posterior.params.items()}
    if isinstance(approx, InducingApprox):
        for layer in approx.q_mu:
            params[f"{layer}.q_mu"] = jnp.asarray(approx.q_mu[layer])
            params[f"{layer}.q_sqrt"] = jnp.asarray(approx.q_sqrt[layer])
        values = {
            k: jnp.broadcast_to(jnp.asarray(v), (num_samples, *np.shape(v)))
            for k, v in approx.medians.items()
        }
        S = num_samples
    else:
        values = _draws(posterior, num_samples, "predict_distribution")
        S = next(iter(values.values())).shape[0]
    components, _ = propagate_site(
        rng_key, model, values, params, X_new, num_samples=S, site=likelihood_site,
        **model_kwargs,
    )  # fmt: skip
    return LikelihoodMixture(components)


@full_precision_matmuls()
def log_predictive_density(
    rng_key: Array,
    model: Callable,
    posterior: Posterior,
    X_new: Array,
    y_new: Array,
    *,
    num_samples: int = 100,
    likelihood_site: str = "y",
    **model_kwargs: Any,
) -> Array:  # [N]
    """``log p(y_n | x_n, data)`` per held-out point for any likelihood and method: the
    log-sum-exp over the components of :func:`predict_distribution`."""
    pred = predict_distribution(rng_key, model, posterior, X_new, num_samples=num_samples,
                                likelihood_site=likelihood_site, **model_kwargs)  # fmt: skip
    return pred.log_density(y_new)
