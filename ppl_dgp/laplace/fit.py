"""The Laplace approximation behind :func:`~ppl_dgp.infer.fit` (Laplace Redux for BNNs).

``fit(Laplace(...), key, model, X, y)``:

1. **MAP** of the model's joint density over its latent sites in unconstrained space (the
   shared ``potential_fn`` from :func:`~ppl_dgp.infer.core.initialize`), by Adam on
   ``potential / N`` in the shared loop driver (:class:`~ppl_dgp.infer.loop.Loop`: compiled
   chunks, a progress bar, a non-finite loss stops with a clear error). By default
   (``local_latents="auto"``) the per-datum layer noise (a DGP's inner-layer ``eps``) is held
   at ``eps = 0`` (its joint MAP is degenerate) and the latent inputs (a GPLVM's ``w``) are
   optimised; ``"map"`` optimises every per-datum latent
   (:func:`~ppl_dgp.infer.core.held_local_latents`).
   With ``checkpoint_dir`` the MAP keeps a checkpoint every ``checkpoint_every`` steps and on
   Ctrl-C; a fit run again with the same directory continues the MAP, bit for bit, and a fit
   that differs only after the MAP (curvature, structure, tuning) starts from the saved MAP
   (:mod:`ppl_dgp.checkpoint`).
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
   - ``"auto"``: ``"ggn"`` when the model records the output site or is a GP-layer program
     with a Gaussian likelihood, else ``"hessian"``.

   **GP-layer programs** (a DGP, an SVGP) with a Gaussian likelihood and curvature
   ``"auto"``/``"ggn"`` take the linearised Laplace of :mod:`ppl_dgp.laplace.gp`: the GGN of
   the program's mean linearised in the inducing values ``u`` of every layer
   (``subset_of_weights`` ``"all"``; ``"last_layer"``: the last layer's ``u``), the
   hyperparameters and noise held at their MAP (or tuned by the evidence with
   ``tune="marglik"``), the inner layers' ``eps`` at 0 as in the MAP; its predictive
   (``predictive="glm"``) is the closed-form Gaussian ``N(m*, J* P^-1 J*^T + v*)``.
   ``curvature="hessian"`` keeps a Gaussian over every global site (hyperparameters included).

   **GP-layer classifiers** (a non-Gaussian likelihood; the program records its logits as the
   output site) with curvature ``"auto"``/``"ggn"``/``"ef"`` take the GGN/EF of the likelihood
   in the inducing values ``u`` (``subset_of_weights`` as above), the classic Laplace GP
   classifier; ``tune="marglik"`` sets the kernel hyperparameters by the Laplace evidence
   with ``u`` at its mode given them (:mod:`ppl_dgp.laplace.gp_marglik`).

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

Each call compiles its pieces afresh; a :class:`LaplaceFitter` kept by the caller holds them
(per data shapes and only the configuration each piece reads), so that refits cost
milliseconds after the first.

Example:
    >>> import functools, jax, numpy as np
    >>> from ppl_dgp.infer import fit
    >>> from ppl_dgp.models import bnn
    >>> from ppl_dgp.predictive import predict_proba
    >>> X = np.linspace(-2.0, 2.0, 20)[:, None]; y = (X[:, 0] > 0).astype(np.int32)
    >>> model = functools.partial(bnn.mlp_binary, hidden=(8,))
    >>> method = Laplace("last_layer", "full", tune="marglik", num_steps=300)
    >>> post = fit(method, jax.random.key(0), model, X, y)
    >>> post.approx.layout.names
    ('layer1.W', 'layer1.b')
    >>> p1 = predict_proba(model, post, np.array([[-2.0], [2.0]]))  # probit GLM predictive
    >>> bool(p1[0] < 0.5 < p1[1])
    True

References:
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS.
    MacKay (1992), "The Evidence Framework Applied to Classification Networks", Neural Comp.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from numpyro import handlers
from numpyro.distributions.transforms import biject_to

from ppl_dgp.checkpoint import Checkpoint, check_checkpoint_fields, fit_fingerprint
from ppl_dgp.collapse import ROLE
from ppl_dgp.compile_effort import AdaptiveJit
from ppl_dgp.infer.core import (
    LOCAL_LATENTS,
    held_local_latents,
    initialize,
    positive_int,
    register_method,
    timed,
)
from ppl_dgp.infer.loop import Loop, NonFiniteLossError
from ppl_dgp.infer.map import map_init, map_optimizer, map_step
from ppl_dgp.laplace import gp as G
from ppl_dgp.laplace import gp_marglik as GM
from ppl_dgp.laplace import traced as T
from ppl_dgp.laplace.approx import LaplaceApprox, Layout
from ppl_dgp.laplace.curvature import hessian_curvature
from ppl_dgp.laplace.structures import STRUCTURES, check_memory
from ppl_dgp.laplace.subset import (
    _dense_layers,
    _groups,
    _Layout,
    _likelihood_name,
    _normal_base,
    _normal_prior,
)
from ppl_dgp.latent import latent_sites
from ppl_dgp.posterior import Posterior
from ppl_dgp.validation import check_regression_data

__all__ = ["Laplace", "LaplaceFitter", "NotPositiveDefiniteWarning"]

_SUBSETS = ("all", "last_layer")
_STRUCTURES = tuple(STRUCTURES)
_CURVATURES = ("auto", "ggn", "ef", "hessian")
_TUNES = ("none", "marglik", "fixed_point", "grid")
_PRIOR_STRUCTURES = ("scalar", "layer")
_PREDICTIVES = ("glm", "sampled")


#: The configuration the MAP reads (its checkpoint's fingerprint; num_steps is its length).
_MAP_FIELDS = ("learning_rate", "local_latents")


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
        tune: ``"none"``, ``"marglik"``, ``"fixed_point"`` or ``"grid"``; anything but
            ``"none"`` needs curvature ``"ggn"``/``"ef"`` (``fit`` refuses it, before the MAP,
            when ``"auto"`` resolves to the Hessian). On a GP-layer program only
            ``"marglik"``, which tunes the hyperparameters (sample sites with a hyperprior)
            on the Laplace evidence with its hyperprior: with a Gaussian likelihood
            ``tune_steps`` Adam steps (``learning_rate``) of every hyperparameter (noise
            included); with another likelihood (a GP classifier) ``tune_steps`` L-BFGS
            iterations of the kernel hyperparameters, the mode of ``u`` re-found at each
            (:mod:`ppl_dgp.laplace.gp_marglik`).
        prior_structure: tuned prior precision: ``"scalar"`` or one per ``"layer"`` (a
            GP-layer program's tuning takes only ``"scalar"``: it has no prior precision).
        tune_noise: also tune a Gaussian likelihood's noise scale (``marglik``/``fixed_point``).
        tune_steps: Adam steps (``marglik``; L-BFGS iterations on a GP classifier) or
            iterations (``fixed_point``).
        grid: prior precisions tried by ``tune="grid"``.
        memory_limit_gb: the most memory a dense ``[P, P]`` curvature or ``[N, K, P]`` Jacobian
            may take.
        output_site: the deterministic network output ``f`` ``[N, K]``.
        likelihood_site: the observed site.
        local_latents: per-datum latent sites held at their initial value while the MAP is
            found (:func:`~ppl_dgp.infer.core.held_local_latents`): ``"auto"`` (default) holds
            the layer noise (a DGP's inner-layer ``eps = 0``: the inner layers pass their
            conditional means; its joint MAP is degenerate, each ``eps`` fitting its own point
            and the lengthscales collapsing) and optimises the latent inputs (a GPLVM's ``w``:
            held at 0 every datum would have the same input); ``"fixed"`` holds every one
            (refused for a model with latent inputs); ``"map"`` optimises every one. Either
            way the Gaussian is over the subset given the local sites, and prediction draws
            fresh ones.
        checkpoint_dir: a directory for the MAP's checkpoint (``None``: none). A fit given a
            directory holding its MAP's checkpoint continues the MAP from it (bit for bit; a
            longer ``num_steps`` continues a shorter MAP) and then builds the Gaussian as
            usual; the checkpoint depends only on what the MAP reads (``learning_rate``,
            ``local_latents``, the ``rng_key``, the model and the data), so another curvature,
            structure or tuning reuses it (see :mod:`ppl_dgp.checkpoint`).
        checkpoint_every: MAP steps between checkpoints (also written at the end of the MAP
            and on ``KeyboardInterrupt``).
        predictive: for a GP-layer program with a Gaussian likelihood (fitted with the GGN of
            :mod:`ppl_dgp.laplace.gp`), what :func:`~ppl_dgp.predictive.predict` and the
            LOO's pointwise log-likelihood use: ``"glm"`` (default, as laplace-torch's
            ``pred_type="glm"``), the program linearised in ``u`` at the MAP (closed-form
            Gaussian predictive, smooth bands), or ``"sampled"``, the nonlinear program run
            at the draws. Networks keep their own choice (``predict_proba``'s ``link``).
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
    local_latents: str = "auto"
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    predictive: str = "glm"
    name: ClassVar[str] = "laplace"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "compare": {"num_samples": 400},
        "smoke": {"num_steps": 200, "num_samples": 100},
    }

    def run(
        self, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
    ) -> Posterior:
        """Fit (see :func:`~ppl_dgp.infer.fit`); the data are already checked."""
        return _fit_laplace(self, LaplaceFitter(model, **model_kwargs), rng_key, X, y)

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
            ("local_latents", LOCAL_LATENTS),
            ("predictive", _PREDICTIVES),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(
                    f"Laplace.{field} must be one of {allowed}; received {getattr(self, field)!r}"
                )
        if not self.learning_rate > 0:
            raise ValueError(f"Laplace.learning_rate must be > 0; received {self.learning_rate}")
        check_checkpoint_fields("Laplace", self)
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


# -- the caller-held compiled pieces -----------------------------------------------------------


class LaplaceFitter:
    """Laplace fits of one model, with their compiled pieces held by the caller.

    ``fit(Laplace(...), key, model, X, y)`` builds a fresh fitter per call (everything is
    compiled again). Keep a fitter to refit the same model, to new data of the same shapes or
    with another configuration, at the cost of the computation alone: it holds the model's
    structure per data shape (one :func:`~ppl_dgp.infer.initialize`) and one ``jax.jit`` per
    traced piece of :mod:`ppl_dgp.laplace.traced`, each keyed (by JAX) on the shapes and on
    only the configuration that piece reads. Nothing is cached on the model's identity or the
    data's values beyond the object's life.

    Args:
        model: the NumPyro program ``model(X, y=None, **model_kwargs)``.
        **model_kwargs: its further keywords (fixed for the fitter).

    Example:
        >>> import functools, jax, numpy as np
        >>> from ppl_dgp.models import bnn
        >>> model = functools.partial(bnn.mlp_binary, hidden=(4,))
        >>> X = np.random.default_rng(0).normal(size=(20, 2)); y = (X[:, 0] > 0).astype(int)
        >>> laplace = LaplaceFitter(model)
        >>> post = laplace.fit(Laplace("last_layer", num_steps=50), jax.random.key(0), X, y)
        >>> post = laplace.fit(Laplace("last_layer", num_steps=80), jax.random.key(1), X, y)
        >>> laplace.compiled_sizes()["ggn_core"]  # num_steps does not reach the core
        1
    """

    def __init__(self, model: Callable, **model_kwargs: Any) -> None:
        self.model = model
        self.model_kwargs = model_kwargs
        kw = dict(model_kwargs)
        self._structures: dict[tuple, tuple] = {}  # {data shapes: (model trace, sites)}
        # every piece runs once a fit: compiled quick when that is little work (compile_effort)
        self._init = AdaptiveJit(functools.partial(T._init_point, model, kw), static_argnums=0)
        # the MAP in the shared loop driver (progress bar, non-finite fallback), Adam with its
        # learning rate in the state: one compile serves every num_steps and learning_rate
        self._opt = map_optimizer("adam")
        self._map = Loop(map_step(functools.partial(T._map_loss, model, kw), self._opt),
                         desc="Laplace MAP", owner="Laplace")  # fmt: skip
        self._core = AdaptiveJit(functools.partial(T._ggn_core, model, kw), static_argnums=0)
        # a partial per fitter: jax.jit's cache is keyed on the function object
        self._draws = AdaptiveJit(functools.partial(T._draws), static_argnums=3)
        self._hessian = AdaptiveJit(functools.partial(T._hessian, model, kw), static_argnums=0)
        self._potential = AdaptiveJit(functools.partial(T._potential, model, kw))
        self._gp_core = AdaptiveJit(functools.partial(G._gp_core, model, kw), static_argnums=0)
        self._gpc_mode = AdaptiveJit(functools.partial(GM.mode_and_gradient, model, kw),
                                     static_argnums=0)  # fmt: skip

    def fit(self, method: Laplace, rng_key: Array, X: Any, y: Any) -> Posterior:
        """``fit(method, rng_key, model, X, y)`` with this fitter's compiled pieces."""
        if not isinstance(method, Laplace):
            raise TypeError(f"LaplaceFitter.fit needs a Laplace method; received {method!r}")
        check_regression_data(X, y)
        post = _fit_laplace(method, self, rng_key, jnp.asarray(X), jnp.asarray(y))
        # the fitted program travels with the Posterior, as from ``fit``
        fitted = (
            functools.partial(self.model, **self.model_kwargs) if self.model_kwargs else self.model
        )
        return post.replace(model=fitted)

    def compiled_sizes(self) -> dict[str, int]:
        """How many compilations each piece holds (``jax.jit``'s cache sizes)."""
        pieces = {
            "init": self._init,
            "map": self._map._compiled,
            "ggn_core": self._core,
            "draws": self._draws,
            "hessian": self._hessian,
            "potential": self._potential,
            "gp_core": self._gp_core,
            "gpc_mode": self._gpc_mode,
        }
        return {k: int(f._cache_size()) for k, f in pieces.items()}

    def _structure(self, key: Array, X: Array, y: Array) -> tuple[dict, Any, Any]:
        """``(model trace, ModelSites, init)`` for data of these shapes (one ``initialize``);
        ``init`` is ``initialize``'s initial point (``ParamInfo``) when it ran in this call
        (at this key and data), else ``None``."""
        ck = (X.shape, str(X.dtype), y.shape, str(y.dtype))
        init = None
        if ck not in self._structures:
            info, sites = initialize(key, self.model, X, y, owner="Laplace", **self.model_kwargs)
            self._structures[ck] = (info.model_trace, sites)
            init = info.param_info
        return (*self._structures[ck], init)


# -- fit ---------------------------------------------------------------------------------------


def _fit_laplace(
    method: Laplace, fitter: LaplaceFitter, rng_key: Array, X: Array, y: Array
) -> Posterior:
    key_init, key_draws = jax.random.split(rng_key)
    if method.curvature == "auto" and method.tune != "none":  # a refusal before any compile
        _resolve_curvature(method, _site_types(fitter, X, y))
    checkpoint = None
    if method.checkpoint_dir is not None and method.num_steps:
        fingerprint = fit_fingerprint(method, rng_key, fitter.model, X, y, fitter.model_kwargs,
                                      only=_MAP_FIELDS)  # fmt: skip
        checkpoint = Checkpoint(method.checkpoint_dir, every=method.checkpoint_every,
                                fingerprint=fingerprint, owner="Laplace")  # fmt: skip
        checkpoint.prepare()
    with timed() as timer:
        mtr, sites, init = fitter._structure(key_init, X, y)
        held = held_local_latents(sites, method.local_latents, "Laplace")  # before the MAP
        curvature = _resolve_curvature(method, mtr)  # before the MAP
        latent = tuple(sites.global_latent) + tuple(sites.local_latent)
        if init is not None:  # initialize just computed the initial point: no second trace
            z0, pe0 = {k: init.z[k] for k in latent}, init.potential_energy
            params = {k: s["value"] for k, s in mtr.items() if s["type"] == "param"}
        else:
            z0, params, pe0 = fitter._init(latent, key_init, X, y)
        if not np.isfinite(float(pe0)):  # initialize names the offending sites
            initialize(key_init, fitter.model, X, y, owner="Laplace", **fitter.model_kwargs)
        fixed = {k: z0[k] for k in held if k in z0}
        if method.num_steps:
            free = {k: v for k, v in z0.items() if k not in fixed}
            state = map_init(fitter._opt, free, method.learning_rate)
            key_map = jax.random.fold_in(key_init, 1)  # unused by Adam's steps
            try:
                res = fitter._map.run(state, method.num_steps, key_map, args=(fixed, X, y),
                                      checkpoint=checkpoint, stage="map")  # fmt: skip
            except NonFiniteLossError as err:
                raise ValueError(
                    f"Laplace: the MAP is not finite (the loss became non-finite at step "
                    f"{err.step}) after num_steps={method.num_steps} with learning_rate="
                    f"{method.learning_rate}; try a smaller learning_rate or check the data and "
                    "priors"
                ) from err
            z_map, losses = {**fixed, **res.state[0]}, res.losses
        else:  # a warm start: the initial point is the MAP
            z_map, losses = z0, np.zeros(0)
        z_map = jax.device_get(z_map)
        timer.mark("map")
        layers_all = _dense_layers(mtr)
        gp = _is_gp_path(method, curvature, mtr)
        gpc = not gp and _is_gp_classifier(method, curvature, mtr)
        names = (_select_gp_subset(method, mtr) if gp or gpc
                 else _select_subset(method, curvature, sites, layers_all))  # fmt: skip
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
            if names != tuple(n for v in layers.values() for n in v):
                raise ValueError(
                    "Laplace(hessian_structure='kron') needs each dense layer's W and b to be "
                    f"declared together, layer after layer; the subset's order is {names}"
                )
        groups, G, group_names = _groups(method.prior_structure, layout, layers)
        path = (_fit_gp if gp else _fit_gp_classifier if gpc
                else _fit_hessian if curvature == "hessian" else _fit_ggn)  # fmt: skip
        res = path(method, fitter, curvature, mtr, sites, z_map, params, layout, layers,
                   groups, G, X, y, key_draws)  # fmt: skip
        timings = timer.timings()
    approx = LaplaceApprox(
        map=res.pop("map"),
        layout=Layout(layout.names, layout.shapes),
        curvature=curvature,
        dense_layers=tuple((k, tuple(v)) for k, v in layers.items()),
        output_site=method.output_site,
        prior_groups=tuple(group_names),
        predictive=method.predictive if gp else "sampled",
        **res.pop("approx"),
    )
    return Posterior(
        draws=res["draws"],
        method=method,
        traces={"map_loss": np.asarray(losses), **res.pop("traces", {})},
        params={k: np.asarray(v) for k, v in params.items()},
        approx=approx,
        timings=timings,
    )


def _site_types(fitter: LaplaceFitter, X: Array, y: Array) -> dict[str, dict[str, str]]:
    """``{site: {"type": ...}}`` of the model at data of these shapes, traced abstractly
    (``jax.eval_shape``: nothing is run or compiled)."""
    types: dict[str, dict[str, str]] = {}

    def run(X: Array, y: Array) -> Array:
        with handlers.block():
            tr = handlers.trace(handlers.seed(fitter.model, 0)).get_trace(
                X, y, **fitter.model_kwargs
            )
        types.update({
            k: {"type": site["type"], "infer": dict(site.get("infer") or {}), "fn": site.get("fn"),
                "ndim": len(jnp.shape(site["value"])), "is_observed": site.get("is_observed"),
                "cond_indep_stack": site.get("cond_indep_stack", ())}
            for k, site in tr.items()
        })  # fmt: skip
        return jnp.zeros(())

    jax.eval_shape(run, X, y)
    return types


def _resolve_curvature(method: Laplace, mtr: dict) -> str:
    """The curvature ``"auto"`` stands for with this model, checked against the other settings.

    Raises:
        ValueError: a GGN/EF without the output site, or a tuned prior with the Hessian (the
            exact Hessian holds the model's own prior: there is no prior precision to tune,
            and a tune that did not happen must not be recorded).
    """
    curvature = method.curvature
    if _is_gp_path(method, "ggn" if curvature == "auto" else curvature, mtr):
        if method.tune not in ("none", "marglik"):
            raise ValueError(
                f"Laplace(tune={method.tune!r}) is not available for a GP-layer program's "
                "linearised Laplace: its prior precision and noise are the kernel variances "
                "and noise_variance, hyperparameters of the program, tuned by the evidence "
                "with tune='marglik' (or held at their MAP with tune='none')"
            )
        if method.hessian_structure == "kron":
            raise ValueError(
                "Laplace(hessian_structure='kron') needs dense layers; a GP-layer program's "
                "linearised Laplace takes 'full' or 'diag'"
            )
        _check_gp_tune(method)
        return "ggn"
    if curvature == "auto":
        has_f = method.output_site in mtr and mtr[method.output_site]["type"] == "deterministic"
        curvature = "ggn" if has_f else "hessian"
        if not has_f and method.output_site != "f":  # a name the user gave, not found
            warnings.warn(
                f"Laplace: output_site={method.output_site!r} is not a deterministic site of "
                "the model (it records "
                f"{sorted(k for k, s in mtr.items() if s['type'] == 'deterministic')}); "
                "curvature='auto' falls back to the exact Hessian over every global latent "
                "site: correct the name, or set curvature='hessian'",
                UserWarning,
                stacklevel=4,
            )
        if curvature == "hessian" and method.tune != "none":
            raise ValueError(
                f"Laplace(tune={method.tune!r}) needs curvature 'ggn' or 'ef', but "
                f"curvature='auto' resolves to 'hessian' for this model (it records no "
                f"deterministic output site output_site={method.output_site!r}); the exact "
                "Hessian holds the model's own prior, so there is no prior precision to tune: "
                "use tune='none', or record the network output and set curvature='ggn'"
            )
    if curvature != "hessian" and method.output_site not in mtr:
        raise ValueError(
            f"Laplace(curvature={curvature!r}) needs the network output recorded as the "
            f"deterministic site output_site={method.output_site!r}; the model has "
            f"{sorted(k for k, s in mtr.items() if s['type'] == 'deterministic')}"
        )
    if _is_gp_classifier(method, curvature, mtr):
        if method.tune in ("fixed_point", "grid"):
            raise ValueError(
                f"Laplace(tune={method.tune!r}) is not available for a GP-layer program with a "
                "non-Gaussian likelihood: the prior of its whitened inducing values is N(0, I) "
                "and their scale is the kernel variance, a hyperparameter of the program, "
                "tuned by the Laplace evidence with tune='marglik' (or held at its MAP with "
                "tune='none')"
            )
        if method.tune_noise:
            raise ValueError(
                "Laplace.tune_noise needs a Gaussian likelihood; received tune_noise=True for a "
                f"GP-layer program observed through {type(_site_fn(mtr, method)).__name__}"
            )
        _check_gp_tune(method)
        if method.tune == "marglik" and not _gp_hyperparameters(mtr):
            raise ValueError(
                "Laplace(tune='marglik') on a GP-layer classifier tunes its kernel "
                "hyperparameters by the Laplace evidence, but the model has none as sample "
                "sites (hyperparameters without a prior are fixed params): give them a prior "
                "(Hyper(prior=...)) or use tune='none'"
            )
    return curvature


def _gp_hyperparameters(mtr: dict) -> tuple[str, ...]:
    """The global latent sample sites of a GP-layer program other than its inducing values
    (kernel variances, lengthscales, ...), in trace order."""
    return tuple(
        k for k, s in mtr.items()
        if s["type"] == "sample" and not s.get("is_observed") and not s.get("cond_indep_stack")
        and s.get("infer", {}).get(ROLE) != "inducing"
    )  # fmt: skip


def _site_fn(mtr: dict, method: Laplace) -> Any:
    return mtr.get(method.likelihood_site, {}).get("fn")


def _check_gp_tune(method: Laplace) -> None:
    """A GP-layer program's evidence tunes its hyperparameters, not a prior precision per
    group: ``prior_structure`` other than ``"scalar"`` would be recorded and not applied."""
    if method.tune == "marglik" and method.prior_structure != "scalar":
        raise ValueError(
            f"Laplace(prior_structure={method.prior_structure!r}) does not apply to a GP-layer "
            "program: tune='marglik' tunes its kernel hyperparameters (the prior of the "
            "whitened inducing values stays N(0, I)); use prior_structure='scalar'"
        )


def _draws_of(
    global_latent: tuple[str, ...], layout: _Layout, thetas: np.ndarray, cmap: dict
) -> tuple[dict, dict]:
    """Host-side draws ``{site: (1, S, ...)}`` (subset sites from ``thetas [S, P]``, the others
    at their MAP) and ``{site: MAP}``; ``thetas`` and ``cmap`` are in the same space."""
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
        maps[name] = v
    return draws, maps


def _fit_ggn(method, fitter, curvature, mtr, sites, z_map, params, layout, layers, groups, G, X,
             y, key_draws) -> dict:  # fmt: skip
    """GGN / empirical Fisher: the compiled core, the draws, one transfer to the host."""
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
    spec = T._CoreSpec(
        structure=STRUCTURES[method.hessian_structure],
        kind=curvature,
        lik=lik_name,
        layout=layout,
        layers=tuple((k, tuple(v)) for k, v in layers.items()),
        groups=tuple(int(g) for g in groups),
        G=G,
        global_latent=tuple(sites.global_latent),
        output_site=method.output_site,
        likelihood_site=method.likelihood_site,
        tune=method.tune,
        tune_noise=method.tune_noise,
        tune_steps=method.tune_steps,
        grid=method.grid,
        memory_limit_gb=method.memory_limit_gb,
    )
    out = fitter._core(spec, z_map, params, X, y)
    thetas = fitter._draws(out["precision"], out["theta_map"], key_draws, method.num_samples)
    out, thetas = jax.device_get((out, thetas))
    if not float(out["eta_f_gap"]) <= 1e-8 * (1.0 + float(out["f_scale"])):
        raise ValueError(
            f"Laplace: the likelihood site {method.likelihood_site!r}'s parameter must "
            f"be the output site {method.output_site!r}; they differ by "
            f"{float(out['eta_f_gap'])} at the MAP"
        )
    draws, maps = _draws_of(tuple(sites.global_latent), layout, thetas, out["cmap"])
    approx = _approx_fields(out, out["scale"], lik_name)
    return {"draws": draws, "map": maps, "approx": approx}


def _approx_fields(out: dict, curvature_scale: Any, likelihood: str) -> dict:
    """The Laplace approximation's fields from a fitted core's outputs (GGN/Fisher and GP)."""
    return {
        "theta_map": out["theta_map"],
        "precision": out["precision"],
        "prior_precision": out["delta"],
        "prior_mean": out["mu0"],
        "sigma_noise": out["sigma"],
        "log_marglik": out["lml"],
        "curvature_scale": curvature_scale,
        "likelihood": likelihood,
        "num_clipped": 0,
    }


def _fit_hessian(method, fitter, curvature, mtr, sites, z_map, params, layout, layers, groups,
                 G, X, y, key_draws) -> dict:  # fmt: skip
    """The exact Hessian of the potential (any model, any site), repaired if not PD; the
    Gaussian is over the unconstrained subset, its draws constrained afterwards."""
    del curvature, params, layers, groups, G
    P = layout.P
    theta_map = layout.ravel(z_map)
    check_memory("the Hessian", (P, P), method.memory_limit_gb)
    H = fitter._hessian(layout, theta_map, z_map, X, y)
    curv, n_bad = hessian_curvature(STRUCTURES[method.hessian_structure], H)
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
    precision = curv.posterior(1.0, jnp.zeros(P))  # H already holds the prior
    # -U(MAP) + P/2 log 2 pi - 1/2 logdet H: Laplace's evidence with the exact Hessian
    lml = (-fitter._potential(z_map, X, y) + 0.5 * P * math.log(2 * math.pi)
           - 0.5 * precision.logdet())  # fmt: skip
    thetas = fitter._draws(precision, theta_map, key_draws, method.num_samples)
    zs = layout.unravel_batch(thetas)  # [S, P] -> {site: [S, ...]}
    draws, maps = {}, {}
    for name in sites.global_latent:
        transform = biject_to(mtr[name]["fn"].support)
        v = zs[name] if name in layout.names else jnp.broadcast_to(
            z_map[name], (method.num_samples,) + jnp.shape(z_map[name])
        )  # fmt: skip
        draws[name] = np.asarray(transform(v))[None]
        maps[name] = np.asarray(transform(z_map[name]))
    approx = {
        "theta_map": np.asarray(theta_map),
        "precision": jax.device_get(precision),
        "prior_precision": np.ones(P),
        "prior_mean": np.zeros(P),
        "sigma_noise": np.asarray(1.0),
        "log_marglik": np.asarray(lml),
        "curvature_scale": np.asarray(1.0),
        "likelihood": None,
        "num_clipped": n_clipped,
    }
    return {"draws": draws, "map": maps, "approx": approx}


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


# -- GP-layer programs: the linearised Laplace of ppl_dgp.laplace.gp -------------------------


def _local_latents_held_at_zero(method: Laplace, mtr: dict) -> bool:
    """Every per-datum latent of the trace is layer noise the MAP holds at 0: ``local_latents``
    ``"auto"`` or ``"fixed"`` and no latent inputs (``"auto"`` optimises them, ``"fixed"`` is
    refused with them: :func:`~ppl_dgp.infer.core.held_local_latents`)."""
    local = [
        s for s in mtr.values()
        if s["type"] == "sample" and not s.get("is_observed") and s.get("cond_indep_stack")
    ]  # fmt: skip
    return (
        method.local_latents != "map"
        and not latent_sites(mtr)
        and all(s.get("infer", {}).get(ROLE) == "layer_noise" for s in local)
    )


def _is_gp_path(method: Laplace, curvature: str, mtr: dict) -> bool:
    """The GGN of a GP-layer program with a Gaussian likelihood (no network output site) whose
    per-datum latents are all layer noise held at 0 (:func:`_local_latents_held_at_zero`):
    the linearisation's ``eps = 0`` is then the MAP's."""
    return (
        curvature == "ggn"
        and method.output_site not in mtr
        and _local_latents_held_at_zero(method, mtr)
        and G.is_gp_regression(mtr, method.likelihood_site)
    )


def _select_gp_subset(method: Laplace, mtr: dict) -> tuple[str, ...]:
    """The inducing values the linearised Laplace covers: every layer's ``u`` (``"all"``), the
    last layer's (``"last_layer"``) or the named ones; the hyperparameters stay at their MAP."""
    us = G.inducing_sites(mtr)
    s = method.subset_of_weights
    if s == "all":
        return us
    if s == "last_layer":
        return us[-1:]
    stray = [n for n in s if n not in us]
    if stray:
        raise ValueError(
            f"Laplace(curvature='ggn') on a GP-layer program linearises in the inducing values "
            f"{list(us)}; subset_of_weights names other sites: {stray} (use curvature="
            "'hessian' for a Gaussian over hyperparameters)"
        )
    return tuple(n for n in us if n in s)


def _fit_gp(method, fitter, curvature, mtr, sites, z_map, params, layout, layers, groups, G_,
            X, y, key_draws) -> dict:  # fmt: skip
    """The GGN of the program linearised in ``u`` (:mod:`ppl_dgp.laplace.gp`): the compiled
    core, the draws ``u_s ~ N(u_MAP, P^-1)`` (hyperparameters at their MAP)."""
    del curvature, layers, groups, G_
    glob = tuple(sites.global_latent)
    spec = G._GPSpec(
        structure=STRUCTURES[method.hessian_structure],
        layout=layout,
        global_latent=glob,
        likelihood_site=method.likelihood_site,
    )
    check_memory("the Jacobian d m / d u", (X.shape[0], layout.P), method.memory_limit_gb)
    traces = {}
    if method.tune == "marglik":  # the hyperparameters by the Laplace evidence
        z_map, traces["evidence_loss"] = _tune_gp_evidence(method, fitter, spec, mtr, z_map,
                                                           params, X, y)  # fmt: skip
    values = {n: biject_to(mtr[n]["fn"].support)(z_map[n]) for n in glob}
    out = fitter._gp_core(spec, values, params, X, y)
    thetas = fitter._draws(out["precision"], out["theta_map"], key_draws, method.num_samples)
    out, thetas, values = jax.device_get((out, thetas, values))
    draws, maps = _draws_of(glob, layout, thetas, values)
    approx = _approx_fields(out, np.asarray(1.0), "gaussian")
    return {"draws": draws, "map": maps, "approx": approx, "traces": traces}


def _tune_gp_evidence(method, fitter, spec, mtr, z_map, params, X, y) -> tuple[dict, np.ndarray]:
    """``tune_steps`` Adam steps (``learning_rate``) from the MAP on
    :func:`ppl_dgp.laplace.gp._evidence_loss`: the hyperparameters (noise included) to a
    stationary point of the Laplace evidence with their hyperpriors, ``u`` to its MAP given
    them; the per-datum sites stay fixed. Returns the new point and the loss per step."""
    glob = set(spec.global_latent)
    free = {k: v for k, v in z_map.items() if k in glob}
    fixed = {k: v for k, v in z_map.items() if k not in glob}
    delta = jnp.concatenate(
        [jnp.reshape(_normal_prior(mtr[n]["fn"], n)[1], -1) for n in spec.layout.names]
    )
    loss = functools.partial(G._evidence_loss, fitter.model, dict(fitter.model_kwargs), spec)
    loop = Loop(map_step(loss, fitter._opt), desc="Laplace evidence", owner="Laplace")
    state = map_init(fitter._opt, free, method.learning_rate)
    try:
        res = loop.run(state, method.tune_steps, jax.random.key(0),
                       args=(fixed, params, delta, X, y))  # fmt: skip
    except NonFiniteLossError as err:
        raise ValueError(
            f"Laplace(tune='marglik'): the evidence became non-finite at step {err.step}; try "
            "a smaller learning_rate"
        ) from err
    return jax.device_get({**fixed, **res.state[0]}), np.asarray(res.losses)


# -- GP-layer classifiers: the GGN over u, the hyperparameters by the Laplace evidence ----------


def _is_gp_classifier(method: Laplace, curvature: str, mtr: dict) -> bool:
    """A GP-layer program with a non-Gaussian likelihood whose logits it records as the output
    site (GGN/EF over its inducing values, :mod:`ppl_dgp.laplace.gp_marglik`), its per-datum
    latents all layer noise held at 0 (:func:`_local_latents_held_at_zero`)."""
    out = mtr.get(method.output_site)
    return (
        curvature in ("ggn", "ef")
        and out is not None
        and out["type"] == "deterministic"
        and _local_latents_held_at_zero(method, mtr)
        and bool(G.inducing_sites(mtr))
        and not G.is_gp_regression(mtr, method.likelihood_site)
    )


def _fit_gp_classifier(method, fitter, curvature, mtr, sites, z_map, params, layout, layers,
                       groups, G_, X, y, key_draws) -> dict:  # fmt: skip
    """The GGN/EF Laplace over the inducing values (:func:`_fit_ggn`, the model's own prior
    ``N(0, I)``), with ``tune="marglik"`` at the hyperparameters and mode that
    :func:`_tune_gp_classifier` finds."""
    traces = {}
    if method.tune == "marglik":
        z_map, traces = _tune_gp_classifier(method, fitter, curvature, mtr, sites, z_map,
                                            params, layout, X, y)  # fmt: skip
    res = _fit_ggn(dataclasses.replace(method, tune="none"), fitter, curvature, mtr, sites,
                   z_map, params, layout, layers, groups, G_, X, y, key_draws)  # fmt: skip
    return {**res, "traces": traces}


def _tune_gp_classifier(method, fitter, curvature, mtr, sites, z_map, params, layout, X,
                        y) -> tuple[dict, dict]:  # fmt: skip
    """``tune_steps`` L-BFGS iterations of every global hyperparameter (the global latent
    sites other than inducing values: kernel variances, lengthscales) on the Laplace evidence
    with its hyperprior, the mode ``u*`` of the subset re-found at each
    (:mod:`ppl_dgp.laplace.gp_marglik`); inducing values outside the subset stay at the MAP.

    Returns the new unconstrained point (hyperparameters tuned, ``u`` at their mode) and the
    traces ``evidence_loss`` (per iteration, per datum) and ``evidence_mode_grad`` (one entry:
    the largest of ``|grad_u U|`` at the returned mode)."""
    site = method.likelihood_site
    if site not in mtr:
        raise ValueError(f"Laplace.likelihood_site={site!r} is not a site of the model")
    lik = _likelihood_name(mtr[site]["fn"], site)
    hyper = tuple(n for n in _gp_hyperparameters(mtr) if n in sites.global_latent)
    spec = GM._Spec(structure=STRUCTURES[method.hessian_structure], kind=curvature, lik=lik,
                    layout=layout, output_site=method.output_site)  # fmt: skip
    delta = jnp.concatenate(
        [jnp.reshape(_normal_prior(mtr[n]["fn"], n)[1], -1) for n in layout.names]
    )
    zh = {n: z_map[n] for n in hyper}
    fixed = {k: v for k, v in z_map.items() if k not in hyper and k not in layout.names}
    u, _ = fitter._gpc_mode(spec, layout.ravel(z_map), zh, fixed, X, y)
    kw = dict(fitter.model_kwargs)
    N, K = np.shape(mtr[method.output_site]["value"])
    check_memory("the Jacobian d f / d u", (N, K, layout.P), method.memory_limit_gb)
    check_memory("the Hessian in u", (layout.P, layout.P), method.memory_limit_gb)
    loop = Loop(GM.tune_step(fitter.model, kw, spec, optax.lbfgs()), desc="Laplace evidence",
                owner="Laplace", chunk_size=min(100, method.tune_steps))  # fmt: skip
    try:
        res = loop.run((zh, u, optax.lbfgs().init(zh)), method.tune_steps, jax.random.key(0),
                       args=(fixed, params, delta, X, y))  # fmt: skip
    except NonFiniteLossError as err:
        raise ValueError(
            f"Laplace(tune='marglik'): the evidence became non-finite at iteration {err.step} "
            "of tune_steps; check the hyperpriors and the data's scale"
        ) from err
    zh, u, _ = res.state
    u, grad = fitter._gpc_mode(spec, u, zh, fixed, X, y)
    z = jax.device_get({**fixed, **zh, **layout.unravel(u)})
    if not np.isfinite(float(grad)):
        raise ValueError(
            "Laplace(tune='marglik'): the mode of the inducing values at the tuned "
            "hyperparameters is not finite; check the hyperpriors and the data's scale"
        )
    # traces are (steps,): the mode's gradient is one entry, at the end
    return z, {"evidence_loss": np.asarray(res.losses),
               "evidence_mode_grad": np.asarray([float(grad)])}  # fmt: skip
