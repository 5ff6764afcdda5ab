"""NUTS and HMC (NumPyro's kernels) on the model's exact joint density, behind :func:`fit`.

For a DGP the sampled sites are the hyperparameters, the whitened inducing values ``u`` and the
non-centred noise ``eps`` of the inner layers (the zoo integrates the last layer's output out
of the Gaussian likelihood); step size and (diagonal or dense) mass matrix are adapted during
warm-up and several chains run vectorised (or one per device). The per-datum ``{layer}.eps``
draws are not kept (they are nuisance at the training inputs; prediction draws fresh ones at
the new inputs). Divergences, acceptance, step size, leapfrog steps, energy and (NUTS) tree
depth are recorded per draw; a chain whose every draw diverged raises a
:class:`DivergentChainWarning` (its draws do not follow the posterior).

Example:
    >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
    >>> from ppl_dgp.infer import NUTS, fit
    >>> def model(X, y=None):
    ...     w = numpyro.sample("w", dist.Normal(0.0, 10.0))
    ...     with numpyro.plate("data", X.shape[0]):
    ...         numpyro.sample("y", dist.Normal(w * X[:, 0], 1.0), obs=y)
    >>> X = np.ones((20, 1)); y = 2.0 * np.ones(20)
    >>> post = fit(NUTS(num_warmup=50, num_samples=20, num_chains=2), jax.random.key(0),
    ...            model, X, y)
    >>> post.draws["w"].shape, post.sample_stats["diverging"].shape
    ((2, 20), (2, 20))
    >>> int(post.sample_stats["diverging"].sum()), bool(abs(post.draws["w"].mean() - 2.0) < 0.5)
    (0, True)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax import Array
from numpyro.infer import MCMC
from numpyro.infer.util import ParamInfo

from ppl_dgp.infer.core import (
    constrain,
    initialize,
    positive_int,
    progress_enabled,
    register_method,
    timed,
)
from ppl_dgp.posterior import Posterior

__all__ = ["HMC", "NUTS", "DivergentChainWarning", "resolve_chain_method"]


class DivergentChainWarning(UserWarning):
    """Every post-warm-up draw of a chain diverged: the chain did not explore the posterior
    (its draws are recorded, but a predictive or summary from them is meaningless)."""


def _warn_divergent(owner: str, diverging: np.ndarray) -> None:
    """A :class:`DivergentChainWarning` naming the chains whose draws ``(chain, draw)`` all
    diverged."""
    d = np.asarray(diverging, dtype=bool)
    if d.ndim != 2 or d.shape[1] == 0:
        return
    chains = np.flatnonzero(d.all(axis=1)).tolist()
    if chains:
        warnings.warn(
            f"{owner}: every one of the {d.shape[1]} draws of chain(s) {chains} (of "
            f"{d.shape[0]}) diverged ({d.mean():.0%} of all draws): those chains did not "
            "explore the posterior. Standardise the data (ppl_dgp.datasets.Standardizer), raise "
            "num_warmup or target_accept_prob (smaller steps), or reparametrise the model",
            DivergentChainWarning,
            stacklevel=4,
        )


_CHAIN_METHODS = ("auto", "sequential", "vectorized", "parallel")

#: ``dense_mass="global"``: one dense block over every global latent site (hyperparameters,
#: inducing values, weights), a diagonal over the per-datum ones (a DGP's ``{layer}.eps``).
GLOBAL_BLOCK = "global"


def _check_dense_mass(owner: str, dense_mass: Any) -> None:
    if isinstance(dense_mass, bool | np.bool_) or dense_mass == GLOBAL_BLOCK:
        return
    ok = isinstance(dense_mass, tuple) and all(
        isinstance(g, tuple) and g and all(isinstance(n, str) for n in g) for g in dense_mass
    )
    if not ok:
        raise ValueError(
            f"{owner}.dense_mass must be a bool, {GLOBAL_BLOCK!r} or a tuple of tuples of site "
            f"names (dense blocks, e.g. (('noise_variance', 'layer0.variance'),)); received "
            f"{dense_mass!r}"
        )


def _mass_structure(owner: str, dense_mass: Any, sites: Any) -> bool | list[tuple[str, ...]]:
    """NumPyro's ``dense_mass`` for the model's sites: a bool, or a list of dense blocks."""
    if isinstance(dense_mass, bool | np.bool_):
        return bool(dense_mass)
    if dense_mass == GLOBAL_BLOCK:
        return [tuple(sites.global_latent)] if sites.global_latent else False
    latent = set(sites.global_latent) | set(sites.local_latent)
    unknown = sorted({n for g in dense_mass for n in g} - latent)
    if unknown:
        raise ValueError(
            f"{owner}.dense_mass names site(s) {unknown} that the model does not sample; its "
            f"latent sites: {sorted(latent)}"
        )
    return [tuple(g) for g in dense_mass]


def _check_mcmc(owner: str, cfg: Any) -> None:
    positive_int(owner, num_warmup=cfg.num_warmup, num_samples=cfg.num_samples,
                  num_chains=cfg.num_chains, thinning=cfg.thinning)  # fmt: skip
    if cfg.thinning > cfg.num_samples:
        raise ValueError(
            f"{owner}.thinning must be <= num_samples ({cfg.num_samples}) so that a draw is "
            f"kept; received {cfg.thinning}"
        )
    if not 0 < cfg.target_accept_prob < 1:
        raise ValueError(
            f"{owner}.target_accept_prob must be in (0, 1); received {cfg.target_accept_prob}"
        )
    if cfg.chain_method not in _CHAIN_METHODS:
        raise ValueError(
            f"{owner}.chain_method must be one of {_CHAIN_METHODS}; received {cfg.chain_method!r}"
        )
    _check_dense_mass(owner, cfg.dense_mass)


@register_method
@dataclasses.dataclass(frozen=True)
class NUTS:
    """The No-U-Turn sampler (NumPyro's ``NUTS``) on the model's exact joint.

    Args:
        num_warmup: warm-up (adaptation) iterations per chain, discarded.
        num_samples: kept draws per chain.
        num_chains: independent chains.
        target_accept_prob: step-size adaptation target.
        max_tree_depth: at most ``2**max_tree_depth - 1`` leapfrog steps per iteration.
        dense_mass: adapt a dense (``True``) or diagonal (``False``) mass matrix, or a
            block-structured one: ``"global"`` (one dense block over the global latent sites,
            hyperparameters and inducing values, and a diagonal over per-datum sites such as a
            DGP's ``{layer}.eps``) or a tuple of tuples of site names (NumPyro's dense blocks;
            the other sites diagonal).
        chain_method: ``"sequential"`` (the chains one after another, in one compiled
            program), ``"vectorized"`` (all chains in each step, batched), ``"parallel"``
            (one device each) or ``"auto"`` (the default: sequential on a CPU, vectorised on
            an accelerator; see :func:`resolve_chain_method`).
        thinning: keep every ``thinning``-th of the ``num_samples`` iterations,
            ``num_samples // thinning`` draws per chain. Unlike NumPyro's own ``thinning``,
            no divergence is lost: a kept draw's ``diverging`` is true when any iteration
            since the previous kept draw diverged.
    """

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 4
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool | str | tuple[tuple[str, ...], ...] = False
    chain_method: str = "auto"
    thinning: int = 1
    name: ClassVar[str] = "nuts"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # The compare report's reference: 8 chains x (500 + 1000) at depth <= 6. Chains are
        # the cheap way to ESS >= 400 and a sharp R-hat (one compiled program runs them all,
        # on a CPU one after another, see resolve_chain_method); target
        # 0.9 removes the last divergences (.bench/issue15_nuts.py: on the motorcycle DGP with
        # M = 20, 8 x (400 + 400) at 0.8 gave 1 of 3200 divergent, R-hat 1.013, ESS >= 533;
        # in `compare --num-inducing 20`, 8 x (500 + 700) left R-hat 1.01+ on one lengthscale,
        # 8 x (500 + 1000) passed the report's gate: R-hat <= 1.009, ESS >= 1028, 0 divergent).
        "compare": {
            "num_warmup": 500,
            "num_samples": 1000,
            "num_chains": 8,
            "max_tree_depth": 6,
            "target_accept_prob": 0.9,
        },
        # Smoke (tests, notebooks): two chains, enough for R-hat; eight quadruple a smoke
        # fit's run time for nothing a smoke test reads.
        "smoke": {"num_warmup": 60, "num_samples": 60, "max_tree_depth": 5, "num_chains": 2},
    }

    def __post_init__(self) -> None:
        _check_mcmc("NUTS", self)
        positive_int("NUTS", max_tree_depth=self.max_tree_depth)

    def run(
        self, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
    ) -> Posterior:
        """Fit (see :func:`~ppl_dgp.infer.fit`); the data are already checked."""
        return _fit_mcmc(self, rng_key, model, X, y, **model_kwargs)


@register_method
@dataclasses.dataclass(frozen=True)
class HMC:
    """Hamiltonian Monte Carlo with a fixed number of leapfrog steps (NumPyro's ``HMC``).

    Args:
        num_warmup, num_samples, num_chains, target_accept_prob, dense_mass, chain_method,
        thinning: as for :class:`NUTS`.
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
    dense_mass: bool | str | tuple[tuple[str, ...], ...] = False
    chain_method: str = "auto"
    thinning: int = 1
    name: ClassVar[str] = "hmc"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "compare": {"num_warmup": 200, "num_samples": 200, "num_chains": 2, "num_steps": 16},
        "smoke": {"num_warmup": 60, "num_samples": 60, "num_steps": 8},
    }

    def __post_init__(self) -> None:
        _check_mcmc("HMC", self)
        positive_int("HMC", num_steps=self.num_steps)
        if not self.step_size > 0:
            raise ValueError(f"HMC.step_size must be > 0; received {self.step_size}")

    def run(
        self, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
    ) -> Posterior:
        """Fit (see :func:`~ppl_dgp.infer.fit`); the data are already checked."""
        return _fit_mcmc(self, rng_key, model, X, y, **model_kwargs)


def _thin(
    draws: dict[str, Any], stats: dict[str, np.ndarray], k: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every ``k``-th iteration (the last of each block of ``k``); ``diverging`` of a kept
    draw is true when any iteration of its block diverged, so the count of divergent draws
    is zero exactly when no transition diverged."""
    n = next(iter(stats.values())).shape[1] // k * k
    out = {name: np.asarray(v)[:, k - 1 : n : k] for name, v in draws.items()}
    thinned = {name: v[:, k - 1 : n : k] for name, v in stats.items()}
    div = stats["diverging"][:, :n]
    thinned["diverging"] = div.reshape(div.shape[0], n // k, k).any(axis=-1)
    return out, thinned


def resolve_chain_method(name: str, backend: str | None = None) -> str:
    """The chain method ``"auto"`` stands for: ``"sequential"`` on a CPU, ``"vectorized"`` on
    an accelerator (``backend``: JAX's default backend unless given); others unchanged.

    On a CPU, vectorised chains cost more than chains one after another: the batched
    ``while_loop`` of NUTS's tree runs every chain to the slowest chain's depth, with selects
    on every leaf, and vmap re-traces its body until the batched carry settles. Measured on
    the motorcycle DGP (NUTS compare preset, 8 chains x (500 + 1000), one 2-core machine):
    245 s vectorised, 99 s sequential, whole ``ppl-dgp compare --methods nuts`` process.
    """
    if name != "auto":
        return name
    backend = jax.default_backend() if backend is None else backend
    return "sequential" if backend == "cpu" else "vectorized"


def _lax_map_chains(single_chain: Callable) -> Callable:
    """NumPyro's ``chain_method`` as a transform: the chains one after another inside one
    program (``lax.map``), traced and compiled once for every chain."""
    return lambda chain_args: jax.lax.map(single_chain, chain_args)


def _numpyro_chain_method(name: str, progress_bar: bool) -> str | Callable:
    """NumPyro's ``chain_method`` for ours. ``"sequential"`` maps the chains in one compiled
    program; NumPyro's own ``"sequential"`` (a Python loop that traces and compiles the
    sampler again for every chain, ~1-2 s each on a smoke DGP) only while a progress bar is
    shown, which NumPyro draws per chain and not inside a mapped program."""
    name = resolve_chain_method(name)
    if name == "sequential" and not progress_bar:
        return _lax_map_chains
    return name


def _fit_mcmc(
    method: NUTS | HMC, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
) -> Posterior:
    owner = type(method).__name__
    key_init, key_run = jax.random.split(rng_key)
    with timed() as timer:
        info, sites = initialize(key_init, model, X, y, owner=owner, **model_kwargs)
        # The kernels run on the shared potential, from the one initial point, every chain.
        common = dict(
            potential_fn=jax.jit(info.potential_fn),  # one compile, not op by op
            target_accept_prob=method.target_accept_prob,
            dense_mass=_mass_structure(owner, method.dense_mass, sites),
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
            chain_method=_numpyro_chain_method(method.chain_method, progress_enabled(None)),
            progress_bar=progress_enabled(None),
        )
        # The initial point with its potential and gradient, as computed in the initialising
        # program: NumPyro's kernel takes them (a ``ParamInfo``) instead of evaluating the
        # potential and its gradient again, eagerly, which compiled both (~5 s on a smoke DGP).
        z0 = info.param_info
        if method.num_chains > 1:
            C = method.num_chains
            z0 = ParamInfo(
                *(jax.tree.map(lambda a: jnp.broadcast_to(a, (C, *jnp.shape(a))), f) for f in z0)
            )
        extra = ("diverging", "accept_prob", "num_steps", "energy", "adapt_state.step_size")
        extra += tuple(f"~z.{name}" for name in sites.local_latent)  # per-datum: not kept
        mcmc.run(key_run, init_params=z0, extra_fields=extra)
        z = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        supports = {name: info.model_trace[name]["fn"].support for name in sites.global_latent}
        draws = constrain({name: z[name] for name in sites.global_latent}, supports)
        timings = timer.timings()
    stats = {
        ("step_size" if k == "adapt_state.step_size" else k): np.asarray(v)
        for k, v in mcmc.get_extra_fields(group_by_chain=True).items()
    }
    if method.thinning > 1:
        draws, stats = _thin(draws, stats, method.thinning)
    if isinstance(method, NUTS):  # as ArviZ defines it for NumPyro
        stats["tree_depth"] = np.log2(np.maximum(stats["num_steps"], 1)).astype(np.int64) + 1
    _warn_divergent(owner, stats["diverging"])
    return Posterior(
        draws=draws,
        method=method,
        sample_stats=stats,
        params=dict(sites.params),
        timings=timings,
    )
