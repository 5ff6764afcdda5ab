"""How hard XLA optimises a program: as hard as its run is long (on a CPU).

On a CPU, XLA's LLVM back end spends one to five seconds optimising a DGP's training chunk, its
predictive pass or a block of posterior draws at its default level, and about 1.3 s on every
``jax.random`` draw of a few hundred numbers (the ``threefry`` hash, as JAX 0.12 partitions
it). For a small fit those programs *run* for a fraction of a second: a fresh process on the
motorcycle DGP spent 9.6 s compiling and 0.19 s running ``fit(SVI(num_steps=1000))``. Compiled
at ``xla_backend_optimization_level=0`` the same programs took 5.7 s to compile and 0.40 s to
run.

:class:`AdaptiveJit` is ``jax.jit`` that decides, per argument signature, from a cost estimate
of the traced program (:func:`program_cost`: a walk over its jaxpr, FLOPs of the products and
factorisations, one per element elsewhere, the bytes each operation reads and writes, a
``scan``'s body times its length; within 10-20% of XLA's own ``cost_analysis`` on the
library's programs, at a tenth of its cost):

.. math:: t = \\text{runs} \\times \\max\\Big(
    \\frac{\\text{flops}}{10^{10}\\,\\text{s}^{-1}}
    + \\frac{\\text{bytes}}{10^{10}\\,\\text{s}^{-1}},
    \\ 10^{-4}\\,\\text{s} \\times \\text{iterations}\\Big)

(``iterations``: the program's innermost loop iterations, 1 without a ``scan``) and compiles
with :data:`QUICK_OPTIONS` when ``t`` is below :data:`QUICK_SECONDS` (the quick code then
costs at most about that much again), or below :data:`STRAIGHT_FACTOR` times it for a single
run of a program without a loop (products and factorisations run in the same library kernels
at either level), with XLA's defaults otherwise. ``runs`` is the caller's count of executions
(a loop's chunks). Only on a CPU: other back ends compile as usual, as
does everything under ``JAX_DISABLE_MOST_OPTIMIZATIONS`` (which already compiles every program
without those passes; the test suite runs so). The results are the same programs' results;
the two levels may differ in the last bits (another fusion, another order of a sum). JAX's
persistent compilation cache keys an executable on its options, so either kind is read back by
the next process.

Example:
    >>> import jax, jax.numpy as jnp
    >>> double = AdaptiveJit(lambda x: 2.0 * x)
    >>> double(jnp.arange(3.0)).tolist()
    [0.0, 2.0, 4.0]
    >>> flops, _, iterations = program_cost(jax.make_jaxpr(lambda A: A @ A)(jnp.ones((10, 10))))
    >>> flops, iterations  # 2 n^3, no loop
    (2000.0, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

__all__ = [
    "AdaptiveJit",
    "QUICK_OPTIONS",
    "QUICK_SECONDS",
    "STRAIGHT_FACTOR",
    "expected_seconds",
    "program_cost",
]

#: The compile options of a short-running program: no LLVM optimisation pipeline.
QUICK_OPTIONS: dict[str, Any] = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}

#: Programs expected to run for less than this (seconds, at the default level) compile quick.
QUICK_SECONDS = 0.5

#: A program run once and without a loop compiles quick below ``STRAIGHT_FACTOR x`` the
#: threshold. Its time is mostly products and factorisations, which run in the same Eigen and
#: LAPACK kernels at either level, while the full pipeline costs it seconds: on synth10k the
#: DGP's full-data ELBO (10 draws; estimated 0.91 s) ran in 0.55 s quick against 0.45 s full
#: but compiled in 1.2 s against 2.7 s, and its 100-pass predictive (estimated 0.74 s) 0.59
#: against 0.44 s, compiled in 1.0 against 2.5 s; the two in one program (estimated 1.65 s)
#: took 3.9 s to compile and run quick against 6.1-6.4 s at full effort (1.9 against 1.8 s
#: from a warm cache: the run). A loop's body is small elementwise work, which the quick
#: code runs 2-4x slower.
STRAIGHT_FACTOR = 5.0

#: The rates of :func:`expected_seconds`: one core's float64 matmul rate and memory bandwidth,
#: rounded down (a 2-layer DGP step on synth10k runs at about 28 GFLOP/s here).
FLOPS_PER_SECOND = 1e10
BYTES_PER_SECOND = 1e10

#: The least one loop iteration costs, whatever its FLOPs: a small program's time is its ops'
#: own overhead (a step of the motorcycle DGP's SVI, 0.3 MFLOP, takes 0.19 ms at the default
#: level).
MIN_SECONDS_PER_RUN = 1e-4


def _size(aval: Any) -> int:
    shape = getattr(aval, "shape", ())
    return int(np.prod(shape)) if shape else 1


def _nbytes(aval: Any) -> int:
    try:
        item = np.dtype(getattr(aval, "dtype", np.float64)).itemsize
    except TypeError:  # extended dtypes (PRNG keys)
        item = 8
    return _size(aval) * item


def _inner(value: Any) -> Iterator[Any]:
    """The jaxprs held by an equation's parameter (a call's body, a loop's, a branch)."""
    if isinstance(value, jcore.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jcore.Jaxpr):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _inner(v)


def program_cost(jaxpr: Any) -> tuple[float, float, int]:
    """``(flops, bytes, iterations)`` of one run of a (closed) jaxpr.

    ``dot_general``: ``2 x`` output size ``x`` contracted size; ``cholesky``: ``n^3 / 3`` per
    matrix; ``triangular_solve``: ``n`` per right-hand-side entry; any other operation one per
    output element. Bytes: every operation's inputs and outputs (nothing fused). A ``scan``
    counts its body ``length`` times, a ``cond`` its dearest branch, a ``while`` its body once
    (its trip count is unknown). ``iterations``: the product of the ``scan`` lengths on the
    longest nest (1 without one).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    flops = moved = 0.0
    iterations = 1
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        inner = [j for v in eqn.params.values() for j in _inner(v)]
        if inner:
            costs = [program_cost(j) for j in inner]
            pick = max if name == "cond" else sum
            length = int(eqn.params.get("length", 1)) if name == "scan" else 1
            flops += length * pick(c[0] for c in costs)
            moved += length * pick(c[1] for c in costs)
            iterations = max(iterations, length * max(c[2] for c in costs))
            continue
        ins = [v.aval for v in eqn.invars]
        out = sum(_size(v.aval) for v in eqn.outvars)
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            flops += 2.0 * out * float(np.prod([ins[0].shape[i] for i in contract]))
        elif name == "cholesky":
            n = ins[0].shape[-1]
            flops += _size(ins[0]) * n / 3.0
        elif name == "triangular_solve":
            flops += float(_size(ins[1]) * ins[0].shape[-1])
        else:
            flops += out
        moved += sum(_nbytes(a) for a in ins) + sum(_nbytes(v.aval) for v in eqn.outvars)
    return flops, moved, iterations


def _estimate(jaxpr: Any, runs: int) -> tuple[float, int]:
    flops, moved, iterations = program_cost(jaxpr)
    work = flops / FLOPS_PER_SECOND + moved / BYTES_PER_SECOND
    return runs * max(work, MIN_SECONDS_PER_RUN * iterations), iterations


def expected_seconds(jaxpr: Any, runs: int = 1) -> float:
    """``runs`` executions of a (closed) jaxpr, in seconds, by :func:`program_cost`."""
    return _estimate(jaxpr, runs)[0]


def _quick(jaxpr: Any, runs: int, quick_seconds: float) -> bool:
    """Whether ``runs`` executions of ``jaxpr`` compile quick: :func:`expected_seconds` below
    ``quick_seconds``, or below ``STRAIGHT_FACTOR x quick_seconds`` for one run of a program
    without a loop."""
    t, iterations = _estimate(jaxpr, runs)
    straight = runs == 1 and iterations == 1
    return t < quick_seconds * (STRAIGHT_FACTOR if straight else 1.0)


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
        static_argnums: positional arguments that are hashable configuration (``jax.jit``'s).
        quick_seconds: the threshold of :func:`expected_seconds` (default
            :data:`QUICK_SECONDS`; ``0`` always compiles at XLA's defaults).
    """

    def __init__(
        self,
        fun: Callable,
        *,
        static_argnums: int | tuple[int, ...] = (),
        quick_seconds: float | None = None,
    ) -> None:
        static = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
        self._static = tuple(sorted(static))
        self._jit = jax.jit(fun, static_argnums=self._static)
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
        static = tuple(args[i] for i in self._static)
        dynamic = tuple(a for i, a in enumerate(args) if i not in self._static)
        key = (static, _signature(dynamic))
        compiled = self._compiled.get(key)
        if compiled is None:
            traced = self._jit.trace(*args)
            quick = False
            # (under JAX_DISABLE_MOST_OPTIMIZATIONS every program already compiles quick)
            if (jax.default_backend() == "cpu" and self.quick_seconds > 0
                    and not jax.config.values["jax_disable_most_optimizations"]):  # fmt: skip
                quick = _quick(traced.jaxpr, max(int(runs), 1), self.quick_seconds)
            compiled = traced.lower().compile(dict(QUICK_OPTIONS) if quick else None)
            self._compiled[key] = compiled
            self.choices.append("quick" if quick else "full")
        return compiled(*dynamic)  # an executable takes the non-static arguments
