"""One model, every inference method: ``fit(method, key, model, X, y) -> Posterior``.

A method is a small frozen configuration (:class:`SVI`, :class:`NUTS`, :class:`HMC`); swapping
one for another changes one argument, and every method returns a
:class:`~ppl_dgp.posterior.Posterior` with draws shaped ``(chain, draw, ...)``, so that
:func:`predict` (and later ArviZ conversion and comparison) is written once.

- **NUTS / HMC** run NumPyro's kernels on the model's exact joint density (for a DGP: the
  hyperparameters, the whitened inducing values ``u`` and the non-centred layer noise ``eps``),
  with step-size and (diagonal or dense) mass-matrix adaptation during warm-up and several chains
  vectorised. The per-datum ``{layer}.eps`` draws are not kept (they are nuisance at the
  training inputs; :func:`predict` draws fresh ones at the new inputs).
- **SVI** fits :class:`~ppl_dgp.guides.InducingPointGuide` by the doubly-stochastic bound for
  GP-layer programs (``AutoNormal`` and ``Trace_ELBO`` otherwise) and stores ``num_samples``
  i.i.d. draws of ``q`` as one chain, with the fitted parameters.

The log density is derived from the model once by :func:`initialize` (NumPyro's
``initialize_model``: ``potential_fn``, ``postprocess_fn`` and the initial point, with the
checks below); methods to come (SGHMC, Laplace) start from it and register themselves with
:func:`register_method`.

Timings: ``compile_seconds`` is the time JAX spent tracing, lowering and compiling during the
fit (the union of the spans of JAX's compile events, so nested traces are not counted twice);
``run_seconds`` is the rest of the fit's wall time (for MCMC: warm-up and sampling, which run
as one compiled loop).

Example:
    >>> # post = fit(NUTS(num_chains=4), key, model, X, y)
    >>> # post = fit(SVI(num_steps=2000), key, model, X, y)   # same model, other method
    >>> # pred = predict(key, model, post, X_test)            # MixturePredictive
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from jax import Array
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import block, seed, substitute, trace
from numpyro.infer import MCMC, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.util import ModelInfo, initialize_model

from ppl_dgp.elbo import DoublyStochasticELBO
from ppl_dgp.guides import InducingPointGuide, init_to_model_init
from ppl_dgp.layers import ROLE
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import MixturePredictive, predict_svi, propagate_layers
from ppl_dgp.svi import progress_enabled, run_svi
from ppl_dgp.validation import check_regression_data

__all__ = [
    "HMC",
    "NUTS",
    "SVI",
    "ModelSites",
    "fit",
    "initialize",
    "inspect_model",
    "predict",
    "register_method",
]

_CHAIN_METHODS = ("vectorized", "sequential", "parallel")


def _positive_int(owner: str, **values: Any) -> None:
    for name, v in values.items():
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{owner}.{name} must be a positive int; received {v!r}")


# -- method configurations -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SVI:
    """Stochastic variational inference (Adam), then ``num_samples`` draws of ``q``.

    Args:
        num_steps: optimisation steps.
        learning_rate: Adam's learning rate.
        batch_size: minibatch size ``B`` passed to the model (``None``: all ``N``).
        num_particles: ELBO samples per step.
        hyper: :class:`~ppl_dgp.guides.InducingPointGuide`'s treatment of hyperparameters,
            ``"delta"`` (MAP) or ``"normal"`` (mean-field in unconstrained space).
        num_samples: draws of ``q`` stored in the Posterior (one chain).
    """

    num_steps: int = 2000
    learning_rate: float = 1e-2
    batch_size: int | None = None
    num_particles: int = 1
    hyper: str = "delta"
    num_samples: int = 100
    name: ClassVar[str] = "svi"

    def __post_init__(self) -> None:
        _positive_int("SVI", num_steps=self.num_steps, num_particles=self.num_particles,
                      num_samples=self.num_samples)  # fmt: skip
        if self.batch_size is not None:
            _positive_int("SVI", batch_size=self.batch_size)
        if not self.learning_rate > 0:
            raise ValueError(f"SVI.learning_rate must be > 0; received {self.learning_rate}")
        if self.hyper not in ("delta", "normal"):
            raise ValueError(f"SVI.hyper must be 'delta' or 'normal'; received {self.hyper!r}")


def _check_mcmc(owner: str, cfg: Any) -> None:
    _positive_int(owner, num_warmup=cfg.num_warmup, num_samples=cfg.num_samples,
                  num_chains=cfg.num_chains)  # fmt: skip
    if not 0 < cfg.target_accept_prob < 1:
        raise ValueError(
            f"{owner}.target_accept_prob must be in (0, 1); received {cfg.target_accept_prob}"
        )
    if cfg.chain_method not in _CHAIN_METHODS:
        raise ValueError(
            f"{owner}.chain_method must be one of {_CHAIN_METHODS}; received {cfg.chain_method!r}"
        )


@dataclasses.dataclass(frozen=True)
class NUTS:
    """The No-U-Turn sampler (NumPyro's ``NUTS``) on the model's exact joint.

    Args:
        num_warmup: warm-up (adaptation) iterations per chain, discarded.
        num_samples: kept draws per chain.
        num_chains: independent chains.
        target_accept_prob: step-size adaptation target.
        max_tree_depth: at most ``2**max_tree_depth - 1`` leapfrog steps per iteration.
        dense_mass: adapt a dense (else diagonal) mass matrix.
        chain_method: ``"vectorized"``, ``"sequential"`` or ``"parallel"`` (one device each).
    """

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 4
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool = False
    chain_method: str = "vectorized"
    name: ClassVar[str] = "nuts"

    def __post_init__(self) -> None:
        _check_mcmc("NUTS", self)
        _positive_int("NUTS", max_tree_depth=self.max_tree_depth)


@dataclasses.dataclass(frozen=True)
class HMC:
    """Hamiltonian Monte Carlo with a fixed number of leapfrog steps (NumPyro's ``HMC``).

    Args:
        num_warmup, num_samples, num_chains, target_accept_prob, dense_mass, chain_method:
            as for :class:`NUTS`.
        step_size: initial leapfrog step size.
        num_steps: leapfrog steps per iteration.
        adapt_step_size: adapt the step size during warm-up (dual averaging).
        adapt_mass_matrix: adapt the mass matrix during warm-up.
    """

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 4
    step_size: float = 0.1
    num_steps: int = 10
    adapt_step_size: bool = True
    adapt_mass_matrix: bool = True
    target_accept_prob: float = 0.8
    dense_mass: bool = False
    chain_method: str = "vectorized"
    name: ClassVar[str] = "hmc"

    def __post_init__(self) -> None:
        _check_mcmc("HMC", self)
        _positive_int("HMC", num_steps=self.num_steps)
        if not self.step_size > 0:
            raise ValueError(f"HMC.step_size must be > 0; received {self.step_size}")


def _config(method: Any) -> dict[str, Any]:
    """The method's fields as plain JSON values (what a saved Posterior stores)."""
    return json.loads(json.dumps(dataclasses.asdict(method)))


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


def _nonfinite_sites(rng_key: Array, model: Callable, args: tuple, kwargs: dict) -> list[str]:
    """Sample sites whose log density is not finite at the initial values."""
    with block():
        tr = trace(substitute(seed(model, rng_key), substitute_fn=init_to_model_init)).get_trace(
            *args, **kwargs
        )
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
    ``info.potential_fn(z)`` is the negative log joint in unconstrained space,
    ``info.postprocess_fn(z)`` maps back to constrained sites and ``info.param_info.z`` is the
    initial point (:data:`~ppl_dgp.guides.init_to_model_init`).

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
    sites = inspect_model(rng_key, model, X, y, **model_kwargs)
    if sites.subsampled:
        raise ValueError(
            f"{owner} needs the full data: the model subsamples plate(s) {list(sites.subsampled)} "
            "(was it built with batch_size?)"
        )
    if not (sites.global_latent or sites.local_latent):
        raise ValueError(
            f"{owner} needs at least one latent sample site; the model has only params: "
            f"{sorted(sites.params)}"
        )
    try:
        info = initialize_model(
            rng_key,
            model,
            init_strategy=init_to_model_init,
            model_args=(X, y),
            model_kwargs=model_kwargs,
        )
    except RuntimeError as err:
        bad = _nonfinite_sites(rng_key, model, (X, y), model_kwargs)
        where = f"at sites {bad}" if bad else "in its gradient"
        raise ValueError(
            f"{owner}: the model's log density is not finite at the initial values ({where}); "
            "check the priors' support, the Hyper init values and the data"
        ) from err
    return info, sites


# -- timing --------------------------------------------------------------------------------

_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)


@contextmanager
def _compile_clock() -> Iterator[Callable[[], float]]:
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
        method: a configuration: :class:`SVI`, :class:`NUTS`, :class:`HMC`.
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


@register_method(NUTS)
@register_method(HMC)
def _fit_mcmc(
    method: NUTS | HMC, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
) -> Posterior:
    owner = type(method).__name__
    key_init, key_run = jax.random.split(rng_key)
    with _compile_clock() as compile_seconds:
        t0 = time.perf_counter()
        info, sites = initialize(key_init, model, X, y, owner=owner, **model_kwargs)
        # The kernels run on the shared potential, from the one initial point, every chain.
        common = dict(
            potential_fn=jax.jit(info.potential_fn),  # one compile, not op by op
            target_accept_prob=method.target_accept_prob,
            dense_mass=method.dense_mass,
        )
        if isinstance(method, NUTS):
            kernel = numpyro.infer.NUTS(max_tree_depth=method.max_tree_depth, **common)
        else:
            kernel = numpyro.infer.HMC(
                step_size=method.step_size,
                num_steps=method.num_steps,
                trajectory_length=None,
                adapt_step_size=method.adapt_step_size,
                adapt_mass_matrix=method.adapt_mass_matrix,
                **common,
            )
        mcmc = MCMC(
            kernel,
            num_warmup=method.num_warmup,
            num_samples=method.num_samples,
            num_chains=method.num_chains,
            chain_method=method.chain_method,
            progress_bar=progress_enabled(None),
        )
        z0 = info.param_info.z
        if method.num_chains > 1:
            z0 = jax.tree.map(lambda a: jnp.broadcast_to(a, (method.num_chains,) + a.shape), z0)
        extra = ("diverging", "accept_prob", "num_steps", "energy", "adapt_state.step_size")
        extra += tuple(f"~z.{name}" for name in sites.local_latent)  # per-datum: not kept
        mcmc.run(key_run, init_params=z0, extra_fields=extra)
        z = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        t1 = time.perf_counter()
        compile_s = compile_seconds()
    draws = {}
    for name in sites.global_latent:  # unconstrained -> constrained, elementwise per draw
        transform = biject_to(info.model_trace[name]["fn"].support)
        draws[name] = np.asarray(transform(z[name]))
    stats = {
        ("step_size" if k == "adapt_state.step_size" else k): np.asarray(v)
        for k, v in mcmc.get_extra_fields(group_by_chain=True).items()
    }
    if isinstance(method, NUTS):  # as ArviZ defines it for NumPyro
        stats["tree_depth"] = np.log2(np.maximum(stats["num_steps"], 1)).astype(np.int64) + 1
    return Posterior(
        draws=draws,
        sample_stats=stats,
        params=dict(sites.params),
        method=method.name,
        config=_config(method),
        timings={"compile_seconds": compile_s, "run_seconds": (t1 - t0) - compile_s},
    )


def _accepts_batch_size(model: Callable) -> bool:
    try:
        ps = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "batch_size" or p.kind is p.VAR_KEYWORD for p in ps)


@register_method(SVI)
def _fit_svi(
    method: SVI, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
) -> Posterior:
    if method.batch_size is not None:
        if model_kwargs.get("batch_size") is not None:
            raise ValueError(
                f"fit: batch_size given twice (SVI.batch_size={method.batch_size} and the model "
                f"keyword batch_size={model_kwargs['batch_size']}); give it once, in SVI"
            )
        if not _accepts_batch_size(model):
            raise ValueError("SVI.batch_size: the model takes no batch_size keyword")
        model_kwargs = {**model_kwargs, "batch_size": method.batch_size}
    key_fit, key_draws = jax.random.split(rng_key)
    sites = inspect_model(key_fit, model, X, y, **model_kwargs)
    if sites.gp_layers:
        guide = InducingPointGuide(model, hyper=method.hyper)
        elbo, guide_name = DoublyStochasticELBO(num_particles=method.num_particles), guide.__class__
    else:
        guide = AutoNormal(model, init_loc_fn=init_to_model_init)
        elbo, guide_name = Trace_ELBO(num_particles=method.num_particles), guide.__class__
    result = run_svi(
        key_fit,
        model,
        guide,
        X,
        y,
        optimizer=optax.adam(method.learning_rate),
        num_steps=method.num_steps,
        elbo=elbo,
        **model_kwargs,
    )
    draws = guide.sample_posterior(
        key_draws, result.params, X, y, sample_shape=(method.num_samples,), **model_kwargs
    )
    keep = set(sites.global_latent)
    draws = {k: np.asarray(v)[None] for k, v in draws.items() if k in keep}
    return Posterior(
        draws=draws,
        sample_stats={"loss": np.asarray(result.losses)[None]},
        params={k: np.asarray(v) for k, v in result.params.items()},
        method=method.name,
        config={**_config(method), "guide": guide_name.__name__},
        timings={"compile_seconds": result.compile_seconds, "run_seconds": result.run_seconds},
    )


# -- predict -------------------------------------------------------------------------------


def _spread(total: int, num: int) -> np.ndarray:
    """``min(num, total)`` indices spread evenly over ``range(total)`` (chain-major order)."""
    if num >= total:
        return np.arange(total)
    return np.round(np.linspace(0, total - 1, num)).astype(int)


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

    - SVI with the inducing guide: :func:`~ppl_dgp.predict.predict_svi` (``u`` integrated out
      against ``q(u)``, ``num_samples`` passes through the inner layers).
    - Every other posterior: ``S = min(num_samples, chains * draws)`` draws spread evenly over
      the chains; per draw the model runs at ``X_new`` with the draw and ``posterior.params``
      substituted and fresh layer noise. For a GP program the component is the last layer's
      prior conditional ``N(mean, var + noise)`` given the draw's ``u`` (read from
      :func:`~ppl_dgp.predict.propagate_layers`, compiled once per model, as
      :func:`~ppl_dgp.predict.layer_moments`
      does); for any other model with a Normal ``likelihood_site``, its ``loc`` and ``scale**2``.

    Args:
        rng_key: key for the layer noise (and the SVI inner-layer samples).
        model: the program that was fitted.
        posterior: from :func:`fit` (or :meth:`Posterior.load`).
        X_new: inputs ``[N, D]``.
        num_samples: mixture components ``S`` (at most the number of draws, except for SVI
            with the inducing guide).
        likelihood_site: the Gaussian observation site.
        **model_kwargs: further model keywords (``batch_size`` is forced to ``None``).

    Returns:
        :class:`~ppl_dgp.predict.MixturePredictive`, ``means``/``variances`` ``[S, N]``.
    """
    _positive_int("predict", num_samples=num_samples)
    X_new = jnp.asarray(X_new)
    check_regression_data(X_new, None)
    if _accepts_batch_size(model):
        model_kwargs = {**model_kwargs, "batch_size": None}
    params = {k: jnp.asarray(v) for k, v in posterior.params.items()}
    if posterior.config.get("guide") == "InducingPointGuide":
        # A fresh guide: predict_svi learns its structure from one call at X_new.
        guide = InducingPointGuide(model, hyper=posterior.config["hyper"])
        return predict_svi(
            rng_key,
            model,
            guide,
            params,
            X_new,
            num_samples=num_samples,
            likelihood_site=likelihood_site,
            **model_kwargs,
        )
    flat = posterior.flat()
    if not flat:
        raise ValueError(f"predict: the {posterior.method!r} posterior has no draws")
    total = next(iter(flat.values())).shape[0]
    idx = _spread(total, num_samples)
    draws = {k: jnp.asarray(v[idx]) for k, v in flat.items()}

    S = len(idx)
    moments, noise = propagate_layers(
        rng_key, model, draws, params, X_new, num_samples=S, **model_kwargs
    )  # compiled once per model; layers without q(u) use p(f | u) given the drawn u
    if moments and likelihood_site in noise:
        _, mean, var = moments[list(moments)[-1]]  # [S, N, 1]
        s2 = noise[likelihood_site][:, None]
        return MixturePredictive(mean[..., 0], var[..., 0] + s2, var[..., 0])

    def one(key: Array, draw: dict[str, Array]) -> tuple[Array, Array, Array]:
        tr = trace(substitute(seed(model, key), data={**params, **draw})).get_trace(
            X_new, None, **model_kwargs
        )
        site = tr.get(likelihood_site)
        fn = None if site is None else site["fn"]
        if not isinstance(fn, numpyro.distributions.Normal):
            raise NotImplementedError(
                f"predict: site {likelihood_site!r} is not a Normal observation "
                f"({type(fn).__name__}); only Gaussian likelihoods are supported"
            )
        loc = jnp.broadcast_to(fn.loc, fn.batch_shape)
        scale = jnp.broadcast_to(fn.scale, fn.batch_shape)
        return loc, scale**2, jnp.zeros_like(loc)

    keys = jax.random.split(rng_key, S)
    means, variances, f_variances = jax.jit(jax.vmap(one))(keys, draws)
    return MixturePredictive(means, variances, f_variances)
