"""The shared core of every inference method: registry, the model's log density, timings.

A method is a small frozen configuration class with a ``name`` and a ``run`` method, registered
with :func:`register_method` (which also makes it storable in a saved Posterior); :func:`fit`
checks the data once and calls ``method.run``. :func:`initialize` derives the log density from
the model once (NumPyro's ``ModelInfo``: ``potential_fn``, ``postprocess_fn`` and the initial
point, with clear errors), and NUTS, HMC, SGHMC, MAP and Laplace all start from it.

Timings (:func:`timed`): ``compile_seconds`` is the time JAX spent tracing, lowering and
compiling during the fit (the union of the spans of JAX's compile events, so nested traces are
not counted twice); ``run_seconds`` is the rest of the fit's wall time. Every method reports
them the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import block, seed, trace
from numpyro.infer.util import (
    ModelInfo,
    ParamInfo,
    constrain_fn,
    initialize_model,
    potential_energy,
)

from ppl_dgp.guides import init_to_model_init, init_trace
from ppl_dgp.infer.minibatch import numpy_to_jax
from ppl_dgp.latent import latent_sites
from ppl_dgp.layers import ROLE
from ppl_dgp.linalg import full_precision_matmuls
from ppl_dgp.posterior import Posterior, register_type
from ppl_dgp.validation import (
    SCALE_LIMIT,
    DataScaleWarning,
    check_regression_data,
    data_scale_issues,
)

__all__ = [
    "LOCAL_LATENTS",
    "METHODS",
    "ModelSites",
    "accepts_batch_size",
    "check_observed_shapes",
    "compile_clock",
    "constrain",
    "fit",
    "held_local_latents",
    "initialize",
    "inspect_model",
    "make_method",
    "positive_int",
    "progress_enabled",
    "register_method",
    "timed",
]


def progress_enabled(progress: bool | None) -> bool:
    """Progress bars are on unless turned off, or ``CI`` / ``PYTEST_XDIST_WORKER`` is set."""
    if progress is not None:
        return progress
    return not (os.environ.get("CI") or os.environ.get("PYTEST_XDIST_WORKER"))


def positive_int(owner: str, **values: Any) -> None:
    for name, v in values.items():
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{owner}.{name} must be a positive int; received {v!r}")


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
        latent_inputs: the per-datum latent inputs of :func:`~ppl_dgp.latent.latent_layer`
            (among ``local_latent``).
    """

    global_latent: tuple[str, ...]
    local_latent: tuple[str, ...]
    params: dict[str, np.ndarray]
    gp_layers: tuple[str, ...]
    subsampled: tuple[str, ...]
    latent_inputs: tuple[str, ...] = ()

    @property
    def layer_noise(self) -> tuple[str, ...]:
        """The per-datum latents that are not latent inputs (a DGP's ``{layer}.eps``)."""
        return tuple(k for k in self.local_latent if k not in self.latent_inputs)


#: The settings of ``local_latents`` (MAP, DeepEnsemble, Laplace): see :func:`held_local_latents`.
LOCAL_LATENTS = ("auto", "fixed", "map")


def held_local_latents(sites: ModelSites, local_latents: str, owner: str) -> tuple[str, ...]:
    """The per-datum latent sites a MAP holds at their initial value, by ``local_latents``.

    - ``"auto"`` (the default of MAP, DeepEnsemble and Laplace): the layer noise
      (:attr:`ModelSites.layer_noise`, a DGP's ``{layer}.eps``) is held at ``eps = 0``, the
      inner layers' mean pass (its joint MAP is degenerate: each ``eps`` fits its own point and
      the lengthscales collapse); the latent inputs of :func:`~ppl_dgp.latent.latent_layer`
      (:attr:`ModelSites.latent_inputs`, a GPLVM's ``latent.w``) are optimised with the rest.
    - ``"fixed"``: every per-datum latent held; refused for a model with latent inputs.
    - ``"map"``: none held, every per-datum latent optimised.

    Held at their initial value ``w = 0`` the latent inputs would give every datum the same
    input (a GPLVM's GP could fit only one shared mean), so no setting holds them.

    Raises:
        ValueError: ``local_latents`` is not one of :data:`LOCAL_LATENTS`, or it is
            ``"fixed"`` and the model has latent inputs (both naming ``{owner}.local_latents``).
    """
    if local_latents == "map":
        return ()
    if local_latents == "auto":
        return sites.layer_noise
    if local_latents == "fixed":
        if sites.latent_inputs:
            raise ValueError(
                f"{owner}.local_latents='fixed' would hold the model's latent inputs "
                f"{list(sites.latent_inputs)} (ppl_dgp.latent.latent_layer) at their initial "
                "value 0, where every datum has the same input; use 'auto' (the default: layer "
                "noise held at 0, latent inputs optimised) or 'map' (every per-datum latent "
                "optimised)"
            )
        return tuple(sites.local_latent)
    raise ValueError(
        f"{owner}.local_latents must be one of {LOCAL_LATENTS}; received {local_latents!r}"
    )


def inspect_model(
    rng_key: Array, model: Callable, *args: Any, values: bool = True, **kwargs: Any
) -> ModelSites:
    """Trace ``model(*args, **kwargs)`` once and sort its sites (see :class:`ModelSites`).

    The trace is abstract (``jax.eval_shape``: nothing is compiled) with the arguments as
    they are, so the model's own checks of concrete data run; the params' initial values are
    then computed by one compiled call (not op by op), or left out with ``values=False``
    (``ModelSites.params`` then maps each name to its ``jax.ShapeDtypeStruct``).
    """
    box: dict[str, dict] = {}

    arrays = numpy_to_jax(args)  # NumPy data indexed by traced indices

    def run(key: Array) -> dict[str, Array]:
        with block():
            box["trace"] = trace(seed(model, key)).get_trace(*arrays, **kwargs)
        return _param_values(box["trace"])

    shapes = jax.eval_shape(run, rng_key)
    check_observed_shapes(box["trace"])
    if values and shapes:
        params = jax.jit(_param_program(model, kwargs))(rng_key, args)
        params = {k: np.asarray(v) for k, v in params.items()}
    else:
        params = shapes
    return _sites_of(box["trace"], params)


def _param_values(tr: dict) -> dict[str, Array]:
    return {name: site["value"] for name, site in tr.items() if site["type"] == "param"}


def check_observed_shapes(tr: dict, owner: str = "fit") -> None:
    """Each observed site's data must have the shape of its distribution there.

    NumPyro broadcasts silently: ``y [N, 1]`` against a likelihood of batch shape ``[N]``
    scores an ``[N, N]`` table of every pair (a wrong posterior, no error). Read from the
    trace's shapes only (abstract traces included).

    Raises:
        ValueError: naming the site, the expected and the received shape.
    """
    for name, site in tr.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        want, got = tuple(site["fn"].shape()), tuple(np.shape(site["value"]))
        if got != want:
            raise ValueError(
                f"{owner}: observed site {name!r} received data of shape {got}, but the "
                f"model's distribution there has shape {want}; give {name} with that shape "
                "(e.g. y [N] for one output, [N, P] for P outputs)"
            )


def _param_program(model: Callable, kwargs: dict) -> Callable:
    """``(key, args) -> {param: initial value}``: the arrays are arguments, not constants."""

    def program(key: Array, args: tuple) -> dict[str, Array]:
        with block():
            return _param_values(trace(seed(model, key)).get_trace(*args, **kwargs))

    return program


def _sites_of(tr: dict, params: dict[str, Any] | None = None) -> ModelSites:
    """Sort the sites of ``tr``; ``params`` replaces the trace's param values if given."""
    glob, local, layers, sub = [], [], [], []
    if params is None:
        params = {k: np.asarray(v) for k, v in _param_values(tr).items()}
    for name, site in tr.items():
        if site["type"] == "plate":
            size, subsample = site["args"][:2]
            if subsample is not None and subsample != size:
                sub.append(name)
        elif site["type"] == "sample" and not site["is_observed"]:
            (local if site["cond_indep_stack"] else glob).append(name)
            if site["infer"].get(ROLE) == "inducing":
                layers.append(name.rsplit(".", 1)[0])
    inputs = tuple(latent_sites(tr))
    return ModelSites(tuple(glob), tuple(local), params, tuple(layers), tuple(sub), inputs)


def _init_trace(rng_key: Array, model: Callable, args: tuple, kwargs: dict) -> dict:
    """One trace at the initial values (:data:`~ppl_dgp.guides.init_to_model_init`)."""
    return init_trace(rng_key, model, args, kwargs)


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
    key = jax.random.split(rng_key)[1]
    potential_fn = functools.partial(potential_energy, model, (X, y), model_kwargs, enum=False)
    try:
        tr, z, pe, grad = _compiled_init_point(
            key, model, (X, y), model_kwargs, potential_fn, owner
        )
    except _Discrete:
        tr = _init_trace(key, model, (X, y), model_kwargs)
        return _numpyro_initialize(rng_key, model, X, y, owner, model_kwargs, tr), _sites_of(tr)
    sites = _sites_of(tr)
    ok = bool(np.isfinite(pe)) and all(bool(np.all(np.isfinite(g))) for g in grad.values())
    if not ok:
        _raise_not_finite(_init_trace(key, model, (X, y), model_kwargs), owner)
    info = ModelInfo(
        ParamInfo(z, pe, grad),
        potential_fn,
        functools.partial(constrain_fn, model, (X, y), model_kwargs, return_deterministic=True),
        tr,
    )
    return info, sites


class _Discrete(Exception):
    """A latent site with enumerable support: NumPyro's ``initialize_model`` handles it."""


def _compiled_init_point(
    key: Array, model: Callable, args: tuple, kwargs: dict, potential_fn: Callable, owner: str
) -> tuple[dict, dict[str, Array], Array, dict[str, Array]]:
    """The trace at the initial point, the unconstrained point ``z``, and the potential with
    its gradient there, in one compiled call (an eager trace compiles every operation on its
    own: ~60 compilations for a 2-layer DGP). The data are closed over, so the model's checks
    of concrete data run while it is traced. The trace's values and distributions are those
    computed; its other entries are structure (names, plates, ``infer``)."""
    box: dict[str, dict] = {}

    def program() -> tuple:
        tr = init_trace(key, model, args, kwargs)
        box["trace"] = tr
        check_observed_shapes(tr, owner)
        sites = _sites_of(tr, params={})
        if sites.subsampled:
            raise ValueError(
                f"{owner} needs the full data: the model subsamples plate(s) "
                f"{list(sites.subsampled)} (was it built with batch_size?)"
            )
        latent = sites.global_latent + sites.local_latent
        if not latent:
            raise ValueError(
                f"{owner} needs at least one latent sample site; the model has only params: "
                f"{sorted(_param_values(tr))}"
            )
        if any(tr[k]["fn"].has_enumerate_support for k in latent):
            raise _Discrete
        z = {k: biject_to(tr[k]["fn"].support).inv(tr[k]["value"]) for k in latent}
        pe, grad = jax.value_and_grad(potential_fn)(z)
        concrete = {
            k: {"value": s["value"], "fn": s["fn"]}
            if s["type"] == "sample"
            else {"value": s["value"]}
            for k, s in tr.items()
            if s["type"] in ("sample", "param", "deterministic")
        }
        return z, pe, grad, concrete

    z, pe, grad, concrete = jax.jit(program)()
    tr = {name: {**site, **concrete.get(name, {})} for name, site in box["trace"].items()}
    return tr, z, pe, grad


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
    """Yields a function giving the seconds JAX spent compiling so far (union of spans).

    JAX stamps its spans with ``time.time()``; they are clipped to the time since entry, so
    a span already open then (or a clock that moved) never counts time outside the window.
    """
    spans: list[tuple[float, float]] = []
    opened = time.time()

    def listener(event: str, start: float, end: float, **_: Any) -> None:
        if event in _COMPILE_EVENTS and end > opened:
            spans.append((max(start, opened), end))

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


class Timer:
    """What :func:`timed` yields: ``timings()`` gives the Posterior's timing dict so far."""

    def __init__(self, compile_seconds: Callable[[], float]):
        self._compile = compile_seconds
        self._t0 = time.time()  # JAX's compile spans are on this clock
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        """Record ``{phase}_seconds``: wall time from the start of the fit to now."""
        self.phases[f"{phase}_seconds"] = time.time() - self._t0

    def timings(self) -> dict[str, float]:
        """``compile_seconds``, ``run_seconds`` (wall time minus compile) and the phases.

        Both from ``time.time()``, JAX's clock for its compile spans: measured against a
        monotonic clock, a machine that paused mid-compile (a suspended laptop, a VM held by
        its host) showed more compile seconds than wall seconds and a negative run time.
        """
        wall = time.time() - self._t0
        c = min(self._compile(), wall)
        return {"compile_seconds": c, "run_seconds": wall - c, **self.phases}


@contextmanager
def timed() -> Iterator[Timer]:
    """Time a whole fit: compile seconds from JAX's events, the rest as run seconds."""
    with compile_clock() as seconds:
        yield Timer(seconds)


def constrain(z: dict[str, Array], supports: dict[str, Any]) -> dict[str, np.ndarray]:
    """Unconstrained draws ``{site: (..., *shape)}`` mapped to their supports, on the host.

    The transforms act elementwise on the trailing site shape, so any leading
    ``(chain, draw)`` axes pass through.
    """
    return {k: np.asarray(biject_to(supports[k])(v)) for k, v in z.items()}


# -- the registry and fit ------------------------------------------------------------------

#: ``{name: configuration class}`` of every registered method.
METHODS: dict[str, type] = {}


def register_method(cls: type) -> type:
    """Class decorator: register a method configuration under ``cls.name``.

    The class is a frozen dataclass with ``name: ClassVar[str]``, a ``run(rng_key, model, X, y,
    **model_kwargs) -> Posterior`` method (the data are already checked) and optionally
    ``presets: ClassVar[dict[str, dict]]`` (``"smoke"``: tiny settings for tests and
    notebooks; ``"compare"``: the ``ppl-dgp compare`` defaults). Registering also lets a saved
    Posterior store and restore the configuration.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_method: {cls.__name__} needs a class attribute name: str")
    if not callable(getattr(cls, "run", None)):
        raise TypeError(f"register_method: {cls.__name__} needs a run(...) method")
    if name in METHODS and METHODS[name].__qualname__ != cls.__qualname__:
        raise ValueError(f"register_method: the name {name!r} is taken by {METHODS[name]}")
    METHODS[name] = register_type(cls)
    return cls


def make_method(name: str, *, preset: str | None = "compare", **overrides: Any) -> Any:
    """The configuration registered as ``name``, with a preset's settings (``overrides`` win).

    Presets: ``None`` (the class defaults), ``"compare"`` (``ppl-dgp compare``'s defaults),
    ``"smoke"`` (the compare settings shrunk to a smoke size, for tests and notebooks), or any
    other preset the class defines (its settings alone over the defaults, e.g. SGHMC's
    ``"uci"``, ``ppl-dgp bench uci``'s).
    Overrides the configuration has no field for are ignored (``num_chains`` for SVI), so one
    set of command-line options can configure every method.

    Raises:
        ValueError: an unknown name or preset.
    """
    cls = METHODS.get(name)
    if cls is None:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(METHODS)}")
    presets = getattr(cls, "presets", {})
    known = (None, "compare", "smoke", *(k for k in presets if k not in ("compare", "smoke")))
    if preset not in known:
        raise ValueError(
            f"make_method: {name}'s preset must be one of {known}; received {preset!r}"
        )
    settings: dict[str, Any] = {}
    if preset in ("compare", "smoke"):
        settings.update(presets.get("compare", {}))
    if preset == "smoke":
        settings.update(presets.get("smoke", {}))
    elif preset is not None and preset != "compare":
        settings.update(presets[preset])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in settings.items() if k in fields})


def fit(
    method: Any, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
) -> Posterior:
    """Fit ``model`` to ``(X, y)`` with ``method``; every method returns a Posterior.

    Args:
        method: a registered configuration: ``SVI``, ``NUTS``, ``HMC``, ``SGHMC``,
            ``Laplace``, ``MAP``, ``DeepEnsemble`` (see :data:`METHODS`).
        rng_key: JAX PRNG key.
        model: a NumPyro program ``model(X, y=None, **model_kwargs)``.
        X: inputs ``[N, D]``.
        y: targets ``[N]``.
        **model_kwargs: further model keywords.

    Returns:
        :class:`~ppl_dgp.posterior.Posterior` with draws ``(chain, draw, ...)``.

    Example:
        >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
        >>> from ppl_dgp.infer import NUTS, fit
        >>> def model(X, y=None):
        ...     w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("data", X.shape[0]):
        ...         numpyro.sample("y", dist.Normal(w * X[:, 0], 1.0), obs=y)
        >>> X, y = np.ones((5, 1)), np.ones(5)
        >>> post = fit(NUTS(num_warmup=20, num_samples=10, num_chains=1), jax.random.key(0),
        ...            model, X, y)
        >>> post.draws["w"].shape
        (1, 10)
    """
    cls = type(method)
    if METHODS.get(getattr(cls, "name", None)) is not cls:
        raise TypeError(f"fit: unknown method {method!r}; expected one of {sorted(METHODS)}")
    from ppl_dgp.validation import check_rng_key

    if not callable(model):
        raise TypeError(f"fit: model must be a NumPyro program (a callable); received {model!r}")
    check_rng_key(rng_key, owner="fit")
    if y is None:
        raise ValueError("fit: y must be the observed targets [N] or [N, P]; received None")
    check_regression_data(X, y, batch_size=getattr(method, "batch_size", None))
    _warn_data_scale(rng_key, model, X, y, model_kwargs)
    with full_precision_matmuls():  # float32 on a GPU/TPU: no TF32 matmuls in GP algebra
        post = method.run(rng_key, model, jnp.asarray(X), jnp.asarray(y), **model_kwargs)
    # the fitted program travels with the Posterior (and is saved with it: ppl_dgp.load)
    fitted = functools.partial(model, **model_kwargs) if model_kwargs else model
    return post.replace(model=fitted)


#: ``infer[ROLE]`` tags of the layers whose priors assume standardised data.
_UNIT_SCALE_ROLES = ("inducing", "dense")


def _warn_data_scale(rng_key: Array, model: Callable, X: Any, y: Any, kwargs: dict) -> None:
    """A :class:`~ppl_dgp.validation.DataScaleWarning` when the data are far from unit scale and
    the model is built from GP or dense layers (their priors assume standardised data). The
    data are judged on the host first; the model is traced only when they are off scale."""
    issues = data_scale_issues(X, y)
    if not issues:
        return
    with block():
        tr = trace(seed(model, rng_key)).get_trace(X, y, **kwargs)
    layers = sorted({s["infer"].get(ROLE) for s in tr.values() if s["type"] == "sample"}
                    & set(_UNIT_SCALE_ROLES))  # fmt: skip
    if layers:
        warnings.warn(
            f"fit: {', '.join(issues)}: far from unit scale (limit {SCALE_LIMIT:g}x), but the "
            f"model's {' and '.join(layers)} layers put unit-scale priors on lengthscales, "
            "variances and weights; standardise X and y with ppl_dgp.datasets.Standardizer "
            "(and map predictions back with its inverse_transform / MixturePredictive.rescale)",
            DataScaleWarning,
            stacklevel=3,
        )


def accepts_batch_size(model: Callable) -> bool:
    try:
        ps = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "batch_size" or p.kind is p.VAR_KEYWORD for p in ps)
