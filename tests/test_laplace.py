"""Laplace behind ``fit``: laplace-torch's values through the BNN program, conjugate recovery,
evidence tuning, the Posterior contract on the GP zoo, and errors.

The laplace-torch figures (``tests/data/laplace_mlp.json``, provenance in
``tests/data/PROVENANCE.md``) are at stored MAP weights: the program starts there
(``init_values``) and ``Laplace(num_steps=0)`` takes that point as the MAP. Parameter order:
``[layer0.W (2x5 row-major), layer0.b, layer1.W (5x1), layer1.b]`` = laplace-torch's ``*_proj``.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from pathlib import Path

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from ppl_dgp.infer import fit
from ppl_dgp.laplace import (
    Laplace,
    NotPositiveDefiniteWarning,
    glm_predictive,
    predict_regression,
)
from ppl_dgp.models import bnn
from ppl_dgp.models.dgp import dgp_regression, init_dgp
from ppl_dgp.models.svgp import init_svgp, svgp_regression
from ppl_dgp.posterior import Posterior
from ppl_dgp.predictive import predict, predict_proba

REF = json.loads((Path(__file__).parent / "data" / "laplace_mlp.json").read_text())
STRUCTURES = {  # reference key -> (subset_of_weights, hessian_structure, rtol of the evidence)
    "full": ("all", "full", 1e-9),
    "diag": ("all", "diag", 1e-9),
    "kron": ("all", "kron", 1e-6),
    "lastlayer_full": ("last_layer", "full", 1e-9),
}


def _ref_model(task):
    r = REF[task]
    init = {"layer0.W": r["W1"], "layer0.b": r["b1"], "layer1.W": r["W2"], "layer1.b": r["b2"]}
    common = dict(hidden=(5,), activation="tanh", prior_precision=1.0, init_values=init)
    if task == "classification":
        model = functools.partial(bnn.mlp_binary, **common)
    else:
        model = functools.partial(bnn.mlp_regression, noise_scale=r["sigma_noise"], **common)
    return model, np.asarray(r["X"]), np.asarray(r["y"])


@functools.cache
def _ref_fit(task, key):
    model, X, y = _ref_model(task)
    subset, structure, _ = STRUCTURES[key]
    method = Laplace(subset, structure, num_steps=0, num_samples=4)
    return model, fit(method, jax.random.key(0), model, X, y)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("key", list(STRUCTURES))
def test_evidence_matches_laplace_torch(task, key):
    _, post = _ref_fit(task, key)
    r = REF[task]
    theta = np.asarray(r["theta_proj"])
    np.testing.assert_allclose(
        post.approx.theta_map, theta[15:] if key.startswith("last") else theta
    )
    np.testing.assert_allclose(
        post.approx.log_marglik, r[f"{key}__log_marglik"], rtol=STRUCTURES[key][2]
    )


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_posterior_precisions_match_laplace_torch(task):
    r = REF[task]
    _, full = _ref_fit(task, "full")
    L = full.approx.precision.chol
    np.testing.assert_allclose(L @ L.T, r["post_prec_full_proj"], rtol=1e-9, atol=1e-12)
    _, diag = _ref_fit(task, "diag")
    np.testing.assert_allclose(
        1.0 / diag.approx.precision.variance,
        np.diag(r["post_prec_full_proj"]),
        rtol=1e-9,
    )
    _, last = _ref_fit(task, "lastlayer_full")
    L = last.approx.precision.chol
    np.testing.assert_allclose(L @ L.T, r["ll_post_prec"], rtol=1e-9, atol=1e-12)
    assert last.approx.layout.names == ("layer1.W", "layer1.b")


@pytest.mark.parametrize("key", list(STRUCTURES))
def test_probit_predictive_matches_laplace_torch(key):
    r = REF["classification"]
    model, post = _ref_fit("classification", key)
    Xq = np.asarray(REF["Xq"])
    f, cov = glm_predictive(model, post, Xq)
    rtol = STRUCTURES[key][2]
    np.testing.assert_allclose(f[:, 0], r["f_map_Xq"], rtol=1e-12)
    np.testing.assert_allclose(cov[:, 0, 0], r[f"{key}__f_var_Xq"], rtol=rtol)
    p = predict_proba(model, post, Xq, link="probit")
    np.testing.assert_allclose(p, r[f"{key}__probit_p1_Xq"], rtol=rtol)


@pytest.mark.parametrize("key", list(STRUCTURES))
def test_glm_regression_predictive_matches_laplace_torch(key):
    r = REF["regression"]
    model, post = _ref_fit("regression", key)
    mean, f_var, y_var = predict_regression(model, post, np.asarray(REF["Xq"]))
    rtol = STRUCTURES[key][2]
    np.testing.assert_allclose(mean, r[f"{key}__glm_mean_Xq"], rtol=1e-12)
    np.testing.assert_allclose(f_var, r[f"{key}__glm_f_var_Xq"], rtol=rtol)
    np.testing.assert_allclose(y_var, r[f"{key}__glm_y_var_Xq"], rtol=rtol)


# -- conjugate recovery: Bayesian linear regression --------------------------------------------


def _blr_data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 2))
    y = X @ np.array([1.5, -0.7]) + 0.3 + 0.2 * rng.normal(size=30)
    return X, y


def _blr_closed_form(X, y, alpha, sigma):
    """``Sigma = (Phi^T Phi / s^2 + alpha I)^-1``, ``mu = Sigma Phi^T y / s^2``; ``[W; b]``."""
    Phi = np.hstack([X, np.ones((len(X), 1))])
    Sigma = np.linalg.inv(Phi.T @ Phi / sigma**2 + alpha * np.eye(3))
    mu = Sigma @ Phi.T @ y / sigma**2
    C = sigma**2 * np.eye(len(X)) + Phi @ Phi.T / alpha  # evidence: y ~ N(0, C)
    log_ev = -0.5 * (
        y @ np.linalg.solve(C, y) + np.linalg.slogdet(C)[1] + len(X) * np.log(2 * np.pi)
    )
    return mu, Sigma, log_ev


@pytest.mark.parametrize("curvature", ["ggn", pytest.param("hessian", marks=pytest.mark.slow)])
def test_bayesian_linear_regression_is_recovered(curvature):
    X, y = _blr_data()
    alpha, sigma = 2.0, 0.2
    model = functools.partial(
        bnn.mlp_regression, hidden=(), prior_precision=alpha, noise_scale=sigma
    )
    post = fit(
        Laplace(curvature=curvature, num_steps=3000, learning_rate=0.05, num_samples=20000),
        jax.random.key(1),
        model,
        X,
        y,
    )
    mu, Sigma, log_ev = _blr_closed_form(X, y, alpha, sigma)
    np.testing.assert_allclose(post.approx.theta_map, mu, atol=1e-6)
    L = post.approx.precision.chol
    np.testing.assert_allclose(np.linalg.inv(L @ L.T), Sigma, rtol=1e-5)
    # Laplace is exact for a linear-Gaussian model: its evidence is the closed form.
    np.testing.assert_allclose(post.approx.log_marglik, log_ev, rtol=1e-6)
    # the draws are N(mu, Sigma): mean and covariance within Monte Carlo error (S = 20000)
    theta = np.hstack([post.flat()["layer0.W"].reshape(-1, 2), post.flat()["layer0.b"]])
    sd = np.sqrt(np.diag(Sigma))
    assert np.all(np.abs(theta.mean(0) - mu) < 5 * sd / np.sqrt(20000))
    np.testing.assert_allclose(np.cov(theta.T), Sigma, rtol=0.05, atol=0.05 * sd.max() ** 2)
    assert post.draws["layer0.W"].shape == (1, 20000, 2, 1)


def test_evidence_tuning_agrees_across_marglik_fixed_point_and_grid():
    X, y = _blr_data()
    model = functools.partial(bnn.mlp_regression, hidden=(), prior_precision=1.0, noise_scale=0.2)
    common = dict(num_steps=2000, learning_rate=0.05, num_samples=2)
    tuned = {
        t: fit(Laplace(tune=t, tune_steps=300, **common), jax.random.key(0), model, X, y)
        for t in ("marglik", "fixed_point")
    }
    grid = tuple(float(v) for v in np.exp(np.linspace(-5, 3, 401)))
    tuned["grid"] = fit(Laplace(tune="grid", grid=grid, **common), jax.random.key(0), model, X, y)
    # Reference: the Laplace evidence at the fixed MAP, maximised over alpha by brute force.
    theta = tuned["marglik"].approx.theta_map
    Phi = np.hstack([X, np.ones((30, 1))])
    H = Phi.T @ Phi / 0.04
    log_a = np.linspace(-5, 3, 80001)
    ev = [
        -0.5 * (np.linalg.slogdet(H + a * np.eye(3))[1] - 3 * np.log(a) + a * theta @ theta)
        for a in np.exp(log_a[::100])
    ]
    best = np.exp(log_a[::100][int(np.argmax(ev))])
    for t, post in tuned.items():
        got = float(post.approx.prior_precision[0])
        assert abs(np.log(got / best)) < 0.03, (t, got, best)


@pytest.mark.slow
def test_noise_is_tuned_by_the_evidence():
    rng = np.random.default_rng(5)
    X = rng.uniform(-2, 2, size=(80, 1))
    y = np.sin(2 * X[:, 0]) + 0.3 * rng.normal(size=80)
    model = functools.partial(bnn.mlp_regression, hidden=(16,), noise_scale=1.0)
    post = fit(
        Laplace("last_layer", num_steps=1500, tune="marglik", tune_noise=True, tune_steps=300),
        jax.random.key(0),
        model,
        X,
        y,
    )
    sigma = float(post.approx.sigma_noise)
    assert 0.2 < sigma < 0.45, sigma


# -- every likelihood: GGN of a linear model is the exact Hessian -----------------------------


@pytest.mark.parametrize(
    "kind",
    [pytest.param("regression", marks=pytest.mark.slow),
     pytest.param("binary", marks=pytest.mark.slow), "multiclass"],
)  # fmt: skip
def test_ggn_equals_exact_hessian_for_a_linear_model(kind):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(25, 3))
    if kind == "regression":
        model = functools.partial(bnn.mlp_regression, hidden=(), noise_scale=0.5)
        y = X @ np.array([1.0, -1.0, 0.5]) + 0.5 * rng.normal(size=25)
    elif kind == "binary":
        model = functools.partial(bnn.mlp_binary, hidden=(), prior_precision=0.5)
        y = (X[:, 0] + 0.5 * rng.normal(size=25) > 0).astype(int)
    else:
        model = functools.partial(bnn.mlp_multiclass, hidden=(), num_classes=3)
        y = rng.integers(0, 3, size=25)
    posts = {
        c: fit(Laplace(curvature=c, num_steps=200, num_samples=2), jax.random.key(0), model, X, y)
        for c in ("ggn", "hessian")
    }
    precs = [p.approx.precision.chol @ p.approx.precision.chol.T
             for p in posts.values()]  # fmt: skip
    np.testing.assert_allclose(precs[0], precs[1], rtol=1e-8, atol=1e-10)


def test_multiclass_ggn_and_glm_covariance_equal_dense_jacobian_formulas():
    """The per-datum Jacobians (one reverse pass per class through tiled biases) against
    ``jax.jacfwd`` of the whole network: ``P = sum_n J_n^T Lambda_n J_n + delta I`` and the GLM
    covariance ``J* P^-1 J*^T``, for a 2-hidden-layer net with K = 3."""
    from numpyro.handlers import seed, substitute, trace

    rng = np.random.default_rng(5)
    X, Xq = rng.normal(size=(30, 2)), rng.normal(size=(9, 2))
    y = rng.integers(0, 3, size=30)
    model = functools.partial(bnn.mlp_multiclass, num_classes=3, hidden=(6, 4))
    post = fit(Laplace("all", "full", num_steps=100, num_samples=2), jax.random.key(0), model,
               X, y)  # fmt: skip
    names, shapes = post.approx.layout.names, post.approx.layout.shapes
    theta = post.approx.theta_map

    def f_of(t, Xn):
        vals, o = {}, 0
        for n, s in zip(names, shapes, strict=True):
            k = math.prod(s)
            vals[n] = t[o : o + k].reshape(s)
            o += k
        return trace(substitute(seed(model, 0), data=vals)).get_trace(Xn)["f"]["value"]

    J = jax.jacfwd(f_of)(theta, X)  # [N, K, P]
    p = jax.nn.softmax(f_of(theta, X), axis=-1)
    Lam = jax.vmap(jax.numpy.diag)(p) - p[:, :, None] * p[:, None, :]
    P = np.einsum("nkp,nkl,nlq->pq", J, Lam, J) + np.diag(post.approx.prior_precision)
    Lc = post.approx.precision.chol
    np.testing.assert_allclose(Lc @ Lc.T, P, rtol=1e-10, atol=1e-12)
    Jq = jax.jacfwd(f_of)(theta, Xq)
    cov_ref = np.einsum("nkp,pq,nlq->nkl", Jq, np.linalg.inv(P), Jq)
    f, cov = glm_predictive(model, post, Xq)
    np.testing.assert_allclose(f, f_of(theta, Xq), rtol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-8, atol=1e-12)


def test_multiclass_predictives_are_distributions_and_agree():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 2))
    y = np.argmax(X @ rng.normal(size=(2, 3)) + 0.3 * rng.normal(size=(60, 3)), axis=1)
    model = functools.partial(bnn.mlp_multiclass, num_classes=3, hidden=(8,))
    post = fit(Laplace("last_layer", "kron", num_steps=500, num_samples=200), jax.random.key(0),
               model, X, y)  # fmt: skip
    Xq = rng.normal(size=(7, 2))
    probs = {
        link: predict_proba(model, post, Xq, link=link, rng_key=jax.random.key(1), num_samples=4000)
        for link in ("probit", "mc", "bridge", "nn", "plugin")
    }
    for link, p in probs.items():
        assert p.shape == (7, 3), link
        np.testing.assert_allclose(np.sum(p, -1), 1.0, atol=1e-9, err_msg=link)
    # MC over the linearised predictive vs the probit approximation of the same integral
    np.testing.assert_allclose(probs["mc"], probs["probit"], atol=0.05)


def test_predict_proba_for_nuts_draws_is_mean_of_sigmoid():
    from ppl_dgp.infer import NUTS

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2))
    y = (X[:, 0] > 0).astype(int)
    model = functools.partial(bnn.mlp_binary, hidden=())
    post = fit(NUTS(num_warmup=50, num_samples=30, num_chains=1), jax.random.key(0), model, X, y)
    p = predict_proba(model, post, X[:3], num_samples=30)
    W, b = post.flat()["layer0.W"], post.flat()["layer0.b"]
    ref = np.mean(1 / (1 + np.exp(-(np.einsum("nd,sdk->snk", X[:3], W) + b[:, None, :]))), 0)
    np.testing.assert_allclose(p, ref[:, 0], rtol=1e-10)


# -- the Posterior contract on the GP zoo ------------------------------------------------------


@pytest.mark.parametrize(("zoo", "curvature"), [("svgp", "auto"), ("dgp", "auto"),
                                               ("dgp", "hessian")])  # fmt: skip
def test_laplace_on_the_gp_zoo_returns_a_posterior_that_predicts_and_round_trips(
    zoo, curvature, tmp_path
):
    X = np.linspace(-2.0, 2.0, 12)[:, None]
    y = np.sin(2.0 * X[:, 0]) + 0.1 * np.random.default_rng(0).normal(size=12)
    if zoo == "svgp":
        model = functools.partial(svgp_regression, **init_svgp(X, num_inducing=3))
    else:
        model = functools.partial(dgp_regression, **init_dgp(X, num_layers=2, num_inducing=3))
    with warnings.catch_warnings():  # a smoke-size MAP may need its Hessian repaired
        warnings.simplefilter("ignore", NotPositiveDefiniteWarning)
        post = fit(Laplace(num_steps=300, num_samples=8, curvature=curvature),
                   jax.random.key(0), model, X, y)  # fmt: skip
    layers = ["layer0"] if zoo == "svgp" else ["layer0", "layer1"]
    # the default linearises the program in u (hyperparameters at their MAP); the exact
    # Hessian covers every global site and predicts from the draws
    glm = curvature == "auto"
    assert post.name == "laplace"
    assert (post.approx.curvature, post.approx.predictive) == (
        ("ggn", "glm") if glm else ("hessian", "sampled")
    )
    if glm:
        assert post.approx.layout.names == tuple(f"{layer}.u" for layer in layers)
    for layer in layers:
        assert f"{layer}.u" in post.draws
        assert not any(k.endswith(".eps") for k in post.draws)  # per-datum: held at the MAP
    Q = 1 if zoo == "svgp" else 1  # the DGP's inner layer has width D = 1 here
    assert post.draws["layer0.u"].shape == (1, 8, Q, 3)
    assert post.draws["noise_variance"].shape == (1, 8)
    for v in post.draws.values():
        assert np.all(np.isfinite(v))
    pred = predict(jax.random.key(1), model, post, X[:4], num_samples=8)
    assert pred.means.shape == ((1, 4) if glm else (8, 4))  # GLM: one Gaussian per input
    assert np.all(np.isfinite(pred.variance))
    post.save(tmp_path / "lap")
    assert Posterior.load(tmp_path / "lap") == post


# -- errors --------------------------------------------------------------------------------------


def test_subset_naming_no_site_is_a_clear_error():
    model, X, y = _ref_model("classification")
    with pytest.raises(ValueError, match=r"subset_of_weights names no global latent site.*nope"):
        fit(Laplace(("nope",), num_steps=0), jax.random.key(0), model, X, y)
    with pytest.raises(ValueError, match=r"subset_of_weights must be one of .* received 'first'"):
        Laplace("first")


def test_non_finite_map_is_a_clear_error():
    model, X, y = _ref_model("regression")
    with pytest.raises(ValueError, match=r"MAP is not finite.*learning_rate=1e\+200"):
        fit(Laplace(num_steps=3, learning_rate=1e200), jax.random.key(0), model, X, y)


def test_memory_limit_names_the_size():
    model, X, y = _ref_model("classification")
    with pytest.raises(ValueError, match=r"shape \[21, 21\] needs .* memory_limit_gb=1e-09"):
        fit(Laplace(num_steps=0, memory_limit_gb=1e-9), jax.random.key(0), model, X, y)


def test_kron_needs_dense_sites_and_config_errors():
    model, X, y = _ref_model("classification")
    with pytest.raises(ValueError, match=r"kron.*dense layer's W or b.*\['layer1.W'\]"):
        fit(Laplace(("layer1.W",), "kron", num_steps=0), jax.random.key(0), model, X, y)
    with pytest.raises(ValueError, match="Laplace.tune must be one of"):
        Laplace(tune="evidence")
    with pytest.raises(ValueError, match="kron' needs curvature 'ggn' or 'ef'"):
        Laplace(hessian_structure="kron", curvature="hessian")
    with pytest.raises(ValueError, match="num_steps must be an int >= 0; received -1"):
        Laplace(num_steps=-1)


def test_non_positive_definite_hessian_warns():
    # The exact Hessian at a point that is not a minimum (the initial point, num_steps=0) of a
    # tanh network is indefinite: the repair warns and is recorded.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    y = np.sin(3 * X[:, 0]) * 5
    model = functools.partial(bnn.mlp_regression, hidden=(6,), noise_scale=0.05,
                              prior_precision=1e-4)  # fmt: skip
    with pytest.warns(NotPositiveDefiniteWarning, match="non-positive eigenvalue"):
        post = fit(Laplace(curvature="hessian", num_steps=0), jax.random.key(0), model, X, y)
    assert post.approx.num_clipped > 0
    assert math.isfinite(float(post.approx.log_marglik))


def test_per_layer_prior_and_latent_noise_are_read_from_the_program():
    import numpyro.distributions as dist

    from ppl_dgp.layers import Hyper

    model, X, y = _ref_model("regression")
    noisy = functools.partial(
        model, prior_precision=[2.0, 5.0], noise_scale=Hyper(0.3, prior=dist.LogNormal(-1.2, 0.5))
    )
    post = fit(Laplace(num_steps=0, num_samples=3), jax.random.key(0), noisy, X, y)
    delta = post.approx.prior_precision
    np.testing.assert_allclose(delta[:15], 2.0, rtol=1e-14)  # layer0.W, layer0.b (1/scale^2)
    np.testing.assert_allclose(delta[15:], 5.0, rtol=1e-14)  # layer1.W, layer1.b
    # the latent noise scale is a likelihood parameter: held at its MAP, not in the Gaussian
    assert "noise_scale" not in post.approx.layout.names
    assert post.draws["noise_scale"].shape == (1, 3)
    np.testing.assert_allclose(post.approx.sigma_noise, 0.3)
    np.testing.assert_allclose(post.draws["noise_scale"], 0.3)


def _linear_with_output(X, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    f = numpyro.deterministic("f", X @ w)
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(f, 0.5), obs=y)


def test_an_output_site_typo_warns_before_falling_back_to_the_hessian():
    X = np.linspace(-1.0, 1.0, 8)[:, None]
    y = 0.3 * X[:, 0]
    with pytest.warns(UserWarning, match=r"output_site='logits' is not a deterministic site"):
        post = fit(Laplace(output_site="logits", num_steps=5), jax.random.key(0),
                   _linear_with_output, X, y)  # fmt: skip
    assert post.approx.curvature == "hessian"
