"""Gaussian KL divergences against the dense closed form, and their invariants."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ppl_dgp.kernels import SquaredExponential  # noqa: E402
from ppl_dgp.kl import gauss_kl, prior_kl  # noqa: E402

pytestmark = pytest.mark.strict_rank
M, D, Q = 6, 2, 2
JITTER = 1e-6
KERNEL = SquaredExponential(variance=1.2, lengthscales=jnp.array([0.9, 1.5]))


def dense_kl(q_mu, S, K):
    """``sum_q KL[N(m_q, S_q) || N(0, K)]`` with explicit inverses and log-determinants."""
    Kinv = np.linalg.inv(K)
    _, logdet_K = np.linalg.slogdet(K)
    total = 0.0
    for q in range(q_mu.shape[1]):
        _, logdet_S = np.linalg.slogdet(S[q])
        m = q_mu[:, q]
        total += 0.5 * (np.trace(Kinv @ S[q]) + m @ Kinv @ m - K.shape[0] + logdet_K - logdet_S)
    return total


@pytest.fixture
def problem():
    rs = np.random.RandomState(11)
    Z = np.linspace(-2, 2, M)[:, None] * np.array([1.0, 0.7]) + 0.1 * rs.randn(M, D)
    K = np.asarray(KERNEL.K(jnp.asarray(Z))) + JITTER * np.eye(M)
    assert np.linalg.cond(K) < 1e4  # explicit inverse stays accurate to ~1e-12
    q_mu = rs.randn(M, Q)
    q_sqrt = np.tril(0.4 * rs.randn(Q, M, M))
    idx = np.arange(M)
    q_sqrt[:, idx, idx] = np.abs(q_sqrt[:, idx, idx]) + 0.2
    return Z, K, q_mu, q_sqrt


def _close(actual, desired, rtol=1e-9):
    np.testing.assert_allclose(float(actual), desired, rtol=rtol, atol=0)


def test_kl_of_prior_with_itself_is_zero_whitened():
    q_mu = jnp.zeros((M, Q))
    # 0 is compared in absolute terms; each of the M*Q terms is O(1), so 1e-12 is rounding only
    np.testing.assert_allclose(float(gauss_kl(q_mu, jnp.stack([jnp.eye(M)] * Q))), 0, atol=1e-12)
    np.testing.assert_allclose(float(gauss_kl(q_mu, jnp.ones((M, Q)))), 0, atol=1e-12)


def test_kl_of_prior_with_itself_is_zero_unwhitened(problem):
    Z, K, _, _ = problem
    L = np.linalg.cholesky(K)
    q_mu = np.zeros((M, Q))
    q_sqrt = np.stack([L] * Q)
    np.testing.assert_allclose(float(gauss_kl(q_mu, q_sqrt, K=K)), 0, atol=1e-10)
    np.testing.assert_allclose(float(gauss_kl(q_mu, q_sqrt, K_cholesky=L)), 0, atol=1e-10)
    kl = prior_kl(KERNEL, Z, q_mu, q_sqrt, whiten=False, jitter=JITTER)
    np.testing.assert_allclose(float(kl), 0, atol=1e-10)


@pytest.mark.parametrize("diag", [False, True])
def test_unwhitened_kl_matches_dense_formula(problem, diag):
    Z, K, q_mu, q_sqrt = problem
    if diag:
        q_sqrt = np.abs(np.random.RandomState(5).randn(M, Q)) + 0.1  # [M, Q]
        S = np.stack([np.diag(q_sqrt[:, q] ** 2) for q in range(Q)])
    else:
        S = q_sqrt @ np.swapaxes(q_sqrt, -1, -2)
    ref = dense_kl(q_mu, S, K)
    _close(gauss_kl(q_mu, q_sqrt, K=K), ref)
    _close(gauss_kl(q_mu, q_sqrt, K_cholesky=np.linalg.cholesky(K)), ref)
    _close(prior_kl(KERNEL, Z, q_mu, q_sqrt, whiten=False, jitter=JITTER), ref)


@pytest.mark.parametrize("diag", [False, True])
def test_whitened_kl_matches_dense_formula(problem, diag):
    Z, _, q_mu, q_sqrt = problem
    if diag:
        q_sqrt = np.abs(np.random.RandomState(6).randn(M, Q)) + 0.1
        S = np.stack([np.diag(q_sqrt[:, q] ** 2) for q in range(Q)])
    else:
        S = q_sqrt @ np.swapaxes(q_sqrt, -1, -2)
    ref = dense_kl(q_mu, S, np.eye(M))
    _close(gauss_kl(q_mu, q_sqrt), ref)
    _close(prior_kl(KERNEL, Z, q_mu, q_sqrt, whiten=True), ref)


def test_kl_reads_only_the_lower_triangle(problem):
    _, K, q_mu, q_sqrt = problem
    junk = q_sqrt + np.triu(np.ones((Q, M, M)), k=1)
    _close(gauss_kl(q_mu, junk, K=K), float(gauss_kl(q_mu, q_sqrt, K=K)))
    _close(gauss_kl(q_mu, junk), float(gauss_kl(q_mu, q_sqrt)))


@pytest.mark.parametrize("diag", [False, True])
def test_whitened_equals_unwhitened_after_transform(problem, diag):
    """KL[N(m, S) || N(0, I)] = KL[N(L m, L S L^T) || N(0, L L^T)] with L = chol(Kmm + jitter)."""
    Z, K, q_mu_v, q_sqrt_v = problem
    if diag:
        sd = np.abs(np.random.RandomState(8).randn(M, Q)) + 0.1
        q_sqrt_v = np.stack([np.diag(sd[:, q]) for q in range(Q)])
        kl_w = prior_kl(KERNEL, Z, q_mu_v, sd, whiten=True)
    else:
        kl_w = prior_kl(KERNEL, Z, q_mu_v, q_sqrt_v, whiten=True)
    L = np.linalg.cholesky(K)
    kl_u = prior_kl(KERNEL, Z, L @ q_mu_v, L[None] @ q_sqrt_v, whiten=False, jitter=JITTER)
    _close(kl_w, float(kl_u))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("whiten", [True, False])
def test_kl_is_positive(problem, seed, whiten):
    Z, _, _, _ = problem
    rs = np.random.RandomState(100 + seed)
    q_mu = 0.1 * rs.randn(M, Q)
    q_sqrt = np.tril(0.1 * rs.randn(Q, M, M)) + 0.9 * np.eye(M)
    kl = float(prior_kl(KERNEL, Z, q_mu, q_sqrt, whiten=whiten, jitter=JITTER))
    assert np.isfinite(kl)
    assert kl > 0  # q != p almost surely, so strictly positive


def test_kl_sums_over_outputs(problem):
    _, K, q_mu, q_sqrt = problem
    total = gauss_kl(q_mu, q_sqrt, K=K)
    parts = [gauss_kl(q_mu[:, q : q + 1], q_sqrt[q : q + 1], K=K) for q in range(Q)]
    _close(total, float(sum(parts)))


@pytest.mark.parametrize("whiten", [True, False])
def test_kl_shape_errors(problem, whiten):
    _, K, q_mu, q_sqrt = problem
    Karg = None if whiten else K
    with pytest.raises(ValueError, match="q_sqrt"):
        gauss_kl(q_mu, q_sqrt[:1], K=Karg)
    with pytest.raises(ValueError, match="q_sqrt"):
        gauss_kl(q_mu, np.ones((Q, M)), K=Karg)
