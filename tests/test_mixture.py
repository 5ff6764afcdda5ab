"""MixturePredictive on NumPyro's MixtureSameFamily, against the formulas it replaced.

The references are the hand-written formulas of the previous implementation (kept here,
frozen), SciPy's Gaussian densities, exact rational arithmetic for mean and variance, and a
root finder for the quantile.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import logsumexp as sp_logsumexp
from scipy.stats import norm

from ppl_dgp.predict import MixturePredictive

S, N = 7, 40
EPS = np.finfo(np.float64).eps


def _inputs(seed: int = 0, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Component means and variances ``[S, N]`` and targets ``y [N]``, a quarter far out."""
    rng = np.random.default_rng(seed)
    means = offset + 3.0 * rng.normal(size=(S, N))
    variances = np.exp(rng.normal(size=(S, N)))
    y = offset + 3.0 * rng.normal(size=N)
    # far tails: every component's log density is below log(tiniest double) ~ -745, so exp
    # underflows to 0 and only a log-sum-exp gives a finite log density
    y[: N // 4] = offset + rng.choice([-1.0, 1.0], N // 4) * rng.uniform(200.0, 2000.0, N // 4)
    return means, variances, y


def _pred(means, variances) -> MixturePredictive:
    return MixturePredictive(
        jnp.asarray(means), jnp.asarray(variances), 0.5 * jnp.asarray(variances)
    )


# -- the previous implementation's formulas (frozen references) ------------------------------


def _old_mean(m):
    return jnp.mean(m, axis=0)


def _old_variance(m, v):
    second = jnp.mean(v + m**2, axis=0)
    return jnp.maximum(second - _old_mean(m) ** 2, 0.0)


def _old_log_density(y, m, v):
    lp = -0.5 * (jnp.log(2.0 * jnp.pi * v) + (y[None] - m) ** 2 / v)
    return jax.scipy.special.logsumexp(lp, axis=0) - math.log(m.shape[0])


def _old_cdf(y, m, v):
    return jnp.mean(jax.scipy.stats.norm.cdf((y[None] - m) / jnp.sqrt(v)), axis=0)


def _exact_moments(m: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance ``(1/S) sum (v_s + m_s^2) - mean^2`` in rational arithmetic."""
    mean, var = [], []
    for n in range(m.shape[1]):
        ms = [Fraction(float(a)) for a in m[:, n]]
        vs = [Fraction(float(a)) for a in v[:, n]]
        mu = sum(ms) / len(ms)
        mean.append(float(mu))
        var.append(float(sum(b + a * a for a, b in zip(ms, vs, strict=True)) / len(ms) - mu * mu))
    return np.array(mean), np.array(var)


# -- density, moments, CDF -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_density_matches_the_old_log_sum_exp_and_scipy(seed):
    m, v, y = _inputs(seed)
    got = np.asarray(_pred(m, v).log_density(jnp.asarray(y)))
    old = np.asarray(_old_log_density(jnp.asarray(y), jnp.asarray(m), jnp.asarray(v)))
    ref = sp_logsumexp(norm.logpdf(y[None], m, np.sqrt(v)), axis=0) - math.log(S)
    # the tails are exercised: a naive log-mean-exp is -inf there
    with np.errstate(divide="ignore"):
        naive = np.log(np.mean(norm.pdf(y[None], m, np.sqrt(v)), axis=0))
    assert np.all(np.isneginf(naive[: N // 4])) and np.all(got[: N // 4] < -745.0)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, old, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_one_component_is_the_gaussian():
    m, v, y = _inputs(3)
    pred = _pred(m[:1], v[:1])
    np.testing.assert_allclose(
        pred.log_density(jnp.asarray(y)), norm.logpdf(y, m[0], np.sqrt(v[0])), rtol=1e-12
    )
    np.testing.assert_array_equal(pred.mean, m[0])
    np.testing.assert_allclose(pred.variance, v[0], rtol=1e-15)


@pytest.mark.parametrize("seed", [0, 1])
def test_mean_and_variance_match_the_old_formulas_and_exact_arithmetic(seed):
    m, v, _ = _inputs(seed)
    pred = _pred(m, v)
    exact_mean, exact_var = _exact_moments(m, v)
    # summing S terms of size |m|: a few rounding errors of that size at most
    np.testing.assert_allclose(pred.mean, exact_mean, rtol=0, atol=S * EPS * np.abs(m).max())
    np.testing.assert_allclose(pred.variance, exact_var, rtol=S * EPS * 10)
    np.testing.assert_allclose(pred.mean, _old_mean(m), rtol=0, atol=S * EPS * np.abs(m).max())
    np.testing.assert_allclose(pred.variance, _old_variance(m, v), rtol=1e-12)


def test_variance_is_stable_where_the_old_second_moment_formula_cancels():
    # means near 1e6, spread and variances near 1: E[y^2] - E[y]^2 loses ~12 digits
    m, v, _ = _inputs(4, offset=1e6)
    exact_mean, exact_var = _exact_moments(m, v)
    got = np.asarray(_pred(m, v).variance)
    old = np.asarray(_old_variance(jnp.asarray(m), jnp.asarray(v)))
    np.testing.assert_allclose(got, exact_var, rtol=1e-9)
    assert np.max(np.abs(old - exact_var) / exact_var) > 1e-6  # the old formula did cancel
    np.testing.assert_allclose(_pred(m, v).mean, exact_mean, rtol=1e-15)


def test_cdf_matches_the_old_formula_and_scipy():
    m, v, y = _inputs(5)
    got = np.asarray(_pred(m, v).cdf(jnp.asarray(y)))
    old = np.asarray(_old_cdf(jnp.asarray(y), jnp.asarray(m), jnp.asarray(v)))
    ref = np.mean(norm.cdf(y[None], m, np.sqrt(v)), axis=0)
    np.testing.assert_allclose(got, old, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)


# -- quantile and interval (kept by hand: NumPyro's mixture has no icdf) -----------------------


@pytest.mark.parametrize("p", [1e-4, 0.025, 0.3, 0.5, 0.975, 0.9999])
def test_quantile_inverts_the_mixture_cdf(p):
    m, v, _ = _inputs(6)
    got = np.asarray(_pred(m, v).quantile(p))

    def cdf(x, n):
        return np.mean(norm.cdf(x, m[:, n], np.sqrt(v[:, n]))) - p

    ref = np.array([brentq(cdf, -200.0, 200.0, args=(n,), xtol=1e-14) for n in range(N)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("p", [0.0, 1.0, 1.2, -0.1, float("nan")])
def test_quantile_rejects_p_outside_the_open_unit_interval(p):
    m, v, _ = _inputs(0)
    with pytest.raises(ValueError, match=r"quantile: p must be in \(0, 1\); received p="):
        _pred(m, v).quantile(p)


def test_interval_is_central_and_holds_its_probability():
    m, v, _ = _inputs(7)
    pred = _pred(m, v)
    lo, hi = pred.interval(0.5)  # quantiles 0.25 and 0.75, exact in binary
    np.testing.assert_array_equal(lo, pred.quantile(0.25))
    np.testing.assert_array_equal(hi, pred.quantile(0.75))
    mass = np.mean(norm.cdf(hi, m, np.sqrt(v)) - norm.cdf(lo, m, np.sqrt(v)), axis=0)
    np.testing.assert_allclose(mass, 0.5, atol=1e-10)
    with pytest.raises(ValueError, match="prob must be in"):
        pred.interval(1.0)


# -- sampling, rescaling, metrics, pytree ----------------------------------------------------


def test_samples_have_the_mixture_moments_and_component_weights():
    m = np.array([[-10.0, 0.0, 3.0], [10.0, 0.0, 5.0]])  # [S=2, N=3]
    v = np.array([[1.0, 1.0, 0.25], [1.0, 4.0, 4.0]])
    pred = _pred(m, v)
    num = 20_000
    draws = np.asarray(pred.sample(jax.random.key(0), num))
    assert draws.shape == (num, 3)
    # equal weights: half the draws of point 0 come from each well-separated component
    frac = np.mean(draws[:, 0] > 0.0)
    assert abs(frac - 0.5) < 4 * math.sqrt(0.25 / num)
    mean, var = np.asarray(pred.mean), np.asarray(pred.variance)
    np.testing.assert_allclose(mean, [0.0, 0.0, 4.0])
    np.testing.assert_allclose(var, [101.0, 2.5, 2.125 + 1.0])
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * np.sqrt(var / num))
    # standard error of the sample variance from the mixture's fourth central moment,
    # E (y - mean)^4 = (1/S) sum_s (d_s^4 + 6 d_s^2 v_s + 3 v_s^2), d_s = m_s - mean
    d = m - mean
    mu4 = np.mean(d**4 + 6 * d**2 * v + 3 * v**2, axis=0)
    assert np.all(np.abs(draws.var(0) - var) < 5 * np.sqrt((mu4 - var**2) / num))


def test_rescale_is_the_change_of_variables():
    m, v, y = _inputs(8)
    pred, loc, scale = _pred(m, v), 1.5, 2.5
    back = pred.rescale(loc, scale)
    np.testing.assert_allclose(back.mean, loc + scale * np.asarray(pred.mean), rtol=1e-14)
    np.testing.assert_allclose(back.variance, scale**2 * np.asarray(pred.variance), rtol=1e-13)
    np.testing.assert_allclose(back.f_variances, scale**2 * np.asarray(pred.f_variances))
    np.testing.assert_allclose(
        back.log_density(loc + scale * jnp.asarray(y)),
        np.asarray(pred.log_density(jnp.asarray(y))) - math.log(scale),
        rtol=1e-12,
    )


def test_metrics_are_rmse_and_mean_log_density():
    m, v, y = _inputs(9)
    got = _pred(m, v).metrics(jnp.asarray(y))
    ref_lpd = sp_logsumexp(norm.logpdf(y[None], m, np.sqrt(v)), axis=0) - math.log(S)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((y - m.mean(0)) ** 2)), rel=1e-13)
    assert got["mlpd"] == pytest.approx(np.mean(ref_lpd), rel=1e-12)


def test_it_is_a_pytree_that_crosses_jit_and_vmap():
    m, v, y = _inputs(10)
    pred = _pred(m, v)
    leaves = jax.tree.leaves(pred)
    assert len(leaves) == 3
    eager = np.asarray(pred.log_density(jnp.asarray(y)))
    np.testing.assert_array_equal(jax.jit(lambda p, t: p.log_density(t))(pred, y), eager)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a + 1.0]), pred)  # two predictives
    both = jax.vmap(lambda p: p.mean)(stacked)
    np.testing.assert_allclose(both, np.stack([pred.mean, np.asarray(pred.mean) + 1.0]))
