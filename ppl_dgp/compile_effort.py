"""How hard XLA optimises a program: as hard as its run is long (on a CPU).

On a CPU, XLA's LLVM back end spends one to five seconds optimising a DGP's training chunk, its
predictive pass or a block of posterior draws at its default level, and about 1.3 s on every
``jax.random`` draw of a few hundred numbers (the ``threefry`` hash, as JAX 0.12 partitions
it). For a small fit those programs *run* for a fraction of a second: a fresh process on the
motorcycle DGP spent 9.6 s compiling and 0.19 s running ``fit(SVI(num_steps=1000))``. Compiled
at ``xla_backend_optimization_level=0`` the same programs took 5.7 s to compile and 0.40 s to
run.

:class:`AdaptiveJit` is ``jax.jit`` that decides, per argument signature, from XLA's own cost
estimate of the lowered program (:meth:`jax.stages.Lowered.cost_analysis`, the un-optimised
HLO: it counts a loop's body once):

.. math:: t = \\text{runs} \\times \\max\\Big(\\frac{\\text{flops}}{10^{10}\\,\\text{s}^{-1}}
    + \\frac{\\text{bytes}}{10^{10}\\,\\text{s}^{-1}},\\ 10^{-4}\\,\\text{s}\\Big)

and compiles with :data:`QUICK_OPTIONS` when ``t`` is below :data:`QUICK_SECONDS` (the quick
code then costs at most about that much again), with XLA's defaults otherwise. ``runs`` is the
caller's count of executions (a loop's steps). Only on a CPU: other back ends compile as
usual, as does everything under ``JAX_DISABLE_MOST_OPTIMIZATIONS`` (which already compiles
every program without those passes; the test suite runs so). The results are the same
programs' results; the two levels may differ in the last bits (another fusion, another order
of a sum). JAX's persistent compilation cache keys an executable on its options, so either
kind is read back by the next process.

Example:
    >>> import jax.numpy as jnp
    >>> double = AdaptiveJit(lambda x: 2.0 * x)
    >>> double(jnp.arange(3.0)).tolist()
    [0.0, 2.0, 4.0]
    >>> expected_seconds(double.lower(jnp.arange(3.0)), runs=100)  # 6 flops: the 0.1 ms floor
    0.01
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import jax

__all__ = ["AdaptiveJit", "QUICK_OPTIONS", "QUICK_SECONDS", "expected_seconds"]

#: The compile options of a short-running program: no LLVM optimisation pipeline.
QUICK_OPTIONS: dict[str, Any] = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}

#: Programs expected to run for less than this (seconds, at the default level) compile quick.
QUICK_SECONDS = 0.5

#: The rates of :func:`expected_seconds`: one core's float64 matmul rate and memory bandwidth,
#: rounded down (a 2-layer DGP step on synth10k runs at about 28 GFLOP/s here).
FLOPS_PER_SECOND = 1e10
BYTES_PER_SECOND = 1e10

#: The least one execution costs, whatever its FLOPs: a small program's time is its ops' own
#: overhead (a step of the motorcycle DGP's SVI, 0.3 MFLOP, takes 0.19 ms at the default level).
MIN_SECONDS_PER_RUN = 1e-4


def expected_seconds(lowered: jax.stages.Lowered, runs: int = 1) -> float | None:
    """``runs`` executions of ``lowered``, in seconds, from XLA's cost estimate of its HLO;
    ``None`` when the back end gives none."""
    try:
        cost = lowered.cost_analysis()
    except Exception:  # noqa: BLE001 - an estimate is optional; the program compiles as usual
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    flops = max(float(cost.get("flops", 0.0)), 0.0)
    moved = max(float(cost.get("bytes accessed", 0.0)), 0.0)
    return runs * max(flops / FLOPS_PER_SECOND + moved / BYTES_PER_SECOND, MIN_SECONDS_PER_RUN)


def _signature(args: tuple) -> Hashable:
    """What a compiled executable is specialised to: the pytree, each leaf's type (shape,
    dtype, weak type) and the sharding of an array placed anywhere but the default device (a
    host array and one on the default device share an executable)."""
    leaves, tree = jax.tree.flatten(args)
    return tree, tuple((jax.typeof(x), _placement(x)) for x in leaves)


def _placement(x: Any) -> Hashable:
    if isinstance(x, jax.Array) and x.sharding.device_set != {jax.devices()[0]}:
        return x.sharding  # over several devices, or on another one
    return None


class AdaptiveJit:
    """``jax.jit(fun)`` compiled quick (:data:`QUICK_OPTIONS`) when its run will be short.

    Call it as the jitted function, with ``runs=`` the number of executions the caller
    expects (decided at a signature's first call, which compiles it). Called on tracers
    (inside ``jax.jit``, ``vmap``, ``eval_shape``), it is the plain jitted function.
    ``choices`` lists the decisions (``"quick"``/``"full"``) in compile order; :meth:`lower`
    is the jitted function's.

    Args:
        fun: a function of positional arrays (pytrees), as ``jax.jit`` takes it.
        quick_seconds: the threshold of :func:`expected_seconds` (default
            :data:`QUICK_SECONDS`; ``0`` always compiles at XLA's defaults).
    """

    def __init__(self, fun: Callable, *, quick_seconds: float | None = None) -> None:
        self._jit = jax.jit(fun)
        self.quick_seconds = QUICK_SECONDS if quick_seconds is None else float(quick_seconds)
        self._compiled: dict[Hashable, Any] = {}
        self.choices: list[str] = []

    def lower(self, *args: Any) -> jax.stages.Lowered:
        """The jitted function's lowering (no decision, nothing kept)."""
        return self._jit.lower(*args)

    def _cache_size(self) -> int:
        """Compiled executables held (as ``jax.jit``'s ``_cache_size``)."""
        return len(self._compiled)

    def __call__(self, *args: Any, runs: int = 1) -> Any:
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args)):
            return self._jit(*args)  # inside another transformation: its program decides
        key = _signature(args)
        compiled = self._compiled.get(key)
        if compiled is None:
            lowered = self._jit.lower(*args)
            quick = False
            # (under JAX_DISABLE_MOST_OPTIMIZATIONS every program already compiles quick)
            if (jax.default_backend() == "cpu" and self.quick_seconds > 0
                    and not jax.config.values["jax_disable_most_optimizations"]):  # fmt: skip
                t = expected_seconds(lowered, max(int(runs), 1))
                quick = t is not None and t < self.quick_seconds
            compiled = lowered.compile(dict(QUICK_OPTIONS) if quick else None)
            self._compiled[key] = compiled
            self.choices.append("quick" if quick else "full")
        return compiled(*args)
