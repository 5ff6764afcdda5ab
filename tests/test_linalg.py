"""Cholesky with jitter escalation, its warnings and errors, triangular solves, and the
GEMM-only custom-VJP helpers of the conditional (``triangular_inverse``, ``sum_sq_LtA``)."""

import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

from ppl_dgp import linalg  # noqa: E402
from ppl_dgp.linalg import (  # noqa: E402
    CholeskyError,
    cholesky,
    logdet_from_cholesky,
    solve_triangular,
    sum_sq_LtA,
    triangular_inverse,
)

pytestmark = pytest.mark.strict_rank
M = 5


def spd(seed=0, m=M):
    A = np.random.RandomState(seed).randn(m, 2 * m)
    return A @ A.T / (2 * m) + 0.1 * np.eye(m)


def rank_one(m=3):
    """SE kernel matrix of one input repeated m times: exactly ``ones``, PSD of rank 1.

    The second Cholesky pivot is exactly ``1 - 1 = 0``, so jitter 0 fails deterministically.
    """
    return np.ones((m, m))


def needs_1e5(m=3):
    """Eigenvalues 3 - 5e-6, -5e-6, -5e-6: jitter 1e-6 still fails, 1e-5 is the first to work."""
    return np.ones((m, m)) - 5e-6 * np.eye(m)


@pytest.mark.filterwarnings("error")  # no escalation (and so no warning) for an SPD matrix
def test_spd_matches_numpy_with_default_jitter():
    K = spd()
    L = np.asarray(cholesky(jnp.asarray(K)))
    np.testing.assert_allclose(L, np.linalg.cholesky(K + 1e-6 * np.eye(M)), rtol=1e-12, atol=0)
    L0 = np.asarray(cholesky(jnp.asarray(K), jitter=0.0))
    np.testing.assert_allclose(L0, np.linalg.cholesky(K), rtol=1e-12, atol=0)
    # the default jitter is visible at this tolerance
    assert np.max(np.abs(L - L0)) > 1e-9


@pytest.mark.filterwarnings("error")
def test_batched_input_shares_the_jitter():
    K = np.stack([spd(1), spd(2)])
    L = np.asarray(cholesky(jnp.asarray(K), jitter=1e-4))
    ref = np.linalg.cholesky(K + 1e-4 * np.eye(M))
    np.testing.assert_allclose(L, ref, rtol=1e-12, atol=0)


def test_rank_deficient_escalates_with_warning():
    K = rank_one()
    with pytest.warns(RuntimeWarning, match=r"jitter 0; succeeded with jitter 1e-06"):
        L = np.asarray(cholesky(jnp.asarray(K), jitter=0.0))
    np.testing.assert_allclose(L @ L.T, K + 1e-6 * np.eye(3), rtol=0, atol=1e-14)


def test_escalation_picks_the_smallest_jitter_that_works():
    K = needs_1e5()
    with pytest.warns(RuntimeWarning, match=r"with jitter 1e-06; succeeded with jitter 1e-05"):
        L = np.asarray(cholesky(jnp.asarray(K)))
    np.testing.assert_allclose(L @ L.T, K + 1e-5 * np.eye(3), rtol=0, atol=1e-14)
    np.testing.assert_allclose(L, np.linalg.cholesky(K + 1e-5 * np.eye(3)), rtol=1e-12)


def test_escalation_under_jit_warns_through_callback():
    f = jax.jit(lambda K: cholesky(K, jitter=0.0))
    for K, used in [(rank_one(), 1e-6), (needs_1e5(), 1e-5)]:
        with pytest.warns(RuntimeWarning, match=f"succeeded with jitter {used:g}"):
            L = f(jnp.asarray(K)).block_until_ready()
            jax.effects_barrier()  # the warning comes from a host callback
        L = np.asarray(L)
        assert np.all(np.isfinite(L))
        np.testing.assert_allclose(L @ L.T, K + used * np.eye(3), rtol=0, atol=1e-14)


def test_no_warning_under_jit_when_the_first_attempt_works():
    f = jax.jit(cholesky)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(jnp.asarray(spd())).block_until_ready()
        jax.effects_barrier()


def test_no_spurious_warning_under_vmap():
    K = jnp.asarray(np.stack([spd(1), spd(2)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L = jax.vmap(cholesky)(K).block_until_ready()
        jax.effects_barrier()
    np.testing.assert_allclose(L, np.linalg.cholesky(np.asarray(K) + 1e-6 * np.eye(M)))


def test_vmap_escalation_values_are_right():
    K = np.stack([spd(1)[:3, :3], needs_1e5()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # see test_no_spurious_warning_under_vmap
        L = np.asarray(jax.vmap(lambda K: cholesky(K, jitter=0.0))(jnp.asarray(K)))
    np.testing.assert_allclose(L[0], np.linalg.cholesky(K[0]), rtol=1e-12)
    np.testing.assert_allclose(L[1], np.linalg.cholesky(K[1] + 1e-5 * np.eye(3)), rtol=1e-12)


def test_vmap_escalation_is_reported_once_with_the_largest_jitter():
    # one batch element needs 1e-5, the other factorises with 1e-6: a single warning
    K = jnp.asarray(np.stack([spd(1)[:3, :3], needs_1e5()]))
    with pytest.warns(RuntimeWarning, match="succeeded with jitter 1e-05") as record:
        jax.jit(jax.vmap(cholesky))(K).block_until_ready()
        jax.effects_barrier()
    assert len([w for w in record if "succeeded with jitter" in str(w.message)]) == 1


@pytest.mark.parametrize("K", [-np.eye(3), -spd(3), np.diag([1.0, 1.0, -1.0])])
def test_not_positive_definite_raises_eagerly(K):
    with pytest.raises(CholeskyError, match="not positive definite even with jitter 0.01"):
        cholesky(jnp.asarray(K))
    assert issubclass(CholeskyError, np.linalg.LinAlgError)


def test_not_positive_definite_is_nan_under_jit():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L = jax.jit(cholesky)(-jnp.eye(3))
        jax.effects_barrier()
    assert np.all(np.isnan(np.asarray(L)))


def test_max_jitter_bounds_the_ladder():
    with pytest.raises(CholeskyError):
        cholesky(jnp.asarray(needs_1e5()), jitter=0.0, max_jitter=1e-6)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match=r"\[\.\.\., M, M\]"):
        cholesky(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"\[\.\.\., M, M\]"):
        cholesky(jnp.ones(3))


@pytest.mark.filterwarnings("error")
def test_gradient_through_cholesky_is_finite_and_correct():
    """d/dK log det(K + jitter I) = (K + jitter I)^{-1} (symmetric K)."""
    K = jnp.asarray(spd(4))
    g = np.asarray(jax.grad(lambda K: logdet_from_cholesky(cholesky(K)))(K))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, np.linalg.inv(np.asarray(K) + 1e-6 * np.eye(M)), rtol=1e-9)
    g_jit = jax.jit(jax.grad(lambda K: jnp.sum(cholesky(K))))(K)
    assert np.all(np.isfinite(np.asarray(g_jit)))


def test_gradient_through_escalated_cholesky_is_finite():
    K = jnp.asarray(rank_one())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        g = np.asarray(jax.grad(lambda K: logdet_from_cholesky(cholesky(K, jitter=0.0)))(K))
        jax.effects_barrier()
    np.testing.assert_allclose(g, np.linalg.inv(np.asarray(K) + 1e-6 * np.eye(3)), rtol=1e-6)


def test_solve_triangular():
    L = np.linalg.cholesky(spd(5))
    B = np.random.RandomState(6).randn(M, 3)
    np.testing.assert_allclose(solve_triangular(L, B), np.linalg.solve(L, B), rtol=1e-10)
    np.testing.assert_allclose(
        solve_triangular(L, B, trans=True), np.linalg.solve(L.T, B), rtol=1e-10
    )
    U = L.T
    np.testing.assert_allclose(
        solve_triangular(U, B, lower=False), np.linalg.solve(U, B), rtol=1e-10
    )


def test_logdet_from_cholesky():
    K = spd(7)
    np.testing.assert_allclose(
        logdet_from_cholesky(jnp.asarray(np.linalg.cholesky(K))),
        np.linalg.slogdet(K)[1],
        rtol=1e-12,
    )


def _sum_sq_plain(Lq, A):
    """``v[q, n] = sum_m (tril(L_q)^T A)[m, n]^2``, written directly (autodiff reference)."""
    LtA = jnp.einsum("qlm,ln->qmn", jnp.tril(Lq), A)
    return jnp.sum(LtA * LtA, axis=1)


@pytest.mark.parametrize(("Q", "Mq", "N"), [(3, 7, 5), (1, 1, 4), (2, 10, 1)])
@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_sum_sq_LtA_matches_the_plain_formula_and_its_gradient(Q, Mq, N, blocks, monkeypatch):
    """Forward, reverse-mode gradient (vs jax.grad of the plain formula) and numerical grads."""
    monkeypatch.setattr(linalg, "SUM_SQ_BLOCKS", blocks)
    rng = np.random.RandomState(11)
    Lq = jnp.asarray(rng.randn(Q, Mq, Mq))  # full: the upper triangle must be ignored
    A = jnp.asarray(rng.randn(Mq, N))
    W = jnp.asarray(rng.randn(Q, N))  # random cotangent
    v = sum_sq_LtA(Lq, A)
    assert v.shape == (Q, N)
    np.testing.assert_allclose(v, _sum_sq_plain(Lq, A), rtol=1e-12)
    dense = np.einsum("qlm,ln->qmn", np.tril(np.asarray(Lq)), np.asarray(A))
    np.testing.assert_allclose(v, np.sum(dense**2, axis=1), rtol=1e-12)
    g = jax.grad(lambda L, A: jnp.sum(W * sum_sq_LtA(L, A)), argnums=(0, 1))(Lq, A)
    g_ref = jax.grad(lambda L, A: jnp.sum(W * _sum_sq_plain(L, A)), argnums=(0, 1))(Lq, A)
    np.testing.assert_allclose(g[0], g_ref[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g[1], g_ref[1], rtol=1e-12, atol=1e-12)
    assert np.all(np.triu(np.asarray(g[0]), 1) == 0.0)  # lower-triangular gradient
    check_grads(lambda L, A: sum_sq_LtA(jnp.tril(L), A), (Lq, A), order=1, modes=["rev"])


def test_sum_sq_LtA_under_jit_and_vmap():
    rng = np.random.RandomState(12)
    Lq = jnp.asarray(rng.randn(4, 2, 6, 6))
    A = jnp.asarray(rng.randn(4, 6, 3))
    v = jax.jit(jax.vmap(sum_sq_LtA))(Lq, A)
    ref = jax.vmap(_sum_sq_plain)(Lq, A)
    np.testing.assert_allclose(v, ref, rtol=1e-12)


def test_triangular_inverse_and_its_gradient():
    """``L^{-1}`` against NumPy; its custom VJP against jax.grad of a triangular solve."""
    L = jnp.asarray(np.linalg.cholesky(spd(8)))
    W = jnp.asarray(np.random.RandomState(9).randn(M, M))
    np.testing.assert_allclose(triangular_inverse(L), np.linalg.inv(np.asarray(L)), rtol=1e-12)

    def plain(L):
        return jax.lax.linalg.triangular_solve(
            L, jnp.eye(M, dtype=L.dtype), left_side=True, lower=True
        )

    g = jax.grad(lambda L: jnp.sum(W * triangular_inverse(L)))(L)
    g_ref = jnp.tril(jax.grad(lambda L: jnp.sum(W * plain(L)))(L))
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)
    check_grads(lambda L: triangular_inverse(jnp.tril(L)), (L,), order=1, modes=["rev"])


def test_an_unused_factor_leaves_the_program():
    # the escalation reports through a pure callback, not an effect: a factor nobody uses is
    # removed with its retry branch (a traced model's set-up needs only its initial values)
    def f(K):
        cholesky(K)
        return 2.0 * K

    hlo = jax.jit(f).lower(jnp.asarray(spd())).compile().as_text()
    assert "potrf" not in hlo and "callback" not in hlo
    used = jax.jit(cholesky).lower(jnp.asarray(spd())).compile().as_text()
    assert "potrf" in used and "callback" in used  # the check itself sees a used factor
