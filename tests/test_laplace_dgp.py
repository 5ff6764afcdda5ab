"""Laplace on GP-layer programs: the linearised (GLM) predictive of :mod:`ppl_dgp.laplace.gp`.

A one-layer program with fixed hyperparameters is linear in its whitened inducing values
``v``: ``y_n | v ~ N(a_n^T v, sigma_L^2(x_n) + s2)`` with ``a_n = L^{-1} k(Z, x_n)``. There the
GGN Laplace is the exact Gaussian posterior of ``v`` and the GLM predictive is the dense closed
form, checked here against an O(N^3) NumPy computation from the kernel formula. The flagship
k-hat figure (2-layer DGP on the motorcycle data) is a ``slow`` test.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import numpy as np
import pytest

from ppl_dgp.infer import fit
from ppl_dgp.laplace import Laplace, LaplaceFitter, NotPositiveDefiniteWarning
from ppl_dgp.laplace.predictive import glm_pointwise_log_likelihood
from ppl_dgp.linalg import DEFAULT_JITTER
from ppl_dgp.models.dgp import dgp_regression, init_dgp
from ppl_dgp.models.svgp import init_svgp, svgp_regression
from ppl_dgp.predictive import predict

VARIANCE, LENGTHSCALE, NOISE = 1.3, 0.7, 0.05


def _se(A: np.ndarray, B: np.ndarray) -> np.ndarray:  # [N, 1], [M, 1] -> [N, M]
    return VARIANCE * np.exp(-0.5 * (A[:, None, 0] - B[None, :, 0]) ** 2 / LENGTHSCALE**2)


def _dense(Z: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a_n = L^{-1} k(Z, x_n)`` ``[N, M]`` and ``sigma_L^2(x_n) = k(x_n, x_n) - |a_n|^2``."""
    L = np.linalg.cholesky(_se(Z, Z) + DEFAULT_JITTER * np.eye(len(Z)))
    A = np.linalg.solve(L, _se(Z, X)).T
    return A, VARIANCE - np.sum(A**2, axis=1)


@pytest.fixture(scope="module")
def one_layer():
    """A one-layer program with fixed hyperparameters (params, not latents), its Laplace fit."""
    rng = np.random.default_rng(0)
    X = np.sort(rng.uniform(-2.0, 2.0, 25))[:, None]
    y = np.sin(2.0 * X[:, 0]) + 0.2 * rng.normal(size=25)
    Z = np.linspace(-2.0, 2.0, 6)[:, None]
    config = init_svgp(X, num_inducing=6, Z_init=Z, hyperpriors=False, lengthscale=LENGTHSCALE,
                       noise_variance=NOISE)  # fmt: skip
    config["layers"] = tuple(dataclasses.replace(s, variance=VARIANCE) for s in config["layers"])
    model = functools.partial(svgp_regression, **config)
    post = fit(Laplace(num_steps=200, learning_rate=0.05, num_samples=50), jax.random.key(0),
               model, X, y)  # fmt: skip
    return model, X, y, Z, post


def test_one_layer_glm_predictive_is_the_dense_gaussian_posterior_predictive(one_layer):
    model, X, y, Z, post = one_layer
    q = post.approx
    assert q.curvature == "ggn" and q.predictive == "glm"
    assert q.layout.names == ("layer0.u",)
    A, s2L = _dense(Z, X)
    V = s2L + NOISE
    P = A.T @ (A / V[:, None]) + np.eye(len(Z))  # exact posterior precision of v
    np.testing.assert_allclose(np.asarray(q.precision.matrix()), P, rtol=1e-9)
    Xs = np.linspace(-2.5, 2.5, 7)[:, None]
    As, s2s = _dense(Z, Xs)
    v_map = np.asarray(q.theta_map)
    pred = predict(jax.random.key(1), model, post, Xs)
    assert pred.means.shape == (1, 7)  # one Gaussian per input, closed form
    # the predictive mean is the program's mean at the MAP ...
    np.testing.assert_allclose(np.asarray(pred.mean), As @ v_map, rtol=1e-9, atol=1e-12)
    # ... and the variance J P^-1 J^T + sigma_L^2 + s2, with J = A for a linear program
    var = np.einsum("nm,mk,nk->n", As, np.linalg.inv(P), As) + s2s + NOISE
    np.testing.assert_allclose(np.asarray(pred.variance), var, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(pred.f_variances[0]), var - NOISE, rtol=1e-9)


def test_one_layer_map_is_the_posterior_mean(one_layer):
    """The MAP of a linear-Gaussian program is the posterior mean ``P^-1 A^T V^-1 y``; the
    Adam MAP reaches it to the precision its gradient allows."""
    _, X, y, Z, post = one_layer
    A, s2L = _dense(Z, X)
    V = s2L + NOISE
    P = A.T @ (A / V[:, None]) + np.eye(len(Z))
    mean = np.linalg.solve(P, A.T @ (y / V))
    v_map = np.asarray(post.approx.theta_map)
    grad = P @ v_map - A.T @ (y / V)  # the potential's gradient at the MAP
    np.testing.assert_allclose(v_map, mean, atol=float(np.linalg.norm(np.linalg.solve(P, grad)))
                               + 1e-12)  # fmt: skip
    assert np.linalg.norm(grad) < 1e-3 * np.linalg.norm(A.T @ (y / V))


def test_pointwise_log_likelihood_is_the_linearised_models(one_layer):
    model, X, y, Z, post = one_layer
    log_lik, y_rep = glm_pointwise_log_likelihood(jax.random.key(2), model, post, X, y)
    assert log_lik.shape == y_rep.shape == (1, 50, 25)
    A, s2L = _dense(Z, X)
    V = s2L + NOISE
    m = np.reshape(post.draws["layer0.u"], (50, -1)) @ A.T  # [S, N]: exact for one layer
    ref = -0.5 * (np.log(2 * np.pi * V) + (y - m) ** 2 / V)
    np.testing.assert_allclose(log_lik[0], ref, rtol=1e-9)
    # the LOO hook of the approximation says the same
    hook, _ = post.approx.pointwise_log_likelihood(jax.random.key(2), model, post, X, y)
    np.testing.assert_allclose(hook, log_lik, rtol=0)


def test_dgp_defaults_to_the_glm_and_keeps_the_sampled_predictive():
    X = np.linspace(-2.0, 2.0, 12)[:, None]
    y = np.sin(2.0 * X[:, 0]) + 0.1 * np.random.default_rng(0).normal(size=12)
    model = functools.partial(dgp_regression, **init_dgp(X, num_layers=2, num_inducing=3))
    laplace = LaplaceFitter(model)  # one compilation of each piece for the fits below
    glm = laplace.fit(Laplace(num_steps=100, num_samples=8), jax.random.key(0), X, y)
    assert glm.approx.layout.names == ("layer0.u", "layer1.u")
    assert glm.approx.curvature == "ggn" and glm.approx.predictive == "glm"
    np.testing.assert_allclose(glm.draws["noise_variance"][0], glm.approx.map["noise_variance"])
    Xs = np.linspace(-2.0, 2.0, 5)[:, None]
    pred = predict(jax.random.key(1), model, glm, Xs, num_samples=8)
    assert pred.means.shape == (1, 5) and np.all(pred.variances > glm.approx.sigma_noise**2)
    sampled = laplace.fit(Laplace(num_steps=100, num_samples=8, predictive="sampled"),
                          jax.random.key(0), X, y)  # fmt: skip
    np.testing.assert_allclose(sampled.approx.theta_map, glm.approx.theta_map, rtol=0)
    assert sampled.approx.predictive == "sampled"
    assert predict(jax.random.key(1), model, sampled, Xs, num_samples=8).means.shape == (8, 5)
    with pytest.raises(ValueError, match=r"needs a Laplace posterior .* predictive='glm'"):
        glm_pointwise_log_likelihood(jax.random.key(0), model, sampled, X, y)
    with pytest.raises(ValueError, match=r"tune='grid'.*GP-layer program"):
        laplace.fit(Laplace(num_steps=0, tune="grid"), jax.random.key(0), X, y)
    with pytest.raises(ValueError, match=r"subset_of_weights names other sites.*noise_var"):
        laplace.fit(Laplace(("layer0.u", "noise_variance"), num_steps=0), jax.random.key(0), X, y)
    # eps optimised with the rest (local_latents="map"): no eps = 0 to linearise at, so the
    # exact Hessian over every global site, as before
    with warnings.catch_warnings():  # the initial point's Hessian may need its repair
        warnings.simplefilter("ignore", NotPositiveDefiniteWarning)
        old = laplace.fit(Laplace(num_steps=0, num_samples=2, local_latents="map"),
                          jax.random.key(0), X, y)  # fmt: skip
    assert (old.approx.curvature, old.approx.predictive) == ("hessian", "sampled")


@pytest.mark.slow  # ~15 s: the evidence loop's compilation
def test_evidence_tuning_reaches_the_exact_evidences_maximum():
    """One layer, linear in ``v``: the Laplace evidence is the exact
    ``log p(y | s2) = log N(y | 0, A A^T + diag(sigma_L^2 + s2))``. ``tune="marglik"`` moves
    the noise (LogNormal hyperprior; the kernel fixed) from 0.5 to the maximiser of that plus
    the hyperprior's log density in ``z = log s2`` (the potential's coordinates)."""
    import numpyro.distributions as dist

    from ppl_dgp.layers import Hyper

    rng = np.random.default_rng(1)
    X = np.sort(rng.uniform(-2.0, 2.0, 30))[:, None]
    y = np.sin(2.0 * X[:, 0]) + 0.2 * rng.normal(size=30)
    Z = np.linspace(-2.0, 2.0, 6)[:, None]
    config = init_svgp(X, num_inducing=6, Z_init=Z, hyperpriors=False, lengthscale=LENGTHSCALE)
    config["layers"] = tuple(dataclasses.replace(s, variance=VARIANCE) for s in config["layers"])
    config["noise_variance"] = Hyper(0.5, prior=dist.LogNormal(np.log(0.1), 1.0))
    model = functools.partial(svgp_regression, **config)
    post = fit(Laplace(num_steps=300, learning_rate=0.05, tune="marglik", tune_steps=600,
                       num_samples=4), jax.random.key(0), model, X, y)  # fmt: skip
    A, s2L = _dense(Z, X)

    def evidence(z: float) -> float:  # log p(y | s2) + log LogNormal(s2) + z, s2 = exp(z)
        K = A @ A.T + np.diag(s2L + np.exp(z))
        _, logdet = np.linalg.slogdet(K)
        ll = -0.5 * (y @ np.linalg.solve(K, y) + logdet + len(y) * np.log(2 * np.pi))
        return ll - 0.5 * (z - np.log(0.1)) ** 2 - 0.5 * np.log(2 * np.pi)

    z = float(np.log(post.approx.map["noise_variance"]))
    assert abs(z - np.log(0.5)) > 1.0  # it moved
    assert len(post.traces["evidence_loss"]) == 600
    for dz in (-0.05, 0.05):  # the maximum within Adam's step size (learning_rate 0.05)
        assert evidence(z) >= evidence(z + dz)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")  # counted
def test_flagship_dgp_laplace_loo_has_few_large_pareto_k():
    """The issue's figure: on ``make run``'s model (2-layer DGP, M = 10, the motorcycle data
    80/20 with seed 0, standardised, as ``ppl_dgp.report.run_compare`` builds it) the LOO of
    the GLM Laplace (the linearised program's likelihood at its 400 draws) has Pareto
    k > 0.7 for fewer than 10 of the 75 training points (the old Laplace: 50)."""
    import arviz_base as azb
    import arviz_stats as azs

    from ppl_dgp.datasets import Standardizer, load_regression
    from ppl_dgp.infer import make_method
    from ppl_dgp.models import MODELS

    X_tr, y_tr, _, _, _ = load_regression("motorcycle", test_fraction=0.2, seed=0)
    X = Standardizer.fit(X_tr).transform(X_tr)
    y = Standardizer.fit(y_tr).transform(y_tr)
    model = MODELS["dgp"].make(np.asarray(X), num_inducing=10, layers=2)
    post = fit(make_method("laplace", preset="compare"), jax.random.fold_in(jax.random.key(0), 0),
               model, X, y)  # fmt: skip
    log_lik, _ = glm_pointwise_log_likelihood(jax.random.key(1), model, post, X, y)
    dt = azb.from_dict(
        {"posterior": {"s2": post.draws["noise_variance"]}, "log_likelihood": {"y": log_lik},
         "observed_data": {"y": y}},
        sample_dims=["chain", "draw"],
    )  # fmt: skip
    k = np.asarray(azs.loo(dt, pointwise=True).pareto_k).reshape(-1)
    assert k.size == 75
    assert np.sum(k > 0.7) < 10, np.sort(k)[-12:]
