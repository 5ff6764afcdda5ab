"""ArviZ adapter: every :class:`~ppl_dgp.posterior.Posterior` as a DataTree, and its diagnostics.

This is the only module of ``ppl_dgp`` that imports ArviZ (``arviz_base``, ``arviz_stats``,
``arviz_plots``); everything else hands it Posteriors and NumPy arrays.

**DataTree layout** (:func:`to_datatree`), the same for every method:

``posterior``
    every draw site, dims ``(chain, draw, ...)``; SVI and Laplace have ``chain = 1``. Site
    dims are named: ``{layer}.u`` ``[Q, M]`` gets ``({layer}_output, {layer}_inducing)``,
    ``{layer}.lengthscales`` ``[D]`` gets ``({layer}_input,)``, anything else
    ``{site}_dim_{i}``.
``log_likelihood``, ``posterior_predictive``, ``observed_data``, ``constant_data``
    the observed site (``y``) per draw and data index ``obs``, when the model and data are
    given (see :func:`pointwise_log_likelihood` for the estimator); ``constant_data`` holds
    ``X`` ``(obs, feature)``.
``sample_stats``
    per-draw statistics renamed to ArviZ's conventions (``diverging``, ``energy``,
    ``tree_depth``, ``step_size``, ``acceptance_rate``, ``n_steps``), dims ``(chain, draw)``.
``traces``
    optimisation traces (SVI's ``loss``, a MAP's ``map_loss``), no sample dims: ``{name}_step``
    then ``{name}_dim_{i}`` (e.g. ensemble members); ArviZ's functions do not read it.

Root attributes: ``inference_method``, ``config`` and ``timings`` (JSON strings).
:func:`save_datatree` / :func:`load_datatree` round-trip it through netCDF (h5netcdf).

Example:
    >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
    >>> from ppl_dgp.infer import NUTS, fit
    >>> def model(X, y=None):
    ...     w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    ...     with numpyro.plate("data", X.shape[0]):
    ...         numpyro.sample("y", dist.Normal(w * X[:, 0], 0.5), obs=y)
    >>> X = np.linspace(-1.0, 1.0, 10)[:, None]; y = 0.8 * X[:, 0]
    >>> post = fit(NUTS(num_warmup=100, num_samples=100, num_chains=2), jax.random.key(0),
    ...            model, X, y)
    >>> dt = to_datatree(post, model, X, y, rng_key=jax.random.key(1))
    >>> sorted(dt.children)[:3], dt["log_likelihood"]["y"].shape
    (['constant_data', 'log_likelihood', 'observed_data'], (2, 100, 10))
    >>> int(np.size(loo(dt).pareto_k))
    10
"""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import arviz_base as azb
import arviz_plots as azp
import arviz_stats as azs
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax import Array
from jax.scipy.special import logsumexp
from numpyro.handlers import seed, substitute, trace

from ppl_dgp.collapse import gaussian_output
from ppl_dgp.infer.core import accepts_batch_size, inspect_model
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import _hashable, propagate_layers, propagate_site

__all__ = [
    "ESS_BULK_MIN",
    "MIN_PREDICTIVE_INPUTS",
    "RHAT_MAX",
    "SEPARATE_RHAT_MIN",
    "WITHIN_RHAT_MAX",
    "ChainView",
    "ReferenceCheck",
    "chain_view",
    "compare",
    "diagnostic_warnings",
    "load_datatree",
    "loo",
    "loo_per_chain",
    "plot_forest",
    "plot_khat",
    "plot_marginals",
    "plot_rank",
    "plot_trace",
    "pointwise_log_likelihood",
    "reference_check",
    "save_datatree",
    "summary",
    "thin_to_common",
    "to_datatree",
]

#: A reference posterior's largest acceptable (rank-normalised split) R-hat.
RHAT_MAX = 1.01
#: A reference posterior's smallest acceptable bulk ESS (over all chains).
ESS_BULK_MIN = 400
#: Fewest test inputs at which a reference's predictive must pass the same checks.
MIN_PREDICTIVE_INPUTS = 5
#: NumPyro / ppl_dgp sample-statistic names -> ArviZ's.
_STAT_NAMES = {"accept_prob": "acceptance_rate", "num_steps": "n_steps"}
OBS = "obs"


# -- pointwise log-likelihood --------------------------------------------------------------


def _chunks(S: int, size: int) -> list[np.ndarray]:
    """Index blocks of equal ``size`` covering ``range(S)`` (the last padded by repetition)."""
    out = []
    for start in range(0, S, size):
        idx = np.arange(start, start + size)
        out.append(np.minimum(idx, S - 1))
    return out


@functools.lru_cache(maxsize=32)
def _gaussian_block(model: Callable, likelihood_site: str, K: int, kw_items: tuple) -> Callable:
    """The pointwise log-likelihood of a block of draws for a program with one Gaussian output,
    ``K`` inner-layer noise draws each, as one compiled program per (model, site, ``K``, model
    keywords) and block shape: every posterior of the model reuses its trace and compilation.

    ``block(key, draws [size, ...], params, X [N, D], y [N]) -> (log_lik [size, N],
    y_rep [size, N])``: ``log (1/K) sum_k N(y_n | m_k, v_k)``, and one replicated ``y`` per draw.
    """
    model_kwargs = dict(kw_items)

    @jax.jit
    def block(key: Array, draws: dict, params: dict, X: Array, y: Array) -> tuple:
        size, N = next(iter(draws.values())).shape[0], X.shape[0]
        vals = {k: jnp.repeat(v, K, axis=0) for k, v in draws.items()}  # [size*K, ...]
        layer_sites = propagate_layers(
            key, model, vals, params, X, num_samples=size * K, **model_kwargs
        )
        out = gaussian_output(layer_sites, likelihood_site)  # [size*K, N]
        tot = out.var.reshape(size, K, N)
        mean = out.mean.reshape(size, K, N)
        lp = -0.5 * (jnp.log(2 * jnp.pi * tot) + (y - mean) ** 2 / tot)
        z = jax.random.normal(jax.random.fold_in(key, 1), (size, N), dtype=mean.dtype)
        return logsumexp(lp, axis=1) - jnp.log(K), mean[:, 0] + jnp.sqrt(tot[:, 0]) * z

    return block


def pointwise_log_likelihood(
    rng_key: Array,
    model: Callable,
    posterior: Posterior,
    X: Array,  # [N, D]
    y: Array,  # [N] ([N, P] for P outputs)
    *,
    likelihood_site: str = "y",
    num_eps: int = 8,
    **model_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """``log p(y_n | theta_s)`` and a replicate ``y_rep`` per draw ``s`` and datum ``n``.

    Estimator:

    - **GP-layer programs** (the model has ``{layer}.u`` sites): the draw's global sites
      (``u``, hyperparameters, noise) are substituted and the layers propagated at ``X``
      (``u`` from the draw, never integrated against a ``q(u)``, so SVI and MCMC draws are
      treated alike). The per-datum inner-layer noise ``eps_n`` is a local latent, so the
      likelihood of ``y_n`` given the global draw integrates it out against its prior,
      estimated with ``K = num_eps`` passes; with one GP layer there is no inner noise and
      ``K = 1``. (``K`` small biases the log slightly downwards, the same for every method.)

      * One Gaussian output (the site records its moments, :func:`~ppl_dgp.collapse.
        gaussian_output`): the last layer integrates out in closed form,
        ``log (1/K) sum_k N(y_n | m_snk, v_snk + s2_s)``
        (:func:`~ppl_dgp.predict.propagate_layers`).
      * Any other likelihood of the zoo (Bernoulli, categorical, Student-t, Poisson, or
        ``P`` Gaussian outputs, ``y_n [P]`` one datum): the observation site's distribution
        in each pass (:func:`~ppl_dgp.predict.propagate_site`; for a marginalised last layer
        the exact marginal, e.g. ``Phi(m / sqrt(1 + v))`` for a probit Bernoulli),
        ``log (1/K) sum_k p(y_n | theta_s, eps_nk)``.
    - **Other programs**: the model is traced with the draw substituted and the observed
      site's ``log_prob`` per datum is taken (local latents not in the draw come from their
      prior).
    - **An approximation with its own** ``pointwise_log_likelihood`` (a method of
      ``posterior.approx`` that returns ``(log_lik, y_rep)``, or ``None`` to decline): that.
      Laplace's GLM posterior of a GP-layer program gives the likelihood of the program
      linearised in ``u`` at the MAP, the model its Gaussian is the exact posterior of
      (:func:`ppl_dgp.laplace.predictive.glm_pointwise_log_likelihood`), so the LOO and its
      Pareto k are those of the predictive that ``predict`` returns.

    Args:
        rng_key: key for the layer noise and the replicates.
        model: the fitted program.
        posterior: from any method.
        X: training inputs ``[N, D]``.
        y: observed targets ``[N]`` (``[N, P]`` for ``P`` outputs).
        likelihood_site: the observed site.
        num_eps: ``K`` passes per draw through inner GP layers.
        **model_kwargs: further model keywords (``batch_size`` is forced to ``None``).

    Returns:
        ``(log_lik, y_rep)``: NumPy arrays ``(chain, draw, N)`` and ``(chain, draw, N, ...)``
        (a replicate of ``y_n``'s shape).

    Raises:
        ValueError: the posterior lacks a global latent or param site of the model.
    """
    X, y = jnp.asarray(X), jnp.asarray(y)
    if accepts_batch_size(model):
        model_kwargs = {**model_kwargs, "batch_size": None}
    k_sites, k_run = jax.random.split(rng_key)
    sites = inspect_model(k_sites, model, X, y, **model_kwargs)
    missing = [s for s in sites.global_latent if s not in posterior.draws]
    if missing:
        raise ValueError(
            f"pointwise_log_likelihood: the {posterior.name!r} posterior has no draws of "
            f"site(s) {missing}"
        )
    missing = [k for k in sites.params if k not in posterior.params]
    if missing:  # never the model's initial values in place of fitted ones
        raise ValueError(
            f"pointwise_log_likelihood: the {posterior.name!r} posterior has no value of the "
            f"model's param site(s) {missing}: was it fitted to this model?"
        )
    params = {k: jnp.asarray(posterior.params[k]) for k in sites.params}
    own = getattr(posterior.approx, "pointwise_log_likelihood", None)
    if own is not None:  # an approximation with its own likelihood per draw (Laplace's GLM)
        out = own(k_run, model, posterior, X, y, likelihood_site=likelihood_site, **model_kwargs)
        if out is not None:
            return out
    flat = {k: jnp.asarray(v) for k, v in posterior.flat().items() if k in sites.global_latent}
    C, D, N = posterior.num_chains, posterior.num_draws, X.shape[0]
    S = C * D
    K = num_eps if len(sites.gp_layers) > 1 else 1
    one_gaussian = bool(sites.gp_layers) and _gaussian_output(
        model, flat, params, X, likelihood_site, model_kwargs
    )
    if sites.gp_layers and not one_gaussian:  # any other likelihood: the site's log_prob
        log_lik, y_rep = _site_log_likelihood(
            k_run, model, flat, params, X, y, S=S, K=K, site=likelihood_site,
            model_kwargs=model_kwargs,
        )  # fmt: skip
    elif sites.gp_layers:
        # A fixed block of draws, so every posterior of this model reuses one compilation.
        size = int(max(1, min(S, 50, 2_000_000 // max(1, N * K))))

        items = _hashable(model_kwargs)
        block = (
            _gaussian_block(model, likelihood_site, K, items)
            if items is not None
            else _gaussian_block.__wrapped__(model, likelihood_site, K, tuple(model_kwargs.items()))
        )
        ll_parts, rep_parts = [], []
        for i, idx in enumerate(_chunks(S, size)):
            ll, rep = block(jax.random.fold_in(k_run, i), {k: v[idx] for k, v in flat.items()},
                            params, X, jnp.asarray(y))  # fmt: skip
            ll_parts.append(ll)
            rep_parts.append(rep)
        log_lik = jnp.concatenate(ll_parts)[:S]
        y_rep = jnp.concatenate(rep_parts)[:S]
    else:

        def one(key: Array, draw: dict[str, Array]) -> tuple[Array, Array]:
            k1, k2 = jax.random.split(key)
            tr = trace(substitute(seed(model, k1), data={**params, **draw})).get_trace(
                X, y, **model_kwargs
            )
            site = tr[likelihood_site]
            fn = site["fn"]
            return fn.log_prob(site["value"]), fn.sample(k2)

        log_lik, y_rep = jax.jit(jax.vmap(one))(jax.random.split(k_run, S), flat)
        log_lik = jnp.broadcast_to(log_lik, (S, N))
    y_rep = np.asarray(y_rep)
    return np.asarray(log_lik).reshape(C, D, N), y_rep.reshape(C, D, *y_rep.shape[1:])


def _gaussian_output(
    model: Callable, flat: dict[str, Array], params: dict[str, Array], X: Array, site: str,
    model_kwargs: dict[str, Any],
) -> bool:  # fmt: skip
    """Whether a GP-layer program's observed ``site`` is one Gaussian per datum: a pass under
    :class:`~ppl_dgp.collapse.collapse` records its moments ``{site}.f_mean`` ``[S, N]``
    (:func:`~ppl_dgp.collapse.gaussian_output`). Traced abstractly (``jax.eval_shape``: nothing
    is run or compiled)."""

    def one_pass(key: Array, values: dict, params: dict, X: Array) -> dict[str, Array]:
        return propagate_layers(key, model, values, params, X, num_samples=1, **model_kwargs)

    values = {k: jax.ShapeDtypeStruct((1, *v.shape[1:]), v.dtype) for k, v in flat.items()}
    shapes = jax.eval_shape(one_pass, jax.random.key(0), values, params, X)
    moments = shapes.get(f"{site}.f_mean")
    return moments is not None and moments.ndim == 2


def _site_log_likelihood(
    key: Array, model: Callable, flat: dict[str, Array], params: dict[str, Array], X: Array,
    y: Array, *, S: int, K: int, site: str, model_kwargs: dict[str, Any], block: int = 256,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``log p(y_n | theta_s)`` ``[S, N]`` and a replicate ``y_rep`` ``[S, N, ...]`` of the
    observation ``site`` of a GP-layer program, for any likelihood (a multi-output
    ``y_n [P]`` is one datum):

    .. math:: \\log p(y_n \\mid \\theta_s) \\approx \\log \\frac1K \\sum_{k=1}^K
        p(y_n \\mid \\theta_s, \\epsilon_{nk})

    with the site's distribution in each pass from :func:`~ppl_dgp.predict.propagate_site`
    (the draw's global sites substituted; for a marginalised last layer the exact marginal)
    and ``K`` passes per draw for the inner layers' noise ``eps``, in blocks of ``block``
    draws."""
    N = X.shape[0]
    k_ll, k_rep = jax.random.split(key)
    ll, rep = [], []
    for b, start in enumerate(range(0, S, block)):
        idx = np.arange(start, min(start + block, S))
        vals = {k: jnp.repeat(v[idx], K, axis=0) for k, v in flat.items()}
        comps, _ = propagate_site(jax.random.fold_in(k_ll, b), model, vals, params, X,
                                  num_samples=len(idx) * K, site=site, **model_kwargs)  # fmt: skip
        lp = comps.log_prob(y).reshape(len(idx), K, N)
        ll.append(np.asarray(logsumexp(lp, axis=1) - np.log(K)))
        draw = np.asarray(comps.sample(jax.random.fold_in(k_rep, b)))
        rep.append(draw.reshape(len(idx), K, *draw.shape[1:])[:, 0])
    return np.concatenate(ll), np.concatenate(rep)


# -- DataTree ------------------------------------------------------------------------------


def _site_dims(name: str, shape: tuple[int, ...]) -> list[str] | None:
    """Named event dims of a GP-layer site; ``None`` leaves ArviZ's ``{site}_dim_{i}``."""
    layer, _, leaf = name.rpartition(".")
    if layer and leaf == "u" and len(shape) == 2:
        return [f"{layer}_output", f"{layer}_inducing"]
    if layer and leaf == "lengthscales" and len(shape) == 1:
        return [f"{layer}_input"]
    return None


def _check_name(name: str) -> str:
    if "/" in name:
        raise ValueError(f"to_datatree: variable name {name!r} contains '/' (netCDF rejects it)")
    return name


def to_datatree(
    posterior: Posterior,
    model: Callable | None = None,
    X: Array | None = None,
    y: Array | None = None,
    *,
    rng_key: Array | None = None,
    likelihood_site: str = "y",
    num_eps: int = 8,
    **model_kwargs: Any,
) -> xr.DataTree:
    """The Posterior as an ArviZ DataTree (layout in the module docstring).

    The sampled and data groups are built by ``arviz_base.from_dict`` (sample dims
    ``(chain, draw)`` first, ``{var}_dim_{i}`` for unnamed event dims, an integer coordinate
    on every dim, ArviZ's group attributes); the ``traces`` group, which has no sample dims,
    by ``arviz_base.dict_to_dataset`` with ``sample_dims=[]``.

    Args:
        posterior: from any method.
        model: the fitted program; with ``X`` and ``y`` it adds ``log_likelihood``,
            ``posterior_predictive``, ``observed_data`` and ``constant_data``.
        X: training inputs ``[N, D]``.
        y: training targets ``[N]``.
        rng_key: key for :func:`pointwise_log_likelihood` (default ``jax.random.key(0)``).
        likelihood_site: the observed site (the variable name in the data groups).
        num_eps: see :func:`pointwise_log_likelihood`.
        **model_kwargs: further model keywords.

    Returns:
        ``xarray.DataTree`` with ``(chain, draw)`` sample dims in every sampled group.
    """
    post = {_check_name(k): np.asarray(v) for k, v in posterior.draws.items()}
    dims = {k: d for k, v in post.items() if (d := _site_dims(k, v.shape[2:])) is not None}
    stats = {
        _check_name(_STAT_NAMES.get(k, k)): np.asarray(v) for k, v in posterior.sample_stats.items()
    }  # every statistic is (chain, draw, ...) (Posterior checks it)
    groups: dict[str, dict[str, np.ndarray]] = {"posterior": post}
    if stats:
        groups["sample_stats"] = stats
    if model is not None and X is not None and y is not None:
        key = jax.random.key(0) if rng_key is None else rng_key
        log_lik, y_rep = pointwise_log_likelihood(
            key, model, posterior, X, y, likelihood_site=likelihood_site, num_eps=num_eps,
            **model_kwargs,
        )  # fmt: skip
        groups["log_likelihood"] = {likelihood_site: log_lik}
        groups["posterior_predictive"] = {likelihood_site: y_rep}
        groups["observed_data"] = {likelihood_site: np.asarray(y)}  # "data": no sample dims
        groups["constant_data"] = {"X": np.asarray(X)}
        dims |= {likelihood_site: [OBS], "X": [OBS, "feature"]}
    attrs = {
        "inference_method": posterior.name,
        "config": repr(posterior.method),
        "timings": json.dumps(posterior.timings, sort_keys=True),
        "inference_library": "ppl_dgp",
    }
    # check_conventions guesses misnamed dims from sizes (it warns when chain > draw, a
    # legitimate shape here); every dim here is named by construction.
    dt = azb.from_dict(
        groups, dims=dims, sample_dims=["chain", "draw"], index_origin=0,
        check_conventions=False, attrs={"/": attrs},
    )  # fmt: skip
    if posterior.traces:  # optimisation traces: steps first, then e.g. ensemble members
        traces = {_check_name(k): np.asarray(v) for k, v in posterior.traces.items()}
        dt["traces"] = xr.DataTree(
            azb.dict_to_dataset(
                traces, dims={k: [f"{k}_step"] for k in traces}, sample_dims=[], index_origin=0
            )
        )
    return dt


def save_datatree(dt: xr.DataTree, path: str | Path) -> Path:
    """Write ``dt`` to netCDF-4 (h5netcdf engine); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dt.to_netcdf(path, engine="h5netcdf")
    return path


def load_datatree(path: str | Path) -> xr.DataTree:
    """Read a DataTree written by :func:`save_datatree` fully into memory."""
    with xr.open_datatree(path, engine="h5netcdf") as dt:
        return dt.load().copy()


# -- diagnostics ---------------------------------------------------------------------------


def summary(
    dt: xr.DataTree, var_names: Sequence[str] | None = None, *, ci_prob: float = 0.94
) -> Any:
    """ArviZ's summary: mean, sd, HDI (``ci_prob``), bulk/tail ESS, R-hat and MCSE.

    Returns:
        ``pandas.DataFrame``, one row per scalar component, unrounded.
    """
    return azs.summary(
        dt, var_names=var_names, kind="all", ci_prob=ci_prob, ci_kind="hdi", round_to="none"
    )


@contextmanager
def _quiet_khat() -> Iterator[None]:
    """Silence ArviZ's Pareto-k warning: callers get ``pareto_k`` and report it themselves."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Estimated shape parameter of Pareto", UserWarning)
        # its generalised-Pareto fit divides by zero on degenerate tails (k is then NaN/inf)
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="arviz_stats")
        yield


def loo(dt: xr.DataTree, var_name: str = "y") -> Any:
    """PSIS-LOO with pointwise values and Pareto ``k`` per observation (ArviZ ``ELPDData``).

    For MCMC this is the usual PSIS-LOO. For an approximation (SVI, Laplace) the draws stand
    in for the posterior, and ``pareto_k`` per observation says how far leaving that
    observation out moves the approximate posterior: ``k > 0.7`` marks observations where the
    approximation's LOO (and its predictive there) cannot be trusted.
    """
    with _quiet_khat():
        return azs.loo(dt, pointwise=True, var_name=var_name)


def compare(dts: Mapping[str, xr.DataTree], var_name: str = "y") -> Any:
    """ArviZ's ``compare`` (LOO elpd, differences, stacking weights), unrounded.

    Returns:
        ``pandas.DataFrame`` indexed by name, best first (``rank``, ``elpd``, ``elpd_diff``,
        ``dse``, ``weight``, ...).
    """
    with _quiet_khat():
        return azs.compare(dict(dts), var_name=var_name, round_to="none")


def diagnostic_warnings(
    dt: xr.DataTree,
    elpd: Any = None,
    *,
    rhat_max: float = 1.01,
    ess_min_per_chain: int = 100,
    khat_max: float = 0.7,
) -> list[str]:
    """Plain-language warnings: R-hat, ESS and divergences (MCMC), Pareto ``k`` (any method;
    a NaN ``k``, where PSIS could not fit the tail, is warned of apart: it is not a good one)."""
    out = []
    post = dt["posterior"].to_dataset()
    C = post.sizes["chain"]
    if C > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant draws: NaN R-hat
            rhat = azs.rhat(post)
            ess = azs.ess(post, method="bulk")
        for name in post.data_vars:
            if np.all(np.isnan(rhat[name].values)):  # constant draws (point estimates)
                continue
            r = float(np.nanmax(rhat[name].values))
            e = float(np.nanmin(ess[name].values))
            if r > rhat_max:
                out.append(f"`{name}`: max R-hat {r:.3f} > {rhat_max} (chains disagree)")
            if e < ess_min_per_chain * C:
                out.append(f"`{name}`: min bulk ESS {e:.0f} < {ess_min_per_chain * C}")
    if "sample_stats" in dt.children and "diverging" in dt["sample_stats"].data_vars:
        n = int(np.asarray(dt["sample_stats"]["diverging"].values).sum())
        if n:
            total = dt["sample_stats"]["diverging"].size
            out.append(f"{n} of {total} transitions diverged")
    if elpd is not None:
        k = np.asarray(elpd.pareto_k).ravel()
        bad = int(np.sum(k > khat_max))
        if bad:
            out.append(f"{bad} of {k.size} observations have Pareto k > {khat_max:.2f}")
        nan = int(np.sum(np.isnan(k)))
        if nan:
            out.append(
                f"{nan} of {k.size} observations have Pareto k = NaN (PSIS could not fit the "
                "tail: their LOO cannot be trusted)"
            )
    return out


# -- is a reference a reference? ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReferenceCheck:
    """The verdict of :func:`reference_check`.

    Attributes:
        reasons: one plain-language line per failed check (empty: the reference passes).
        rhat: the largest R-hat per checked quantity (``site[i]`` or a predictive label).
        ess_bulk: the smallest bulk ESS per checked quantity.
        divergences: divergent transitions (0 when the sampler records none).
        num_chains: chains in the reference.
        num_draws: draws per chain.
    """

    reasons: tuple[str, ...]
    rhat: dict[str, float]
    ess_bulk: dict[str, float]
    divergences: int
    num_chains: int
    num_draws: int

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.reasons


def _components(values: np.ndarray, name: str) -> dict[str, float]:
    """``{"name[i, j]": value}`` per component of a statistic (``name`` for a scalar)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0:
        return {name: float(v)}
    return {f"{name}[{', '.join(map(str, i))}]": float(v[i]) for i in np.ndindex(v.shape)}


def _worst(values: dict[str, float], bad: Callable[[float], bool], *, largest: bool) -> str:
    """The failing quantities, worst first (at most three), e.g. ``a 2.30, b 1.24 (+4 more)``."""
    fails = sorted((k for k, v in values.items() if bad(v)), key=values.get, reverse=largest)
    text = ", ".join(f"`{k}` {values[k]:.{'2f' if largest else '0f'}}" for k in fails[:3])
    return text + (f" (+{len(fails) - 3} more)" if len(fails) > 3 else "")


def reference_check(
    reference: Posterior | xr.DataTree,
    var_names: Sequence[str] | None = None,
    *,
    predictive: np.ndarray | None = None,  # [chain, draw, P]
    predictive_labels: Sequence[str] | None = None,
    rhat_max: float = RHAT_MAX,
    ess_min: float = ESS_BULK_MIN,
    min_predictive_inputs: int = MIN_PREDICTIVE_INPUTS,
) -> ReferenceCheck:
    """Whether a posterior may serve as the reference the others are scored against.

    A reference passes when

    - it has at least two chains (R-hat compares chains);
    - every component of ``var_names`` and of the predictive at every one of ``P >=
      min_predictive_inputs`` inputs has rank-normalised split R-hat ``<= rhat_max`` and bulk
      ESS ``>= ess_min`` (Vehtari et al., 2021; ArviZ's ``rhat`` and ``ess``);
    - no transition diverged (``sample_stats.diverging``).

    The predictive is checked because a DGP's or network's inducing values and weights are not
    identifiable (layers permute, signs flip): chains can disagree on them while they agree
    on ``y``, and only the hyperparameters and the predictive must agree.

    Args:
        reference: an MCMC :class:`~ppl_dgp.posterior.Posterior` or its DataTree.
        var_names: the sites checked (default: every posterior variable).
        predictive: a per-draw predictive quantity at ``P`` inputs, ``(chain, draw, P)`` (e.g.
            the predictive mean of ``y`` at test inputs given each draw); ``None``: the
            predictive check fails, as it cannot be made.
        predictive_labels: a name per input for the reasons (default ``predictive[i]``).
        rhat_max: largest acceptable R-hat (:data:`RHAT_MAX`).
        ess_min: smallest acceptable bulk ESS (:data:`ESS_BULK_MIN`).
        min_predictive_inputs: fewest inputs ``P`` (:data:`MIN_PREDICTIVE_INPUTS`).

    Returns:
        A :class:`ReferenceCheck`; ``.ok`` and, when not, ``.reasons``.

    References:
        Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), Rank-normalization, folding, and
        localization: an improved R-hat for assessing convergence of MCMC, Bayesian Analysis
        16(2).

    Example:
        Two chains stuck in different places fail; independent draws pass:

        >>> import numpy as np
        >>> from ppl_dgp.infer import NUTS
        >>> rng = np.random.default_rng(0)
        >>> stuck = Posterior(draws={"s": rng.normal(size=(2, 500)) + [[0.0], [3.0]]},
        ...                   method=NUTS(num_chains=2))
        >>> check = reference_check(stuck, predictive=rng.normal(size=(2, 500, 5)))
        >>> check.ok, check.reasons[0].split(";")[0]
        (False, 'R-hat above 1.01 at 1 of 6 quantities')
        >>> good = Posterior(draws={"s": rng.normal(size=(2, 500))}, method=NUTS(num_chains=2))
        >>> reference_check(good, predictive=rng.normal(size=(2, 500, 5))).ok
        True
    """
    dt = to_datatree(reference) if isinstance(reference, Posterior) else reference
    post = dt["posterior"].to_dataset()
    names = list(post.data_vars) if var_names is None else list(var_names)
    missing = [v for v in names if v not in post.data_vars]
    if missing:
        raise ValueError(f"reference_check: the reference has no site(s) {missing}")
    post = post[names]
    C, D = post.sizes["chain"], post.sizes["draw"]
    reasons = []
    if predictive is not None:
        predictive = np.asarray(predictive, dtype=np.float64)
        if predictive.ndim != 3 or predictive.shape[:2] != (C, D):
            raise ValueError(
                f"reference_check: predictive must be (chain, draw, P) = ({C}, {D}, P); "
                f"received {predictive.shape}"
            )
        P = predictive.shape[2]
        labels = list(predictive_labels or [f"predictive[{i}]" for i in range(P)])
        if len(labels) != P:
            raise ValueError(f"reference_check: {len(labels)} predictive labels for {P} inputs")
        if P < min_predictive_inputs:
            reasons.append(
                f"the predictive is checked at {P} input(s), fewer than {min_predictive_inputs}"
            )
    else:
        P, labels = 0, []
        reasons.append("no predictive draws were given to check")
    rhat: dict[str, float] = {}
    ess: dict[str, float] = {}
    if C < 2:
        reasons.append(
            f"{C} chain: R-hat needs at least 2 chains (run an MCMC reference with several)"
        )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant draws: NaN R-hat
            r_ds, e_ds = azs.rhat(post), azs.ess(post, method="bulk")
            for name in names:
                rhat |= _components(r_ds[name].values, name)
                ess |= _components(e_ds[name].values, name)
            if P:
                pred = xr.Dataset({"p": (("chain", "draw", "input"), predictive)})
                r_p = np.asarray(azs.rhat(pred)["p"].values)
                e_p = np.asarray(azs.ess(pred, method="bulk")["p"].values)
                rhat |= dict(zip(labels, map(float, r_p), strict=True))
                ess |= dict(zip(labels, map(float, e_p), strict=True))

        def bad_r(v: float) -> bool:
            return not v <= rhat_max  # NaN (constant draws) fails too

        def bad_e(v: float) -> bool:
            return not v >= ess_min

        n_r, n_e = sum(map(bad_r, rhat.values())), sum(map(bad_e, ess.values()))
        if n_r:
            reasons.append(
                f"R-hat above {rhat_max} at {n_r} of {len(rhat)} quantities; worst: "
                + _worst(rhat, bad_r, largest=True)
            )
        if n_e:
            reasons.append(
                f"bulk ESS below {ess_min:g} at {n_e} of {len(ess)} quantities; worst: "
                + _worst(ess, bad_e, largest=False)
            )
    divergences = 0
    if "sample_stats" in dt.children and "diverging" in dt["sample_stats"].data_vars:
        div = np.asarray(dt["sample_stats"]["diverging"].values)
        divergences = int(div.sum())
        if divergences:
            reasons.append(f"{divergences} of {div.size} transitions diverged")
    return ReferenceCheck(tuple(reasons), rhat, ess, divergences, int(C), int(D))


# -- chains that disagree: separate modes or no convergence? --------------------------------

#: Largest split-R-hat of one chain on its own (:func:`chain_view`) for the chain to count as
#: stationary. Looser than :data:`RHAT_MAX`: a chain's quarters hold few effective draws
#: (a stationary NUTS chain of 200 draws with bulk ESS ~80 reached 1.09), so the statistic is
#: noisy; 1.1 is the older threshold of Gelman et al. (2013).
WITHIN_RHAT_MAX = 1.1
#: R-hat across chains above which stationary chains count as sitting in separate modes;
#: between :data:`RHAT_MAX` and this, they overlap but hold too few effective draws.
SEPARATE_RHAT_MIN = 1.1


@dataclasses.dataclass(frozen=True)
class ChainView:
    """Each chain of an MCMC posterior on its own (:func:`chain_view`).

    Attributes:
        quantities: names of the ``Q`` quantities (``site[i]``, or a predictive label).
        means: per-chain means ``[Q, C]``.
        sds: per-chain standard deviations ``[Q, C]``.
        rhat: R-hat across the chains ``[Q]`` (rank-normalised split R-hat).
        within_rhat: split-R-hat of each chain alone ``[Q, C]`` (its two halves as chains).
        rhat_max: the threshold on ``rhat``.
        within_max: the threshold on ``within_rhat``.
    """

    quantities: tuple[str, ...]
    means: np.ndarray
    sds: np.ndarray
    rhat: np.ndarray
    within_rhat: np.ndarray
    rhat_max: float = RHAT_MAX
    within_max: float = WITHIN_RHAT_MAX

    @property
    def num_chains(self) -> int:
        """Chains ``C``."""
        return int(self.means.shape[1])

    @property
    def drifting(self) -> list[int]:
        """Chains not stationary on their own (some quantity's within-chain split-R-hat above
        ``within_max``; NaN, a chain that never moves, counts as drifting)."""
        bad = ~(self.within_rhat <= self.within_max)  # [Q, C]
        return [int(c) for c in np.flatnonzero(bad.any(axis=0))]

    @property
    def verdict(self) -> str:
        """``"mixing"`` (the chains agree: every R-hat at most ``rhat_max``); else ``"not
        converged"`` (some chain drifts within itself: warm-up did not finish), ``"few
        draws"`` (no chain drifts and every R-hat is at most :data:`SEPARATE_RHAT_MIN`: the
        chains overlap but hold too few effective draws to show that they agree) or
        ``"separate modes"`` (each chain stationary, some R-hat above
        :data:`SEPARATE_RHAT_MIN`: each chain sits in its own place)."""
        if np.all(self.rhat <= self.rhat_max):
            return "mixing"
        if self.drifting:
            return "not converged"
        return "few draws" if np.all(self.rhat <= SEPARATE_RHAT_MIN) else "separate modes"


def chain_view(
    reference: Posterior | xr.DataTree,
    var_names: Sequence[str] | None = None,
    *,
    predictive: np.ndarray | None = None,  # [chain, draw, P]
    predictive_labels: Sequence[str] | None = None,
    rhat_max: float = RHAT_MAX,
    within_max: float = WITHIN_RHAT_MAX,
) -> ChainView:
    """Per-chain means and sds, R-hat across chains and split-R-hat within each chain.

    When R-hat across the chains is high, two things look alike in the pooled summary and call
    for different cures:

    - **separate modes**: each chain is stationary (its split-R-hat alone, the chain's two
      halves given to ArviZ's rank-normalised split R-hat, which splits each again, is at most
      ``within_max``) but the chains sit in different places (R-hat across them above
      :data:`SEPARATE_RHAT_MIN`). More draws do not help; the chains can be stacked
      (:mod:`ppl_dgp.stacking`).
    - **not converged**: some chain drifts within itself (its own split-R-hat is high; its
      rank plot is not flat). A longer warm-up is the cure.
    - **few draws**: no chain drifts and the chains overlap (R-hat at most
      :data:`SEPARATE_RHAT_MIN`) but not to ``rhat_max``: more draws are the cure.

    Quantities whose draws are all equal (no spread anywhere) get R-hat 1.

    Args:
        reference: an MCMC :class:`~ppl_dgp.posterior.Posterior` or its DataTree
            (``C >= 2`` chains of ``D >= 4`` draws).
        var_names: the sites (default: every posterior variable).
        predictive: a per-draw predictive quantity ``(chain, draw', P)`` (e.g. the mean of
            ``y`` at a few test inputs given each draw; ``draw'`` may be a thinned subset).
        predictive_labels: a name per predictive input (default ``predictive[i]``).
        rhat_max: the threshold on R-hat across chains (:data:`RHAT_MAX`).
        within_max: the threshold on a chain's own split-R-hat (:data:`WITHIN_RHAT_MAX`).

    Returns:
        A :class:`ChainView` (``.verdict``, ``.drifting``, the tables).

    Raises:
        ValueError: fewer than two chains or four draws, an unknown site, or a predictive of
            another shape.

    References:
        Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), Rank-normalization, folding, and
        localization: an improved R-hat, Bayesian Analysis 16(2).
        Yao, Vehtari & Gelman (2022), Stacking for non-mixing Bayesian computations, JMLR
        23(79), section 2.

    Example:
        Two stationary chains two sds apart are separate modes, a trending one is not:

        >>> import numpy as np
        >>> from ppl_dgp.infer import NUTS
        >>> rng = np.random.default_rng(0)
        >>> apart = rng.normal(size=(2, 400)) + [[0.0], [2.0]]
        >>> chain_view(Posterior(draws={"s": apart}, method=NUTS(num_chains=2))).verdict
        'separate modes'
        >>> drift = rng.normal(size=(2, 400)) + np.linspace(0, 4, 400) * [[0.0], [1.0]]
        >>> view = chain_view(Posterior(draws={"s": drift}, method=NUTS(num_chains=2)))
        >>> view.verdict, view.drifting
        ('not converged', [1])
    """
    dt = to_datatree(reference) if isinstance(reference, Posterior) else reference
    post = dt["posterior"].to_dataset()
    names = list(post.data_vars) if var_names is None else list(var_names)
    missing = [v for v in names if v not in post.data_vars]
    if missing:
        raise ValueError(f"chain_view: the posterior has no site(s) {missing}")
    C, D = post.sizes["chain"], post.sizes["draw"]
    if C < 2 or D < 4:
        raise ValueError(
            f"chain_view: needs at least 2 chains of 4 draws; received {C} x {D} (chain, draw)"
        )
    blocks, labels = [], []
    for name in names:
        blocks.append(post[name].transpose("chain", "draw", ...).values.reshape(C, D, -1))
        labels += list(_components(np.zeros(post[name].shape[2:]), name))
    stats = [_chain_stats(np.concatenate(blocks, axis=2))] if blocks else []
    if predictive is not None:
        p = np.asarray(predictive, dtype=np.float64)
        if p.ndim != 3 or p.shape[0] != C or p.shape[1] < 4:
            raise ValueError(
                f"chain_view: predictive must be (chain, draw, P) with {C} chains of at least 4 "
                f"draws; received {p.shape}"
            )
        plabels = list(predictive_labels or [f"predictive[{i}]" for i in range(p.shape[2])])
        if len(plabels) != p.shape[2]:
            raise ValueError(f"chain_view: {len(plabels)} predictive labels for {p.shape[2]}")
        stats.append(_chain_stats(p))
        labels += plabels
    if not stats:
        raise ValueError("chain_view: no quantities to view (no sites and no predictive)")
    means, sds, rhat, within = (np.concatenate(z, axis=0) for z in zip(*stats, strict=True))
    return ChainView(tuple(labels), means, sds, rhat, within, rhat_max, within_max)


def _chain_stats(
    x: np.ndarray,  # [C, D, Q]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-chain means and sds ``[Q, C]``, R-hat across chains ``[Q]`` and each chain's own
    split-R-hat ``[Q, C]`` (its halves as two chains; a chain that never moves: NaN; a
    quantity with no spread at all: 1)."""
    x = np.asarray(x, dtype=np.float64)
    C, D, _ = x.shape
    half = D // 2
    halves = x[:, : 2 * half].reshape(C, 2, half, -1)  # [C, 2, half, Q]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant draws: NaN R-hat
        rhat = azs.rhat(xr.Dataset({"x": (("chain", "draw", "q"), x)}))["x"].values
        within = azs.rhat(xr.Dataset({"x": (("src", "chain", "draw", "q"), halves)}))["x"]
        within = within.transpose("q", "src").values
    flat = np.ptp(x.reshape(C * D, -1), axis=0) == 0  # [Q]
    rhat = np.where(flat, 1.0, rhat)
    stuck = np.ptp(x, axis=1).T == 0  # [Q, C]
    within = np.where(flat[:, None], 1.0, np.where(stuck, np.nan, within))
    return x.mean(axis=1).T, x.std(axis=1, ddof=1).T, rhat, within


def loo_per_chain(dt: xr.DataTree, var_name: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """PSIS-LOO of each chain on its own, as :func:`ppl_dgp.stacking.stacking_weights` needs.

    Args:
        dt: a DataTree with ``log_likelihood`` (:func:`to_datatree` with the data), ``C``
            chains.
        var_name: the observed variable.

    Returns:
        ``(elpd_i, pareto_k)``, both ``[C, N]``: ``log p_k(y_i | y_{-i})`` from chain ``k``'s
        draws alone, and the Pareto ``k`` of that estimate.
    """
    if "log_likelihood" not in dt.children:
        raise ValueError("loo_per_chain: the DataTree has no log_likelihood group")
    C = dt["posterior"].sizes["chain"]
    elpd_i, k = [], []
    for c in range(C):
        sub = xr.DataTree.from_dict(
            {g: dt[g].to_dataset().isel(chain=[c]) for g in ("posterior", "log_likelihood")}
        )
        e = loo(sub, var_name)
        elpd_i.append(np.asarray(e.elpd_i.values).ravel())
        k.append(np.asarray(e.pareto_k.values).ravel())
    return np.stack(elpd_i), np.stack(k)


# -- plots (arviz-plots; each returns the PlotCollection and saves when given a path) ------


def thin_to_common(
    dts: Mapping[str, xr.DataTree], num_draws: int | None = None, *, log_positive: bool = False
) -> dict:
    """Each DataTree's posterior as one chain of the same number of evenly spread draws.

    ArviZ's multi-model plots align models on (chain, draw) and pad or drop the ones with
    fewer (arviz-plots#333); this gives every method ``(chain=1, draw=num_draws)``. With
    ``log_positive``, variables positive in every method become ``log_{name}`` (kernel
    variances and noise span orders of magnitude).
    """
    sizes = [dt["posterior"].sizes["chain"] * dt["posterior"].sizes["draw"] for dt in dts.values()]
    K = min(sizes) if num_draws is None else min(num_draws, *sizes)
    out = {}
    for name, dt in dts.items():
        ds = dt["posterior"].to_dataset().stack(sample=("chain", "draw"))
        idx = np.round(np.linspace(0, ds.sizes["sample"] - 1, K)).astype(int)
        ds = ds.isel(sample=idx).drop_vars(["sample", "chain", "draw"]).rename(sample="draw")
        ds = ds.expand_dims(chain=1).assign_coords(chain=[0], draw=np.arange(K))
        out[name] = ds.transpose("chain", "draw", ...)
    if log_positive:
        names = list(next(iter(out.values())).data_vars)
        pos = [v for v in names if all(v in ds and bool((ds[v] > 0).all()) for ds in out.values())]
        out = {
            k: ds.assign({f"log_{v}": np.log(ds[v]) for v in pos}).drop_vars(pos)
            for k, ds in out.items()
        }
    return {k: xr.DataTree.from_dict({"posterior": ds}) for k, ds in out.items()}


def _save(pc: Any, path: str | Path | None) -> Any:
    if path is not None:
        pc.savefig(str(path), dpi=100)
    return pc


def _draws_of(dts: Mapping[str, xr.DataTree], var_names: Sequence[str]) -> dict[str, dict]:
    """``{method: {var: (chain, draw, ...)}}`` of the variables each DataTree has."""
    out = {}
    for name, dt in dts.items():
        post = dt["posterior"]
        out[name] = {
            v: post[v].transpose("chain", "draw", ...).values for v in var_names if v in post
        }
    return out


def plot_forest(
    dts: Mapping[str, xr.DataTree], var_names: Sequence[str], path: str | Path | None = None
) -> Any:
    """Median, central 50% and 90% intervals of ``var_names``: a panel per scalar component,
    a row per method, a log axis for positive quantities (:func:`ppl_dgp.plotting.plot_forest`).

    Returns:
        The matplotlib figure.
    """
    from ppl_dgp import plotting

    return plotting.plot_forest(_draws_of(dts, var_names), list(var_names), path)


def plot_marginals(
    dts: Mapping[str, xr.DataTree], var_names: Sequence[str], path: str | Path | None = None
) -> Any:
    """Marginal densities of ``var_names``, methods overlaid: a panel per scalar component, a
    log axis for positive quantities (:func:`ppl_dgp.plotting.plot_marginals`).

    Returns:
        The matplotlib figure.
    """
    from ppl_dgp import plotting

    return plotting.plot_marginals(_draws_of(dts, var_names), list(var_names), path)


def _components_tree(dt: xr.DataTree, var_names: Sequence[str]) -> xr.DataTree:
    """``dt``'s posterior with one variable per scalar component (``site`` or ``site[i]``), so
    that ArviZ titles a panel with its name alone (not a dim coordinate on a second line);
    ``sample_stats`` kept (divergences)."""
    post = dt["posterior"].to_dataset()
    flat = {}
    for v in var_names:
        da = post[v].transpose("chain", "draw", ...)
        event = da.dims[2:]
        if not event:
            flat[v] = da
            continue
        for idx in np.ndindex(*(da.sizes[d] for d in event)):
            flat[f"{v}[{', '.join(map(str, idx))}]"] = da.isel(dict(zip(event, idx, strict=True)))
    ds = xr.Dataset({k: da.drop_vars([c for c in da.coords if c not in ("chain", "draw")])
                     for k, da in flat.items()})  # fmt: skip
    groups = {"posterior": ds}
    if "sample_stats" in dt.children:
        groups["sample_stats"] = dt["sample_stats"].to_dataset()
    return xr.DataTree.from_dict(groups)


def plot_rank(dt: xr.DataTree, var_names: Sequence[str], path: str | Path | None = None) -> Any:
    """Rank plot (fractional-rank ECDF difference per chain) of an MCMC posterior, a panel per
    scalar component (``site[i]``), chains in colour."""
    pc = azp.plot_rank(_components_tree(dt, var_names), figure_kwargs={"layout": "constrained"})
    for ax in pc.viz["figure"].item().axes:  # the p-value text sits on the title and curves
        for text in list(ax.texts):  # (arviz-plots 1.3 rejects visuals={"p_value_text": False})
            text.remove()
    pc.add_legend("chain")
    return _save(pc, path)


def plot_trace(dt: xr.DataTree, var_names: Sequence[str], path: str | Path | None = None) -> Any:
    """Trace and per-chain density of an MCMC posterior, a row per scalar component
    (``site[i]``), a colour per chain, divergences marked (:func:`ppl_dgp.plotting.plot_chains`).

    Returns:
        The matplotlib figure.
    """
    from ppl_dgp import plotting

    div = None
    if "sample_stats" in dt.children and "diverging" in dt["sample_stats"].data_vars:
        div = dt["sample_stats"]["diverging"].transpose("chain", "draw").values
    draws = _draws_of({"_": dt}, var_names)["_"]
    return plotting.plot_chains(draws, list(var_names), path, diverging=div)


def plot_khat(elpds: Mapping[str, Any], path: str | Path | None = None) -> Any:
    """PSIS-LOO Pareto ``k`` per observation, one panel per method
    (:func:`ppl_dgp.plotting.plot_khat_panels`).

    Each panel draws its method's own ``good_k = min(1 - 1 / log10(S), 0.7)`` (ArviZ's
    threshold for ``S`` draws; Vehtari et al., 2024), ``k = 0.7`` and ``k = 1``, and counts
    the observations above ``good_k`` and 0.7 in its title.

    Args:
        elpds: ``{method: ELPDData}`` from :func:`loo` (pointwise).
        path: where to save the figure (not saved when ``None``).

    Returns:
        The matplotlib figure.

    References:
        Vehtari, Simpson, Gelman, Yao & Gabry (2024), Pareto smoothed importance sampling,
        JMLR 25(72).
    """
    from ppl_dgp import plotting

    elpds = dict(elpds)
    if not elpds:
        raise ValueError("plot_khat: no methods given")
    return plotting.plot_khat_panels(
        {k: np.asarray(e.pareto_k.values).ravel() for k, e in elpds.items()},
        {k: float(e.good_k) for k, e in elpds.items()},
        path,
    )
