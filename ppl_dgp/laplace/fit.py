"""The Laplace approximation behind :func:`~ppl_dgp.infer.fit` (Laplace Redux for BNNs).

``fit(Laplace(...), key, model, X, y)``:

1. **MAP** of the model's joint density over its latent sites in unconstrained space (the
   shared ``potential_fn`` from :func:`~ppl_dgp.infer.core.initialize`), by Adam in one jitted
   ``lax.scan`` loop on ``potential / N``. Per-datum latents (a DGP's inner-layer ``eps``)
   are held at ``eps = 0`` by default (``local_latents="fixed"``; their joint MAP is
   degenerate) or optimised too (``"map"``).
2. **Curvature** over a subset ``theta`` of the global latent sites (``subset_of_weights``:
   ``"all"``, ``"last_layer"`` or a tuple of site names); every other latent site is held at
   its MAP value (the Gaussian is the conditional
   ``q(theta | rest = MAP)``, not the marginal of a joint Gaussian: the per-datum block would
   grow with ``N``). ``curvature``:

   - ``"hessian"``: the exact Hessian of the potential (any model, any site);
   - ``"ggn"`` / ``"ef"``: generalised Gauss-Newton / empirical Fisher of the likelihood,
     built from the traced output site (``f``, ``[N, K]``) and the likelihood site's
     distribution (Normal, Bernoulli or Categorical on logits), plus the Gaussian prior's
     precision read from the subset sites' ``Normal`` priors;
   - ``"auto"``: ``"ggn"`` when the model records the output site, else ``"hessian"``.

   ``hessian_structure``: ``"full"``, ``"diag"`` or ``"kron"`` (KFAC per
   :func:`~ppl_dgp.dense.dense` layer). A Hessian that is not positive definite is repaired
   (non-positive eigenvalues replaced by ``max(|lambda|, 1)``) with a
   :class:`NotPositiveDefiniteWarning`.
3. Optionally the prior precision (``prior_structure`` ``"scalar"`` or ``"layer"``) and the
   Gaussian noise are **tuned** by maximising the Laplace evidence (``tune="marglik"``, Adam on
   log-values; ``"fixed_point"``, MacKay's update; ``"grid"``).
4. ``num_samples`` draws ``theta ~ N(theta_MAP, P^-1)`` (with the other global sites at their
   MAP), constrained, shaped ``(1, S, ...)``. ``Posterior.approx`` is the typed
   :class:`~ppl_dgp.laplace.approx.LaplaceApprox` (the MAP, the precision in its structure,
   the prior precision, the noise scale, the evidence) that the linearised predictives of
   :mod:`ppl_dgp.laplace.predictive` read; ``Posterior.traces["map_loss"]`` the MAP's loss.

Repeated fits of the same model object to the same data reuse the derived log density and the
compiled curvature/tuning core (cached per model object and static configuration), so a refit
costs milliseconds after the first.

Example:
    >>> # from ppl_dgp.models import bnn
    >>> # model = functools.partial(bnn.mlp_binary, hidden=(32,))
    >>> # post = fit(Laplace("last_layer", "full", tune="marglik"), key, model, X, y)
    >>> # from ppl_dgp.predictive import predict_proba
    >>> # p1 = predict_proba(model, post, X_test)      # probit GLM predictive, [N]

References:
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS.
    MacKay (1992), "The Evidence Framework Applied to Classification Networks", Neural Comp.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from numpyro.distributions.transforms import biject_to

from ppl_dgp import curvature as C
from ppl_dgp.infer.core import initialize, positive_int, register_method, timed
from ppl_dgp.laplace.approx import (
    DiagPrecision,
    FullPrecision,
    KronPrecision,
    LaplaceApprox,
    Layout,
)
from ppl_dgp.laplace.ggn import (
    _check_memory,
    _Curv,
    _dense_layers,
    _ggn_core,
    _ggn_core_jit,
    _groups,
    _Layout,
    _likelihood_name,
    _logdet_post,
    _normal_base,
    _Spec,
)
from ppl_dgp.posterior import Posterior

__all__ = [
    "Laplace",
    "NotPositiveDefiniteWarning",
]

_SUBSETS = ("all", "last_layer")
_STRUCTURES = ("full", "diag", "kron")
_CURVATURES = ("auto", "ggn", "ef", "hessian")
_TUNES = ("none", "marglik", "fixed_point", "grid")
_PRIOR_STRUCTURES = ("scalar", "layer")


class NotPositiveDefiniteWarning(UserWarning):
    """The curvature was not positive definite at the MAP and was repaired."""


@register_method
@dataclasses.dataclass(frozen=True)
class Laplace:
    """Laplace approximation at the MAP (see the module docstring).

    Args:
        subset_of_weights: ``"all"`` global latent sites (for GGN/EF: those the output depends
            on), ``"last_layer"`` (the last dense layer's ``W`` and ``b``) or a tuple of site
            names.
        hessian_structure: ``"full"``, ``"diag"`` or ``"kron"``.
        curvature: ``"auto"``, ``"ggn"``, ``"ef"`` or ``"hessian"``.
        num_steps: MAP optimisation steps (Adam); 0 takes the model's initial point as the MAP
            (a warm start from known weights).
        learning_rate: Adam's learning rate on ``potential / N``.
        num_samples: draws of the Gaussian stored in the Posterior.
        tune: ``"none"``, ``"marglik"``, ``"fixed_point"`` or ``"grid"``.
        prior_structure: tuned prior precision: ``"scalar"`` or one per ``"layer"``.
        tune_noise: also tune a Gaussian likelihood's noise scale (``marglik``/``fixed_point``).
        tune_steps: Adam steps (``marglik``) or iterations (``fixed_point``).
        grid: prior precisions tried by ``tune="grid"``.
        memory_limit_gb: the most memory a dense ``[P, P]`` curvature or ``[N, K, P]`` Jacobian
            may take.
        output_site: the deterministic network output ``f`` ``[N, K]``.
        likelihood_site: the observed site.
        local_latents: per-datum latent sites (a DGP's inner-layer ``eps``): ``"fixed"`` holds
            them at their initial value (``eps = 0``: the inner layers pass their conditional
            means) while the MAP is found, ``"map"`` optimises them jointly. The joint MAP of a
            model with a latent per datum is degenerate (each ``eps`` fits its own point and
            the kernels' lengthscales collapse), so ``"fixed"`` is the default; either way the
            Gaussian is over the subset given the local sites, and prediction draws fresh ones.
    """

    subset_of_weights: str | tuple[str, ...] = "all"
    hessian_structure: str = "full"
    curvature: str = "auto"
    num_steps: int = 1000
    learning_rate: float = 1e-2
    num_samples: int = 100
    tune: str = "none"
    prior_structure: str = "scalar"
    tune_noise: bool = False
    tune_steps: int = 100
    grid: tuple[float, ...] = tuple(float(v) for v in np.logspace(-3, 3, 25))
    memory_limit_gb: float = 2.0
    output_site: str = "f"
    likelihood_site: str = "y"
    local_latents: str = "fixed"
    name: ClassVar[str] = "laplace"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "compare": {"num_samples": 400},
        "smoke": {"num_steps": 200, "num_samples": 100},
    }

    def run(
        self, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
    ) -> Posterior:
        """Fit (see :func:`~ppl_dgp.infer.fit`); the data are already checked."""
        return _fit_laplace(self, rng_key, model, X, y, **model_kwargs)

    def __post_init__(self) -> None:
        positive_int("Laplace", num_samples=self.num_samples, tune_steps=self.tune_steps)
        if not isinstance(self.num_steps, int) or self.num_steps < 0:
            raise ValueError(f"Laplace.num_steps must be an int >= 0; received {self.num_steps!r}")
        s = self.subset_of_weights
        if isinstance(s, list):
            object.__setattr__(self, "subset_of_weights", s := tuple(s))
        if isinstance(s, tuple):
            if not s or not all(isinstance(n, str) for n in s):
                raise ValueError(
                    "Laplace.subset_of_weights must be 'all', 'last_layer' or a non-empty tuple "
                    f"of site names; received {s!r}"
                )
        elif s not in _SUBSETS:
            raise ValueError(
                f"Laplace.subset_of_weights must be one of {_SUBSETS} or a tuple of site names; "
                f"received {s!r}"
            )
        for field, allowed in (
            ("hessian_structure", _STRUCTURES),
            ("curvature", _CURVATURES),
            ("tune", _TUNES),
            ("prior_structure", _PRIOR_STRUCTURES),
            ("local_latents", ("fixed", "map")),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(
                    f"Laplace.{field} must be one of {allowed}; received {getattr(self, field)!r}"
                )
        if not self.learning_rate > 0:
            raise ValueError(f"Laplace.learning_rate must be > 0; received {self.learning_rate}")
        if not self.memory_limit_gb > 0:
            raise ValueError(
                f"Laplace.memory_limit_gb must be > 0; received {self.memory_limit_gb}"
            )
        grid = tuple(float(g) for g in self.grid)
        if not grid or not all(g > 0 and math.isfinite(g) for g in grid):
            raise ValueError(f"Laplace.grid must hold finite values > 0; received {self.grid!r}")
        object.__setattr__(self, "grid", grid)
        if self.curvature == "hessian" and self.hessian_structure == "kron":
            raise ValueError(
                "Laplace.hessian_structure='kron' needs curvature 'ggn' or 'ef'; received "
                "curvature='hessian'"
            )
        if self.curvature == "hessian" and self.tune != "none":
            raise ValueError(
                "Laplace.tune needs curvature 'ggn' or 'ef' (the exact Hessian contains the "
                f"prior); received tune={self.tune!r} with curvature='hessian'"
            )


# -- the MAP -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _map_runner(potential: Callable, num_steps: int, learning_rate: float, scale: float):
    """Adam on ``scale * potential({**fixed, **z})`` over ``z`` in one jitted ``lax.scan``
    (cached per potential; the held sites ``fixed`` are an argument, so a refit reuses it)."""
    opt = optax.adam(learning_rate)

    @jax.jit
    def run(z: dict, fixed: dict) -> tuple[dict, Array]:
        def step(carry: tuple, _: None) -> tuple:
            z, state = carry
            loss, g = jax.value_and_grad(lambda v: scale * potential({**fixed, **v}))(z)
            updates, state = opt.update(g, state, z)
            return (optax.apply_updates(z, updates), state), loss

        (z, _), losses = jax.lax.scan(step, (z, opt.init(z)), None, length=num_steps)
        return z, losses

    return run


def _run_map(
    potential: Callable, z0: dict, num_steps: int, learning_rate: float, scale: float,
    fixed: dict | None = None,
) -> tuple[dict, Array]:  # fmt: skip
    """The MAP by Adam from ``z0`` with the sites ``fixed`` held; returns
    ``(z, losses [num_steps])``."""
    return _map_runner(potential, num_steps, learning_rate, scale)(z0, fixed or {})


_INIT_CACHE: collections.OrderedDict = collections.OrderedDict()
_INIT_CACHE_SIZE = 4


def _initialize_cached(key: Array, model: Callable, X: Array, y: Array, **kwargs: Any) -> tuple:
    """:func:`~ppl_dgp.infer.core.initialize`, memoised for the last few (model object, key, data,
    keywords): a refit of the same model to the same data reuses its log density (and so its
    compiled MAP loop). Unhashable keywords skip the cache."""
    try:
        ck = (model, np.asarray(jax.random.key_data(key)).tobytes(),
              *((a.shape, str(a.dtype), np.asarray(a).tobytes()) for a in (X, y)),
              tuple(sorted(kwargs.items())))  # fmt: skip
        hash(ck)
    except TypeError:
        return initialize(key, model, X, y, owner="Laplace", **kwargs)
    if ck in _INIT_CACHE:
        _INIT_CACHE.move_to_end(ck)
        return _INIT_CACHE[ck]
    res = initialize(key, model, X, y, owner="Laplace", **kwargs)
    _INIT_CACHE[ck] = res
    while len(_INIT_CACHE) > _INIT_CACHE_SIZE:
        _INIT_CACHE.popitem(last=False)
    return res


# -- fit ---------------------------------------------------------------------------------------


def _fit_laplace(
    method: Laplace, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
) -> Posterior:
    key_init, key_draws = jax.random.split(rng_key)
    N = X.shape[0]
    with timed() as timer:
        info, sites = _initialize_cached(key_init, model, X, y, **model_kwargs)
        potential = info.potential_fn
        z0 = info.param_info.z
        local = [k for k in sites.local_latent if k in z0]
        if method.num_steps and local and method.local_latents == "fixed":
            fixed = {k: z0[k] for k in local}
            z_free, losses = _run_map(
                potential,
                {k: v for k, v in z0.items() if k not in fixed},
                method.num_steps,
                method.learning_rate,
                1.0 / N,
                fixed,
            )
            z_map = {**fixed, **z_free}
        elif method.num_steps:
            z_map, losses = _run_map(potential, z0, method.num_steps, method.learning_rate, 1.0 / N)
        else:  # a warm start: the initial point is the MAP
            z_map, losses = z0, np.zeros(0)
        z_map = jax.block_until_ready(z_map)
        bad = [k for k, v in z_map.items() if not np.all(np.isfinite(np.asarray(v)))]
        last = float(losses[-1]) if method.num_steps else 0.0
        if bad or not np.isfinite(last):
            raise ValueError(
                f"Laplace: the MAP is not finite (sites {bad}, loss {last}) "
                f"after num_steps={method.num_steps} with learning_rate={method.learning_rate}; "
                "try a smaller learning_rate or check the data and priors"
            )
        timer.mark("map")
        mtr = info.model_trace
        layers_all = _dense_layers(mtr)
        curvature = method.curvature
        if curvature == "auto":
            has_f = method.output_site in mtr and mtr[method.output_site]["type"] == "deterministic"
            curvature = "ggn" if has_f else "hessian"
        if curvature != "hessian" and method.output_site not in mtr:
            raise ValueError(
                f"Laplace(curvature={curvature!r}) needs the network output recorded as the "
                f"deterministic site output_site={method.output_site!r}; the model has "
                f"{sorted(k for k, s in mtr.items() if s['type'] == 'deterministic')}"
            )
        names = _select_subset(method, curvature, sites, layers_all)
        layout = _Layout(names, tuple(tuple(np.shape(z_map[n])) for n in names))
        layers = {k: v for k, v in layers_all.items() if set(v) <= set(names)}
        if method.hessian_structure == "kron":
            stray = [n for n in names if not any(n in v for v in layers.values())]
            if stray:
                raise ValueError(
                    f"Laplace(hessian_structure='kron') needs every subset site to be a dense "
                    f"layer's W or b (both of a layer); received {stray} in "
                    f"subset_of_weights={method.subset_of_weights!r}"
                )
        groups, G, group_names = _groups(method, layout, layers)
        fitter = _fit_hessian if curvature == "hessian" else _fit_ggn
        res = fitter(method, curvature, model, info, sites, z_map, layout, layers, groups, G,
                     X, y, key_draws, model_kwargs)  # fmt: skip
        jax.block_until_ready(res.draws)
        timings = timer.timings()
    p = res.params
    if "precision_chol" in p:
        precision: Any = FullPrecision(p["precision_chol"])
    elif "posterior_variance" in p:
        precision = DiagPrecision(p["posterior_variance"])
    else:
        precision = KronPrecision(
            {layer: {k: p[f"kron.{layer}.{k}"] for k in C.KronBlock._fields} for layer in layers}
        )
    approx = LaplaceApprox(
        theta_map=p["theta_map"],
        precision=precision,
        prior_precision=p["prior_precision"],
        prior_mean=p["prior_mean"],
        sigma_noise=p["sigma_noise"],
        log_marglik=p["log_marglik"],
        curvature_scale=p["curvature_scale"],
        map={k[len("map.") :]: v for k, v in p.items() if k.startswith("map.")},
        layout=Layout(layout.names, layout.shapes),
        likelihood=res.likelihood,
        curvature=curvature,
        dense_layers=tuple((k, tuple(v)) for k, v in layers.items()),
        output_site=method.output_site,
        num_clipped=res.num_clipped,
        prior_groups=tuple(group_names),
    )
    return Posterior(
        draws=res.draws,
        method=method,
        traces={"map_loss": np.asarray(losses)},
        params={k: np.asarray(v) for k, v in sites.params.items()},
        approx=approx,
        timings=timings,
    )


class _Result(NamedTuple):
    """What a curvature path hands back to :func:`_fit_laplace` (host arrays)."""

    draws: dict[str, np.ndarray]  # {site: (1, S, ...)} constrained
    params: dict[str, np.ndarray]  # without the "laplace." prefix
    likelihood: str | None
    num_clipped: int


def _draws_of(
    global_latent: tuple[str, ...], layout: _Layout, thetas: np.ndarray, cmap: dict
) -> tuple[dict, dict]:
    """Host-side draws ``{site: (1, S, ...)}`` (subset sites from ``thetas [S, P]``, the others
    at their MAP) and ``{"map.{site}": MAP}``; the subset sites have real support here."""
    S = thetas.shape[0]
    off = layout.offsets()
    draws, maps = {}, {}
    for name in global_latent:
        v = np.asarray(cmap[name])
        if name in off:
            a, b = off[name]
            draws[name] = thetas[None, :, a:b].reshape((1, S, *v.shape))
        else:
            draws[name] = np.broadcast_to(v, (1, S, *v.shape)).copy()
        maps[f"map.{name}"] = v
    return draws, maps


def _fit_ggn(method, curvature, model, info, sites, z_map, layout, layers, groups, G, X, y,
             key_draws, model_kwargs) -> _Result:  # fmt: skip
    """GGN / empirical Fisher: one call of the compiled core, one transfer to the host."""
    mtr = info.model_trace
    if method.likelihood_site not in mtr:
        raise ValueError(
            f"Laplace.likelihood_site={method.likelihood_site!r} is not a site of the model"
        )
    lik_name = _likelihood_name(mtr[method.likelihood_site]["fn"], method.likelihood_site)
    for n in layout.names:  # the prior's precision enters the posterior
        _normal_base(mtr[n]["fn"], n)
    unit = lik_name == "gaussian" and curvature == "ggn"  # curvature at sigma = 1
    if method.tune_noise and not unit:
        raise ValueError(
            "Laplace.tune_noise needs a Gaussian likelihood with curvature 'ggn'; "
            f"received likelihood {lik_name!r} with curvature {curvature!r}"
        )
    if method.tune == "grid" and (G != 1 or method.tune_noise):
        raise ValueError(
            "Laplace(tune='grid') tunes one scalar prior precision; received "
            f"prior_structure={method.prior_structure!r}, tune_noise={method.tune_noise}"
        )
    spec = _Spec(
        method,
        curvature,
        lik_name,
        layout,
        tuple((k, tuple(v)) for k, v in layers.items()),
        tuple(int(g) for g in groups),
        G,
        tuple(sorted(model_kwargs.items())),
        tuple(sites.global_latent),
    )
    try:
        hash(spec)
        core = functools.partial(_ggn_core_jit, model, spec)
    except TypeError:  # unhashable model keywords: compile for this call only
        core = jax.jit(functools.partial(_ggn_core, model, spec))
    out = jax.device_get(core(z_map, dict(sites.params), X, y, key_draws))
    if not float(out["eta_f_gap"]) <= 1e-8 * (1.0 + float(out["f_scale"])):
        raise ValueError(
            f"Laplace: the likelihood site {method.likelihood_site!r}'s parameter must "
            f"be the output site {method.output_site!r}; they differ by "
            f"{float(out['eta_f_gap'])} at the MAP"
        )
    draws, maps = _draws_of(tuple(sites.global_latent), layout, out["thetas"], out["cmap"])
    params = {
        "theta_map": out["theta_map"],
        "prior_precision": out["delta"],
        "prior_mean": out["mu0"],
        "sigma_noise": out["sigma"],
        "log_marglik": out["lml"],
        "curvature_scale": out["scale"],
        **maps,
    }
    for k, v in out.items():
        if k in ("precision_chol", "posterior_variance") or k.startswith("kron."):
            params[k] = v
    return _Result(draws, params, lik_name, 0)


def _fit_hessian(method, curvature, model, info, sites, z_map, layout, layers, groups, G, X,
                 y, key_draws, model_kwargs) -> _Result:  # fmt: skip
    """The exact Hessian of the potential (any model, any site), repaired if not PD."""
    del curvature, model, groups, G, X, y, model_kwargs
    potential, mtr, P = info.potential_fn, info.model_trace, layout.P
    theta_map = layout.ravel(z_map)
    _check_memory(method, "the Hessian", (P, P))
    H = _hessian_runner(potential, layout)(theta_map, z_map)
    if method.hessian_structure == "full":
        # non-positive eigenvalues -> max(|lam|, 1): unit prior-scale curvature
        H, n_bad = C.make_positive_definite(H, floor=1.0)
    else:
        H = jnp.diagonal(H)
        n_bad = jnp.sum(H <= 0)
        H = jnp.where(H > 0, H, jnp.maximum(jnp.abs(H), 1.0))
    n_clipped = int(n_bad)
    if n_clipped:
        warnings.warn(
            f"Laplace: the Hessian of the potential at the MAP has {n_clipped} "
            "non-positive eigenvalue(s) (diagonal entries for 'diag'); replaced by "
            "max(|lambda|, 1) to make it positive definite (is the MAP converged? raise "
            "num_steps)",
            NotPositiveDefiniteWarning,
            stacklevel=4,
        )
    curv = _Curv(method.hessian_structure, H=H, includes_prior=True)
    lml = _hess_evidence(potential, z_map, curv, layout, layers)
    params = {
        "theta_map": np.asarray(theta_map),
        "prior_precision": np.ones(P),
        "prior_mean": np.zeros(P),
        "sigma_noise": np.asarray(1.0),
        "log_marglik": np.asarray(lml),
        "curvature_scale": np.asarray(1.0),
    }
    eps = jax.random.normal(key_draws, (method.num_samples, P))
    if curv.structure == "full":
        Lc = jnp.linalg.cholesky(curv.H)
        params["precision_chol"] = np.asarray(Lc)
        dtheta = jax.scipy.linalg.solve_triangular(Lc.T, eps.T, lower=False).T
    else:
        params["posterior_variance"] = np.asarray(1.0 / curv.H)
        dtheta = eps * jnp.sqrt(params["posterior_variance"])
    zs = layout.unravel_batch(theta_map + dtheta)  # [S, P] -> {site: [S, ...]}
    draws = {}
    for name in sites.global_latent:
        transform = biject_to(mtr[name]["fn"].support)
        v = zs[name] if name in layout.names else jnp.broadcast_to(
            z_map[name], (method.num_samples,) + jnp.shape(z_map[name])
        )  # fmt: skip
        draws[name] = np.asarray(transform(v))[None]
        params[f"map.{name}"] = np.asarray(transform(z_map[name]))
    return _Result(draws, params, None, n_clipped)


@functools.lru_cache(maxsize=8)
def _hessian_runner(potential: Callable, layout: _Layout) -> Callable:
    """``(theta [P], z) -> d^2 U / d theta^2 [P, P]`` with the other sites of ``z`` held fixed,
    compiled once per (potential, subset layout): a refit of the same model reuses it."""

    def hess(theta: Array, z: dict) -> Array:
        return jax.hessian(lambda t: potential({**z, **layout.unravel(t)}))(theta)

    return jax.jit(hess)


def _hess_evidence(potential, z_map, curv, layout, layers) -> Array:
    """``-U(MAP) + P/2 log 2 pi - 1/2 logdet H`` (Laplace's evidence with the exact Hessian)."""
    ld = _logdet_post(curv, layout, layers, jnp.asarray(1.0), jnp.ones(layout.P))
    return -_jitted(potential)(z_map) + 0.5 * layout.P * math.log(2 * math.pi) - 0.5 * ld


@functools.lru_cache(maxsize=8)
def _jitted(fn: Callable) -> Callable:
    """``jax.jit(fn)``, one per function object (a model's potential is evaluated eagerly
    op by op otherwise)."""
    return jax.jit(fn)


def _select_subset(method: Laplace, curvature: str, sites: Any, layers_all: dict) -> tuple:
    """Subset site names in trace order (see :class:`Laplace`)."""
    glob = list(sites.global_latent)
    s = method.subset_of_weights
    if isinstance(s, tuple):
        missing = [n for n in s if n not in glob]
        if missing:
            raise ValueError(
                f"Laplace.subset_of_weights names no global latent site: {missing} in "
                f"{s!r}; the model's global latent sites are {glob}"
            )
        return tuple(n for n in glob if n in s)
    dense_sites = [n for ss in layers_all.values() for n in ss]
    if s == "last_layer":
        if not layers_all:
            raise ValueError(
                "Laplace.subset_of_weights='last_layer' needs dense layers (ppl_dgp.dense); "
                f"the model has none; its global latent sites are {glob}"
            )
        return tuple(layers_all[list(layers_all)[-1]])
    if curvature == "hessian":
        return tuple(glob)
    # GGN/EF over "all": the network's weights. Other global sites (a latent noise scale, ...)
    # are likelihood parameters and stay at their MAP.
    if not dense_sites:
        raise ValueError(
            f"Laplace(curvature={curvature!r}, subset_of_weights='all') needs dense layers; "
            f"name the sites in subset_of_weights instead (global latent sites: {glob})"
        )
    return tuple(n for n in glob if n in dense_sites)
