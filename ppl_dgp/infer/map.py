"""The maximum a posteriori estimate: the plug-in posterior of one draw, and the shared MAP.

:func:`map_estimate` minimises ``U(z) / N``, the model's potential (negative log joint in
unconstrained space, from :func:`~ppl_dgp.infer.core.initialize`) per datum, with Adam or
L-BFGS (optax) in the shared loop driver; ``z`` may carry a leading member axis (several
MAPs at once, vectorised: :class:`~ppl_dgp.infer.ensemble.DeepEnsemble`). By default
(``local_latents="auto"``, :func:`~ppl_dgp.infer.core.held_local_latents`) the per-datum layer
noise (a DGP's inner-layer ``eps``) is held at its initial value ``eps = 0``: its joint MAP is
degenerate (each ``eps`` fits its own point and the lengthscales collapse); the latent inputs
of :func:`~ppl_dgp.latent.latent_layer` (a GPLVM's ``latent.w``) are optimised with the rest
(held at ``w = 0`` every datum would have the same input). The Laplace approximation starts
from the same MAP.

A program that draws randomness inside its log density (``numpyro.prng_key()``: the dropout
masks of :func:`~ppl_dgp.dense.dropout`, so MC dropout, Gal & Ghahramani 2016) is trained as
such: step ``t`` evaluates the potential of ``seed(model, k_t)`` with the loop's step key
(one key per member of an ensemble), a fresh mask per step (:func:`seeded_potential`). Every
other program's potential draws nothing and its steps are unchanged.

:class:`MAP` behind :func:`~ppl_dgp.infer.fit` keeps the estimate as a posterior of one
draw, ``(1, 1, ...)``, and the loss trace as ``traces["map_loss"]``. With ``checkpoint_dir``
it keeps a checkpoint and resumes from it, bit for bit (:mod:`ppl_dgp.checkpoint`, whose
example is a MAP cut and continued).

Example:
    >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
    >>> from ppl_dgp.infer import MAP, fit
    >>> def model(X, y=None):
    ...     w = numpyro.sample("w", dist.Normal(0.0, 10.0))
    ...     with numpyro.plate("data", X.shape[0]):
    ...         numpyro.sample("y", dist.Normal(w * X[:, 0], 1.0), obs=y)
    >>> X = np.ones((20, 1)); y = 2.0 * np.ones(20)
    >>> post = fit(MAP(num_steps=500, learning_rate=0.1), jax.random.key(0), model, X, y)
    >>> round(float(post.draws["w"][0, 0]), 2)
    2.0
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from numpyro.handlers import seed
from numpyro.infer.util import ModelInfo, potential_energy
from numpyro.primitives import Messenger

from ppl_dgp.checkpoint import Checkpoint, check_checkpoint_fields, fit_fingerprint
from ppl_dgp.infer.core import (
    LOCAL_LATENTS,
    ModelSites,
    constrain,
    held_local_latents,
    initialize,
    register_method,
    timed,
)
from ppl_dgp.infer.loop import run_loop
from ppl_dgp.posterior import Posterior

__all__ = [
    "MAP",
    "MapNotConvergedWarning",
    "check_map_fields",
    "map_estimate",
    "map_init",
    "map_optimizer",
    "map_step",
    "seeded_potential",
]

_OPTIMIZERS = ("adam", "lbfgs")


class MapNotConvergedWarning(UserWarning):
    """The MAP's loss was still falling markedly at the last steps."""


def check_map_fields(owner: str, cfg: Any) -> None:
    """The fields every MAP-based method shares, checked with errors naming them."""
    if not isinstance(cfg.num_steps, int) or cfg.num_steps < 1:
        raise ValueError(f"{owner}.num_steps must be an int >= 1; received {cfg.num_steps!r}")
    if not cfg.learning_rate > 0:
        raise ValueError(f"{owner}.learning_rate must be > 0; received {cfg.learning_rate}")
    if cfg.optimizer not in _OPTIMIZERS:
        raise ValueError(f"{owner}.optimizer must be one of {_OPTIMIZERS}; got {cfg.optimizer!r}")
    if cfg.local_latents not in LOCAL_LATENTS:
        raise ValueError(
            f"{owner}.local_latents must be one of {LOCAL_LATENTS}; received {cfg.local_latents!r}"
        )


def map_optimizer(optimizer: str) -> optax.GradientTransformation:
    """Adam with its learning rate in the state (``optax.inject_hyperparams``: a compiled loop
    serves every learning rate), or ``optax.lbfgs`` (zoom line search, full batch)."""
    if optimizer == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
    if optimizer == "lbfgs":
        return optax.lbfgs()
    raise ValueError(f"map_optimizer: optimizer must be one of {_OPTIMIZERS}; got {optimizer!r}")


def map_init(
    opt: optax.GradientTransformation, free: dict, learning_rate: float,
    members: int | None = None,
) -> tuple:  # fmt: skip
    """The loop state ``(z, optimizer state)`` at ``free`` (``[K, ...]`` leaves for members)."""
    init = opt.init if members is None else jax.vmap(opt.init)
    state = init(free)
    if hasattr(state, "hyperparams"):  # injected: the learning rate is data, not a constant
        lr = jnp.asarray(learning_rate, dtype=state.hyperparams["learning_rate"].dtype)
        shape = () if members is None else (members,)
        state.hyperparams["learning_rate"] = jnp.broadcast_to(lr, shape)
    return free, state


def map_step(
    loss_fn: Callable[..., Array], opt: optax.GradientTransformation,
    members: int | None = None, *, keyed: bool = False,
) -> Callable[..., tuple]:  # fmt: skip
    """``step(state, key, fixed, *data) -> (state, loss, None)`` for the loop driver.

    ``loss_fn(z, fixed, *data)`` is the per-datum potential of the free sites ``z`` with the
    held sites ``fixed``; with ``members`` the step is vectorised over a leading ``K`` axis of
    ``z``, the optimizer state and ``fixed`` (``data`` is shared). With ``keyed`` the loss is
    stochastic, ``loss_fn(z, fixed, key, *data)``: it gets the step's key (with ``members``,
    ``jax.random.split(key, K)``, one per member).
    """
    lbfgs = not hasattr(opt.init({"_": jnp.zeros(())}), "hyperparams")
    if keyed and lbfgs:
        raise ValueError(
            "map_step: a stochastic loss (keyed=True, e.g. dropout masks) needs Adam; L-BFGS's "
            "line search assumes one deterministic function"
        )

    def one_step(z: dict, opt_state: Any, fixed: dict, *data: Any) -> tuple:
        fn = lambda v: loss_fn(v, fixed, *data)
        if lbfgs:
            loss, g = optax.value_and_grad_from_state(fn)(z, state=opt_state)
            updates, opt_state = opt.update(g, opt_state, z, value=loss, grad=g, value_fn=fn)
        else:
            loss, g = jax.value_and_grad(fn)(z)
            updates, opt_state = opt.update(g, opt_state, z)
        return optax.apply_updates(z, updates), opt_state, loss

    def step(state: tuple, key: Array, fixed: dict, *data: Any) -> tuple:
        if not keyed:
            del key
        if members is None:
            extra = (key,) if keyed else ()
            z, s, loss = one_step(*state, fixed, *extra, *data)
        else:
            extra = (jax.random.split(key, members),) if keyed else ()
            axes = (0, 0, 0) + (0,) * len(extra) + (None,) * len(data)
            z, s, loss = jax.vmap(one_step, in_axes=axes)(*state, fixed, *extra, *data)
        return (z, s), loss, None

    return step


class _KeyRequests(Messenger):
    """Counts the program's ``numpyro.prng_key()`` requests (whatever answers them)."""

    def __init__(self, fn: Callable) -> None:
        self.count = 0
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "prng_key":
            self.count += 1


def seeded_potential(info: ModelInfo) -> Callable[[dict, Array], Array] | None:
    """``U(z, key)``, the potential of ``seed(model, key)``, where the program asks for a PRNG
    key inside its log density (dropout masks, :func:`~ppl_dgp.dense.dropout`); ``None``
    where it asks for none (its potential ``info.potential_fn`` is deterministic).

    .. math:: U(z; m) = -\\log p(y \\mid z, m) - \\log p(z) - \\log |J(z)|, \\qquad
        m \\sim p(m) \\text{ drawn from } key

    so that Adam on ``U(z; m_t) / N`` with a fresh ``m_t`` per step is dropout training (Gal &
    Ghahramani 2016, eq. 1: the weight decay is the Gaussian prior). Found by tracing the
    potential once, abstractly (``jax.eval_shape``), with a handler that counts the program's
    ``prng_key`` messages; only a potential built by :func:`~ppl_dgp.infer.core.initialize`
    (``potential_energy`` of the model) is inspected.

    Args:
        info: from :func:`~ppl_dgp.infer.core.initialize`.

    Returns:
        ``potential(z, key) -> U`` or ``None``.

    References:
        Gal & Ghahramani (2016), "Dropout as a Bayesian Approximation", ICML.
    """
    fn = info.potential_fn
    if not (isinstance(fn, functools.partial) and fn.func is potential_energy
            and len(fn.args) == 3):  # fmt: skip
        return None
    model, args, kwargs = fn.args
    probe = _KeyRequests(model)
    with warnings.catch_warnings():  # unseeded, prng_key() may warn and gives None
        warnings.simplefilter("ignore", UserWarning)
        jax.eval_shape(lambda z: potential_energy(probe, args, kwargs, z, **fn.keywords),
                       info.param_info.z)  # fmt: skip
    if probe.count == 0:
        return None

    def potential(z: dict, key: Array) -> Array:
        return potential_energy(seed(model, key), args, kwargs, z, **fn.keywords)

    return potential


def map_estimate(
    info: ModelInfo,
    sites: ModelSites,
    rng_key: Array,
    *,
    num_steps: int,
    learning_rate: float = 1e-2,
    optimizer: str = "adam",
    local_latents: str = "auto",
    N: int,
    z0: dict[str, Array] | None = None,
    members: int | None = None,
    owner: str = "MAP",
    checkpoint: Checkpoint | None = None,
) -> tuple[dict[str, Array], np.ndarray]:
    """The MAP of the model's latent sites in unconstrained space.

    .. math::
        z^* = \\arg\\min_z U(z) / N, \\qquad U(z) = -\\log p(y, z) - \\log |J(z)|

    Args:
        info, sites: from :func:`~ppl_dgp.infer.core.initialize`.
        rng_key: key of the loop.
        num_steps: optimisation steps.
        learning_rate: Adam's learning rate (L-BFGS uses a line search).
        optimizer: ``"adam"`` or ``"lbfgs"`` (``optax.lbfgs``, full batch).
        local_latents: which per-datum latent sites are held at ``z0``:
            :func:`~ppl_dgp.infer.core.held_local_latents` (``"auto"``: the layer noise, not
            the latent inputs; ``"fixed"``: all, refused with latent inputs; ``"map"``: none).
        N: number of data points (the loss is per datum).
        z0: the initial point (default ``info.param_info.z``); with ``members`` every leaf has
            a leading axis ``[K, ...]``.
        members: ``K`` MAPs at once, vectorised (``None``: one).
        owner: named in error messages.
        checkpoint: resume from and write to this :class:`~ppl_dgp.checkpoint.Checkpoint`
            (see :meth:`~ppl_dgp.infer.loop.Loop.run`).

    A program whose log density draws masks (:func:`seeded_potential`) is trained with a
    fresh draw per step, the step's key (per member); Adam only.

    Returns:
        ``(z, losses)``: the MAP ``{site: array}`` (every latent site, the held ones at their
        initial values) and the loss per step ``[num_steps]`` (``[num_steps, K]``).

    Raises:
        ValueError: ``local_latents="fixed"`` for a model with latent inputs.
        NonFiniteLossError: the loss became NaN or inf (the error keeps the last finite state).
    """
    z0 = info.param_info.z if z0 is None else z0
    held = set(held_local_latents(sites, local_latents, owner))
    fixed = {k: v for k, v in z0.items() if k in held}
    free = {k: v for k, v in z0.items() if k not in held}
    scale = 1.0 / N

    seeded = seeded_potential(info)
    if seeded is not None and optimizer != "adam":
        raise ValueError(
            f"{owner}.optimizer: the model draws randomness in its log density (dropout masks, "
            f"a fresh draw per step), which needs 'adam'; received {optimizer!r}"
        )

    if seeded is None:

        def loss_fn(z: dict, fixed: dict) -> Array:
            return scale * info.potential_fn({**fixed, **z})

    else:

        def loss_fn(z: dict, fixed: dict, key: Array) -> Array:  # the step's masks
            return scale * seeded({**fixed, **z}, key)

    opt = map_optimizer(optimizer)
    step = map_step(loss_fn, opt, members, keyed=seeded is not None)
    init = map_init(opt, free, learning_rate, members)
    res = run_loop(step, init, num_steps, rng_key, args=(fixed,), desc=owner, owner=owner,
                   checkpoint=checkpoint)  # fmt: skip
    z = {**fixed, **res.state[0]}
    _warn_if_unconverged(res.losses, owner, noisy=seeded is not None)
    return z, res.losses


def _warn_if_unconverged(losses: np.ndarray, owner: str, noisy: bool = False) -> None:
    """Warn when the per-datum loss fell by more than 1e-3 over the last tenth of the steps
    (``noisy``, a loss with a fresh dropout mask per step: the mean of the tail's first half
    against its second half, not the last step against the first)."""
    n = len(losses)
    if n < 20:
        return
    tail = losses[-max(n // 10, 2) :]
    if noisy:
        h = len(tail) // 2
        drop = float(np.max(np.mean(tail[:h], axis=0) - np.mean(tail[h:], axis=0)))
    else:
        drop = float(np.max(tail[0] - tail[-1]))
    if drop > 1e-3 * max(1.0, float(np.max(np.abs(tail[-1])))):
        warnings.warn(
            f"{owner}: the loss (negative log joint per datum) fell by {drop:.3g} over the last "
            f"{len(tail)} of {n} steps; the MAP may not be converged (raise num_steps)",
            MapNotConvergedWarning,
            stacklevel=4,
        )


@register_method
@dataclasses.dataclass(frozen=True)
class MAP:
    """The maximum a posteriori estimate, a posterior of one draw (see the module docstring).

    Args:
        num_steps: optimisation steps.
        learning_rate: Adam's learning rate on ``U / N``.
        optimizer: ``"adam"`` or ``"lbfgs"``.
        local_latents: which per-datum latent sites are held at their initial value:
            ``"auto"`` the layer noise (a DGP's ``eps = 0``, the mean pass) while the latent
            inputs (a GPLVM's ``w``) are optimised, ``"fixed"`` every one (refused for a model
            with latent inputs), ``"map"`` none (see
            :func:`~ppl_dgp.infer.core.held_local_latents`).
        checkpoint_dir: a directory for the fit's checkpoint (``None``: none); a fit given a
            directory holding its checkpoint continues from it, bit for bit, and a longer
            ``num_steps`` continues a shorter fit (see :mod:`ppl_dgp.checkpoint`).
        checkpoint_every: steps between checkpoints (also written at the end and on
            ``KeyboardInterrupt``).
    """

    num_steps: int = 2000
    learning_rate: float = 1e-2
    optimizer: str = "adam"
    local_latents: str = "auto"
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    name: ClassVar[str] = "map"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "compare": {"num_steps": 2000},
        "smoke": {"num_steps": 200},
    }

    def __post_init__(self) -> None:
        check_map_fields("MAP", self)
        check_checkpoint_fields("MAP", self)

    def run(
        self, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
    ) -> Posterior:
        """Fit (see :func:`~ppl_dgp.infer.fit`); the data are already checked."""
        key_init, key_run = jax.random.split(rng_key)
        checkpoint = None
        if self.checkpoint_dir is not None:
            fingerprint = fit_fingerprint(self, rng_key, model, X, y, model_kwargs,
                                          ignore=("num_steps",))  # fmt: skip
            checkpoint = Checkpoint(self.checkpoint_dir, every=self.checkpoint_every,
                                    fingerprint=fingerprint, owner="MAP")  # fmt: skip
            checkpoint.prepare()
        with timed() as timer:
            info, sites = initialize(key_init, model, X, y, owner="MAP", **model_kwargs)
            z, losses = map_estimate(
                info, sites, key_run, num_steps=self.num_steps, learning_rate=self.learning_rate,
                optimizer=self.optimizer, local_latents=self.local_latents, N=int(X.shape[0]),
                checkpoint=checkpoint,
            )  # fmt: skip
            supports = {k: info.model_trace[k]["fn"].support for k in sites.global_latent}
            draws = constrain({k: jnp.asarray(z[k])[None, None] for k in supports}, supports)
            timings = timer.timings()
        return Posterior(
            draws=draws,
            method=self,
            traces={"map_loss": np.asarray(losses)},
            params=dict(sites.params),
            timings=timings,
        )
