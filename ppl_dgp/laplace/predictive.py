"""The linearised (GLM) predictives of a Laplace posterior, registered with the generic ones.

- :func:`glm_predictive`: ``f* ~ N(f(x*; theta_MAP), J* P^-1 J*^T)`` with the posterior precision
  ``P`` of a :class:`~ppl_dgp.laplace.Laplace` fit in its stored structure (full, diag, KFAC);
  for dense layers ``d f / d W[i, o] = a_i d f / d z_o``, so the Jacobian is assembled from the
  layer inputs and ``d f / d z`` (no Jacobian through the whole network).
- :func:`predict_regression`: the Gaussian closed form ``N(f*, v* + sigma^2)``.
- GP-layer programs (:mod:`ppl_dgp.laplace.gp`): the program linearised in ``u`` at the MAP,
  registered with :func:`ppl_dgp.predictive.predict` for Laplace posteriors fitted with
  ``predictive="glm"`` (one Gaussian per input, ``N(m*, J* P^-1 J*^T + v*)``), and
  :func:`glm_pointwise_log_likelihood`, the same linearised model's likelihood at the draws,
  which the LOO reads.
- class probabilities (registered for :class:`~ppl_dgp.laplace.approx.LaplaceApprox` with
  :func:`ppl_dgp.predictive.predict_proba`): probit, MC, Laplace bridge, the plug-in MAP, or
  the weight draws (``link="nn"``, the generic predictive of the draws).

Compiled once per (model object, static configuration); the precision structure is an
argument (a pytree: its type is part of the compiled signature, not a string in the spec).
The linearised predictives of :func:`glm_predictive` and the class probabilities run over the
test points in chunks of :data:`MAX_JACOBIAN_ROWS` ``// K`` points (:func:`_by_points`): the
Jacobian's reverse passes cost memory ``O(rows x chunk)``, which at 7,400 points in one call
asked for tens of GB.

Example:
    >>> import functools, jax, numpy as np
    >>> from ppl_dgp.infer import Laplace, fit
    >>> from ppl_dgp.models import bnn
    >>> X = np.linspace(-2.0, 2.0, 20)[:, None]; y = np.sin(2.0 * X[:, 0])
    >>> model = functools.partial(bnn.mlp_regression, hidden=(8,), noise_scale=0.1)
    >>> post = fit(Laplace("last_layer", num_steps=300), jax.random.key(0), model, X, y)
    >>> mean, f_var, y_var = predict_regression(model, post, np.zeros((3, 1)))
    >>> mean.shape, bool(np.all(y_var > f_var))   # y_var = f_var + sigma^2
    ((3,), True)

References:
    Immer, Korzepa & Bauer (2021), "Improving predictions of Bayesian neural nets via local
    linearization", AISTATS. Hobbhahn, Kristiadi & Hennig (2022), "Fast Predictive Uncertainty
    for Classification with Bayesian Deep Networks", UAI.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import seed, substitute, trace

from ppl_dgp import curvature as C
from ppl_dgp.laplace import gp as G
from ppl_dgp.laplace.approx import LaplaceApprox
from ppl_dgp.laplace.curvature import output_jacobian
from ppl_dgp.laplace.subset import _Layout
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import MixturePredictive
from ppl_dgp.predictive import (
    predict_from_draws,
    register_default_link,
    register_predict,
    register_proba,
)

__all__ = ["glm_pointwise_log_likelihood", "glm_predictive", "predict_regression"]


def _trace_at(model: Callable, data: dict, X_new: Array, model_kwargs: dict) -> dict:
    return trace(substitute(seed(model, 0), data=data)).get_trace(X_new, None, **model_kwargs)


def _output_fn(
    model: Callable, base: dict, layout: _Layout, out: str, X_new: Array, kwargs: dict
) -> tuple[Callable, dict]:
    """``f(theta)`` ``[P] -> [N, K]`` at ``X_new`` (other sites from ``base``) and its trace."""
    tr0 = _trace_at(model, base, X_new, kwargs)
    if out not in tr0:
        raise ValueError(
            f"the linearised predictive needs the output site {out!r}; the model has none "
            "(use ppl_dgp.inference.predict for sampled predictions)"
        )
    transforms = {n: biject_to(tr0[n]["fn"].support) for n in layout.names}

    def f_of(theta: Array) -> Array:  # [P] -> [N, K]
        th = layout.unravel(theta)
        data = {**base, **{n: transforms[n](th[n]) for n in layout.names}}
        return _trace_at(model, data, X_new, kwargs)[out]["value"]

    return f_of, tr0


def glm_predictive(
    model: Callable, posterior: Posterior, X_new: Array, **model_kwargs: Any
) -> tuple[Array, Array]:
    """Linearised (GLM) predictive of the network output at ``X_new``.

    ``f* ~ N(f(x*; theta_MAP), J* P^-1 J*^T)``, ``J* = d f(x*) / d theta`` at the MAP, ``P`` the
    Laplace posterior precision in its stored structure (full, diag or KFAC).

    Args:
        model: the fitted program.
        posterior: from ``fit(Laplace(...), ...)``.
        X_new: inputs ``[N, D]``.
        **model_kwargs: the model keywords used in the fit.

    Returns:
        ``(f_mean [N, K], f_cov [N, K, K])``.
    """
    spec, base, arrays = _glm_inputs(posterior, model_kwargs)
    core = _compiled(_glm_core, model, spec)
    return _by_points(model, spec, base, arrays, _as_array(X_new), None,
                      lambda X, local, key: core({**base, **local}, arrays, X))  # fmt: skip


def _as_array(X: Any) -> np.ndarray | Array:
    """``X`` as an array without a device op (``jit`` transfers host arrays itself)."""
    return X if isinstance(X, np.ndarray | jax.Array) else np.asarray(X)


class _GLMSpec(NamedTuple):
    """The static configuration of a network's linearised predictive (hashable: part of the
    compiled programs' keys)."""

    output_site: str  # the network output f [N, K]
    layout: _Layout  # the Gaussian's sites and shapes
    dense_layers: tuple[tuple[str, tuple[str, ...]], ...]  # {layer: its W/b sites}
    model_kwargs: tuple[tuple[str, Any], ...]  # sorted items
    # the fit's observed site: sampled at prediction (y=None) but no latent of the points
    observed_site: str | None


class _GPSpec(NamedTuple):
    """The static configuration of a GP-layer program's linearisation."""

    layout: _Layout
    likelihood_site: str
    model_kwargs: tuple[tuple[str, Any], ...]  # sorted items


def _glm_inputs(posterior: Posterior, model_kwargs: dict) -> tuple[_GLMSpec, dict, dict]:
    """The static spec and the host arrays (MAP sites, curvature factors) of a Laplace fit."""
    q = posterior.approx
    if not isinstance(q, LaplaceApprox):
        raise ValueError(
            f"the linearised predictive needs a Laplace posterior; received a {posterior.name!r} "
            f"posterior (approx {type(q).__name__})"
        )
    layout = _Layout(tuple(q.layout.names), tuple(tuple(s) for s in q.layout.shapes))
    arrays = {"theta_map": q.theta_map, "precision": q.precision}
    base = {**q.map, **posterior.params}
    spec = _GLMSpec(
        output_site=q.output_site,
        layout=layout,
        dense_layers=tuple((k, tuple(v)) for k, v in q.dense_layers),
        model_kwargs=tuple(sorted(model_kwargs.items())),
        observed_site=getattr(posterior.method, "likelihood_site", None),
    )
    return spec, base, arrays


def _compiled(core: Callable, model: Callable, spec: _GLMSpec | _GPSpec, *static: Any) -> Callable:
    """``core`` compiled for ``(model, spec, *static)`` (cached by ``jax.jit``; an unhashable
    model keyword compiles for this call only)."""
    try:
        hash((model, spec, static))
    except TypeError:
        return jax.jit(functools.partial(core, model, spec, *static))
    return functools.partial(_JITTED[core], model, spec, *static)


#: The most Jacobian rows (test points x outputs ``K``) one compiled call of the linearised
#: predictive forms; more points go in chunks of ``MAX_JACOBIAN_ROWS // K``. Reverse mode
#: (``jax.jacrev``) runs one backward pass per row through arrays of the chunk's width, so
#: memory and time grow as ``rows x chunk``: at 7,400 points and K = 10 in one call the
#: temporaries asked for 54 GB.
MAX_JACOBIAN_ROWS = 512


def _local_core(model: Callable, spec: _GLMSpec, base: dict, X_new: Array) -> tuple[dict, Array]:
    """The per-datum latent sites at ``X_new`` (a DGP's inner-layer ``eps``: sampled, not
    observed, not in ``base``, in a plate of ``N`` points) drawn by the predictive's seeded
    pass, and the output site's value ``[N, K]``. The fit's observed site (``y``, sampled
    here) is none of them."""
    out, observed = spec.output_site, spec.observed_site
    tr = _trace_at(model, base, X_new, dict(spec.model_kwargs))
    N = X_new.shape[0]
    local = {}
    for name, site in tr.items():
        if site["type"] != "sample" or site.get("is_observed") or name in base or name == observed:
            continue
        if any(f.size == N for f in site.get("cond_indep_stack", ())):
            local[name] = site["value"]
    return local, tr[out]["value"] if out in tr else jnp.zeros((N, 1))


def _plate_axes(model: Callable, spec: _GLMSpec, base: dict, X: Array) -> dict[str, int]:
    """The axis of each per-datum site's value that runs over the points (its data plate)."""
    kwargs = spec.model_kwargs
    axes: dict[str, int] = {}

    def read(base: dict, X1: Array) -> int:  # traced abstractly: shapes only, no device op
        tr = _trace_at(model, base, X1, dict(kwargs))
        for name, site in tr.items():
            frames = [f for f in site.get("cond_indep_stack", ()) if f.size == 1]
            if (site["type"] == "sample" and frames and not site.get("is_observed")
                    and name not in base):  # fmt: skip
                ndim = jnp.ndim(site["value"]) - len(site["fn"].event_shape)
                axes[name] = ndim + frames[0].dim
        return 0

    jax.eval_shape(read, base, jax.ShapeDtypeStruct((1, *np.shape(X)[1:]), X.dtype))
    return axes


def _by_points(
    model: Callable, spec: _GLMSpec, base: dict, arrays: dict, X: Array, key: Array | None,
    core: Callable[[Array, dict, Array | None], Any],
) -> Any:  # fmt: skip
    """``core(X_chunk, local_chunk, key_c)`` over chunks of ``X``'s points, outputs
    concatenated along their first (points) axis.

    The per-datum latent sites (a DGP's inner-layer ``eps``) are drawn once for all of ``X``
    by the predictive's seeded pass (:func:`_local_core`) and sliced per chunk, so a chunked
    call equals the call in one piece: the linearised predictive treats each point on its own
    given the MAP and its ``eps``. Chunks hold ``MAX_JACOBIAN_ROWS // K`` points (at least
    one), the last padded with copies of the last point (one compiled shape); chunk ``c > 0``
    draws its Monte Carlo noise from ``fold_in(key, c)``.
    """
    local, f = _compiled(_local_core, model, spec)(base, X)
    N, K = f.shape[0], f.shape[-1]
    C = max(1, MAX_JACOBIAN_ROWS // max(K, 1))
    if N <= C:
        return core(X, local, key)
    axes = _plate_axes(model, spec, base, X) if local else {}
    # the chunks are cut on the host (numpy), not by eager device ops: each of those would be
    # an XLA compile of its own in every fresh process, too small for the compile cache
    X_host, local_host = np.asarray(X), jax.device_get(local)
    outs = []
    for c in range(-(-N // C)):
        idx = np.minimum(np.arange(c * C, (c + 1) * C), N - 1)
        part = {k: np.take(v, idx, axis=axes[k]) for k, v in local_host.items()}
        k = key if key is None or c == 0 else jax.random.fold_in(key, c)
        outs.append(jax.device_get(core(X_host[idx], part, k)))
    # joined on the host too (an eager concatenate and slice: two more compiles)
    return jax.tree.map(lambda *parts: jax.device_put(np.concatenate(parts, axis=0)[:N]), *outs)


def _glm_core(model: Callable, spec: _GLMSpec, base: dict, arrays: dict, X_new: Array) -> tuple:
    """``(f [N, K], J P^-1 J^T [N, K, K])`` at ``X_new``, ``P`` the stored precision (its
    ``glm_cov`` reads the Jacobian in the form its structure needs)."""
    out, layout, dense_layers = spec.output_site, spec.layout, spec.dense_layers
    kw = dict(spec.model_kwargs)
    f_of, tr0 = _output_fn(model, base, layout, out, X_new, kw)
    f = tr0[out]["value"]  # = f_of(theta): base holds the MAP of every global site
    layers = dict(dense_layers)

    def f_sites(over: dict) -> Array:  # sites replaced -> [N, K]
        return _trace_at(model, {**base, **over}, X_new, kw)[out]["value"]

    def inputs() -> dict:
        return {layer: tr0[f"{layer}.input"]["value"] for layer in layers}

    jac = output_jacobian(f_of, f_sites, arrays["theta_map"], base, inputs, layout, layers, f.shape)
    return f, arrays["precision"].glm_cov(jac)


def _proba_core(model: Callable, spec: _GLMSpec, link: str, num_samples: int, base: dict,
                arrays: dict, X_new: Array, key: Array | None) -> Array:  # fmt: skip
    """Class probabilities from the GLM predictive (or the MAP network for ``"plugin"``)."""
    if link == "plugin":
        f_of, _ = _output_fn(model, base, spec.layout, spec.output_site, X_new,
                             dict(spec.model_kwargs))  # fmt: skip
        return _probs(f_of(arrays["theta_map"]))
    f, cov = _glm_core(model, spec, base, arrays, X_new)
    K = f.shape[1]
    if link == "probit":
        var = jnp.diagonal(cov, axis1=-2, axis2=-1)
        if K == 1:
            return C.probit(f[:, 0], var[:, 0])
        return jax.nn.softmax(f / jnp.sqrt(1.0 + math.pi * var / 8.0), axis=-1)
    if link == "bridge":
        if K == 1:  # raised while tracing
            raise ValueError("predict_proba(link='bridge') is for multiclass (K >= 2) outputs")
        return C.laplace_bridge(f, cov)
    L = jnp.linalg.cholesky(cov + 1e-10 * jnp.eye(K))  # "mc"
    e = jax.random.normal(key, (num_samples,) + f.shape)
    fs = f + jnp.einsum("nkl,snl->snk", L, e)
    return jnp.mean(_probs(fs), axis=0)


def predict_regression(
    model: Callable, posterior: Posterior, X_new: Array, **model_kwargs: Any
) -> tuple[Array, Array, Array]:
    """Gaussian GLM predictive ``y* ~ N(f(x*), J* P^-1 J*^T + sigma^2)`` (closed form).

    Returns:
        ``(mean [N], f_var [N], y_var [N])``.
    """
    f, cov = glm_predictive(model, posterior, X_new, **model_kwargs)
    if f.shape[1] != 1:
        raise ValueError(f"predict_regression needs one output; received K = {f.shape[1]}")
    s2 = jnp.asarray(posterior.approx.sigma_noise) ** 2
    return f[:, 0], cov[:, 0, 0], cov[:, 0, 0] + s2


def _probs(f: Array) -> Array:  # [..., N, K] -> [..., N] (K = 1) or [..., N, K]
    return jax.nn.sigmoid(f[..., 0]) if f.shape[-1] == 1 else jax.nn.softmax(f, axis=-1)


@register_default_link(LaplaceApprox)
def _laplace_default_link(approx: LaplaceApprox) -> str:
    """A GP classifier's Laplace (a Gaussian over its inducing values ``u``, GGN or EF, no dense
    layers) defaults to ``"nn"``: the program's own class probability given ``u`` (for the
    probit, ``Phi(m / sqrt(1 + v))`` with ``f`` integrated out), averaged over draws of ``u``
    from the Laplace Gaussian: Rasmussen & Williams (2006), eq. 3.25, by Monte Carlo. The
    linearised ``"probit"`` link would linearise the logit ``log Phi(a) - log Phi(-a)`` in
    ``u`` and pull the probabilities towards 1/2 (breast cancer: ECE 0.050 against 0.036,
    ``.bench/issue11_classification.py``). A network's Laplace keeps ``"probit"`` (Laplace
    Redux's default)."""
    gp_over_u = approx.curvature != "hessian" and not approx.dense_layers
    return "nn" if gp_over_u else "probit"


@register_proba(LaplaceApprox)
def _laplace_proba(
    approx: LaplaceApprox, model: Callable, posterior: Posterior, X_new: Any, *, link: str,
    rng_key: Array | None, num_samples: int, output_site: str, model_kwargs: dict,
) -> Array:  # fmt: skip
    """Class probabilities of a Laplace posterior (``link``):

    - ``"probit"``: ``sigmoid(f / sqrt(1 + pi v / 8))`` (binary; per class then renormalised
      softmax for multiclass, as laplace-torch);
    - ``"mc"``: ``(1/S) sum_s sigmoid/softmax(f_s)``, ``f_s ~ N(f, J P^-1 J^T)``;
    - ``"bridge"``: the Laplace bridge (multiclass);
    - ``"plugin"``: the MAP network's probabilities;
    - ``"nn"``: the mean over the stored weight draws (no linearisation; handled by the
      generic predictive before it dispatches here).
    """
    del approx, output_site
    spec, base, arrays = _glm_inputs(posterior, model_kwargs)
    if link == "mc" and rng_key is None:
        raise ValueError("predict_proba(link='mc') needs rng_key; received None")
    key = rng_key if link == "mc" else None  # the other links draw nothing
    core = _compiled(_proba_core, model, spec, link, num_samples if link == "mc" else 0)
    return _by_points(model, spec, base, arrays, _as_array(X_new), key,
                      lambda X, local, k: core({**base, **local}, arrays, X, k))  # fmt: skip


# -- GP-layer programs: the linearised program (ppl_dgp.laplace.gp) ------------------------------


def _gp_inputs(posterior: Posterior, site: str, model_kwargs: dict, owner: str) -> tuple:
    """The static spec and arrays of a GP-layer Laplace fit's linearisation."""
    q = posterior.approx
    if not isinstance(q, LaplaceApprox) or q.predictive != "glm":
        how = f", predictive={q.predictive!r}" if isinstance(q, LaplaceApprox) else ""
        raise ValueError(
            f"{owner} needs a Laplace posterior of a GP-layer program fitted with "
            f"predictive='glm'; received a {posterior.name!r} posterior (approx "
            f"{type(q).__name__}{how})"
        )
    layout = _Layout(tuple(q.layout.names), tuple(tuple(s) for s in q.layout.shapes))
    spec = _GPSpec(layout, site, tuple(sorted(model_kwargs.items())))
    return spec, dict(q.map), dict(posterior.params), q.precision


def _gp_glm_core(model: Callable, spec: _GPSpec, values: dict, params: dict, precision: Any,
                 X: Array) -> tuple:  # fmt: skip
    """``(mean [N], layer_var [N], glm_var [N], noise_variance [], J [N, P])`` of the
    linearised program at ``X``: ``layer_var = sigma_L^2(x)`` the last layer's variance given
    ``u``, ``glm_var = J P^-1 J^T`` the Laplace posterior's, in the linearisation."""
    g, J, cov = G.glm_moments(model, dict(spec.model_kwargs), spec.layout, values, params,
                              precision, X, spec.likelihood_site)  # fmt: skip
    return g.mean, g.f_var, cov, g.noise_variance, J


@register_predict(LaplaceApprox)
def _laplace_predict(
    approx: LaplaceApprox, rng_key: Array, model: Callable, posterior: Posterior, X_new: Array,
    *, num_samples: int, likelihood_site: str, model_kwargs: dict,
) -> MixturePredictive:  # fmt: skip
    """``predict`` for a Laplace posterior: with ``predictive="glm"`` (a GP-layer program) the
    linearised program's Gaussian ``N(m*, J* P^-1 J*^T + sigma_L^2(x*) + s2)`` (one component;
    the inner layers' ``eps`` at its mean, as in the fit); otherwise the draws."""
    if approx.predictive != "glm":
        return predict_from_draws(
            approx, rng_key, model, posterior, X_new, num_samples=num_samples,
            likelihood_site=likelihood_site, model_kwargs=model_kwargs,
        )  # fmt: skip
    spec, values, params, precision = _gp_inputs(posterior, likelihood_site, model_kwargs,
                                                 "predict")  # fmt: skip
    mean, layer_var, cov, s2, _ = _compiled(_gp_glm_core, model, spec)(
        values, params, precision, _as_array(X_new)
    )
    f_var = layer_var + cov
    return MixturePredictive(mean[None], (f_var + s2)[None], f_var[None])


def glm_pointwise_log_likelihood(
    rng_key: Array,
    model: Callable,
    posterior: Posterior,
    X: Array,  # [N, D]
    y: Array,  # [N]
    *,
    likelihood_site: str = "y",
    **model_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """``log p(y_n | u_s)`` of the linearised program per draw ``u_s`` and datum, and a replicate.

    .. math::
        \\log p(y_n \\mid u_s) = \\log N\\big(y_n \\mid m_n(\\hat u) + J_n (u_s - \\hat u),\\;
        \\sigma_L^2(x_n) + s^2\\big)

    at the MAP's hyperparameters with the inner layers' ``eps = 0``: the likelihood of the
    model whose exact posterior the GGN Laplace is (:mod:`ppl_dgp.laplace.gp`), so PSIS-LOO
    on the draws ``u_s ~ N(u_hat, P^-1)`` is the LOO of the GLM predictive that
    :func:`~ppl_dgp.predictive.predict` returns.

    Args:
        rng_key: key for the replicates.
        model: the fitted program.
        posterior: a Laplace posterior fitted with ``predictive="glm"``.
        X: training inputs ``[N, D]``; y: targets ``[N]``.
        likelihood_site: the Gaussian observed site.
        **model_kwargs: further model keywords.

    Returns:
        ``(log_lik, y_rep)``, both ``(chain, draw, N)`` NumPy arrays.
    """
    spec, values, params, precision = _gp_inputs(posterior, likelihood_site, model_kwargs,
                                                 "glm_pointwise_log_likelihood")  # fmt: skip
    mean, layer_var, _, s2, J = _compiled(_gp_glm_core, model, spec)(
        values, params, precision, _as_array(X)
    )
    q = posterior.approx
    flat = posterior.flat()
    S = posterior.num_chains * posterior.num_draws
    thetas = np.concatenate([np.reshape(flat[n], (S, -1)) for n in q.layout.names], axis=1)
    m = mean + (jnp.asarray(thetas) - jnp.asarray(q.theta_map)) @ J.T  # [S, N]
    v = layer_var + s2  # [N]: the likelihood's variance at the MAP (not linearised)
    y = jnp.asarray(y)
    log_lik = -0.5 * (jnp.log(2 * jnp.pi * v) + (y - m) ** 2 / v)
    y_rep = m + jnp.sqrt(v) * jax.random.normal(rng_key, m.shape, dtype=m.dtype)
    shape = (posterior.num_chains, posterior.num_draws, X.shape[0])
    return np.asarray(log_lik).reshape(shape), np.asarray(y_rep).reshape(shape)


#: The compiled predictives, cached per (model object, static spec, link) by ``jax.jit``.
_JITTED = {
    _gp_glm_core: jax.jit(_gp_glm_core, static_argnums=(0, 1)),
    _glm_core: jax.jit(_glm_core, static_argnums=(0, 1)),
    _proba_core: jax.jit(_proba_core, static_argnums=(0, 1, 2, 3)),
    _local_core: jax.jit(_local_core, static_argnums=(0, 1)),
}
