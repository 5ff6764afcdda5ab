"""The predictive for every likelihood: the generic mixture of the observation's distributions
against the Gaussian closed form, by-hand log-sum-exps, predict_proba, and the metrics against
scikit-learn's. Posteriors are built by hand (no fit): the file compiles a few small programs."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import poisson
from sklearn.metrics import brier_score_loss, log_loss, mean_poisson_deviance

from ppl_dgp.calibration import brier_score, classification_metrics
from ppl_dgp.infer import NUTS, SVI
from ppl_dgp.infer.svi import InducingApprox
from ppl_dgp.likelihoods import Bernoulli
from ppl_dgp.models import counts as cnt
from ppl_dgp.models import gp_classification as gpc
from ppl_dgp.models.dgp import dgp_regression, init_dgp
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import poisson_deviance
from ppl_dgp.predictive import predict, predict_distribution, predict_proba

N, M, S = 8, 3, 5
X = np.linspace(-2.0, 2.0, N)[:, None]
RNG = np.random.default_rng(0)
PARAMS = {"layer0.Z": np.linspace(-1.5, 1.5, M)[:, None], "layer0.variance": np.asarray(1.2),
          "layer0.lengthscales": np.array([0.8])}  # fmt: skip


def _draws_posterior(Q: int = 1) -> Posterior:
    u = RNG.normal(size=(1, S, Q, M))
    return Posterior(draws={"layer0.u": u}, method=NUTS(num_chains=1), params=dict(PARAMS))


def _svi_posterior(Q: int = 1) -> Posterior:
    q_sqrt = np.tril(0.3 * RNG.normal(size=(Q, M, M)), -1) + 0.6 * np.eye(M)
    approx = InducingApprox(q_mu={"layer0": RNG.normal(size=(M, Q))},
                            q_sqrt={"layer0": q_sqrt}, medians={}, guide_params={})  # fmt: skip
    u = np.zeros((1, 1, Q, M))
    return Posterior(draws={"layer0.u": u}, method=SVI(), params=dict(PARAMS), approx=approx)


def _config(**kw):
    return init_dgp(X, num_layers=1, num_inducing=M, hyperpriors=False, **kw)


@pytest.mark.parametrize("make_post", [_draws_posterior, _svi_posterior], ids=["draws", "svi"])
def test_gaussian_through_the_generic_mixture_equals_the_closed_form(make_post):
    config = _config(noise_variance=0.1)
    model = functools.partial(dgp_regression, **config)
    post = make_post()
    post = post.replace(params={**post.params, "noise_variance": np.asarray(0.1)})
    y = np.sin(X[:, 0])
    pred = predict(jax.random.key(1), model, post, X, num_samples=S)
    mix = predict_distribution(jax.random.key(1), model, post, X, num_samples=S)
    np.testing.assert_allclose(mix.log_density(y), pred.log_density(y), rtol=1e-12)
    np.testing.assert_allclose(mix.mean, pred.mean, rtol=1e-12)
    np.testing.assert_allclose(mix.variance, pred.variance, rtol=1e-12)
    np.testing.assert_allclose(mix.metrics(y)["rmse"], pred.metrics(y)["rmse"], rtol=1e-12)


def test_poisson_mixture_is_the_log_sum_exp_over_components():
    model = functools.partial(cnt.dgp_poisson, layers=_config()["layers"])
    post = _draws_posterior()
    y = RNG.poisson(2.0, size=N).astype(float)
    mix = predict_distribution(jax.random.key(2), model, post, X, num_samples=S)
    rate = np.asarray(mix.components.rate)  # [S, N]
    assert rate.shape == (S, N)
    by_hand = logsumexp(poisson.logpmf(y[None], rate), axis=0) - np.log(S)
    np.testing.assert_allclose(mix.log_density(y), by_hand, rtol=1e-12)
    m = mix.metrics(y)
    np.testing.assert_allclose(m["mean_deviance"], mean_poisson_deviance(y, rate.mean(0)),
                               rtol=1e-10)  # fmt: skip
    np.testing.assert_allclose(m["mlpd"], by_hand.mean(), rtol=1e-12)


def test_classifier_mixture_probs_equal_predict_proba():
    """Per draw of ``u`` the marginalised probit's component is ``Phi(m / sqrt(1 + v))``, the
    sigmoid of the logits site ``f`` that :func:`predict_proba` averages."""
    config = gpc.init_dgp_classification(X, likelihood=Bernoulli(), num_layers=1,
                                         num_inducing=M, hyperpriors=False)  # fmt: skip
    model = functools.partial(gpc.svgp_classification, **config)
    post = _draws_posterior()
    y = (X[:, 0] > 0).astype(int)
    mix = predict_distribution(jax.random.key(3), model, post, X, num_samples=S)
    p = np.asarray(predict_proba(model, post, X, num_samples=S))
    np.testing.assert_allclose(mix.probs, p, rtol=1e-10)
    m = mix.metrics(y)
    np.testing.assert_allclose(m["nll"], log_loss(y, p), rtol=1e-10)
    np.testing.assert_allclose(m["brier"], 2 * brier_score_loss(y, p), rtol=1e-12)
    assert m["accuracy"] == np.mean((p > 0.5) == y)


def test_metrics_against_scikit_learn():
    rng = np.random.default_rng(4)
    P = rng.dirichlet(np.ones(4), size=50)
    y = rng.integers(0, 4, size=50)
    m = classification_metrics(P, y)
    np.testing.assert_allclose(m["nll"], log_loss(y, P, labels=range(4)), rtol=1e-12)
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(brier_score(P, y), np.mean(np.sum((P - onehot) ** 2, 1)))
    mu, counts = rng.uniform(0.5, 4.0, 30), rng.poisson(2.0, 30).astype(float)
    np.testing.assert_allclose(np.mean(poisson_deviance(counts, mu)),
                               mean_poisson_deviance(counts, mu), rtol=1e-12)  # fmt: skip
    with pytest.raises(ValueError, match="labels must be integers in range"):
        brier_score(P, np.full(50, 4))


def test_svi_class_probabilities_integrate_u_out_exactly():
    """An SVGP probit classifier fitted by SVI: ``predict_proba`` is ``Phi(m / sqrt(1 + v))``
    with ``q(f_*) = N(m, v)`` from the fitted ``q(u)`` (dense conditional), whatever the key
    and the number of passes (Hensman et al. 2015, eq. 13)."""
    import jax
    from jax.scipy.stats import norm

    from ppl_dgp.conditionals import conditional
    from ppl_dgp.infer import SVI, fit
    from ppl_dgp.kernels import SquaredExponential
    from ppl_dgp.models import MODELS
    from ppl_dgp.predictive import predict_proba

    rng = np.random.default_rng(0)
    X = rng.uniform(-2.0, 2.0, (30, 1))
    y = (np.sin(2.0 * X[:, 0]) > 0).astype(float)
    model = MODELS["svgp_classification"].make(X, smoke=True)
    post = fit(SVI(num_steps=50, num_samples=5), jax.random.key(0), model, X, y)
    X_new = np.linspace(-3.0, 3.0, 9)[:, None]
    a = post.approx
    kernel = SquaredExponential(
        variance=a.medians["layer0.variance"], lengthscales=a.medians["layer0.lengthscales"]
    )
    m, v = conditional(kernel, X_new, post.params["layer0.Z"], a.q_mu["layer0"],
                       a.q_sqrt["layer0"], whiten=True)  # fmt: skip
    want = norm.cdf(m[:, 0] / np.sqrt(1.0 + v[:, 0]))
    p = predict_proba(model, post, X_new, rng_key=jax.random.key(5), num_samples=3)
    np.testing.assert_allclose(p, want, rtol=1e-10, atol=1e-12)
    again = predict_proba(model, post, X_new, num_samples=7)  # other passes, other key
    np.testing.assert_allclose(again, p, rtol=1e-14, atol=1e-15)
