"""Agreement with a reference posterior: ~0 for two NUTS runs, clearly not for mean-field SVI."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.stats import norm

from ppl_dgp.agreement import marginal_discrepancies, predictive_discrepancies, site_agreement
from ppl_dgp.infer import NUTS, SVI, fit
from ppl_dgp.predict import MixturePredictive
from ppl_dgp.predictive import predict

RHO = 0.95


def _correlated_regression(X, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, 1.0), obs=y)


def _data(n=40):
    # Nearly collinear features: the posterior of w has correlation close to -RHO.
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, RHO], [RHO, 1.0]])
    X = rng.multivariate_normal(np.zeros(2), cov, size=n)
    return X, X @ np.array([1.0, -0.5]) + rng.normal(size=n)


@pytest.fixture(scope="module")
def posteriors():
    X, y = _data()
    nuts = NUTS(num_warmup=300, num_samples=1000, num_chains=2)
    return {
        "nuts_a": fit(nuts, jax.random.key(1), _correlated_regression, X, y),
        "nuts_b": fit(nuts, jax.random.key(2), _correlated_regression, X, y),
        # Mean-field Gaussian (AutoNormal) on a correlated posterior: right means, marginal sd
        # too small by about sqrt(1 - rho_post^2).
        "svi": fit(
            SVI(num_steps=3000, learning_rate=0.02, num_samples=2000),
            jax.random.key(3),
            _correlated_regression,
            X,
            y,
        ),  # fmt: skip
    }


def test_two_nuts_runs_agree(posteriors):
    rows = marginal_discrepancies(posteriors["nuts_a"].draws, posteriors["nuts_b"].draws)
    assert len(rows) == 2
    for r in rows:
        # Monte Carlo error with ~1000 effective draws is ~0.03-0.05 in these units.
        assert abs(r["smd"]) < 0.15
        assert abs(np.log(r["sd_ratio"])) < 0.1
        assert r["w1"] < 0.15


def test_mean_field_svi_is_flagged_as_over_confident(posteriors):
    X, _ = _data()
    post_corr = np.corrcoef(posteriors["nuts_a"].flat()["w"].T)[0, 1]
    assert post_corr < -0.8  # the test's premise: a strongly correlated posterior
    expected = np.sqrt(1 - post_corr**2)  # mean-field sd / true sd for a Gaussian
    rows = marginal_discrepancies(posteriors["nuts_a"].draws, posteriors["svi"].draws)
    for r in rows:
        assert r["sd_ratio"] == pytest.approx(expected, rel=0.25)
        assert r["sd_ratio"] < 0.6
        assert r["w1"] > 0.25  # vs < 0.15 for NUTS against NUTS
    summary = site_agreement(rows)["w"]
    assert summary["components"] == 2 and summary["median_sd_ratio"] < 0.6


def test_predictive_agreement_of_two_nuts_runs(posteriors):
    X, y = _data()
    rng = np.random.default_rng(5)
    X_new = rng.normal(size=(30, 2))
    y_new = X_new @ np.array([1.0, -0.5]) + rng.normal(size=30)
    preds = [
        predict(jax.random.key(0), _correlated_regression, posteriors[k], X_new, num_samples=500)
        for k in ("nuts_a", "nuts_b")
    ]
    d = predictive_discrepancies(preds[1], preds[0], y_new, prob=0.9)
    assert abs(d["mlpd_gap"]) < 0.02
    assert d["ref_mass"] == pytest.approx(0.9, abs=0.01)
    assert d["coverage"] == d["ref_coverage"] or abs(d["coverage"] - d["ref_coverage"]) <= 0.1


def test_predictive_discrepancies_closed_form_for_a_narrow_gaussian():
    # Reference N(0, 1), method N(0, 0.5^2), one component each, at 4 points.
    ref = MixturePredictive(jnp.zeros((1, 4)), jnp.ones((1, 4)), jnp.zeros((1, 4)))
    narrow = MixturePredictive(jnp.zeros((1, 4)), 0.25 * jnp.ones((1, 4)), jnp.zeros((1, 4)))
    y = np.array([-1.0, 0.1, 0.3, 2.0])
    d = predictive_discrepancies(narrow, ref, y, prob=0.9)
    half = 0.5 * norm.ppf(0.95)  # narrow's 90% half-width
    assert d["ref_mass"] == pytest.approx(2 * norm.cdf(half) - 1, abs=1e-6)
    expected_gap = np.mean(norm.logpdf(y, 0, 0.5) - norm.logpdf(y, 0, 1))
    assert d["mlpd_gap"] == pytest.approx(expected_gap, rel=1e-9)
    assert d["coverage"] == 0.5  # 0.1 and 0.3 inside +-0.82
    assert d["ref_coverage"] == 0.75  # -1, 0.1, 0.3 inside +-1.64


def test_marginal_discrepancies_reject_mismatched_sites_and_skip_constants():
    a = {"s": np.ones((1, 10)), "w": np.random.default_rng(0).normal(size=(1, 10, 2))}
    assert [r["site"] for r in marginal_discrepancies(a, a)] == ["w", "w"]
    with pytest.raises(ValueError, match="components"):
        marginal_discrepancies(a, {"w": np.zeros((1, 10, 3))}, sites=["w"])


def test_predictive_w1_of_equal_variance_gaussians_is_the_mean_gap_in_sds():
    # W1(N(m1, s^2), N(m2, s^2)) = |m1 - m2| (a shift); predictive_discrepancies reports it in
    # the reference's sd units, so |m1 - m2| / s per input; the same predictive gives 0.
    from ppl_dgp.agreement import mixture_wasserstein

    m_ref, m = np.array([0.0, 1.0, -2.0, 5.0]), np.array([0.5, -1.0, -2.0, 8.0])
    s = np.array([1.0, 2.0, 0.5, 3.0])
    w = mixture_wasserstein(m_ref[None], s[None] ** 2, m[None], s[None] ** 2)
    np.testing.assert_allclose(w, np.abs(m - m_ref), atol=1e-4)  # trapezoid rule, h = s / 50
    ref = MixturePredictive(jnp.asarray(m_ref[None]), jnp.asarray(s[None] ** 2), jnp.zeros((1, 4)))
    other = MixturePredictive(jnp.asarray(m[None]), jnp.asarray(s[None] ** 2), jnp.zeros((1, 4)))
    d = predictive_discrepancies(other, ref, m_ref, prob=0.9)
    gaps = np.abs(m - m_ref) / s
    assert d["w1"] == pytest.approx(gaps.mean(), abs=1e-4)
    assert d["w1_max"] == pytest.approx(gaps.max(), abs=1e-4)
    same = predictive_discrepancies(ref, ref, m_ref, prob=0.9)
    assert same["w1"] == 0.0 and same["mlpd_gap"] == 0.0
    assert same["ref_mass"] == pytest.approx(0.9, abs=1e-6)
