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

Step ``t`` (counted from the loop's start) gets the key ``jax.random.fold_in(rng_key, t)``,
whatever the chunks: a run cut anywhere and continued gives the same steps. With a
:class:`~ppl_dgp.checkpoint.Checkpoint` the loop resumes from the directory's checkpoint, writes
one every ``checkpoint.every`` steps (no chunk crosses a multiple of it), at the end, and on
``KeyboardInterrupt`` (written, then re-raised): the resumed run equals the uninterrupted one
bit for bit, losses and collected outputs included.

Used by SVI, SGHMC and every MAP (MAP, DeepEnsemble, Laplace).

Example:
    >>> import jax, jax.numpy as jnp
    >>> step = lambda x, key: (x - 0.1 * 2 * x, x**2, None)   # gradient descent on x^2
    >>> res = run_loop(step, jnp.asarray(1.0), 50, jax.random.key(0), progress=False)
    >>> bool(abs(res.state) < 1e-4), res.losses.shape
    (True, (50,))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ppl_dgp.checkpoint import Checkpoint, CheckpointError, canonical
from ppl_dgp.compile_effort import AdaptiveJit
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
        # compiled at XLA's defaults, or quick when the whole loop will run briefly
        self._compiled = AdaptiveJit(self._chunk)
        self._runs = 1  # chunks the current run expects (read when a signature compiles)

    def _chunk(self, state: Any, key: Array, start: Array, n_valid: Array, *args: Any) -> tuple:
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

        # step t's key is fold_in(key, t): where chunks start and end does not change it
        index = jnp.arange(self.chunk_size)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, start + index)
        init = (state, state, jnp.array(False))
        (state, _, bad), (losses, outs) = jax.lax.scan(body, init, (index, keys))
        return state, bad, losses, outs

    def compiled_size(self) -> int:
        """How many compilations the chunk holds (``jax.jit``'s cache size)."""
        return int(self._compiled._cache_size())

    def _run_chunk(self, state: Any, key: Array, start: int, n_valid: int, args: tuple) -> tuple:
        """One compiled chunk: ``n_valid`` steps from step ``start`` (a seam for tests)."""
        return self._compiled(
            state, key, jnp.asarray(start), jnp.asarray(n_valid), *args, runs=self._runs
        )

    def run(
        self,
        state: Any,
        num_steps: int,
        rng_key: Array,
        *,
        args: tuple = (),
        progress: bool | None = None,
        checkpoint: Checkpoint | None = None,
        stage: str = "loop",
        extra: dict[str, Any] | None = None,
    ) -> LoopResult:
        """Run ``num_steps`` steps from ``state`` (or from ``checkpoint``); see :func:`run_loop`.

        Args:
            state: the initial state (with a checkpoint: also the template it is rebuilt in).
            num_steps: the loop's total number of steps (a resumed loop runs the rest).
            rng_key: step ``t`` gets ``fold_in(rng_key, t)``.
            args: passed to every step.
            progress: show a progress bar.
            checkpoint: resume from its checkpoint of ``stage`` if it holds one, write one
                every ``checkpoint.every`` steps, at the end, and on ``KeyboardInterrupt``
                (then re-raised, with a note naming the directory).
            stage: this loop's name in the checkpoint (a method with several loops).
            extra: JSON notes stored with the checkpoint (the method's own checks).
        """
        owner, chunk = self.owner, self.chunk_size
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"{owner}: num_steps must be an int >= 1; received {num_steps!r}")
        state = canonical(state)
        done, losses, outputs = 0, [], []
        saved = None if checkpoint is None else checkpoint.saved
        if saved is not None and saved.stage == stage:
            template = None
            if self.collect:  # one step's output: the structure of the kept draws
                template = jax.eval_shape(self.step, state, rng_key, *args)[2]
            restored = checkpoint.restore(stage, state, template)  # type: ignore[union-attr]
            if restored is not None:
                state, done, saved_losses, saved_outputs = restored
                if done > num_steps:
                    raise CheckpointError(
                        f"{owner}: the checkpoint in {checkpoint.directory} is at step {done} of "
                        f"its loop {stage!r}, past this fit's {num_steps} steps; ask for at "
                        "least as many steps, or use another checkpoint_dir"
                    )
                losses = [np.asarray(saved_losses)] if len(saved_losses) else []
                if self.collect and saved_outputs is not None:
                    outputs = [saved_outputs]
        every = checkpoint.every if checkpoint is not None else num_steps
        self._runs = -(-(num_steps - done) // chunk)

        def save() -> None:
            if checkpoint is not None:
                kept = _stack(outputs) if self.collect and outputs else None
                checkpoint.save(stage, done, state, _concat(losses), kept, extra)

        bar = None
        if progress_enabled(progress):
            from tqdm.auto import tqdm

            bar = tqdm(total=num_steps, initial=done, desc=self.desc, unit="step")
        try:
            while done < num_steps:
                # a chunk never crosses a checkpoint: it ends at a multiple of `every`
                n_valid = min(chunk, num_steps - done, every - done % every)
                new, bad, chunk_losses, outs = self._run_chunk(state, rng_key, done, n_valid, args)
                chunk_losses = np.asarray(chunk_losses)[:n_valid]
                if bool(bad):
                    finite = np.all(np.isfinite(chunk_losses.reshape(n_valid, -1)), axis=1)
                    first = int(np.argmax(~finite))
                    losses.append(chunk_losses[:first])
                    at = done + first
                    raise NonFiniteLossError(
                        f"{owner}: the loss became {chunk_losses[first]} at step {at}; the last "
                        f"finite state (after {max(at - 1, 0)} updates, whose loss was finite) "
                        "is kept in this error's .state. Try a smaller learning rate or step "
                        "size, or check the data and initial values.",
                        new,
                        _concat(losses),
                        at,
                    )
                if self.collect:
                    outs = jax.tree.map(lambda a, n=n_valid: np.asarray(a[:n]), outs)
                # one assignment: an interrupt leaves the state and its bookkeeping together
                kept = [*outputs, outs] if self.collect else outputs
                state, done, losses, outputs = new, done + n_valid, [*losses, chunk_losses], kept
                if done % every == 0 or done == num_steps:
                    save()
                if bar is not None:
                    bar.update(n_valid)
                    bar.set_postfix(loss=f"{float(np.mean(chunk_losses[-1])):.4g}")
        except KeyboardInterrupt as err:
            if checkpoint is not None:
                save()
                err.add_note(
                    f"{owner}: interrupted; the checkpoint in {checkpoint.directory} holds "
                    f"{done} of {num_steps} steps (run the same fit again to continue)"
                )
            raise
        finally:
            if bar is not None:
                bar.close()
        stacked = _stack(outputs) if self.collect and outputs else None
        return LoopResult(state, _concat(losses), stacked)


def _concat(losses: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(losses) if losses else np.zeros(0)


def _stack(outputs: list[Any]) -> Any:
    return jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a]), *outputs)


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
    checkpoint: Checkpoint | None = None,
    stage: str = "loop",
    extra: dict[str, Any] | None = None,
) -> LoopResult:
    """Run ``num_steps`` of ``step`` from ``state`` in compiled chunks (a one-off :class:`Loop`).

    Args:
        step: ``step(state, key, *args) -> (state, loss, out)``, pure.
        state: the initial state (a pytree; its shapes and dtypes fix the compilation).
        num_steps: number of steps.
        rng_key: step ``t`` gets ``jax.random.fold_in(rng_key, t)`` (independent of the chunks).
        args: passed to every step (arrays: arguments of the compiled chunk, not constants).
        chunk_size: steps per compiled call (at most ``num_steps``).
        collect: stack ``out`` over the steps.
        progress: show a progress bar (default: on, except under CI).
        desc: the progress bar's label.
        owner: named in the error message.
        checkpoint: a :class:`~ppl_dgp.checkpoint.Checkpoint` to resume from and write to (see
            :meth:`Loop.run`).
        stage: this loop's name in the checkpoint.
        extra: JSON notes stored with the checkpoint.

    Returns:
        :class:`LoopResult` (with a checkpoint: the losses and outputs of every step, those
        before the resumption included).

    Raises:
        NonFiniteLossError: the loss became NaN or inf; the error keeps the last finite state.
        CheckpointError: the checkpoint belongs to another fit or is damaged (see
            :class:`~ppl_dgp.checkpoint.Checkpoint`).
        KeyboardInterrupt: re-raised after writing the checkpoint.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"{owner}: num_steps must be an int >= 1; received {num_steps!r}")
    loop = Loop(step, chunk_size=max(1, min(chunk_size, num_steps)), collect=collect, desc=desc,
                owner=owner)  # fmt: skip
    return loop.run(state, num_steps, rng_key, args=args, progress=progress,
                    checkpoint=checkpoint, stage=stage, extra=extra)  # fmt: skip
