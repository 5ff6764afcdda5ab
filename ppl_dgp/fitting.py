"""The shared core of every inference method: the model's sites and log density, and ``fit``.

A method is a small frozen configuration registered with :func:`register_method`; :func:`fit`
checks the data once and dispatches on the configuration's type. :func:`initialize` derives the
log density from the model once (NumPyro's ``ModelInfo``: ``potential_fn``, ``postprocess_fn``
and the initial point, with clear errors), and NUTS, HMC, SGHMC and Laplace all start from it.

Timings: ``compile_seconds`` is the time JAX spent tracing, lowering and compiling during the
fit (the union of the spans of JAX's compile events, so nested traces are not counted twice);
``run_seconds`` is the rest of the fit's wall time.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import block, seed, substitute, trace
from numpyro.infer.util import (
    ModelInfo,
    ParamInfo,
    constrain_fn,
    initialize_model,
    potential_energy,
)

from ppl_dgp.guides import init_to_model_init
from ppl_dgp.layers import ROLE
from ppl_dgp.posterior import Posterior
from ppl_dgp.validation import check_regression_data

__all__ = [
    "ModelSites",
    "accepts_batch_size",
    "compile_clock",
    "config_dict",
    "fit",
    "initialize",
    "inspect_model",
    "positive_int",
    "register_method",
]


def positive_int(owner: str, **values: Any) -> None:
    for name, v in values.items():
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{owner}.{name} must be a positive int; received {v!r}")


def config_dict(method: Any) -> dict[str, Any]:
    """The method's fields as plain JSON values (what a saved Posterior stores).

    Values JSON cannot hold (a user's guide or optimizer) are stored by name, e.g.
    ``"<function my_guide>"`` or ``"<GradientTransformationExtraArgs>"``.
    """

    def describe(value: Any) -> str:
        name = getattr(value, "__name__", None)
        return f"<function {name}>" if name else f"<{type(value).__name__}>"

    def plain(value: Any) -> Any:
        try:
            return json.loads(json.dumps(value))
        except TypeError:
            return describe(value)

    return {f.name: plain(getattr(method, f.name)) for f in dataclasses.fields(method)}


# -- the model, derived once ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSites:
    """What a model declares, from one trace at the training data.

    Attributes:
        global_latent: latent sample sites outside every plate (``u``, hyperparameters).
        local_latent: latent sample sites inside a plate (per-datum, e.g. ``{layer}.eps``).
        params: the model's ``param`` sites and their (initial) constrained values.
        gp_layers: names of the GP layers (sites tagged ``inducing``).
        subsampled: names of plates that subsample the data.
    """

    global_latent: tuple[str, ...]
    local_latent: tuple[str, ...]
    params: dict[str, np.ndarray]
    gp_layers: tuple[str, ...]
    subsampled: tuple[str, ...]


def inspect_model(rng_key: Array, model: Callable, *args: Any, **kwargs: Any) -> ModelSites:
    """Trace ``model(*args, **kwargs)`` once and sort its sites (see :class:`ModelSites`)."""
    with block():
        tr = trace(seed(model, rng_key)).get_trace(*args, **kwargs)
    return _sites_of(tr)


def _sites_of(tr: dict) -> ModelSites:
    glob, local, layers, sub = [], [], [], []
    params = {}
    for name, site in tr.items():
        if site["type"] == "param":
            params[name] = np.asarray(site["value"])
        elif site["type"] == "plate":
            size, subsample = site["args"][:2]
            if subsample is not None and subsample != size:
                sub.append(name)
        elif site["type"] == "sample" and not site["is_observed"]:
            (local if site["cond_indep_stack"] else glob).append(name)
            if site["infer"].get(ROLE) == "inducing":
                layers.append(name.rsplit(".", 1)[0])
    return ModelSites(tuple(glob), tuple(local), params, tuple(layers), tuple(sub))


def _init_trace(rng_key: Array, model: Callable, args: tuple, kwargs: dict) -> dict:
    """One trace at the initial values (:data:`~ppl_dgp.guides.init_to_model_init`)."""
    with block():
        return trace(substitute(seed(model, rng_key), substitute_fn=init_to_model_init)).get_trace(
            *args, **kwargs
        )


def _nonfinite_sites(tr: dict) -> list[str]:
    """Sample sites whose log density is not finite in the trace ``tr``."""
    return [
        name
        for name, site in tr.items()
        if site["type"] == "sample"
        and not np.all(np.isfinite(np.asarray(site["fn"].log_prob(site["value"]))))
    ]


def initialize(
    rng_key: Array, model: Callable, X: Array, y: Array, *, owner: str = "MCMC", **model_kwargs: Any
) -> tuple[ModelInfo, ModelSites]:
    """The model's log density over its latent sites, derived once and checked.

    Shared by the full-data samplers (NUTS, HMC) and the hook for SGHMC and Laplace:
    ``info.potential_fn(z)`` is the negative log joint in unconstrained space (NumPyro's
    ``potential_energy``), ``info.postprocess_fn(z)`` maps back to constrained sites (and the
    deterministic ones), ``info.param_info.z`` is the initial point
    (:data:`~ppl_dgp.guides.init_to_model_init`) and ``info.model_trace`` the trace there: the
    same ``ModelInfo`` as NumPyro's ``initialize_model``. It is built from one trace of the
    model and one compiled value and gradient of the potential; ``initialize_model`` evaluates
    them op by op (every op compiled on its own: ~7 s more for a 2-layer DGP in a fresh
    process). Models with discrete latent sites go through ``initialize_model`` (enumeration).

    Raises:
        ValueError: ``batch_size`` is given or the model subsamples its data plate; the model
            has no latent sample site; the log density or its gradient is not finite at the
            initial point (the offending sites are named).
    """
    if model_kwargs.get("batch_size") is not None:
        raise ValueError(
            f"{owner} needs the full data: received batch_size={model_kwargs['batch_size']}; "
            "drop it (minibatch estimators are SVI's and SGHMC's)"
        )
    # the key NumPyro's ``find_valid_initial_params`` seeds its first try with: the same
    # initial point as ``initialize_model`` where the init strategy draws (prior medians)
    tr = _init_trace(jax.random.split(rng_key)[1], model, (X, y), model_kwargs)
    sites = _sites_of(tr)
    if sites.subsampled:
        raise ValueError(
            f"{owner} needs the full data: the model subsamples plate(s) {list(sites.subsampled)} "
            "(was it built with batch_size?)"
        )
    latent = sites.global_latent + sites.local_latent
    if not latent:
        raise ValueError(
            f"{owner} needs at least one latent sample site; the model has only params: "
            f"{sorted(sites.params)}"
        )
    if any(tr[k]["fn"].has_enumerate_support for k in latent):
        return _numpyro_initialize(rng_key, model, X, y, owner, model_kwargs, tr), sites
    z = {k: biject_to(tr[k]["fn"].support).inv(tr[k]["value"]) for k in latent}
    potential_fn = functools.partial(potential_energy, model, (X, y), model_kwargs, enum=False)
    pe, grad = jax.jit(jax.value_and_grad(potential_fn))(z)  # one compile, once per fit
    ok = bool(np.isfinite(pe)) and all(bool(np.all(np.isfinite(g))) for g in grad.values())
    if not ok:
        _raise_not_finite(tr, owner)
    info = ModelInfo(
        ParamInfo(z, pe, grad),
        potential_fn,
        functools.partial(constrain_fn, model, (X, y), model_kwargs, return_deterministic=True),
        tr,
    )
    return info, sites


def _numpyro_initialize(rng_key, model, X, y, owner, model_kwargs, tr) -> ModelInfo:
    try:
        return initialize_model(
            rng_key,
            model,
            init_strategy=init_to_model_init,
            model_args=(X, y),
            model_kwargs=model_kwargs,
        )
    except RuntimeError as err:
        _raise_not_finite(tr, owner, err)


def _raise_not_finite(tr: dict, owner: str, cause: Exception | None = None) -> None:
    """The error for a non-finite log density (or gradient) at the initial point ``tr``."""
    bad = _nonfinite_sites(tr)
    where = f"at sites {bad}" if bad else "in its gradient"
    raise ValueError(
        f"{owner}: the model's log density is not finite at the initial values ({where}); "
        "check the priors' support, the Hyper init values and the data"
    ) from cause


# -- timing --------------------------------------------------------------------------------

_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)


@contextmanager
def compile_clock() -> Iterator[Callable[[], float]]:
    """Yields a function giving the seconds JAX spent compiling so far (union of spans)."""
    spans: list[tuple[float, float]] = []

    def listener(event: str, start: float, end: float, **_: Any) -> None:
        if event in _COMPILE_EVENTS:
            spans.append((start, end))

    def seconds() -> float:
        total, reach = 0.0, -np.inf
        for s, e in sorted(spans):
            if e > reach:
                total += e - max(s, reach)
                reach = e
        return total

    jax.monitoring.register_event_time_span_listener(listener)
    try:
        yield seconds
    finally:
        jax.monitoring.unregister_event_time_span_listener(listener)


# -- fit -----------------------------------------------------------------------------------

_FITTERS: dict[type, Callable[..., Posterior]] = {}


def register_method(config_type: type) -> Callable:
    """Decorator: ``fit(config_type(...), ...)`` calls the decorated ``fitter``.

    ``fitter(method, rng_key, model, X, y, **model_kwargs) -> Posterior``; the data are
    already checked. (SGHMC and Laplace plug in here.)
    """

    def register(fitter: Callable[..., Posterior]) -> Callable[..., Posterior]:
        _FITTERS[config_type] = fitter
        return fitter

    return register


def fit(
    method: Any, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
) -> Posterior:
    """Fit ``model`` to ``(X, y)`` with ``method``; every method returns a Posterior.

    Args:
        method: a configuration: ``SVI``, ``NUTS``, ``HMC``, ``SGHMC``, ``Laplace``.
        rng_key: JAX PRNG key.
        model: a NumPyro program ``model(X, y=None, **model_kwargs)``.
        X: inputs ``[N, D]``.
        y: targets ``[N]``.
        **model_kwargs: further model keywords.

    Returns:
        :class:`~ppl_dgp.posterior.Posterior` with draws ``(chain, draw, ...)``.

    Example:
        >>> # from ppl_dgp.models import dgp
        >>> # model = functools.partial(dgp.dgp_regression, **dgp.init_dgp(X, num_layers=2))
        >>> # post = fit(NUTS(num_chains=2), jax.random.key(0), model, X, y)
        >>> # post.draws["layer0.u"].shape   # (2, 500, Q, M)
    """
    fitter = _FITTERS.get(type(method))
    if fitter is None:
        names = sorted(t.__name__ for t in _FITTERS)
        raise TypeError(f"fit: unknown method {method!r}; expected one of {names}")
    check_regression_data(X, y, batch_size=getattr(method, "batch_size", None))
    return fitter(method, rng_key, model, jnp.asarray(X), jnp.asarray(y), **model_kwargs)


def accepts_batch_size(model: Callable) -> bool:
    try:
        ps = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "batch_size" or p.kind is p.VAR_KEYWORD for p in ps)
