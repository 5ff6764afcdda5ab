"""Stochastic variational inference: NumPyro's SVI update in the shared loop driver.

:func:`run_svi` is the lower-level entry: ``init`` builds the NumPyro ``SVIState`` (and the
minibatch stream of a subsampling model), ``step`` is one update, and
:func:`~ppl_dgp.infer.loop.run_loop` runs them compiled in chunks with a progress bar; a
non-finite loss stops with :class:`~ppl_dgp.infer.loop.NonFiniteLossError`, which keeps the
last finite state (give it back as ``init_state`` to continue).

The :class:`SVI` configuration puts the same loop behind :func:`~ppl_dgp.infer.fit`: the
inducing-point guide and the doubly-stochastic bound for GP-layer programs (``AutoNormal`` and
``Trace_ELBO`` otherwise), then ``num_samples`` i.i.d. draws of ``q`` stored as one chain. The
fitted ``q(u)`` is kept as :class:`InducingApprox` (the predictive integrates ``u`` out against
it), any other guide's parameters as :class:`GuideApprox`.

Resuming: ``SVI(checkpoint_dir=..., checkpoint_every=K)`` keeps a checkpoint of the loop
(NumPyro's state with its key, the minibatch stream, the losses) every ``K`` steps and on
Ctrl-C; the same fit run again with the same directory continues from it and equals the
uninterrupted fit bit for bit (see :class:`SVI`'s example and :mod:`ppl_dgp.checkpoint`).
:func:`run_svi` takes the same :class:`~ppl_dgp.checkpoint.Checkpoint`, or an ``init_state``.

References:
    Hoffman, Blei, Wang & Paisley (2013), "Stochastic Variational Inference", JMLR.
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS.

Example:
    A model without GP layers gets ``AutoNormal`` (a GP program gets the inducing-point guide
    and the doubly-stochastic bound, and ``InducingApprox``):

    >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
    >>> from ppl_dgp.infer import SVI, fit
    >>> def model(X, y=None):
    ...     w = numpyro.sample("w", dist.Normal(0.0, 10.0))
    ...     with numpyro.plate("data", X.shape[0]):
    ...         numpyro.sample("y", dist.Normal(w * X[:, 0], 1.0), obs=y)
    >>> X = np.ones((20, 1)); y = 2.0 * np.ones(20)
    >>> post = fit(SVI(num_steps=300, learning_rate=0.05, num_samples=50), jax.random.key(0),
    ...            model, X, y)
    >>> post.draws["w"].shape, post.traces["loss"].shape, type(post.approx).__name__
    ((1, 50), (300,), 'GuideApprox')
    >>> bool(abs(post.draws["w"].mean() - 2.0) < 0.2)
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from jax.sharding import Mesh
from numpyro.handlers import block, seed, trace
from numpyro.infer import SVI as NumPyroSVI
from numpyro.infer import Predictive, Trace_ELBO

from ppl_dgp.checkpoint import Checkpoint, check_checkpoint_fields, fit_fingerprint
from ppl_dgp.compile_effort import AdaptiveJit
from ppl_dgp.elbo import DoublyStochasticELBO, ImportanceWeightedELBO
from ppl_dgp.guides import (
    CompiledAutoNormal,
    InducingPointGuide,
    compiled_init,
    init_to_model_init,
)
from ppl_dgp.infer.core import (
    ModelSites,
    accepts_batch_size,
    inspect_model,
    positive_int,
    register_method,
    timed,
)
from ppl_dgp.infer.loop import NonFiniteLossError, run_loop
from ppl_dgp.infer.minibatch import (
    BatchState,
    init_batches,
    next_batch,
    subsampled_plate,
    with_batch,
)
from ppl_dgp.latent import LatentVariableGuide
from ppl_dgp.natgrad import natgrad_layers, natgrad_svi_step
from ppl_dgp.posterior import Posterior, approx_type
from ppl_dgp.sharding import batch_mesh, check_divisible, replicate, shard_batch

__all__ = ["SVI", "GuideApprox", "InducingApprox", "SVIResult", "run_svi"]


@dataclasses.dataclass(frozen=True)
class SVIResult:
    """Outcome of :func:`run_svi`.

    Attributes:
        params: constrained parameters (guide and model ``param`` sites).
        losses: loss per step ``[num_steps]`` (negative ELBO estimate).
        state: the final NumPyro ``SVIState`` (to continue training: ``init_state``).
        compile_seconds: JAX compile time inside the call (set-up and the loop).
        run_seconds: the rest of the call's wall time.
    """

    params: dict[str, Array]
    losses: np.ndarray
    state: Any
    compile_seconds: float = 0.0
    run_seconds: float = 0.0


class SVIRunState(NamedTuple):
    """The loop's state: NumPyro's ``SVIState`` and the minibatch stream (or ``None``)."""

    svi: Any
    batches: BatchState | None


def run_svi(
    rng_key: Array,
    model: Any,
    guide: Any,
    *args: Any,
    optimizer: optax.GradientTransformation | None = None,
    num_steps: int = 1000,
    elbo: Any = None,
    chunk_size: int = 100,
    progress: bool | None = None,
    init_state: Any = None,
    checkpoint: Checkpoint | None = None,
    natgrad: str | None = None,
    natgrad_gamma: Any = 1.0,
    mesh: Mesh | None = None,
    **kwargs: Any,
) -> SVIResult:
    """Fit ``guide`` to ``model`` by SVI in the shared compiled loop.

    For a model with a subsampled plate, minibatches are drawn by shuffling once per epoch
    (:mod:`ppl_dgp.infer.minibatch`); the likelihood scale ``N / B`` is the plate's.

    Args:
        rng_key: JAX PRNG key.
        model: NumPyro program.
        guide: its guide (e.g. :class:`~ppl_dgp.guides.InducingPointGuide`).
        *args: model arguments (arrays: passed to the compiled loop, not baked in).
        optimizer: an optax transformation (default Adam, learning rate 1e-2).
        num_steps: number of updates.
        elbo: NumPyro ELBO (default :class:`~ppl_dgp.elbo.DoublyStochasticELBO`).
        chunk_size: updates per compiled ``lax.scan`` call (the progress bar's granularity).
        progress: show a progress bar (default: on, except under CI).
        init_state: a state to continue from: a previous result's ``state`` (NumPyro's
            ``SVIState``; a minibatch stream starts afresh) or a
            :class:`~ppl_dgp.infer.loop.NonFiniteLossError`'s ``state`` (an
            :class:`SVIRunState`: the minibatch stream continues too). Its layout must be this
            guide's and optimizer's.
        checkpoint: a :class:`~ppl_dgp.checkpoint.Checkpoint` (see :mod:`ppl_dgp.checkpoint`):
            resume from it if it holds this fit's checkpoint, and write one every
            ``checkpoint.every`` steps, at the end and on ``KeyboardInterrupt``. Not together
            with ``init_state``.
        mesh: a one-axis device mesh (:func:`ppl_dgp.sharding.batch_mesh`) to split each
            minibatch over (data parallel, :mod:`ppl_dgp.sharding`); needs a subsampled plate.
        **kwargs: model keyword arguments.

    Returns:
        :class:`SVIResult`.

    Raises:
        NonFiniteLossError: the loss became NaN or inf; the error keeps the last finite state
            (``.state``, an :class:`SVIRunState`) and its constrained parameters (``.params``).
        CheckpointError: the checkpoint belongs to another fit or is damaged.
        ValueError: ``init_state`` does not fit this guide and optimizer, or comes with a
            checkpoint.

    Example:
        Continue a fit from its result's state (without minibatches: the continuation equals
        the longer run exactly, since NumPyro's state carries its key):

        >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import Trace_ELBO
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model(X, y=None):
        ...     w = numpyro.sample("w", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("data", X.shape[0]):
        ...         numpyro.sample("y", dist.Normal(w * X[:, 0], 1.0), obs=y)
        >>> X = np.ones((20, 1)); y = 2.0 * np.ones(20)
        >>> guide, key = AutoNormal(model), jax.random.key(0)
        >>> first = run_svi(key, model, guide, X, y, num_steps=100, elbo=Trace_ELBO(),
        ...                 progress=False)
        >>> more = run_svi(key, model, guide, X, y, num_steps=100, elbo=Trace_ELBO(),
        ...                progress=False, init_state=first.state)
        >>> whole = run_svi(key, model, guide, X, y, num_steps=200, elbo=Trace_ELBO(),
        ...                 progress=False)
        >>> bool(np.array_equal(np.r_[first.losses, more.losses], whole.losses))
        True
    """
    positive_int("run_svi", num_steps=num_steps)
    if init_state is not None and checkpoint is not None:
        raise ValueError(
            "run_svi: give init_state or checkpoint, not both (a checkpoint resumes by itself)"
        )
    with timed() as timer:
        res = _run_svi(rng_key, model, guide, args, optimizer, num_steps, elbo, chunk_size,
                       progress, init_state, checkpoint, kwargs, natgrad,
                       natgrad_gamma, mesh)  # fmt: skip
        t = timer.timings()
    return dataclasses.replace(res, compile_seconds=t["compile_seconds"],
                               run_seconds=t["run_seconds"])  # fmt: skip


def _run_svi(rng_key, model, guide, args, optimizer, num_steps, elbo, chunk_size, progress,
             init_state, checkpoint, kwargs, natgrad=None,
             natgrad_gamma=1.0, mesh=None) -> SVIResult:  # fmt: skip
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    elbo = DoublyStochasticELBO() if elbo is None else elbo
    key_init, key_run = jax.random.split(rng_key)
    plate = subsampled_plate(model, key_init, args, kwargs)
    if mesh is not None and plate is None:
        raise ValueError(
            "run_svi: mesh splits minibatches over devices, but the model has no subsampled "
            "plate (give it a batch_size)"
        )
    if plate is None:
        svi = NumPyroSVI(model, guide, optimizer, elbo)
        svi_state = compiled_init(svi, guide, key_init, *args, **kwargs)  # and constrain_fn
        batches = None
    else:
        name, N, B = plate
        svi = NumPyroSVI(with_batch(model, name), with_batch(guide, name), optimizer, elbo)
        svi_state = compiled_init(svi, guide, key_init, jnp.arange(B), *args, **kwargs)
        batches = init_batches(key_run, N)
    state = _start(SVIRunState(svi_state, batches), init_state)
    # data parallel: data and state whole on every device, each minibatch split over them
    state, args = replicate(state, mesh), replicate(args, mesh)
    update = svi.update
    if natgrad is not None:  # natural gradients on q(u), the optax optimizer on the rest
        if not isinstance(guide, InducingPointGuide):
            raise ValueError(
                f"run_svi: natgrad needs the InducingPointGuide; received {type(guide).__name__}"
            )
        update = natgrad_svi_step(svi, natgrad_layers(guide, natgrad), natgrad_gamma)

    def step(state: SVIRunState, key: Array, *args: Any) -> tuple[SVIRunState, Array, None]:
        del key  # NumPyro's SVIState carries its own key
        if plate is None:
            new, loss = update(state.svi, *args, **kwargs)
            return SVIRunState(new, None), loss, None
        idx, bt = next_batch(state.batches, plate[1], plate[2])
        new, loss = update(state.svi, shard_batch(idx, mesh), *args, **kwargs)
        return SVIRunState(new, bt), loss, None

    try:
        res = run_loop(
            step, state, num_steps, key_run, args=args, chunk_size=chunk_size,
            progress=progress, desc="SVI", owner="SVI", checkpoint=checkpoint,
        )  # fmt: skip
    except NonFiniteLossError as err:  # the constrained parameters of the last finite state
        err.params = svi.get_params(err.state.svi)
        raise
    return SVIResult(svi.get_params(res.state.svi), res.losses, res.state.svi)


def _start(fresh: SVIRunState, init_state: Any) -> SVIRunState:
    """The loop's first state: ``fresh`` (from ``svi.init``), or ``init_state`` in its place
    (an :class:`SVIRunState` whole; a bare ``SVIState`` with ``fresh``'s minibatch stream),
    checked to have ``fresh``'s layout."""
    if init_state is None:
        return fresh
    given = init_state
    if not isinstance(init_state, SVIRunState):
        given = SVIRunState(init_state, fresh.batches)
    want, got = jax.tree.structure(fresh), jax.tree.structure(given)
    shapes = lambda t: [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(t)]
    if want != got or shapes(fresh) != shapes(given):
        raise ValueError(
            "run_svi: init_state does not fit this model, guide and optimizer (expected the "
            f"layout {want}, received {got}); give a previous result's state or a "
            "NonFiniteLossError's state of the same fit"
        )
    return given


# -- what a fitted guide leaves ------------------------------------------------------------------


@approx_type
@dataclasses.dataclass(frozen=True)
class InducingApprox:
    """The fitted inducing-point guide: ``q(u)`` per GP layer and the other sites' medians.

    Attributes:
        q_mu: ``{layer: [M, Q]}``.
        q_sqrt: ``{layer: [Q, M, M]}`` (lower triangles).
        medians: ``{site: constrained value}`` of every other global latent site (the point
            estimate for ``hyper="delta"``, the median of the mean-field normal otherwise).
        guide_params: every fitted guide parameter ``{name: array}`` (to continue training).
    """

    q_mu: dict[str, Any]
    q_sqrt: dict[str, Any]
    medians: dict[str, Any]
    guide_params: dict[str, Any]


@approx_type
@dataclasses.dataclass(frozen=True)
class GuideApprox:
    """Any other fitted guide: its parameters ``{name: array}`` (the draws carry ``q``)."""

    guide_params: dict[str, Any]


# -- the SVI method behind fit ------------------------------------------------------------


@register_method
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
        guide: a NumPyro guide for the model (``None``: the
            :class:`~ppl_dgp.guides.InducingPointGuide` with the doubly-stochastic bound for
            GP-layer programs, ``AutoNormal`` with ``Trace_ELBO`` otherwise). A given guide is
            fitted with ``Trace_ELBO``; its sample sites must be latent sites of the model.
        optimizer: an optax transformation (``None``: ``optax.adam(learning_rate)``).
        checkpoint_dir: a directory for the fit's checkpoint (``None``: none). A fit given a
            directory that holds its checkpoint continues from it (the same ``rng_key``, model,
            data and configuration; ``num_steps`` may be larger) and equals the uninterrupted
            fit bit for bit; another fit's checkpoint is refused (see
            :mod:`ppl_dgp.checkpoint`). A custom ``optimizer`` or ``guide`` is recognised by
            its function names only.
        checkpoint_every: steps between checkpoints (one is also written at the end and on
            ``KeyboardInterrupt``).
        natgrad: natural-gradient steps on ``q(u)`` (:mod:`ppl_dgp.natgrad`; Salimbeni,
            Eleftheriadis & Hensman 2018) of the ``"last"`` GP layer or of ``"all"``, the
            optimizer on every other parameter, one step of each per iteration (GPflux's
            ``NatGradModel``); ``None``: the optimizer on everything. With a Gaussian
            likelihood and the full batch, ``natgrad_gamma=1`` moves the last layer's ``q(u)``
            to its optimum given the rest in one step; with minibatches or inner layers use a
            smaller step (0.01-0.1).
        natgrad_gamma: the natural-gradient step size.
        latent_encoder: ``q(w_n)`` of the model's latent inputs (``latent_layer``): ``"free"``
            (a mean and scale per datum) or ``"amortised"`` (an MLP of ``(x_n, y_n)``), in
            :class:`~ppl_dgp.latent.LatentVariableGuide`.
        num_importance: ``K`` importance samples of the latent inputs per datum: the
            importance-weighted bound (:class:`~ppl_dgp.elbo.ImportanceWeightedELBO`,
            Salimbeni et al. 2019) for ``K > 1``, the doubly-stochastic bound for ``K = 1``.
        devices: split each minibatch over this many devices (data parallel with JAX's
            sharding, :mod:`ppl_dgp.sharding`; ``batch_size`` must be divisible by it);
            ``None``: the default device alone. The fit equals the one-device fit up to
            floating-point reassociation.

    Example:
        Resume a minibatch fit (here: stopped after 60 steps, continued to 150):

        >>> import jax, numpy as np, numpyro, numpyro.distributions as dist, tempfile
        >>> from ppl_dgp.infer import fit
        >>> def model(X, y=None, batch_size=None):
        ...     w = numpyro.sample("w", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as idx:
        ...         yb = None if y is None else y[idx]
        ...         numpyro.sample("y", dist.Normal(w * X[idx, 0], 1.0), obs=yb)
        >>> X = np.ones((20, 1)); y = 2.0 * np.ones(20)
        >>> folder, key = tempfile.mkdtemp(), jax.random.key(0)
        >>> cut = fit(SVI(num_steps=60, batch_size=5, checkpoint_dir=folder, checkpoint_every=25),
        ...           key, model, X, y)
        >>> resumed = fit(SVI(num_steps=150, batch_size=5, checkpoint_dir=folder), key, model, X, y)
        >>> whole = fit(SVI(num_steps=150, batch_size=5), key, model, X, y)
        >>> bool(np.array_equal(resumed.traces["loss"], whole.traces["loss"]))
        True
        >>> bool(np.array_equal(resumed.draws["w"], whole.draws["w"]))
        True
    """

    num_steps: int = 2000
    learning_rate: float = 1e-2
    batch_size: int | None = None
    num_particles: int = 1
    hyper: str = "delta"
    num_samples: int = 100
    guide: Callable | None = None
    optimizer: optax.GradientTransformation | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    natgrad: str | None = None
    natgrad_gamma: float = 1.0
    latent_encoder: str = "free"
    num_importance: int = 1
    devices: int | None = None
    name: ClassVar[str] = "svi"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "compare": {"num_steps": 2000, "hyper": "normal", "num_samples": 400},
        "smoke": {"num_steps": 200, "num_samples": 100},
    }

    def __post_init__(self) -> None:
        positive_int("SVI", num_steps=self.num_steps, num_particles=self.num_particles,
                      num_samples=self.num_samples)  # fmt: skip
        if self.batch_size is not None:
            positive_int("SVI", batch_size=self.batch_size)
        if not self.learning_rate > 0:
            raise ValueError(f"SVI.learning_rate must be > 0; received {self.learning_rate}")
        if self.hyper not in ("delta", "normal"):
            raise ValueError(f"SVI.hyper must be 'delta' or 'normal'; received {self.hyper!r}")
        check_checkpoint_fields("SVI", self)
        if self.natgrad not in (None, "last", "all"):
            raise ValueError(
                f"SVI.natgrad must be None, 'last' or 'all'; received {self.natgrad!r}"
            )
        if not self.natgrad_gamma > 0:
            raise ValueError(f"SVI.natgrad_gamma must be > 0; received {self.natgrad_gamma}")
        if self.latent_encoder not in ("free", "amortised"):
            raise ValueError(
                "SVI.latent_encoder must be 'free' or 'amortised'; received "
                f"{self.latent_encoder!r}"
            )
        positive_int("SVI", num_importance=self.num_importance)
        if self.devices is not None:
            positive_int("SVI", devices=self.devices)
            check_divisible(self.batch_size, self.devices, "SVI")

    def checkpointer(
        self, rng_key: Array, model: Callable, X: Array, y: Array, model_kwargs: dict
    ) -> Checkpoint | None:
        """The fit's :class:`~ppl_dgp.checkpoint.Checkpoint` (``None`` without a directory):
        its fingerprint leaves out ``num_steps`` and ``num_samples`` (how long to run, how many
        draws after), so a longer fit continues a shorter one."""
        if self.checkpoint_dir is None:
            return None
        fingerprint = fit_fingerprint(self, rng_key, model, X, y, model_kwargs,
                                      ignore=("num_steps", "num_samples"))  # fmt: skip
        ckpt = Checkpoint(self.checkpoint_dir, every=self.checkpoint_every,
                          fingerprint=fingerprint, owner="SVI")  # fmt: skip
        ckpt.prepare()
        return ckpt

    def run(
        self, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
    ) -> Posterior:
        """Fit (see :func:`~ppl_dgp.infer.fit`); the data are already checked."""
        with timed() as timer:
            return _fit_svi(self, timer, rng_key, model, X, y, model_kwargs)


def _check_guide_sites(
    key: Array, guide: Callable, sites: ModelSites, X: Array, y: Array, kwargs: dict
) -> None:
    """A user guide may only sample latent sites of the model (a typo would fit nothing)."""
    with block():
        tr = trace(seed(guide, key)).get_trace(X, y, **kwargs)
    sampled = {n for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
    latent = set(sites.global_latent) | set(sites.local_latent)
    unknown = sorted(sampled - latent)
    if unknown:
        raise ValueError(
            f"SVI.guide samples site(s) {unknown} that are not latent sites of the model; "
            f"the model's latent sites are {sorted(latent)}"
        )


def _fit_svi(
    method: SVI, timer: Any, rng_key: Array, model: Callable, X: Array, y: Array,
    model_kwargs: dict,
) -> Posterior:  # fmt: skip
    if method.batch_size is not None:
        if model_kwargs.get("batch_size") is not None:
            raise ValueError(
                f"fit: batch_size given twice (SVI.batch_size={method.batch_size} and the model "
                f"keyword batch_size={model_kwargs['batch_size']}); give it once, in SVI"
            )
        if not accepts_batch_size(model):
            raise ValueError("SVI.batch_size: the model takes no batch_size keyword")
        model_kwargs = {**model_kwargs, "batch_size": method.batch_size}
    key_fit, key_draws = jax.random.split(rng_key)
    sites = inspect_model(key_fit, model, X, y, values=False, **model_kwargs)
    if method.guide is not None:
        _check_guide_sites(key_fit, method.guide, sites, X, y, model_kwargs)
        guide, elbo = method.guide, Trace_ELBO(num_particles=method.num_particles)
    elif sites.gp_layers:
        if sites.latent_inputs:  # a real q(w_n), free-form or amortised
            guide = LatentVariableGuide(model, hyper=method.hyper, encoder=method.latent_encoder)
        else:
            guide = InducingPointGuide(model, hyper=method.hyper)
        if method.num_importance > 1:
            if not sites.latent_inputs:
                raise ValueError(
                    f"SVI.num_importance={method.num_importance} needs per-datum latent inputs "
                    "(ppl_dgp.latent.latent_layer); this model has none"
                )
            elbo = ImportanceWeightedELBO(method.num_importance, method.num_particles)
        else:
            elbo = DoublyStochasticELBO(num_particles=method.num_particles)
    else:
        guide = CompiledAutoNormal(model, init_loc_fn=init_to_model_init)
        elbo = Trace_ELBO(num_particles=method.num_particles)
    result = run_svi(
        key_fit,
        model,
        guide,
        X,
        y,
        optimizer=method.optimizer or optax.adam(method.learning_rate),
        num_steps=method.num_steps,
        elbo=elbo,
        checkpoint=method.checkpointer(rng_key, model, X, y, model_kwargs),
        natgrad=method.natgrad,
        natgrad_gamma=method.natgrad_gamma,
        mesh=batch_mesh(method.devices, "SVI.devices"),
        **model_kwargs,
    )
    params = {k: np.asarray(v) for k, v in result.params.items()}
    if isinstance(guide, InducingPointGuide | CompiledAutoNormal):  # one compiled call
        draws = AdaptiveJit(  # little work: compiled quick (threefry alone costs ~1.3 s)
            lambda key, params: guide.sample_posterior(
                key, params, sample_shape=(method.num_samples,)
            )
        )(key_draws, result.params)
    elif hasattr(guide, "sample_posterior"):
        draws = guide.sample_posterior(
            key_draws, result.params, X, y, sample_shape=(method.num_samples,), **model_kwargs
        )
    else:  # a plain guide function: run it S times with the fitted parameters
        draws = Predictive(guide, params=result.params, num_samples=method.num_samples)(
            key_draws, X, y, **model_kwargs
        )
    keep = set(sites.global_latent)
    draws = {k: np.asarray(v)[None] for k, v in draws.items() if k in keep}
    model_params = {k: params[k] for k in sites.params if k in params}
    guide_params = {k: v for k, v in params.items() if k not in sites.params}
    if isinstance(guide, InducingPointGuide):
        layers = guide.layer_names
        approx: Any = InducingApprox(
            q_mu={layer: guide_params[f"{layer}.q_mu"] for layer in layers},
            q_sqrt={layer: guide_params[f"{layer}.q_sqrt"] for layer in layers},
            medians={k: np.asarray(v)
                     for k, v in guide.median(result.params, inducing=False).items()},
            guide_params=guide_params,
        )  # fmt: skip
    else:
        approx = GuideApprox(guide_params)
    jax.block_until_ready(draws)
    return Posterior(
        draws=draws,
        method=method,
        traces={"loss": np.asarray(result.losses)},
        params=model_params,
        approx=approx,
        timings=timer.timings(),
    )
