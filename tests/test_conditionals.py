"""``conditional`` against slow, obviously-right dense NumPy references.

References are written with ``np.linalg.inv`` / ``np.linalg.solve`` on explicit kernel matrices
(built in NumPy from the distance formula, not from ``ppl_dgp.kernels``). The kernel matrices
used here have condition number <= ~1e4 (asserted), so an explicit inverse loses at most ~1e-12
relative; 1e-9 leaves three orders of magnitude and still catches any missing term or jitter.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ppl_dgp.conditionals import conditional  # noqa: E402
from ppl_dgp.kernels import SquaredExponential  # noqa: E402

pytestmark = pytest.mark.strict_rank
VARIANCE = 1.3
LENGTHSCALES = np.array([0.8, 1.4])
JITTER = 1e-6
M, N, D, Q = 6, 5, 2, 3
RTOL = 1e-9


def se_np(X1, X2):
    """NumPy SE kernel, pairwise differences (no |a|^2 + |b|^2 - 2ab trick)."""
    diff = (X1[:, None, :] - X2[None, :, :]) / LENGTHSCALES
    return VARIANCE * np.exp(-0.5 * np.sum(diff**2, axis=-1))


KERNEL = SquaredExponential(variance=VARIANCE, lengthscales=jnp.asarray(LENGTHSCALES))


@pytest.fixture
def problem():
    rs = np.random.RandomState(20261122)
    Z = np.linspace(-2.5, 2.5, M)[:, None] * np.array([1.0, 0.6]) + 0.1 * rs.randn(M, D)
    X = rs.uniform(-3, 3, size=(N, D))
    q_mu = rs.randn(M, Q)
    q_sqrt = np.tril(0.5 * rs.randn(Q, M, M))
    q_sqrt[:, np.arange(M), np.arange(M)] = np.abs(q_sqrt[:, np.arange(M), np.arange(M)]) + 0.1
    Kmm = se_np(Z, Z) + JITTER * np.eye(M)
    assert np.linalg.cond(Kmm) < 1e4  # keeps the explicit-inverse reference accurate
    return X, Z, q_mu, q_sqrt


def dense_conditional(X, Z, q_mu, S, jitter=JITTER):
    """``mean [N, Q]``, ``cov [Q, N, N]`` with explicit inverses (S: [Q, M, M] or None)."""
    Kmm = se_np(Z, Z) + jitter * np.eye(Z.shape[0])
    Kmn = se_np(Z, X)
    Knn = se_np(X, X)
    Kinv = np.linalg.inv(Kmm)
    mean = Kmn.T @ Kinv @ q_mu
    base = Knn - Kmn.T @ Kinv @ Kmn
    if S is None:
        cov = np.stack([base] * q_mu.shape[1])
    else:
        cov = np.stack([base + Kmn.T @ Kinv @ S[q] @ Kinv @ Kmn for q in range(q_mu.shape[1])])
    return mean, cov


def _diag(cov):  # [Q, N, N] -> [N, Q]
    return np.diagonal(cov, axis1=-2, axis2=-1).T


def _close(actual, desired, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(actual), desired, rtol=rtol, atol=0)


@pytest.mark.parametrize("full_cov", [True, False])
def test_unwhitened_matches_explicit_inverse(problem, full_cov):
    X, Z, q_mu, q_sqrt = problem
    S = q_sqrt @ np.swapaxes(q_sqrt, -1, -2)
    mean_ref, cov_ref = dense_conditional(X, Z, q_mu, S)
    mean, var = conditional(
        KERNEL,
        jnp.asarray(X),
        jnp.asarray(Z),
        jnp.asarray(q_mu),
        jnp.asarray(q_sqrt),
        whiten=False,
        full_cov=full_cov,
        jitter=JITTER,
    )
    assert mean.shape == (N, Q)
    _close(mean, mean_ref)
    if full_cov:
        assert var.shape == (Q, N, N)
        _close(var, cov_ref)
    else:
        assert var.shape == (N, Q)
        _close(var, _diag(cov_ref))


def test_unwhitened_reads_only_the_lower_triangle(problem):
    X, Z, q_mu, q_sqrt = problem
    junk = q_sqrt + np.triu(np.ones((Q, M, M)), k=1)
    a = conditional(KERNEL, X, Z, q_mu, q_sqrt, full_cov=True)
    b = conditional(KERNEL, X, Z, q_mu, junk, full_cov=True)
    _close(b[0], np.asarray(a[0]))
    _close(b[1], np.asarray(a[1]))


def test_jitter_enters_kmm(problem):
    """jitter is added to Kmm: a large jitter must match the reference with that jitter."""
    X, Z, q_mu, q_sqrt = problem
    S = q_sqrt @ np.swapaxes(q_sqrt, -1, -2)
    mean_ref, cov_ref = dense_conditional(X, Z, q_mu, S, jitter=1e-2)
    mean, cov = conditional(KERNEL, X, Z, q_mu, q_sqrt, full_cov=True, jitter=1e-2)
    _close(mean, mean_ref)
    _close(cov, cov_ref)
    # and the answer differs from the default-jitter one far beyond the tolerance
    mean_default, _ = conditional(KERNEL, X, Z, q_mu, q_sqrt, full_cov=True)
    assert np.max(np.abs(np.asarray(mean_default) - mean_ref)) > 1e-6


@pytest.mark.parametrize("full_cov", [True, False])
def test_whitened_equals_unwhitened_after_transform(problem, full_cov):
    X, Z, q_mu_v, q_sqrt_v = problem
    Lmm = np.linalg.cholesky(se_np(Z, Z) + JITTER * np.eye(M))
    q_mu_u = Lmm @ q_mu_v
    q_sqrt_u = Lmm[None] @ q_sqrt_v  # product of lower-triangular factors stays lower
    mean_w, var_w = conditional(KERNEL, X, Z, q_mu_v, q_sqrt_v, whiten=True, full_cov=full_cov)
    mean_u, var_u = conditional(KERNEL, X, Z, q_mu_u, q_sqrt_u, whiten=False, full_cov=full_cov)
    _close(mean_w, np.asarray(mean_u))
    _close(var_w, np.asarray(var_u))
    # and both equal the dense reference for q(u) = N(Lmm m_v, Lmm S_v Lmm^T)
    S_u = q_sqrt_u @ np.swapaxes(q_sqrt_u, -1, -2)
    mean_ref, cov_ref = dense_conditional(X, Z, q_mu_u, S_u)
    _close(mean_w, mean_ref)
    _close(var_w, cov_ref if full_cov else _diag(cov_ref))


@pytest.mark.parametrize("whiten", [True, False])
@pytest.mark.parametrize("full_cov", [True, False])
def test_diagonal_q_sqrt_equals_full_with_that_diagonal(problem, whiten, full_cov):
    X, Z, q_mu, _ = problem
    sd = np.random.RandomState(3).uniform(0.1, 1.5, size=(M, Q))  # [M, Q]
    q_sqrt_full = np.stack([np.diag(sd[:, q]) for q in range(Q)])  # [Q, M, M]
    a = conditional(KERNEL, X, Z, q_mu, sd, whiten=whiten, full_cov=full_cov)
    b = conditional(KERNEL, X, Z, q_mu, q_sqrt_full, whiten=whiten, full_cov=full_cov)
    _close(a[0], np.asarray(b[0]))
    _close(a[1], np.asarray(b[1]))
    # the outputs differ from each other, so a mixed-up Q axis would be caught
    q_axis = 0 if full_cov else -1
    assert np.ptp(np.asarray(a[1]), axis=q_axis).max() > 1e-3


@pytest.mark.parametrize("full_cov", [True, False])
def test_q_sqrt_none_is_the_prior_conditional(problem, full_cov):
    X, Z, q_mu, _ = problem
    mean_ref, cov_ref = dense_conditional(X, Z, q_mu, None)
    mean, var = conditional(KERNEL, X, Z, q_mu, None, whiten=False, full_cov=full_cov)
    _close(mean, mean_ref)
    _close(var, cov_ref if full_cov else _diag(cov_ref))
    # whitened: u = Lmm v, so p(f | v = q_mu) = p(f | u = Lmm q_mu)
    Lmm = np.linalg.cholesky(se_np(Z, Z) + JITTER * np.eye(M))
    mean_w_ref, _ = dense_conditional(X, Z, Lmm @ q_mu, None)
    mean_w, var_w = conditional(KERNEL, X, Z, q_mu, None, whiten=True, full_cov=full_cov)
    _close(mean_w, mean_w_ref)
    _close(var_w, cov_ref if full_cov else _diag(cov_ref))


@pytest.mark.filterwarnings("error")  # jitter=0 must not escalate
def test_inducing_at_data_with_exact_posterior_recovers_exact_gp():
    """Z = X and q(u) = p(u | y) reproduce the exact GP predictive at new points.

    Runs with jitter=0 so that the identity is exact: Kmm is then exactly K(X, X). With the
    default 1e-6 jitter the two would differ by O(1e-6) and no 1e-9 comparison would be fair.
    """
    rs = np.random.RandomState(7)
    Ntr, s2 = 8, 0.1
    Xtr = np.linspace(-3, 3, Ntr)[:, None] * np.array([1.0, 0.5]) + 0.05 * rs.randn(Ntr, D)
    y = rs.randn(Ntr, 2)  # two independent outputs sharing the kernel
    Xs = rs.uniform(-3, 3, size=(4, D))
    K = se_np(Xtr, Xtr)
    assert np.linalg.cond(K) < 1e4
    Ky = K + s2 * np.eye(Ntr)
    m = K @ np.linalg.solve(Ky, y)
    S = K - K @ np.linalg.solve(Ky, K)
    S = 0.5 * (S + S.T)
    q_sqrt = np.stack([np.linalg.cholesky(S)] * 2)
    Ksx = se_np(Xs, Xtr)
    mean_exact = Ksx @ np.linalg.solve(Ky, y)
    cov_exact = se_np(Xs, Xs) - Ksx @ np.linalg.solve(Ky, Ksx.T)

    mean, cov = conditional(KERNEL, Xs, Xtr, m, q_sqrt, full_cov=True, jitter=0.0)
    _close(mean, mean_exact)
    _close(cov, np.stack([cov_exact] * 2))
    _, var = conditional(KERNEL, Xs, Xtr, m, q_sqrt, full_cov=False, jitter=0.0)
    _close(var, np.stack([np.diag(cov_exact)] * 2, axis=-1))


@pytest.mark.parametrize("whiten", [True, False])
@pytest.mark.parametrize("kind", ["full", "diag", "none"])
def test_marginal_var_is_diagonal_of_full_cov(problem, whiten, kind):
    X, Z, q_mu, q_sqrt = problem
    qs = {"full": q_sqrt, "diag": np.abs(q_mu) + 0.1, "none": None}[kind]
    mean_m, var = conditional(KERNEL, X, Z, q_mu, qs, whiten=whiten, full_cov=False)
    mean_f, cov = conditional(KERNEL, X, Z, q_mu, qs, whiten=whiten, full_cov=True)
    _close(mean_m, np.asarray(mean_f))
    _close(var, _diag(np.asarray(cov)))
    c = np.asarray(cov)
    _close(c, np.swapaxes(c, -1, -2))  # symmetric


def test_conditional_is_jittable(problem):
    X, Z, q_mu, q_sqrt = problem
    f = jax.jit(lambda k, X, Z, m, s: conditional(k, X, Z, m, s, whiten=True))
    a = f(KERNEL, X, Z, q_mu, q_sqrt)
    b = conditional(KERNEL, X, Z, q_mu, q_sqrt, whiten=True)
    _close(a[0], np.asarray(b[0]))
    _close(a[1], np.asarray(b[1]))


@pytest.mark.parametrize(
    ("which", "match"),
    [
        ("xnew_rank1", "Xnew"),
        ("z_wrong_d", "Z must"),
        ("z_rank1", "Z must"),
        ("q_mu_wrong_m", "q_mu"),
        ("q_mu_rank1", "q_mu"),
        ("q_sqrt_wrong_q", "q_sqrt"),
        ("q_sqrt_wrong_m", "q_sqrt"),
        ("q_sqrt_transposed_diag", "q_sqrt"),
        ("q_sqrt_rank1", "q_sqrt"),
    ],
)
def test_shape_errors_name_the_argument(problem, which, match):
    X, Z, q_mu, q_sqrt = problem
    args = dict(Xnew=X, Z=Z, q_mu=q_mu, q_sqrt=q_sqrt)
    bad = {
        "xnew_rank1": ("Xnew", X[:, 0]),
        "z_wrong_d": ("Z", np.zeros((M, D + 1))),
        "z_rank1": ("Z", Z[:, 0]),
        "q_mu_wrong_m": ("q_mu", np.zeros((M + 1, Q))),
        "q_mu_rank1": ("q_mu", q_mu[:, 0]),
        "q_sqrt_wrong_q": ("q_sqrt", q_sqrt[:2]),
        "q_sqrt_wrong_m": ("q_sqrt", q_sqrt[:, :-1, :-1]),
        "q_sqrt_transposed_diag": ("q_sqrt", np.ones((Q, M))),
        "q_sqrt_rank1": ("q_sqrt", np.ones(M)),
    }[which]
    args[bad[0]] = bad[1]
    with pytest.raises(ValueError, match=match):
        conditional(KERNEL, **{k: jnp.asarray(v) for k, v in args.items()})
