"""The one loop driver of every iterative method: a compiled ``lax.scan`` over chunks of steps.

``run_loop(step, state, num_steps, rng_key)`` compiles one chunk of ``chunk_size`` steps once
(``lax.scan`` over ``step``), then calls it until ``num_steps`` are done, with a progress bar
showing the running loss. ``step(state, key, *args) -> (state, loss, out)`` is pure; ``loss``
may be a scalar or one value per vectorised chain, and ``out`` (any pytree, or ``None``) is
collected per step when asked for (SGHMC's kept draws).

A non-finite loss stops the run with :class:`NonFiniteLossError`, which carries the last
finite state: ``step`` returns the loss of the state it was given, so when that loss is not
finite the state is already bad and the loop falls back to the one before it and freezes for
the rest of the chunk. Nothing is lost.

Used by SVI, SGHMC and every MAP (MAP, DeepEnsemble, Laplace).

Example:
    >>> import jax, jax.numpy as jnp
    >>> step = lambda x, key: (x - 0.1 * 2 * x, x**2, None)   # gradient descent on x^2
    >>> res = run_loop(step, jnp.asarray(1.0), 50, jax.random.key(0), progress=False)
    >>> bool(abs(res.state) < 1e-4), res.losses.shape
    (True, (50,))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ppl_dgp.infer.core import progress_enabled

__all__ = ["Loop", "LoopResult", "NonFiniteLossError", "run_loop"]


class NonFiniteLossError(FloatingPointError):
    """A step produced a NaN/inf loss; ``.state`` holds the last finite state, ``.losses`` the
    finite losses before it, ``.step`` the index of the first bad step."""

    def __init__(self, message: str, state: Any, losses: np.ndarray, step: int):
        super().__init__(message)
        self.state = state
        self.losses = losses
        self.step = step


class LoopResult(NamedTuple):
    """Outcome of :func:`run_loop`: the final state, the loss per step ``[num_steps, ...]``
    and the collected outputs (stacked over steps, or ``None``)."""

    state: Any
    losses: np.ndarray
    outputs: Any


def _select(ok: Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


class Loop:
    """A compiled chunk of ``step``, held by the caller: :meth:`run` any number of steps.

    The chunk (``chunk_size`` steps in one ``lax.scan``, the steps past the requested number
    masked) is compiled once per state structure and argument shapes, so a kept ``Loop`` runs
    again, for another ``num_steps``, another start or other data of the same shapes, without
    compiling (the Laplace fitter keeps its MAP's this way). :func:`run_loop` is the one-off.

    Args:
        step: ``step(state, key, *args) -> (state, loss, out)``, pure.
        chunk_size: steps per compiled call (the progress bar's granularity).
        collect: stack ``out`` over the steps.
        desc: the progress bar's label.
        owner: named in the error message.
    """

    def __init__(
        self,
        step: Callable[..., tuple[Any, Array, Any]],
        *,
        chunk_size: int = 100,
        collect: bool = False,
        desc: str = "fit",
        owner: str = "run_loop",
    ) -> None:
        self.step, self.chunk_size, self.collect = step, int(chunk_size), collect
        self.desc, self.owner = desc, owner
        self._compiled = jax.jit(self._chunk)

    def _chunk(self, state: Any, key: Array, n_valid: Array, *args: Any) -> tuple:
        collect, step = self.collect, self.step

        def body(carry: tuple, inp: tuple) -> tuple:
            st, prev, bad = carry
            i, k = inp
            new, loss, out = step(st, k, *args)
            valid = i < n_valid
            fin = jnp.all(jnp.isfinite(loss))
            ok = fin & ~bad & valid
            bad_now = ~fin & ~bad & valid
            st_next = _select(bad_now, prev, _select(ok, new, st))
            prev_next = _select(ok, st, prev)
            return (st_next, prev_next, bad | bad_now), (loss, out if collect else None)

        keys = jax.random.split(key, self.chunk_size)
        init = (state, state, jnp.array(False))
        xs = (jnp.arange(self.chunk_size), keys)
        (state, _, bad), (losses, outs) = jax.lax.scan(body, init, xs)
        return state, bad, losses, outs

    def compiled_size(self) -> int:
        """How many compilations the chunk holds (``jax.jit``'s cache size)."""
        return int(self._compiled._cache_size())

    def run(
        self,
        state: Any,
        num_steps: int,
        rng_key: Array,
        *,
        args: tuple = (),
        progress: bool | None = None,
    ) -> LoopResult:
        """Run ``num_steps`` steps from ``state``; see :func:`run_loop`."""
        owner, chunk = self.owner, self.chunk_size
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"{owner}: num_steps must be an int >= 1; received {num_steps!r}")
        n_chunks = math.ceil(num_steps / chunk)
        losses: list[np.ndarray] = []
        outputs: list[Any] = []
        bar = None
        if progress_enabled(progress):
            from tqdm.auto import tqdm

            bar = tqdm(total=num_steps, desc=self.desc, unit="step")
        try:
            for c in range(n_chunks):
                n_valid = min(chunk, num_steps - c * chunk)
                key = jax.random.fold_in(rng_key, c)
                state, bad, chunk_losses, outs = self._compiled(
                    state, key, jnp.asarray(n_valid), *args
                )
                chunk_losses = np.asarray(chunk_losses)[:n_valid]
                if bool(bad):
                    finite = np.all(np.isfinite(chunk_losses.reshape(n_valid, -1)), axis=1)
                    first = int(np.argmax(~finite))
                    losses.append(chunk_losses[:first])
                    at = c * chunk + first
                    raise NonFiniteLossError(
                        f"{owner}: the loss became {chunk_losses[first]} at step {at}; the last "
                        f"finite state (after {max(at - 1, 0)} updates, whose loss was finite) "
                        "is kept in this error's .state. Try a smaller learning rate or step "
                        "size, or check the data and initial values.",
                        state,
                        np.concatenate(losses) if losses else np.zeros(0),
                        at,
                    )
                losses.append(chunk_losses)
                if self.collect:
                    outputs.append(jax.tree.map(lambda a, n=n_valid: a[:n], outs))
                if bar is not None:
                    bar.update(n_valid)
                    bar.set_postfix(loss=f"{float(np.mean(chunk_losses[-1])):.4g}")
        finally:
            if bar is not None:
                bar.close()
        stacked = None
        if self.collect and outputs:
            stacked = jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a]), *outputs)
        return LoopResult(state, np.concatenate(losses), stacked)


def run_loop(
    step: Callable[..., tuple[Any, Array, Any]],
    state: Any,
    num_steps: int,
    rng_key: Array,
    *,
    args: tuple = (),
    chunk_size: int = 100,
    collect: bool = False,
    progress: bool | None = None,
    desc: str = "fit",
    owner: str = "run_loop",
) -> LoopResult:
    """Run ``num_steps`` of ``step`` from ``state`` in compiled chunks (a one-off :class:`Loop`).

    Args:
        step: ``step(state, key, *args) -> (state, loss, out)``, pure.
        state: the initial state (a pytree; its shapes and dtypes fix the compilation).
        num_steps: number of steps.
        rng_key: split into one key per step.
        args: passed to every step (arrays: arguments of the compiled chunk, not constants).
        chunk_size: steps per compiled call (at most ``num_steps``).
        collect: stack ``out`` over the steps.
        progress: show a progress bar (default: on, except under CI).
        desc: the progress bar's label.
        owner: named in the error message.

    Returns:
        :class:`LoopResult`.

    Raises:
        NonFiniteLossError: the loss became NaN or inf; the error keeps the last finite state.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"{owner}: num_steps must be an int >= 1; received {num_steps!r}")
    loop = Loop(step, chunk_size=max(1, min(chunk_size, num_steps)), collect=collect, desc=desc,
                owner=owner)  # fmt: skip
    return loop.run(state, num_steps, rng_key, args=args, progress=progress)
