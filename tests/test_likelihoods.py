"""Likelihood values against slow, independent references.

References are written here with NumPy/SciPy only: ``scipy.stats`` log densities, adaptive
``scipy.integrate.quad`` and NumPy Gauss–Hermite product grids for the expectations, plain
Monte Carlo (``numpy`` generator, fixed seed, 2e5 draws) with a tolerance of five standard
errors, and NumPyro's own distributions (through :mod:`ppl_dgp.observe`) for ``log_prob``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import log_softmax, softmax

from ppl_dgp.likelihoods import (
    Bernoulli,
    Categorical,
    Gaussian,
    HeteroscedasticGaussian,
    Likelihood,
    Poisson,
    StudentT,
)
from ppl_dgp.observe import check_observations, to_distribution

pytestmark = pytest.mark.strict_rank

RNG = np.random.default_rng(20261203)
M = RNG.normal(0.0, 1.0, (3, 2))  # [N, P] latent means
V = RNG.uniform(0.2, 1.5, (3, 2))  # [N, P] latent variances
Y_REAL = RNG.normal(0.0, 1.5, (3, 2))
Y_BINARY = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
Y_COUNT = np.array([[0.0, 3.0], [1.0, 7.0], [2.0, 0.0]])


# --- independent references ------------------------------------------------------------


def _softplus(f):
    return np.logaddexp(0.0, f)


#: (likelihood, y, log p(y | f) in NumPy/SciPy) for one latent function per observation
SCALAR_CASES = {
    "gaussian": (Gaussian(variance=0.7), Y_REAL, lambda y, f: stats.norm.logpdf(y, f, 0.7**0.5)),
    "student_t": (
        StudentT(df=4.0, scale=0.8),
        Y_REAL,
        lambda y, f: stats.t.logpdf(y, 4.0, loc=f, scale=0.8),
    ),
    "bernoulli_probit": (
        Bernoulli("probit"),
        Y_BINARY,
        lambda y, f: stats.norm.logcdf((2 * y - 1) * f),
    ),
    "bernoulli_logit": (
        Bernoulli("logit"),
        Y_BINARY,
        lambda y, f: -_softplus(-(2 * y - 1) * f),
    ),
    "poisson_exp": (
        Poisson("exp", binsize=2.0),
        Y_COUNT,
        lambda y, f: stats.poisson.logpmf(y, 2.0 * np.exp(f)),
    ),
    "poisson_softplus": (
        Poisson("softplus", binsize=2.0),
        Y_COUNT,
        lambda y, f: stats.poisson.logpmf(y, 2.0 * _softplus(f)),
    ),
}


def _quad(g, m, v):
    """``E_{N(f | m, v)}[g(idx, f)]`` per entry by adaptive quadrature over m +- 12 sd."""
    out = np.empty(m.shape)
    for idx in np.ndindex(m.shape):
        s = math.sqrt(v[idx])

        def integrand(f, idx=idx, s=s):
            return g(idx, f) * stats.norm.pdf(f, m[idx], s)

        lo, hi = m[idx] - 12 * s, m[idx] + 12 * s
        out[idx] = integrate.quad(integrand, lo, hi, epsabs=1e-14, epsrel=1e-13, limit=400)[0]
    return out


def _gh(n):
    t, w = np.polynomial.hermite.hermgauss(n)
    return np.sqrt(2.0) * t, w / np.sqrt(np.pi)


def _mc(g, m, v, n=200_000, seed=0):
    """Monte Carlo mean and standard error of ``E[g(f)]``, ``f = m + sqrt(v) eps`` [n, ...]."""
    f = m + np.sqrt(v) * np.random.default_rng(seed).standard_normal((n, *m.shape))
    vals = g(f)
    return vals.mean(0), vals.std(0) / math.sqrt(n)


def _points(lik, n):
    """``lik`` with ``n`` Gauss–Hermite points (unchanged where it has no such field)."""
    fields = {f.name for f in dataclasses.fields(lik)}
    return dataclasses.replace(lik, num_gauss_hermite=n) if "num_gauss_hermite" in fields else lik


def _j(*arrays):
    return tuple(jnp.asarray(a) for a in arrays)


# --- one latent function per observation -------------------------------------------------


@pytest.mark.parametrize("case", sorted(SCALAR_CASES))
def test_variational_expectations_match_adaptive_quadrature(case):
    lik, y, logp = SCALAR_CASES[case]
    lik = _points(lik, 100)
    ref = _quad(lambda idx, f: logp(y[idx], f), M, V)
    got = lik.variational_expectations(*_j(y, M, V))
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("case", sorted(SCALAR_CASES))
def test_default_variational_expectations_match_monte_carlo(case):
    lik, y, logp = SCALAR_CASES[case]
    assert lik.num_gauss_hermite == 20  # the documented default
    mean, se = _mc(lambda f: logp(y[None], f), M, V)
    got = np.asarray(lik.variational_expectations(*_j(y, M, V)))
    assert np.all(np.abs(got - mean) < 5 * se), (got, mean, se)


@pytest.mark.parametrize("case", ["gaussian", "poisson_exp", "student_t", "bernoulli_probit"])
def test_closed_forms_equal_the_generic_quadrature(case):
    lik, y, _ = SCALAR_CASES[case]
    lik = _points(lik, 100)
    ve = lik.variational_expectations(*_j(y, M, V))
    ve_quad = Likelihood.variational_expectations(lik, *_j(y, M, V))
    tol = 1e-12 if case == "gaussian" else 1e-10  # polynomial integrand: exact
    np.testing.assert_allclose(ve, ve_quad, rtol=tol, atol=tol)
    mean, var = lik.predict_mean_and_var(*_j(M, V))
    mean_q, var_q = Likelihood.predict_mean_and_var(lik, *_j(M, V))
    np.testing.assert_allclose(mean, mean_q, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, var_q, rtol=1e-10, atol=1e-12)


def test_gaussian_closed_form_equals_gauss_hermite_to_1e12():
    lik = Gaussian(variance=0.7)
    x, w = _gh(100)
    f = M[None] + np.sqrt(V)[None] * x[:, None, None]
    ref = np.sum(w[:, None, None] * stats.norm.logpdf(Y_REAL[None], f, 0.7**0.5), axis=0)
    np.testing.assert_allclose(lik.variational_expectations(*_j(Y_REAL, M, V)), ref, rtol=1e-12)


def test_bernoulli_probit_predictive_is_phi_of_m_over_sqrt_one_plus_v():
    mean, var = Bernoulli("probit").predict_mean_and_var(*_j(M, V))
    np.testing.assert_allclose(mean, stats.norm.cdf(M / np.sqrt(1.0 + V)), rtol=1e-13)
    ref = _quad(lambda idx, f: stats.norm.cdf(f), M, V)  # the integral itself
    np.testing.assert_allclose(mean, ref, rtol=1e-10)
    np.testing.assert_allclose(var, ref * (1.0 - ref), rtol=1e-9)


@pytest.mark.parametrize(
    ("lik", "rate"),
    [
        (Bernoulli("logit", num_gauss_hermite=100), lambda f: 1.0 / (1.0 + np.exp(-f))),
        (Poisson("exp", binsize=2.0), lambda f: 2.0 * np.exp(f)),
        (Poisson("softplus", binsize=2.0, num_gauss_hermite=100), lambda f: 2 * _softplus(f)),
    ],
    ids=["bernoulli_logit", "poisson_exp", "poisson_softplus"],
)
def test_predictive_moments_match_quadrature(lik, rate):
    """E[y] = E[mu(f)]; Var[y] = E[Var(y | f)] + Var[mu(f)], Var(y | f) = mu (1 - mu) or mu."""
    mean, var = lik.predict_mean_and_var(*_j(M, V))
    m1 = _quad(lambda idx, f: rate(f), M, V)
    m2 = _quad(lambda idx, f: rate(f) ** 2, M, V)
    cond = m1 - m2 if isinstance(lik, Bernoulli) else m1  # E[Var(y | f)]
    np.testing.assert_allclose(mean, m1, rtol=1e-9)
    np.testing.assert_allclose(var, cond + m2 - m1**2, rtol=1e-9)


def test_student_t_predictive_variance():
    mean, var = StudentT(df=5.0, scale=0.5).predict_mean_and_var(*_j(M, V))
    np.testing.assert_array_equal(mean, M)
    np.testing.assert_allclose(var, V + stats.t.var(5.0, scale=0.5), rtol=1e-13)
    _, var = StudentT(df=2.0, scale=0.5).predict_mean_and_var(*_j(M, V))
    assert np.all(np.isinf(var))


# --- heteroscedastic Gaussian: two latent functions ------------------------------------


F2_MEAN = np.stack([M, 0.4 * M[::-1]], axis=-1)  # [3, 2, 2]
F2_VAR = np.stack([V, 0.5 * V[::-1]], axis=-1)


def _hetero_logp(y, f0, f1):
    return stats.norm.logpdf(y, f0, np.exp(f1))


def test_heteroscedastic_closed_form_matches_2d_gauss_hermite_and_monte_carlo():
    lik = HeteroscedasticGaussian()
    assert lik.num_latent(3) == 6
    got = np.asarray(lik.variational_expectations(*_j(Y_REAL, F2_MEAN, F2_VAR)))
    x, w = _gh(60)
    f0 = F2_MEAN[..., 0, None, None] + np.sqrt(F2_VAR[..., 0, None, None]) * x[:, None]
    f1 = F2_MEAN[..., 1, None, None] + np.sqrt(F2_VAR[..., 1, None, None]) * x[None, :]
    grid = _hetero_logp(Y_REAL[..., None, None], f0, f1)  # [3, 2, 60, 60]
    ref = np.einsum("...ij,i,j->...", grid, w, w)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-8)
    mean, se = _mc(lambda f: _hetero_logp(Y_REAL[None], f[..., 0], f[..., 1]), F2_MEAN, F2_VAR)
    assert np.all(np.abs(got - mean) < 5 * se)
    # predictive: E[y] = E[f0], E[y^2] = E[f0^2] + E[exp(2 f1)] (60 x 60 grid again)
    pm, pv = lik.predict_mean_and_var(*_j(F2_MEAN, F2_VAR))
    e_y2 = np.einsum("...ij,i,j->...", f0**2 + np.exp(2 * f1), w, w)
    np.testing.assert_allclose(pm, F2_MEAN[..., 0], rtol=1e-13)
    np.testing.assert_allclose(pv, e_y2 - F2_MEAN[..., 0] ** 2, rtol=1e-10)


# --- categorical --------------------------------------------------------------------------


K = 3
FK_MEAN = RNG.normal(0.0, 1.0, (4, K))
FK_VAR = RNG.uniform(0.3, 1.2, (4, K))
Y_LABEL = np.array([0, 2, 1, 2])


def _p_largest_ref(y, m, v):
    """q(f_y > f_k for all k != y), by adaptive quadrature of the 1-D integral."""

    def g(idx, x):
        others = [k for k in range(m.shape[-1]) if k != y[idx]]
        return np.prod([stats.norm.cdf((x - m[idx][k]) / np.sqrt(v[idx][k])) for k in others])

    rows = np.arange(len(y))
    return _quad(g, m[rows, y], v[rows, y])


def test_robustmax_two_classes_matches_the_closed_form():
    lik = Categorical(2, link="robustmax", epsilon=0.01, num_gauss_hermite=100)
    m, v, y = FK_MEAN[:, :2], FK_VAR[:, :2], np.array([0, 1, 1, 0])
    rows = np.arange(4)
    my, vy, mo, vo = m[rows, y], v[rows, y], m[rows, 1 - y], v[rows, 1 - y]
    p = stats.norm.cdf((my - mo) / np.sqrt(vy + vo))  # q(f_y - f_o > 0)
    ref = p * np.log(0.99) + (1 - p) * np.log(0.01)
    np.testing.assert_allclose(lik.variational_expectations(*_j(y, m, v)), ref, rtol=1e-9)


def test_robustmax_matches_quadrature_and_monte_carlo():
    eps = 1e-2
    lik = Categorical(K, link="robustmax", epsilon=eps, num_gauss_hermite=100)
    p = _p_largest_ref(Y_LABEL, FK_MEAN, FK_VAR)
    ref = p * np.log(1 - eps) + (1 - p) * np.log(eps / (K - 1))
    got = lik.variational_expectations(*_j(Y_LABEL, FK_MEAN, FK_VAR))
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-8)

    def logp(f):  # [S, 4, K] -> [S, 4]
        top = np.argmax(f, axis=-1) == Y_LABEL[None]
        return np.where(top, np.log(1 - eps), np.log(eps / (K - 1)))

    mean, se = _mc(logp, FK_MEAN, FK_VAR)
    default = Categorical(K, link="robustmax", epsilon=eps)
    got = np.asarray(default.variational_expectations(*_j(Y_LABEL, FK_MEAN, FK_VAR)))
    assert np.all(np.abs(got - mean) < 5 * se), (got, mean, se)
    # the predictive class probabilities
    pm, pv = lik.predict_mean_and_var(*_j(FK_MEAN, FK_VAR))
    P = np.stack([_p_largest_ref(np.full(4, k), FK_MEAN, FK_VAR) for k in range(K)], -1)
    np.testing.assert_allclose(pm, (1 - eps) * P + eps / (K - 1) * (1 - P), rtol=1e-8)
    np.testing.assert_allclose(np.sum(pm, -1), 1.0, rtol=1e-8)
    np.testing.assert_allclose(pv, pm * (1 - pm), rtol=1e-12)


def test_robustmax_probabilities_sum_to_one():
    for eps in (1e-3, 0.2):
        lik = Categorical(4, link="robustmax", epsilon=eps)
        probs = np.asarray(lik.probs(jnp.asarray(RNG.normal(size=(5, 4)))))
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-15)
        assert np.all(np.isin(probs, [1 - eps, eps / 3]))
        assert np.all(np.sum(probs == 1 - eps, axis=-1) == 1)


def _softmax_grid(fun, m, v, n=30):
    """E[fun(f)] over independent N(m_k, v_k), k = 0..2, by an n^3 Gauss–Hermite grid."""
    x, w = _gh(n)
    X = np.stack(np.meshgrid(x, x, x, indexing="ij"), -1).reshape(-1, 3)  # [n^3, 3]
    W = np.prod(np.stack(np.meshgrid(w, w, w, indexing="ij"), -1).reshape(-1, 3), -1)
    f = m[None] + np.sqrt(v)[None] * X[:, None, :]  # [n^3, 4, 3]
    return np.einsum("g,g...->...", W, fun(f))


def test_softmax_monte_carlo_matches_a_product_grid_within_five_standard_errors(rng_key):
    S = 100_000
    lik = Categorical(K, num_mc_samples=S)
    onehot = np.eye(K)[Y_LABEL]

    def logp(f):
        return np.sum(onehot * log_softmax(f, axis=-1), -1)

    ref = _softmax_grid(logp, FK_MEAN, FK_VAR)
    sd = np.sqrt(_softmax_grid(lambda f: logp(f) ** 2, FK_MEAN, FK_VAR) - ref**2)
    got = np.asarray(lik.variational_expectations(*_j(Y_LABEL, FK_MEAN, FK_VAR), key=rng_key))
    assert np.all(np.abs(got - ref) < 5 * sd / math.sqrt(S)), (got, ref, sd / math.sqrt(S))
    pm, pv = lik.predict_mean_and_var(*_j(FK_MEAN, FK_VAR), key=rng_key)
    p_ref = _softmax_grid(lambda f: softmax(f, axis=-1), FK_MEAN, FK_VAR)
    p_sd = np.sqrt(_softmax_grid(lambda f: softmax(f, axis=-1) ** 2, FK_MEAN, FK_VAR) - p_ref**2)
    assert np.all(np.abs(np.asarray(pm) - p_ref) < 5 * p_sd / math.sqrt(S))
    np.testing.assert_allclose(np.sum(pm, -1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(pv, pm * (1 - pm), rtol=1e-12)


def test_monte_carlo_needs_a_key():
    with pytest.raises(ValueError, match="key"):
        Categorical(K).variational_expectations(*_j(Y_LABEL, FK_MEAN, FK_VAR))


# --- log_prob against NumPyro; support checks ----------------------------------------


LOG_PROB_CASES = [
    *[(lik, y, M) for lik, y, _ in SCALAR_CASES.values()],
    (HeteroscedasticGaussian(), Y_REAL, F2_MEAN),
    (Categorical(K), Y_LABEL, FK_MEAN),
    (Categorical(K, link="robustmax", epsilon=0.05), Y_LABEL, FK_MEAN),
]


@pytest.mark.parametrize(("lik", "y", "f"), LOG_PROB_CASES, ids=lambda a: type(a).__name__)
def test_log_prob_equals_numpyro_distribution(lik, y, f):
    y, f = _j(y, f)
    check_observations(lik, y)
    with jax.numpy_rank_promotion("allow"):  # NumPyro broadcasts implicitly inside
        ref = to_distribution(lik, f).log_prob(y)
    assert ref.shape == y.shape
    np.testing.assert_allclose(lik.log_prob(y, f), ref, rtol=1e-12, atol=1e-12)


def test_log_prob_equals_scipy():
    for lik, y, logp in SCALAR_CASES.values():
        np.testing.assert_allclose(lik.log_prob(*_j(y, M)), logp(y, M), rtol=1e-12)


@pytest.mark.parametrize(
    ("lik", "y"),
    [
        (Bernoulli(), [0.0, 0.5]),
        (Bernoulli("logit"), [1.0, 2.0]),
        (Bernoulli(), [-1.0]),
        (Categorical(3), [0, 3]),
        (Categorical(3), [-1, 0]),
        (Categorical(3), [0.0, 1.5]),
        (Poisson(), [1.0, -1.0]),
        (Poisson(), [0.0, 2.5]),
        (Poisson(), [np.nan]),
        (Gaussian(), [0.0, np.inf]),
    ],
)
def test_observations_outside_the_support_raise_naming_y(lik, y):
    with pytest.raises(ValueError, match=r"^y: "):
        check_observations(lik, np.asarray(y))
    with pytest.raises(ValueError, match=r"^labels: "):
        check_observations(lik, np.asarray(y), name="labels")


def test_valid_observations_pass_unchanged():
    for lik, y in [(Bernoulli(), Y_BINARY), (Categorical(3), Y_LABEL), (Poisson(), Y_COUNT),
                   (StudentT(), Y_REAL), (Bernoulli(), None)]:  # fmt: skip
        assert check_observations(lik, y) is y


def test_to_distribution_checks_the_latent_shape_and_unknown_types():
    with pytest.raises(ValueError, match=r"^f: "):
        to_distribution(HeteroscedasticGaussian(), jnp.zeros((3, 1)))
    with pytest.raises(TypeError, match="likelihood"):
        to_distribution(object(), jnp.zeros(3))


# --- values: validation, pytrees ------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Gaussian(variance=0.0), "variance"),
        (lambda: StudentT(df=-1.0), "df"),
        (lambda: StudentT(scale=np.nan), "scale"),
        (lambda: Bernoulli("tanh"), "link"),
        (lambda: Categorical(1), "num_classes"),
        (lambda: Categorical(3, link="robustmax", epsilon=1.0), "epsilon"),
        (lambda: Poisson(binsize=0.0), "binsize"),
        (lambda: Poisson(link="identity"), "link"),
    ],
)
def test_invalid_parameters_are_refused(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_likelihoods_are_pytrees_with_static_configuration():
    lik = Categorical(3, link="robustmax", epsilon=0.1)
    leaves, tree = jax.tree_util.tree_flatten(lik)
    assert leaves == [0.1] and jax.tree_util.tree_unflatten(tree, leaves) == lik
    assert lik.num_latent() == 3 and Poisson().num_latent(2) == 2
    y, m, v = _j(Y_REAL, M, V)

    def loss(lik):
        return jnp.sum(lik.variational_expectations(y, m, v))

    g = jax.jit(jax.grad(loss))(StudentT(df=4.0, scale=0.8))
    eps = 1e-6  # central difference in the scale
    fd = (loss(StudentT(4.0, 0.8 + eps)) - loss(StudentT(4.0, 0.8 - eps))) / (2 * eps)
    np.testing.assert_allclose(g.scale, fd, rtol=1e-6)
