"""GP classification: the likelihood sub-program and the zoo's svgp/dgp classifiers.

References are dense NumPy computations written out here (the whitened conditional with an
explicit Cholesky, the Gaussian KL, Gauss–Hermite nodes from ``numpy.polynomial``), not the
library's own helpers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.handlers import seed, substitute, trace
from scipy.special import log_ndtr, ndtr

from ppl_dgp.collapse import collapse
from ppl_dgp.elbo import elbo_terms
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.infer import SVI, fit
from ppl_dgp.layers import gaussian_likelihood
from ppl_dgp.likelihoods import Bernoulli, Categorical, Gaussian
from ppl_dgp.linalg import DEFAULT_JITTER
from ppl_dgp.models import gp_classification as gpc
from ppl_dgp.outputs import likelihood_site, marginal_distribution
from ppl_dgp.predictive import predict_proba

N, M, D = 10, 4, 2


def _data(num_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.uniform(-2.0, 2.0, size=(N, D))
    if num_classes == 2:
        return X, (X[:, 0] + X[:, 1] > 0).astype(np.int32)
    return X, np.digitize(X[:, 0], np.linspace(-2.0, 2.0, num_classes + 1)[1:-1]).astype(np.int32)


def _q(key: int, layers: dict[str, int]) -> dict[str, jax.Array]:
    """A random (non-prior) ``q(u)`` per layer: ``{layer: Q}``."""
    out = {}
    for i, (layer, Q) in enumerate(layers.items()):
        k1, k2 = jax.random.split(jax.random.key(key + 10 * i))
        out[f"{layer}.q_mu"] = 0.5 * jax.random.normal(k1, (M, Q))
        S = 0.3 * jax.random.normal(k2, (Q, M, M))
        out[f"{layer}.q_sqrt"] = jnp.tril(S, -1) + 0.5 * jnp.eye(M)
    return out


@pytest.mark.parametrize("likelihood", [Bernoulli("probit"), Categorical(3, link="robustmax")],
                         ids=["bernoulli", "robustmax"])  # fmt: skip
def test_one_layer_dgp_equals_svgp(likelihood):
    X, y = _data(getattr(likelihood, "num_classes", 2))
    config = gpc.init_dgp_classification(X, likelihood=likelihood, num_layers=1, num_inducing=M)
    dgp = functools.partial(gpc.dgp_classification, **config)
    svgp = functools.partial(gpc.svgp_classification, **config)
    params = _q(0, {"layer0": likelihood.latent_dim})
    terms = {}
    for name, model in (("dgp", dgp), ("svgp", svgp)):
        guide = InducingPointGuide(model)
        elbo_terms(jax.random.key(0), params, model, guide, X, y)  # the guide's set-up call
        terms[name] = elbo_terms(jax.random.key(3), params, model, guide, X, y)
    a, b = terms["dgp"], terms["svgp"]
    assert np.isfinite(float(a["elbo"])) and float(a["kl"]["layer0"]) > 0
    np.testing.assert_allclose(a["elbo"], b["elbo"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(a["expected_log_lik"], b["expected_log_lik"], rtol=1e-10)
    np.testing.assert_allclose(a["kl"]["layer0"], b["kl"]["layer0"], rtol=1e-10)
    with pytest.raises(ValueError, match="exactly one layer"):
        gpc.svgp_classification(X, y, **gpc.init_dgp_classification(
            X, likelihood=likelihood, num_layers=2, num_inducing=M))  # fmt: skip


def _dense_q_f(X, Z, variance, lengthscales, q_mu, q_sqrt):
    """Whitened SVGP marginals ``q(f) = N(A^T q_mu, Knn - A^T A + A^T S S^T A)``, with
    ``A = L^-1 Kmn`` from an explicit Cholesky, and ``KL[N(q_mu, S S^T) || N(0, I)]``."""

    def k(a, b):
        d = (a[:, None, :] - b[None, :, :]) / lengthscales
        return variance * np.exp(-0.5 * np.sum(d**2, axis=-1))

    Kmm = k(Z, Z) + DEFAULT_JITTER * np.eye(len(Z))
    A = np.linalg.solve(np.linalg.cholesky(Kmm), k(Z, X))  # [M, N]
    S = q_sqrt[0]
    mean = A.T @ q_mu[:, 0]
    var = variance - np.sum(A**2, axis=0) + np.sum((S.T @ A) ** 2, axis=0)
    SS = S @ S.T
    kl = 0.5 * (np.trace(SS) + q_mu[:, 0] @ q_mu[:, 0] - len(Z) - np.linalg.slogdet(SS)[1])
    return mean, var, kl


def test_bernoulli_bound_equals_direct_gauss_hermite():
    X, y = _data()
    config = gpc.init_dgp_classification(X, likelihood=Bernoulli(), num_layers=1,
                                         num_inducing=M, hyperpriors=False)  # fmt: skip
    model = functools.partial(gpc.svgp_classification, **config)
    q = {k: np.asarray(v) for k, v in _q(1, {"layer0": 1}).items()}
    hypers = {"layer0.variance": 1.7, "layer0.lengthscales": np.array([0.8, 1.3])}
    with collapse(params=q):
        tr = trace(substitute(seed(model, 0), data=hypers)).get_trace(X, y)
    Z = np.asarray(tr["layer0.Z"]["value"])
    mean, var, kl = _dense_q_f(X, Z, 1.7, hypers["layer0.lengthscales"],
                               q["layer0.q_mu"], q["layer0.q_sqrt"])  # fmt: skip
    np.testing.assert_allclose(tr["layer0.f_mean"]["value"][:, 0], mean, rtol=1e-10)
    np.testing.assert_allclose(tr["layer0.f_var"]["value"][:, 0], var, rtol=1e-10)
    # E_q(f)[log Phi((2y - 1) f)] by 20-point Gauss-Hermite (GPflow's ndiagquad), by hand
    t, w = np.polynomial.hermite.hermgauss(20)
    f = mean[None] + np.sqrt(2.0 * var)[None] * t[:, None]  # [H, N]
    var_exp = np.sum(w[:, None] * log_ndtr((2.0 * y - 1.0)[None] * f), axis=0) / np.sqrt(np.pi)
    np.testing.assert_allclose(tr["y.var_exp"]["value"], var_exp, rtol=1e-10)
    np.testing.assert_allclose(tr["layer0.kl"]["value"], kl, rtol=1e-9)
    # the ELBO is exactly sum_n var_exp_n - KL (no one-sample log_prob of the observed site)
    guide = InducingPointGuide(model)
    params = {**q, **hypers}
    elbo_terms(jax.random.key(0), params, model, guide, X, y)  # the guide's set-up call
    terms = elbo_terms(jax.random.key(1), params, model, guide, X, y)
    np.testing.assert_allclose(terms["expected_log_lik"], np.sum(var_exp), rtol=1e-10)
    np.testing.assert_allclose(terms["elbo"], np.sum(var_exp) - kl, rtol=1e-9)
    # a 200-point rule agrees to the 20-point rule's accuracy
    t, w = np.polynomial.hermite.hermgauss(200)
    f = mean[None] + np.sqrt(2.0 * var)[None] * t[:, None]
    fine = np.sum(w[:, None] * log_ndtr((2.0 * y - 1.0)[None] * f), axis=0) / np.sqrt(np.pi)
    np.testing.assert_allclose(tr["y.var_exp"]["value"], fine, rtol=1e-6)


def test_marginalised_output_is_the_exact_marginal():
    """Outside collapse, the marginalised last layer observes ``int p(y | f) N(f | m, v) df``."""
    rng = np.random.default_rng(1)
    m, v = rng.normal(size=(6, 1)), rng.uniform(0.1, 2.0, size=(6, 1))

    def quadrature(link: str, H: int) -> np.ndarray:  # p(y = 1) by an H-point rule
        t, w = np.polynomial.hermite.hermgauss(H)
        f = m[None, :, 0] + np.sqrt(2.0 * v[None, :, 0]) * t[:, None]  # [H, 6]
        p1 = ndtr(f) if link == "probit" else 1.0 / (1.0 + np.exp(-f))
        return np.sum(w[:, None] * p1, axis=0) / np.sqrt(np.pi)

    # probit: the closed form Phi(m / sqrt(1 + v)); logit: the likelihood's 20-point rule
    for link, H, rtol in (("probit", 200, 1e-10), ("logit", 20, 1e-10), ("logit", 200, 1e-6)):
        p = quadrature(link, H)
        d = marginal_distribution(Bernoulli(link), jnp.asarray(m), jnp.asarray(v))
        np.testing.assert_allclose(np.exp(d.log_prob(jnp.ones(6))), p, rtol=rtol)
        np.testing.assert_allclose(np.exp(d.log_prob(jnp.zeros(6))), 1.0 - p, rtol=rtol)
    # robust-max: p(y = k) = P_k (1 - eps) + (1 - P_k) eps / (K - 1), P_k = q(f_k is largest)
    K, eps = 3, 1e-3
    m, v = rng.normal(size=(4, K)), rng.uniform(0.1, 1.0, size=(4, K))
    draws = m + np.sqrt(v) * rng.standard_normal((200_000, 4, K))
    P = np.mean(np.argmax(draws, axis=-1)[..., None] == np.arange(K), axis=0)  # [4, K]
    p = P * (1 - eps) + (1 - P) * eps / (K - 1)
    lik = Categorical(K, link="robustmax", epsilon=eps, num_gauss_hermite=50)
    d = marginal_distribution(lik, jnp.asarray(m), jnp.asarray(v))
    np.testing.assert_allclose(np.exp(d.logits), p, atol=5e-3)  # 200k draws: se <= 1.2e-3
    with pytest.raises(ValueError, match="no deterministic marginal"):
        marginal_distribution(Categorical(K, link="softmax"), jnp.asarray(m), jnp.asarray(v))


def test_output_site_is_the_observed_logits():
    X, y = _data(3)
    for link, sampled in (("robustmax", False), ("softmax", True)):
        model = gpc.build_dgp_classification(X, y=y, num_inducing=M, link=link)
        tr = trace(seed(model, 0)).get_trace(X, y)
        assert tr["f"]["value"].shape == (N, 3)
        np.testing.assert_allclose(tr["y"]["fn"].logits, tr["f"]["value"], rtol=1e-12)
        assert ("layer1.eps" in tr) is sampled  # the softmax samples its last layer
    model = gpc.build_svgp_classification(X, num_inducing=M)  # binary
    tr = trace(seed(model, 0)).get_trace(X, None)
    assert tr["f"]["value"].shape == (N, 1) and "layer0.eps" not in tr


def test_softmax_bound_is_monte_carlo_over_the_last_layer_moments():
    X, y = _data(3)
    model = gpc.build_dgp_classification(X, y=y, num_inducing=M, link="softmax", layers=1)
    q = _q(2, {"layer0": 3})
    with collapse(params=q):
        tr = trace(seed(model, 5)).get_trace(X, y)
    m, v = tr["layer0.f_mean"]["value"], tr["layer0.f_var"]["value"]
    var_exp = tr["y.var_exp"]["value"]
    draws = m + np.sqrt(v) * np.random.default_rng(0).standard_normal((20_000, N, 3))
    log_p = np.take_along_axis(np.asarray(jax.nn.log_softmax(draws, axis=-1)),
                               y[None, :, None], axis=-1)[..., 0]  # fmt: skip
    assert var_exp.shape == (N,)
    # the likelihood's estimate averages num_mc_samples = 100 draws: 5 standard errors
    se = np.std(log_p, axis=0) / np.sqrt(100) + np.std(log_p, axis=0) / np.sqrt(20_000)
    assert np.all(np.abs(var_exp - np.mean(log_p, axis=0)) < 5 * se)


@pytest.mark.parametrize(
    ("num_classes", "labels"), [(2, [0, 2]), (2, [0, -1]), (2, [0, 0.5]), (3, [0, 3])]
)
def test_bad_labels_raise_naming_y(num_classes, labels):
    X, y = _data(num_classes)
    model = gpc.build_dgp_classification(X, num_classes=num_classes, num_inducing=M)
    y = y.astype(float)
    y[:2] = labels
    with pytest.raises(ValueError, match=r"^y: "):
        model(X, y)
    with pytest.raises(ValueError, match=r"^y: "):
        likelihood_site("y", Bernoulli(), jnp.zeros((2, 1)), jnp.array([1.0, 2.0]),
                        plate=numpyro.plate("data", 2))  # fmt: skip


def test_bad_configurations_raise():
    X, y = _data(3)
    config = gpc.init_dgp_classification(X, likelihood=Categorical(3, link="softmax"),
                                         num_layers=1, num_inducing=M)  # fmt: skip
    with pytest.raises(ValueError, match="marginalise_output=True"):
        gpc.dgp_classification(X, y, marginalise_output=True, **config)
    config = gpc.init_dgp_classification(X, likelihood=Bernoulli(), num_layers=1, num_inducing=M)
    with pytest.raises(ValueError, match="num_outputs=3"):
        gpc.dgp_classification(X, y, layers=config["layers"], likelihood=Categorical(3))
    with pytest.raises(ValueError, match="num_classes"):
        gpc.classification_likelihood(num_classes=1)
    assert isinstance(gpc.classification_likelihood(y=np.array([0, 1, 1])), Bernoulli)
    assert gpc.classification_likelihood(y=np.array([0, 4])).num_classes == 5


def test_svi_separates_a_two_dimensional_toy():
    rng = np.random.default_rng(3)
    X = rng.uniform(-2.0, 2.0, size=(60, 2))
    y = (X[:, 0] - 0.5 * X[:, 1] > 0).astype(np.int32)
    X_test = rng.uniform(-2.0, 2.0, size=(200, 2))
    y_test = (X_test[:, 0] - 0.5 * X_test[:, 1] > 0).astype(np.int32)
    model = gpc.build_svgp_classification(X, num_inducing=10)
    post = fit(SVI(num_steps=400, learning_rate=0.05, num_samples=30), jax.random.key(0),
               model, X, y)  # fmt: skip
    p = np.asarray(predict_proba(model, post, X_test, num_samples=30))
    accuracy = np.mean((p > 0.5) == y_test)
    assert accuracy > 0.9, accuracy
    assert np.all((p >= 0) & (p <= 1))


def test_svi_separates_three_classes_with_the_robust_max():
    X = np.linspace(-3.0, 3.0, 60)[:, None]
    y = np.digitize(X[:, 0], [-1.0, 1.0]).astype(np.int32)
    X_test = np.random.default_rng(5).uniform(-3.0, 3.0, size=(100, 1))
    y_test = np.digitize(X_test[:, 0], [-1.0, 1.0])
    model = gpc.build_svgp_classification(X, y=y, num_inducing=10)  # 3 classes from y
    post = fit(SVI(num_steps=400, learning_rate=0.05, num_samples=30), jax.random.key(0),
               model, X, y)  # fmt: skip
    p = np.asarray(predict_proba(model, post, X_test, num_samples=30))
    assert p.shape == (100, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    accuracy = np.mean(np.argmax(p, axis=1) == y_test)
    assert accuracy > 0.9, accuracy


def test_a_gaussian_through_the_generic_site_is_todays_closed_form():
    rng = np.random.default_rng(4)
    F, F_var = jnp.asarray(rng.normal(size=(5, 1))), jnp.asarray(rng.uniform(size=(5, 1)))
    y = jnp.asarray(rng.normal(size=5))

    def today(y=None):
        gaussian_likelihood("y", F, y, 0.3, plate=numpyro.plate("data", 5), F_var=F_var)

    def generic(y=None):
        likelihood_site("y", Gaussian(0.3), F, y, plate=numpyro.plate("data", 5), F_var=F_var)

    for handler in (collapse, None):
        traces = []
        for model in (today, generic):
            if handler is None:
                traces.append(trace(seed(model, 0)).get_trace(y))
            else:
                with handler():
                    traces.append(trace(seed(model, 0)).get_trace(y))
        a, b = traces
        assert list(a) == list(b)
        for name in a:
            np.testing.assert_allclose(b[name]["value"], a[name]["value"], rtol=1e-12)
        np.testing.assert_allclose(b["y"]["fn"].log_prob(y), a["y"]["fn"].log_prob(y),
                                   rtol=1e-12)  # fmt: skip


@pytest.mark.slow  # ~15 s of CPU: a GGN Laplace fit and two shapes of the linearised predictives
def test_laplace_dgp_class_probabilities_in_chunks_equal_one_call(monkeypatch):
    """The Laplace DGP classifier's linearised class probabilities (and its GLM moments) over
    test points in chunks (the inner layers' per-point ``eps`` drawn once for all points and
    sliced) equal the same predictive in one call."""
    from ppl_dgp.laplace import Laplace, glm_predictive
    from ppl_dgp.laplace import predictive as lp

    X, y = _data(3)
    model = gpc.build_dgp_classification(X, y=y, num_inducing=M, layers=2)
    method = Laplace(subset_of_weights=("layer0.u", "layer1.u"), num_steps=0)  # the GGN
    post = fit(method, jax.random.key(0), model, X, y)  # at the initial point: no MAP to compile
    X_new = np.linspace(-2.0, 2.0, 7 * D).reshape(7, D)
    whole = np.asarray(predict_proba(model, post, X_new))
    f, cov = glm_predictive(model, post, X_new)
    monkeypatch.setattr(lp, "MAX_JACOBIAN_ROWS", 6)  # K = 3: chunks of 2 points, 4 calls
    local, _ = lp._compiled(lp._local_core, model, lp._glm_inputs(post, {})[0])(
        {**post.approx.map, **post.params}, X_new
    )
    assert "layer0.eps" in local  # the inner layer's per-point noise is sliced
    assert "y" not in local  # the fit's observed site, sampled here, is no latent of the points
    chunked = np.asarray(predict_proba(model, post, X_new))
    assert whole.shape == (7, 3)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-14)
    f2, cov2 = glm_predictive(model, post, X_new)
    np.testing.assert_allclose(f2, f, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cov2, cov, rtol=1e-12, atol=1e-14)
