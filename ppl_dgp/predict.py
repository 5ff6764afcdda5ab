"""The mixture predictives of a GP-layer program (Gaussian, and any likelihood), and metrics.

``S`` samples are pushed through the inner layers (one ``eps`` per datum and sample, ``u``
integrated out against ``q(u)``); the last layer gives a Gaussian ``N(m_s(x), v_s(x) + s2)`` per
sample, and the predictive is their equally weighted mixture:

.. math::
    p(y_* \\mid x_*) \\approx \\frac1S \\sum_{s=1}^S N(y_* \\mid m_s(x_*), v_s(x_*) + \\sigma^2)

GPflux's ``predict`` pushes a single sample through the inner layers (one component); the full
mixture is the default here, and its log density is a log-sum-exp over components
(:class:`MixturePredictive`; ``[S, N, P]`` per-output marginals for ``P`` outputs).

For any likelihood, :class:`LikelihoodMixture` holds the observation site's distribution of
each pass (:func:`propagate_site`) and gives the same log-sum-exp density and the task's
metrics; :func:`regression_metrics` (RMSE, MLPD and coverage per output) and
:func:`poisson_deviance` are the regression and count metrics.

References:
    Salimbeni & Deisenroth (2017), section 3.1 (prediction).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from jax.scipy.special import logsumexp
from numpyro.handlers import block, seed, substitute, trace

from ppl_dgp.collapse import ROLE, collapse, gaussian_output
from ppl_dgp.compile_effort import AdaptiveJit
from ppl_dgp.guides import InducingPointGuide

__all__ = [
    "LikelihoodMixture",
    "MixturePredictive",
    "poisson_deviance",
    "propagate_site",
    "regression_metrics",
    "layer_moments",
    "propagate_layers",
    "mixture_metrics",
    "mixture_metrics_original_units",
    "to_original_units",
    "predict_svi",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MixturePredictive:
    """Equally weighted Gaussian mixture per input point, on NumPyro's ``MixtureSameFamily``.

    Point ``n`` has the predictive

    .. math::
        p(y_n) = \\frac1S \\sum_{s=1}^S N(y_n \\mid m_{sn}, v_{sn}),

    held as ``MixtureSameFamily(Categorical(probs = 1/S), Normal(m, sqrt(v)))`` with batch shape
    ``[N]`` (:attr:`distribution`). NumPyro gives the mean, the variance (law of total variance),
    the log density (a log-sum-exp over components), sampling and the CDF; this class adds the
    quantile (bisection on the CDF), central intervals, test metrics and the change of units.

    Attributes:
        means: component means ``m`` ``[S, N]`` (``[S, N, P]`` for ``P`` outputs: the
            per-output marginals, batch shape ``[N, P]``).
        variances: component variances ``v`` ``[S, N]`` (latent ``f`` variance plus noise for
            ``y``).
        f_variances: latent components' variances ``[S, N]`` (without noise).

    References:
        Salimbeni & Deisenroth (2017), section 3.1 (prediction);
        ``numpyro.distributions.MixtureSameFamily``.

    Example:
        >>> import jax.numpy as jnp
        >>> pred = MixturePredictive(jnp.array([[0.0], [2.0]]), jnp.ones((2, 1)), jnp.ones((2, 1)))
        >>> float(pred.mean[0]), float(pred.variance[0])
        (1.0, 2.0)
    """

    means: Array
    variances: Array
    f_variances: Array

    @property
    def distribution(self) -> dist.MixtureSameFamily:
        """The mixture as a NumPyro distribution, batch shape ``[N]``, components last."""
        S = self.means.shape[0]
        mixing = dist.Categorical(probs=jnp.full((S,), 1.0 / S, dtype=self.means.dtype))
        # batch [N, S] ([N, P, S] for P outputs): the components last
        means, variances = (jnp.moveaxis(a, 0, -1) for a in (self.means, self.variances))
        components = dist.Normal(means, jnp.sqrt(variances))
        return dist.MixtureSameFamily(mixing, components)

    @property
    def mean(self) -> Array:  # [N]
        """Mixture mean ``(1/S) sum_s m_s``."""
        return _mixture_mean(self)

    @property
    def variance(self) -> Array:  # [N]
        """Mixture variance ``(1/S) sum_s v_s + (1/S) sum_s (m_s - mean)^2`` (total variance)."""
        return _mixture_variance(self)

    def log_density(self, y: Array) -> Array:  # [N]
        """``log (1/S) sum_s N(y_n | m_s, v_s)`` per point (log-sum-exp over components)."""
        return _mixture_log_density(self, jnp.asarray(y))

    def rescale(self, loc: float, scale: float) -> MixturePredictive:
        """The predictive of ``loc + scale * y`` (back to original units)."""
        return MixturePredictive(
            loc + scale * self.means, scale**2 * self.variances, scale**2 * self.f_variances
        )

    def sample(self, rng_key: Array, num: int = 1) -> Array:  # [num, N]
        """``num`` draws per point from the mixture (a component, then its Gaussian).

        NumPyro draws every component and keeps the chosen one: ``num * S * N`` normals.
        """
        return self.distribution.sample(rng_key, (num,))

    def cdf(self, y: Array) -> Array:  # [N]
        """Mixture CDF ``(1/S) sum_s Phi((y - m_s) / sqrt(v_s))``."""
        return _mixture_cdf(self, jnp.asarray(y))

    def quantile(self, p: float) -> Array:  # [N]
        """Exact mixture quantile per point: bisection on the CDF (60 halvings).

        The mixture CDF has no closed-form inverse (NumPyro's mixture has no ``icdf``). The
        search starts from ``[min_s (m_s - 12 sd_s), max_s (m_s + 12 sd_s)]``, which holds the
        ``p``-quantile for every ``p`` representable away from 0 and 1.

        Args:
            p: probability in the open interval ``(0, 1)``.

        Returns:
            ``q [N]`` with ``cdf(q) = p``, to ``2^-60`` of the initial bracket.

        Raises:
            ValueError: ``p`` is not in ``(0, 1)``.
        """
        if not 0.0 < p < 1.0:
            raise ValueError(f"quantile: p must be in (0, 1); received p={p}")
        return _mixture_quantile(self, jnp.asarray(p, dtype=jnp.result_type(self.means)))

    def interval(self, prob: float = 0.95) -> tuple[Array, Array]:
        """Central ``prob`` interval ``(lower [N], upper [N])`` of the mixture (exact quantiles)."""
        if not 0.0 < prob < 1.0:
            raise ValueError(f"interval: prob must be in (0, 1); received {prob}")
        a = (1.0 - prob) / 2.0
        return self.quantile(a), self.quantile(1.0 - a)

    def metrics(self, y: Array) -> dict[str, float]:
        """Test RMSE and mean log predictive density of ``y [N]`` (``[N, P]``: over all
        entries; per output see :func:`regression_metrics`).

        Raises:
            ValueError: ``y`` of another shape than the predictive's (naming ``y``).
        """
        y = jnp.asarray(y)
        _check_y_shape(y, self.means.shape[1:])
        rmse, mlpd = mixture_metrics(self, y)
        return {"rmse": float(rmse), "mlpd": float(mlpd)}


def _check_y_shape(y: Array, shape: tuple[int, ...]) -> None:
    """``y`` must have the predictive's shape ``[N]`` (or ``[N, P]``): no silent broadcast."""
    if tuple(jnp.shape(y)) != tuple(shape):
        want = f"[N] = [{shape[0]}]" if len(shape) == 1 else f"[N, P] = {list(shape)}"
        raise ValueError(
            f"y must have shape {want} (the predictive's points); received {jnp.shape(y)}"
        )


# The mixture's summaries, one compiled program each per shape (evaluated op by op, NumPyro's
# mixture compiles a dozen small programs per shape in every fresh process); little work,
# so compiled quick (compile_effort).
@AdaptiveJit
def _mixture_mean(pred: MixturePredictive) -> Array:  # [N]
    return pred.distribution.mean


@AdaptiveJit
def _mixture_variance(pred: MixturePredictive) -> Array:  # [N]
    return pred.distribution.variance


@AdaptiveJit
def _mixture_log_density(pred: MixturePredictive, y: Array) -> Array:  # [N]
    return pred.distribution.log_prob(y)


@AdaptiveJit
def mixture_metrics(pred: MixturePredictive, y: Array) -> tuple[Array, Array]:
    """``(rmse, mlpd)`` of ``y`` (the predictive's shape) over all its entries, as arrays, in
    one program: ``sqrt(mean((y - E[y])^2))`` and ``mean(log p(y))``
    (:meth:`MixturePredictive.metrics` without the shape check and the host floats; traceable,
    e.g. inside a caller's ``jax.jit``)."""
    d = pred.distribution
    return jnp.sqrt(jnp.mean((y - d.mean) ** 2)), jnp.mean(d.log_prob(y))


@AdaptiveJit
def _mixture_cdf(pred: MixturePredictive, y: Array) -> Array:  # [N]
    return pred.distribution.cdf(y)


@AdaptiveJit
def _mixture_quantile(pred: MixturePredictive, p: Array) -> Array:  # [N]
    """The ``p``-quantile of ``pred`` per point, by 60 bisections of its CDF on the bracket
    ``[min_s (m_s - 12 sd_s), max_s (m_s + 12 sd_s)]`` (compiled once per shape: ``p`` is
    traced)."""
    sd = jnp.sqrt(pred.variances)
    lo = jnp.min(pred.means - 12.0 * sd, axis=0)
    hi = jnp.max(pred.means + 12.0 * sd, axis=0)

    def body(_: int, bounds: tuple[Array, Array]) -> tuple[Array, Array]:
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = pred.cdf(mid) < p
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 60, body, (lo, hi))
    return 0.5 * (lo + hi)


#: The most (pass, point) pairs the layer passes (:func:`propagate_layers`,
#: :func:`propagate_site`) evaluate in one compiled call; more test points go in chunks of
#: ``MAX_PASS_POINTS // S``, so memory stays ``O(S * chunk * M)`` whatever ``N`` (at S = 100,
#: M = 100 and N = 10,000 in one call the temporaries took ~13 GB).
MAX_PASS_POINTS = 100_000


def _pass_keys(key: Array, num: int, chunk: Array) -> Array:  # [] -> [S]
    """The passes' keys: ``split(key, S)``, each folded with ``chunk`` for a chunk ``> 0``
    (traced: one program serves every chunk)."""
    keys = jax.random.split(key, num)
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
    return jax.lax.cond(chunk == 0, lambda: keys, lambda: fold(keys, chunk))


def _by_chunks(fn: Any, key: Array, num: int, values: dict, params: dict, X: Array) -> Any:
    """``fn(num, key, chunk, values, params, X)`` (``num = S`` vmapped passes, keyed by
    :func:`_pass_keys`; outputs ``[S, N, ...]`` or ``[S]``) over chunks of ``X``'s points
    when ``S * N`` exceeds :data:`MAX_PASS_POINTS`.

    Exact: a pass treats its points independently (each point's layer noise and latent
    inputs are its own; only marginals are propagated), so a chunk's outputs are those of the
    whole call at its points. The first chunk uses the passes' keys (a call that fits in one
    chunk is unchanged); chunk ``c`` uses ``fold_in(key_s, c)`` for its noise. Outputs with a
    points axis are told from those without by their shapes at two chunk sizes. The chunks
    are cut, padded and joined on the host (each eager device op would be an XLA compile of
    its own in every fresh process), by the enclosing program's ops when called inside one.
    """
    N = X.shape[0]
    C = max(1, MAX_PASS_POINTS // num)
    first = np.int32(0)
    if N <= C:
        return fn(num, key, first, values, params, X)

    def at(n: int) -> Any:
        X_n = jax.ShapeDtypeStruct((n, *X.shape[1:]), X.dtype)
        return jax.eval_shape(functools.partial(fn, num), key, first, values, params, X_n)

    pointwise = jax.tree.map(lambda a, b: a.shape != b.shape, at(C), at(C + 1))
    n = -(-N // C)
    traced = any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves((key, values, params, X)))
    xp = jnp if traced else np  # inside another program: its ops, else the host's
    X = xp.asarray(X)
    X = xp.concatenate([X, xp.repeat(X[-1:], n * C - N, axis=0)])
    outs = [fn(num, key, np.int32(c), values, params, X[c * C : (c + 1) * C]) for c in range(n)]
    if not traced:
        outs = jax.device_get(outs)

    def join(pw: bool, *parts: Any) -> Any:
        out = xp.concatenate(parts, axis=1)[:, :N] if pw else parts[0]
        return out if traced else jax.device_put(out)

    return jax.tree.map(join, pointwise, *outs)


def _hashable(kwargs: dict[str, Any]) -> tuple | None:
    items = tuple(sorted(kwargs.items()))
    try:
        hash(items)
    except TypeError:
        return None
    return items


_RECORDED = ("f", "f_mean", "f_var", "noise_variance")  # the roles a pass returns


def _collapsed_trace(model: Any, kw_items: tuple, key: Array, values: dict, params: dict,
                     X: Array) -> dict:  # fmt: skip
    """One seeded pass of ``model(X, None)`` under :class:`~ppl_dgp.collapse.collapse` with
    ``values`` and ``params`` substituted: its trace."""
    with collapse(params=params):
        tr = trace(substitute(substitute(seed(model, key), data=values), data=params))
        return tr.get_trace(X, None, **dict(kw_items))


def _keyed_passes(one: Callable, values_axis: int | None) -> Callable:
    """``program(num, key, chunk, values, params, X)``: ``one`` vmapped over ``num`` passes
    keyed by :func:`_pass_keys` (``values`` batched along ``values_axis``, or shared)."""
    passes = jax.vmap(one, in_axes=(0, values_axis, None, None))

    def program(num: int, key: Array, chunk: Array, values: dict, params: dict, X: Array) -> Any:
        return passes(_pass_keys(key, num, chunk), values, params, X)

    return program


@functools.lru_cache(maxsize=64)
def _propagate_fn(model: Any, kw_items: tuple, per_pass: bool = True) -> tuple[Any, list[str]]:
    """Jitted, vmapped pass through the layers, built once per (model, static keywords, whether
    ``values`` has a pass axis)."""
    order: list[str] = []

    def one(key: Array, values: dict, params: dict, X: Array) -> dict[str, Array]:
        tr = _collapsed_trace(model, kw_items, key, values, params, X)
        sites = {
            name: site["value"]
            for name, site in tr.items()
            if site["type"] == "deterministic" and site.get("infer", {}).get(ROLE) in _RECORDED
        }
        order[:] = list(sites)
        return sites

    # compiled quick when the passes are little work (most predictions; compile_effort)
    program = _keyed_passes(one, 0 if per_pass else None)
    return AdaptiveJit(program, static_argnums=0), order


def propagate_layers(
    rng_key: Array,
    model: Any,
    values: dict[str, Array],
    params: dict[str, Array],
    X_new: Array,  # [N, D]
    *,
    num_samples: int,
    values_per_pass: bool = True,
    **model_kwargs: Any,
) -> dict[str, Array]:
    """``S = num_samples`` collapsed passes through the GP layers at ``X_new``.

    One pass per row of ``values``, under :class:`~ppl_dgp.collapse.collapse`. ``values``
    holds batched (leading axis ``S``) values of latent sites: kernel hyperparameters, noise,
    and, for posterior draws of MCMC/Laplace, the inducing values ``{layer}.u``. With
    ``values_per_pass=False`` it holds one value per site (no leading axis), shared by every
    pass (the guide's medians under SVI): then whatever does not depend on a pass's own noise,
    such as the first layer's marginals at ``X_new``, is computed once rather than ``S`` times
    (at ``S = 100`` on synth10k's test points that is most of the work). ``params``
    holds the ``param`` sites (``Z``) and, for SVI, the guide's ``{layer}.q_mu``/``q_sqrt``:
    layers with a ``q(u)`` there integrate ``u`` out against it, the others use the prior
    conditional ``p(f | u)`` given the drawn ``u``. Each inner layer draws one ``eps`` per point
    and pass. Compiled once per model; many test points are evaluated in chunks
    (:data:`MAX_PASS_POINTS`). ``model_kwargs`` are passed as given (give
    ``batch_size=None`` to a model built for minibatches).

    Returns:
        The values of the pass's recorded sites, in program order, each with a leading axis
        ``S``: ``{layer}.f``, ``{layer}.f_mean``, ``{layer}.f_var`` ``[S, N, Q]`` per GP layer
        and, per Gaussian likelihood, ``{site}.f_mean``, ``{site}.f_var`` ``[S, N]`` and
        ``{site}.noise_variance`` ``[S]`` (read them with
        :func:`~ppl_dgp.collapse.gaussian_output`).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; received {num_samples}")
    for name, v in values.items() if values_per_pass else ():
        if jnp.shape(v)[:1] != (num_samples,):
            raise ValueError(
                f"propagate_layers: values[{name!r}] must have leading axis S={num_samples}; "
                f"received shape {jnp.shape(v)}"
            )
    X_new = jnp.asarray(X_new)
    kwargs = dict(model_kwargs)
    items = _hashable(kwargs)
    fn, order = (
        _propagate_fn(model, items, values_per_pass)
        if items is not None
        else _propagate_fn.__wrapped__(model, tuple(kwargs.items()), values_per_pass)
    )
    try:
        sites = _by_chunks(fn, rng_key, num_samples, values, params, X_new)
    except (TypeError, ValueError) as err:
        if values_per_pass:
            raise
        shapes = {k: tuple(jnp.shape(v)) for k, v in values.items()}
        raise ValueError(
            f"propagate_layers(values_per_pass=False) failed ({type(err).__name__}: {err}); "
            "values must hold one value per site, shared by every pass (no leading axis of "
            f"{num_samples}); received shapes {shapes}. Per-pass values need "
            "values_per_pass=True"
        ) from err
    # pytrees sort dict keys: restore the program order (layer10 after layer9).
    return {name: sites[name] for name in order}


def _svi_passes(
    rng_key: Array,
    model: Any,
    guide: Any,
    params: dict[str, Array],
    X_new: Array,  # [N, D]
    *,
    num_samples: int,
    **model_kwargs: Any,
) -> dict[str, Array]:
    """:func:`propagate_layers` with ``u ~ q(u)`` integrated out and the guide's medians."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; received {num_samples}")
    if getattr(guide, "prototype_trace", None) is None:
        # A fresh guide learns the model's structure from one call; placeholder targets keep
        # the likelihood observed (its values play no part in the structure).
        X_new = jnp.asarray(X_new)
        with block():
            seed(substitute(guide, data=params), rng_key)(
                X_new,
                jnp.zeros(X_new.shape[:1], X_new.dtype),
                **{**model_kwargs, "batch_size": None},
            )
    if isinstance(guide, InducingPointGuide):  # u is integrated out: its median unused
        medians = guide.median(params, inducing=False)
    else:
        medians = {k: v for k, v in guide.median(params).items() if not k.endswith(".u")}
    return propagate_layers(
        rng_key,
        model,
        medians,
        params,
        X_new,
        num_samples=num_samples,
        values_per_pass=False,
        **{**model_kwargs, "batch_size": None},
    )


def layer_moments(
    rng_key: Array,
    model: Any,
    guide: Any,
    params: dict[str, Array],
    X_new: Array,  # [N, D]
    *,
    num_samples: int = 100,
    **model_kwargs: Any,
) -> tuple[dict[str, tuple[Array, Array, Array]], dict[str, Array]]:
    """``S`` collapsed passes through the layers of a program fitted with the inducing guide.

    Inner layers are sampled with ``u`` integrated out against ``q(u)`` (one ``eps`` per point
    and sample); kernel hyperparameters and noise take the guide's medians.

    Returns:
        ``({layer: (F, mean, var)}, {likelihood site: noise variance})`` in program order, with
        every array shaped ``[S, N, Q]`` (noise ``[S]``): the ``{layer}.f``, ``.f_mean``,
        ``.f_var`` and ``{site}.noise_variance`` sites of :func:`propagate_layers`.
    """
    sites = _svi_passes(
        rng_key, model, guide, params, X_new, num_samples=num_samples, **model_kwargs
    )
    layers = [name[: -len(".f")] for name in sites if name.endswith(".f")]
    moments = {k: (sites[f"{k}.f"], sites[f"{k}.f_mean"], sites[f"{k}.f_var"]) for k in layers}
    suffix = ".noise_variance"
    noise = {name[: -len(suffix)]: v for name, v in sites.items() if name.endswith(suffix)}
    return moments, noise


def predict_svi(
    rng_key: Array,
    model: Any,
    guide: Any,
    params: dict[str, Array],
    X_new: Array,  # [N, D]
    *,
    num_samples: int = 100,
    likelihood_site: str = "y",
    **model_kwargs: Any,
) -> MixturePredictive:
    """Mixture predictive of ``y`` at ``X_new`` for a program fitted with the inducing guide.

    Component ``s`` is :func:`~ppl_dgp.collapse.gaussian_output` of pass ``s``:
    ``N(m_s, v_s + s2)``, the likelihood's input moments plus its noise.

    Args:
        rng_key: key for the ``S`` inner-layer samples.
        model: the NumPyro program.
        guide: the fitted :class:`~ppl_dgp.guides.InducingPointGuide`.
        params: the fitted parameters (``SVIResult.params``).
        X_new: inputs ``[N, D]``.
        num_samples: ``S``, mixture components.
        likelihood_site: name of the Gaussian observation site.
        **model_kwargs: extra model keywords (``batch_size`` is forced to ``None``).

    Returns:
        :class:`MixturePredictive` with ``means``/``variances`` ``[S, N]``.

    Example:
        >>> import jax, numpy as np
        >>> from ppl_dgp.guides import InducingPointGuide
        >>> from ppl_dgp.infer import run_svi
        >>> from ppl_dgp.models import MODELS
        >>> X = np.linspace(-2.0, 2.0, 16)[:, None]; y = np.sin(2.0 * X[:, 0])
        >>> model = MODELS["svgp"].make(X, smoke=True)
        >>> guide = InducingPointGuide(model)
        >>> result = run_svi(jax.random.key(0), model, guide, X, y, num_steps=50,
        ...                  progress=False)
        >>> pred = predict_svi(jax.random.key(1), model, guide, result.params, X[:3],
        ...                    num_samples=4)
        >>> pred.means.shape, pred.log_density(y[:3]).shape
        ((4, 3), (3,))
    """
    sites = _svi_passes(
        rng_key, model, guide, params, X_new, num_samples=num_samples, **model_kwargs
    )
    out = gaussian_output(sites, likelihood_site)
    return MixturePredictive(out.mean, out.var, out.f_var)


def mixture_metrics_original_units(
    pred: MixturePredictive, y: Array, y_mean: float, y_std: float
) -> dict[str, float]:
    """RMSE and MLPD in original units for a predictive fitted on standardised ``y``.

    ``rmse = rmse_std * y_std`` and ``mlpd = mlpd_std - log(y_std)`` (change of variables).
    """
    y_std_units = (np.asarray(y) - y_mean) / y_std  # on the host: no program to compile
    m = pred.metrics(y_std_units)
    return to_original_units(m["rmse"], m["mlpd"], y_std)


def to_original_units(rmse: float, mlpd: float, y_std: float) -> dict[str, float]:
    """``{"rmse": rmse * y_std, "mlpd": mlpd - log(y_std)}``: metrics of standardised ``y``
    (``(y - mean) / y_std``) in original units (change of variables)."""
    return {"rmse": float(rmse) * y_std, "mlpd": float(mlpd) - math.log(y_std)}


def regression_metrics(
    pred: MixturePredictive, y: Array, probs: tuple[float, ...] = (0.5, 0.9, 0.95)
) -> dict[str, Any]:
    """RMSE, MLPD and central-interval coverage per output of a regression predictive.

    ``rmse_p = sqrt(mean_n (y_np - E[y_np])^2)``, ``mlpd_p = mean_n log p(y_np)`` (the
    mixture's marginal density: a log-sum-exp over components) and ``coverage_c_p`` the
    fraction of ``y_np`` inside the central ``c`` interval (exact mixture quantiles).

    Args:
        pred: a :class:`MixturePredictive` with ``means [S, N]`` or ``[S, N, P]``.
        y: held-out targets ``[N]`` or ``[N, P]``, the predictive's shape.
        probs: interval probabilities ``c``.

    Returns:
        ``{"rmse", "mlpd", "coverage_<c>"}``: floats for one output, lists of ``P`` floats
        otherwise.
    """
    y = jnp.asarray(y)
    _check_y_shape(y, pred.means.shape[1:])
    out: dict[str, Any] = {
        "rmse": jnp.sqrt(jnp.mean(jnp.square(y - pred.mean), axis=0)),
        "mlpd": jnp.mean(pred.log_density(y), axis=0),
    }
    for c in probs:
        lo, hi = pred.interval(c)
        out[f"coverage_{c:g}"] = jnp.mean((y >= lo) & (y <= hi), axis=0)
    return {k: np.asarray(v, dtype=float).tolist() for k, v in out.items()}


def poisson_deviance(y: Array, mu: Array) -> Array:  # [N]
    """Poisson unit deviance ``2 (y log(y / mu) - (y - mu))`` (``y log y = 0`` at ``y = 0``).

    References: McCullagh & Nelder (1989), *Generalized Linear Models*, table 2.1;
    scikit-learn's ``mean_poisson_deviance``.
    """
    y, mu = jnp.asarray(y, dtype=jnp.result_type(mu)), jnp.asarray(mu)
    ylogy = jnp.where(y > 0, y * jnp.log(jnp.where(y > 0, y, 1.0) / mu), 0.0)
    return 2.0 * (ylogy - (y - mu))


#: The arguments that rebuild each supported component family (after vmapping its pieces).
_FAMILY_ARGS: dict[type, tuple[str, ...]] = {
    dist.Normal: ("loc", "scale"),
    dist.StudentT: ("df", "loc", "scale"),
    dist.MultivariateNormal: ("loc", "scale_tril"),
    dist.BernoulliLogits: ("logits",),
    dist.BernoulliProbs: ("probs",),
    dist.CategoricalLogits: ("logits",),
    dist.CategoricalProbs: ("probs",),
    dist.Poisson: ("rate",),
}


def _family_args(fn: dist.Distribution, site: str) -> tuple[type, int, dict[str, Array]]:
    """``(family, reinterpreted event dims, {arg: array broadcast to its full shape})``."""
    ndims = 0
    if isinstance(fn, dist.Independent):
        fn, ndims = fn.base_dist, fn.reinterpreted_batch_ndims
    family = type(fn)
    if family not in _FAMILY_ARGS:
        raise NotImplementedError(
            f"predict: the observation site {site!r} is a {family.__name__}; the components "
            f"supported are {[c.__name__ for c in _FAMILY_ARGS]}"
        )
    args = {}
    for k in _FAMILY_ARGS[family]:
        v = jnp.asarray(getattr(fn, k))
        event = fn.arg_constraints[k].event_dim
        trailing = jnp.shape(v)[jnp.ndim(v) - event :] if event else ()
        args[k] = jnp.broadcast_to(v, tuple(fn.batch_shape) + tuple(trailing))
    return family, ndims, args


@functools.lru_cache(maxsize=64)
def _site_fn(model: Any, kw_items: tuple, site: str) -> tuple[Any, list]:
    """Jitted, vmapped pass returning the observation site's distribution arguments and its
    recorded latent variance (if any), built once per (model, keywords, site)."""
    meta: list = []

    def one(key: Array, values: dict, params: dict, X: Array) -> tuple[dict, dict]:
        tr = _collapsed_trace(model, kw_items, key, values, params, X)
        if site not in tr:
            raise ValueError(f"predict: the model has no observation site {site!r}")
        family, ndims, args = _family_args(tr[site]["fn"], site)
        meta[:] = [family, ndims]
        extra = {}
        if f"{site}.latent_var" in tr:
            extra["latent_var"] = tr[f"{site}.latent_var"]["value"]
        return args, extra

    return jax.jit(_keyed_passes(one, 0), static_argnums=0), meta


def propagate_site(
    rng_key: Array,
    model: Any,
    values: dict[str, Array],
    params: dict[str, Array],
    X_new: Array,  # [N, D]
    *,
    num_samples: int,
    site: str = "y",
    **model_kwargs: Any,
) -> tuple[dist.Distribution, dict[str, Array]]:
    """The observation site's distribution in ``S = num_samples`` passes of the program.

    Each pass runs ``model(X_new, None)`` under :class:`~ppl_dgp.collapse.collapse` with row
    ``s`` of ``values`` and ``params`` substituted (as :func:`propagate_layers`: a layer with a
    ``q(u)`` in ``params`` integrates ``u`` out against it, the others use ``p(f | u)`` given
    the drawn ``u``; inner layers draw fresh ``eps``) and keeps ``p(y | pass s)``, the site's
    distribution: the likelihood given the sampled last layer, or its marginal when the last
    layer is integrated out.

    Returns:
        ``(components, extra)``: a distribution of the site's family with batch shape
        ``[S, N]`` (the ``S`` components), and ``{"latent_var": [S, N, ...]}`` when the site
        records its latent variance.
    """
    X_new = jnp.asarray(X_new)
    items = _hashable(dict(model_kwargs))
    key_items = items if items is not None else tuple(model_kwargs.items())
    build = _site_fn if items is not None else _site_fn.__wrapped__
    fn, meta = build(model, key_items, site)
    args, extra = _by_chunks(fn, rng_key, num_samples, values, params, X_new)
    family, ndims = meta
    components = family(**args)
    return (components.to_event(ndims) if ndims else components), extra


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LikelihoodMixture:
    """The predictive of ``y`` as an equally weighted mixture of ``S`` likelihood components.

    .. math:: p(y_n \\mid x_n) \\approx \\frac1S \\sum_{s=1}^S p(y_n \\mid \\theta_s, x_n),
        \\qquad \\log p(y_n) = \\operatorname{logsumexp}_s \\log p(y_n \\mid \\theta_s)
        - \\log S

    for any likelihood: component ``s`` is the observation site's distribution in pass ``s``
    (a posterior draw, or a pass through the layers with ``u`` integrated out against
    ``q(u)``): Normal, Student-t, Bernoulli, categorical, Poisson, multivariate normal.

    Attributes:
        components: a NumPyro distribution with batch shape ``[S, N]`` (``S`` components).

    Example:
        Two Poisson components, rates 1 and 3: ``log p(0) = log((e^-1 + e^-3) / 2)``.

        >>> import jax.numpy as jnp, numpyro.distributions as dist
        >>> mix = LikelihoodMixture(dist.Poisson(jnp.array([[1.0], [3.0]])))
        >>> float(mix.mean[0]), round(float(mix.log_density(jnp.array([0.0]))[0]), 4)
        (2.0, -1.5662)
    """

    components: dist.Distribution

    @property
    def num_components(self) -> int:
        return self.components.batch_shape[0]

    def log_density(self, y: Array) -> Array:  # [N]
        """``log (1/S) sum_s p(y_n | theta_s)`` per datum (a log-sum-exp over components)."""
        lp = self.components.log_prob(jnp.asarray(y))
        return logsumexp(lp, axis=0) - math.log(self.num_components)

    @property
    def mean(self) -> Array:  # [N, ...]
        """``E[y_n] = (1/S) sum_s E[y_n | theta_s]`` (class probabilities for a classifier)."""
        return jnp.mean(self._component_mean(), axis=0)

    @property
    def variance(self) -> Array:  # [N, ...]
        """Total variance ``(1/S) sum_s Var_s + (1/S) sum_s (E_s - mean)^2``."""
        m = self._component_mean()
        return jnp.mean(self._component_variance(), axis=0) + jnp.var(m, axis=0)

    def _component_mean(self) -> Array:
        c = self.components
        base = c.base_dist if isinstance(c, dist.Independent) else c
        if isinstance(base, dist.CategoricalLogits | dist.CategoricalProbs):
            return base.probs
        return c.mean

    def _component_variance(self) -> Array:
        c = self.components
        base = c.base_dist if isinstance(c, dist.Independent) else c
        if isinstance(base, dist.CategoricalLogits | dist.CategoricalProbs):
            return base.probs * (1.0 - base.probs)
        return c.variance

    @property
    def probs(self) -> Array:
        """Class probabilities: ``p(y = 1) [N]`` (Bernoulli) or ``[N, K]`` (categorical)."""
        base = self.components
        if not isinstance(base, dist.BernoulliLogits | dist.BernoulliProbs |
                          dist.CategoricalLogits | dist.CategoricalProbs):  # fmt: skip
            raise ValueError(f"probs: the components are {type(base).__name__}, not classes")
        return self.mean

    def sample(self, rng_key: Array, num: int = 1) -> Array:  # [num, N, ...]
        """``num`` draws per datum: a component uniformly, then ``y`` from it."""
        k1, k2 = jax.random.split(rng_key)
        S = self.num_components
        ys = self.components.sample(k2, (num,))  # [num, S, N, ...]
        pick = jax.random.randint(k1, (num,), 0, S)
        return ys[jnp.arange(num), pick]

    def metrics(self, y: Array) -> dict[str, Any]:
        """Held-out metrics for the components' family.

        - classes: ``accuracy``, ``nll`` (= ``-mlpd``), ``ece`` (10 bins), ``brier``
          (:func:`ppl_dgp.calibration.classification_metrics`);
        - counts (Poisson): ``mlpd``, ``rmse`` and ``mean_deviance`` (mean Poisson deviance of
          the predictive mean, :func:`poisson_deviance`);
        - otherwise: ``mlpd`` and ``rmse`` (per output for ``y [N, P]``).
        """
        from ppl_dgp.calibration import classification_metrics  # math stratum, NumPy only

        y = jnp.asarray(y)
        mlpd = float(jnp.mean(self.log_density(y)))
        base = self.components
        base = base.base_dist if isinstance(base, dist.Independent) else base
        if isinstance(base, dist.BernoulliLogits | dist.BernoulliProbs |
                      dist.CategoricalLogits | dist.CategoricalProbs):  # fmt: skip
            out = classification_metrics(np.asarray(self.probs), np.asarray(y))
            return {**out, "nll": -mlpd}
        err = jnp.square(y - self.mean)
        out = {"mlpd": mlpd}
        if isinstance(base, dist.Poisson):
            out["mean_deviance"] = float(jnp.mean(poisson_deviance(y, self.mean)))
            out["rmse"] = float(jnp.sqrt(jnp.mean(err)))
            return out
        rmse = jnp.sqrt(jnp.mean(err, axis=0))
        out["rmse"] = float(rmse) if rmse.ndim == 0 else np.asarray(rmse).tolist()
        return out
