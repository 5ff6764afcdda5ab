"""The compile effort of a program follows the work it will do (ppl_dgp.compile_effort)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl_dgp.compile_effort import (
    MIN_SECONDS_PER_RUN,
    QUICK_SECONDS,
    STRAIGHT_FACTOR,
    AdaptiveJit,
    _quick,
    expected_seconds,
    program_cost,
)

# the decision is made only when programs compile at XLA's defaults (the suite compiles cheaply)
pytestmark = [
    pytest.mark.skipif(jax.default_backend() != "cpu", reason="decides on a CPU only"),
    pytest.mark.xla_optimised,
]


def _gp_var(key, X, Z, L):  # a conditional-like program: a draw, a solve, a reduction
    K = jnp.exp(-0.5 * (X[:, None, 0] - Z[None, :, 0]) ** 2)  # [N, M]
    A = jax.scipy.linalg.solve_triangular(L, K.T, lower=True)  # [M, N]
    eps = jax.random.normal(key, (X.shape[0],))
    return jnp.sum(A * A, axis=0) + 0.1 * eps


def _args(N=50, M=8):
    rng = np.random.default_rng(0)
    X, Z = rng.normal(size=(N, 1)), rng.normal(size=(M, 1))
    Kzz = np.exp(-0.5 * (Z - Z.T) ** 2) + 1e-6 * np.eye(M)
    return jax.random.key(1), X, Z, np.linalg.cholesky(Kzz)


def test_a_small_program_compiles_quick_and_equals_the_full_one():
    quick, full = AdaptiveJit(_gp_var), AdaptiveJit(_gp_var, quick_seconds=0)
    a, b = quick(*_args()), full(*_args())
    assert quick.choices == ["quick"] and full.choices == ["full"]
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a, jax.jit(_gp_var)(*_args()), rtol=1e-12, atol=1e-12)


def test_many_runs_of_a_small_program_compile_at_full_effort():
    f = AdaptiveJit(_gp_var)
    f(*_args(), runs=10_000)  # at least 1e-4 s a run: an estimated second
    assert f.choices == ["full"]
    jaxpr = jax.make_jaxpr(_gp_var)(*_args())
    assert expected_seconds(jaxpr, 10_000) >= 10_000 * MIN_SECONDS_PER_RUN


def test_the_estimate_grows_with_the_work():
    f = AdaptiveJit(lambda A, B: A @ B)
    small = expected_seconds(
        jax.make_jaxpr(lambda A, B: A @ B)(np.ones((10, 10)), np.ones((10, 10)))
    )
    big = expected_seconds(
        jax.make_jaxpr(lambda A, B: A @ B)(np.ones((2000, 2000)), np.ones((2000, 2000)))
    )
    assert small == MIN_SECONDS_PER_RUN and big > 1.0  # 16 GFLOP
    f(np.ones((4, 4)), np.ones((4, 4)))
    assert f.choices == ["quick"]


def test_program_cost_counts_a_scan_body_length_times_and_agrees_with_xla():
    def chunk(x, A):  # 100 steps of a [100, 100] product
        return jax.lax.scan(lambda c, _: (c @ A, None), x, None, length=100)[0]

    x, A = np.ones((100, 100)), np.eye(100)
    flops, moved, iterations = program_cost(jax.make_jaxpr(chunk)(x, A))
    assert flops == 100 * 2 * 100**3 and iterations == 100 and moved == 100 * 3 * 80_000
    # XLA counts the loop body once: per step, the two agree
    xla = jax.jit(chunk).lower(x, A).cost_analysis()
    xla = xla[0] if isinstance(xla, list) else xla
    assert abs(flops / 100 - xla["flops"]) <= 0.01 * xla["flops"]


def test_one_executable_per_signature_host_and_device_arrays_share_it():
    f = AdaptiveJit(_gp_var)
    key, X, Z, L = _args()
    f(key, X, Z, L)
    f(key, jnp.asarray(X) + 1.0, Z, L)  # a device array of the same type
    assert f._cache_size() == 1
    f(key, X[:20], Z, L)  # another shape: another executable
    assert f._cache_size() == 2 and f.choices == ["quick", "quick"]


def test_under_disabled_optimisations_everything_compiles_as_configured():
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        f = AdaptiveJit(_gp_var)
        f(*_args())
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
    assert f.choices == ["full"]  # no estimate: the configuration already compiles quick


def test_static_arguments_key_the_executable_and_are_not_passed_to_it():
    f = AdaptiveJit(lambda n, x: jnp.tile(x, n), static_argnums=0)
    x = np.arange(2.0)
    assert f(2, x).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert f(3, x).shape == (6,) and f(2, x + 1.0).tolist() == [1.0, 2.0, 1.0, 2.0]
    assert f._cache_size() == 2


def test_inside_a_transformation_it_is_the_jitted_function():
    f = AdaptiveJit(_gp_var)
    key, X, Z, L = _args()
    outer = jax.jit(lambda X: f(key, X, Z, L).sum())(X)
    grads = jax.grad(lambda X: f(key, X, Z, L).sum())(X)
    assert f._cache_size() == 0  # nothing compiled on its own
    np.testing.assert_allclose(outer, _gp_var(key, X, Z, L).sum(), rtol=1e-12)
    assert grads.shape == X.shape and np.all(np.isfinite(grads))


def test_one_run_of_a_loop_free_program_has_a_higher_threshold():
    # two products of 1300 x 1300 matrices: 2 x 2 n^3 = 8.8 GFLOP, an estimated 0.89 s, above
    # QUICK_SECONDS and below STRAIGHT_FACTOR x it: quick when run once without a loop; at
    # full effort when run twice, or as a scan of the same two products
    args = np.ones((1300, 1300)), np.ones((1300, 1300))
    twice = jax.make_jaxpr(lambda A, B: (A @ B) @ B)(*args)
    looped = jax.make_jaxpr(
        lambda A, B: jax.lax.scan(lambda C, _: (C @ B, None), A, None, length=2)[0]
    )(*args)
    t = expected_seconds(twice)
    assert QUICK_SECONDS < t < STRAIGHT_FACTOR * QUICK_SECONDS
    assert expected_seconds(looped) == pytest.approx(t)
    assert _quick(twice, 1, QUICK_SECONDS)
    assert not _quick(twice, 2, QUICK_SECONDS)
    assert not _quick(looped, 1, QUICK_SECONDS)
