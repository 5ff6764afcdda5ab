"""Math stratum of the Laplace approximation against dense references and laplace-torch.

The network ``f(x) = tanh(x W1 + b1) W2 + b2`` is written out here in plain JAX (no NumPyro);
``tests/data/laplace_mlp.json`` holds laplace-torch's values at the stored weights (provenance in
``tests/data/PROVENANCE.md``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl_dgp import curvature as C

REF = json.loads((Path(__file__).parent / "data" / "laplace_mlp.json").read_text())


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


def _net(theta, X):  # [21], [N, 2] -> [N, 1]
    W1, b1 = theta[:10].reshape(2, 5), theta[10:15]
    W2, b2 = theta[15:20].reshape(5, 1), theta[20:21]
    return jnp.tanh(X @ W1 + b1[None, :]) @ W2 + b2[None, :]


def _case(task):
    r = REF[task]
    lik = "bernoulli" if task == "classification" else "gaussian"
    sigma = r.get("sigma_noise", 1.0)
    return r, lik, sigma, jnp.asarray(r["X"]), jnp.asarray(r["y"]), jnp.asarray(r["theta_proj"])


def _kfac_inputs(theta, X):
    """Per dense layer: inputs ``a [N, D_in]`` and ``df/dz [N, 1, D_out]`` (by hand)."""
    W1, b1, W2 = theta[:10].reshape(2, 5), theta[10:15], theta[15:20]
    h = jnp.tanh(X @ W1 + b1[None, :])
    return [(X, (W2[None, :] * (1 - h**2))[:, None, :]), (h, jnp.ones((X.shape[0], 1, 1)))]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_ggn_full_and_diag_match_laplace_torch(task):
    r, lik, sigma, X, _, theta = _case(task)
    J = jax.jacfwd(_net)(theta, X)  # [N, 1, 21]
    Lam = C.loss_hessian(lik, _net(theta, X), sigma)
    G = C.ggn_full(J, Lam)
    ref = np.asarray(r["ggn_full_proj"])
    np.testing.assert_allclose(G, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(C.ggn_diag(J, Lam), np.diag(ref), rtol=1e-9)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_log_marglik_full_diag_kron_match_laplace_torch(task):
    r, lik, sigma, X, y, theta = _case(task)
    f = _net(theta, X)
    J = jax.jacfwd(_net)(theta, X)
    Lam = C.loss_hessian(lik, f, sigma)
    ll = C.log_likelihood(lik, f, y, sigma)
    np.testing.assert_allclose(ll, r["log_likelihood"], rtol=1e-12)
    delta = jnp.ones(21)
    logdet_full = jnp.linalg.slogdet(C.ggn_full(J, Lam) + jnp.eye(21))[1]
    logdet_diag = jnp.sum(jnp.log(C.ggn_diag(J, Lam) + 1.0))
    logdet_kron = sum(
        C.kron_logdet(C.kron_block(a, Jz, Lam), 1.0, 1.0, 1.0) for a, Jz in _kfac_inputs(theta, X)
    )
    for key, ld, tol in [("full", logdet_full, 1e-9), ("diag", logdet_diag, 1e-9),
                         ("kron", logdet_kron, 1e-6)]:  # fmt: skip
        np.testing.assert_allclose(
            C.log_marglik(ll, ld, delta, theta), r[f"{key}__log_marglik"], rtol=tol
        )


def test_kron_predictive_variance_equals_dense_kron_inverse():
    r, lik, sigma, X, _, theta = _case("classification")
    Lam = C.loss_hessian(lik, _net(theta, X), sigma)
    Xq = jnp.asarray(REF["Xq"])
    # Dense reference: block-diagonal [kron(A, B) (W), B (b)] per layer + I, inverted.
    blocks = []
    for a, Jz in _kfac_inputs(theta, X):
        A = np.asarray(a.T @ a / a.shape[0])
        B = np.einsum("nko,nkl,nlp->op", Jz, Lam, Jz)
        blocks += [np.kron(A, B), B]
    P = np.zeros((21, 21))
    o = 0
    for b in blocks:
        P[o : o + len(b), o : o + len(b)] = b
        o += len(b)
    P += np.eye(21)
    Jq = np.asarray(jax.jacfwd(_net)(theta, Xq))[:, 0, :]
    ref = np.einsum("np,pq,nq->n", Jq, np.linalg.inv(P), Jq)
    ours = sum(
        C.glm_f_cov_kron(aq, Jzq, C.kron_block(a, Jz, Lam), 1.0, 1.0, 1.0)
        for (a, Jz), (aq, Jzq) in zip(_kfac_inputs(theta, X), _kfac_inputs(theta, Xq), strict=True)
    )[:, 0, 0]
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    np.testing.assert_allclose(ours, r["kron__f_var_Xq"], rtol=1e-6)


def test_probit_and_full_glm_variance_match_laplace_torch():
    r, lik, sigma, X, _, theta = _case("classification")
    Lam = C.loss_hessian(lik, _net(theta, X), sigma)
    P = C.ggn_full(jax.jacfwd(_net)(theta, X), Lam) + jnp.eye(21)
    Xq = jnp.asarray(REF["Xq"])
    v = C.glm_f_cov_full(jax.jacfwd(_net)(theta, Xq), jnp.linalg.cholesky(P))[:, 0, 0]
    np.testing.assert_allclose(v, r["full__f_var_Xq"], rtol=1e-9)
    p = C.probit(_net(theta, Xq)[:, 0], v)
    np.testing.assert_allclose(p, r["full__probit_p1_Xq"], rtol=1e-9)


@pytest.mark.parametrize("lik", ["gaussian", "bernoulli", "categorical"])
def test_loss_hessian_and_gradient_match_autodiff(lik):
    rng = np.random.default_rng(0)
    K = 3 if lik == "categorical" else 1
    f = jnp.asarray(rng.normal(size=(6, K)))
    y = jnp.asarray(rng.integers(0, max(K, 2), 6) if lik != "gaussian" else rng.normal(size=6))

    def nll(fn, yn):  # one datum
        return -C.log_likelihood(lik, fn[None, :], yn[None], 0.7)

    H = jax.vmap(jax.hessian(nll))(f, y)
    g = jax.vmap(jax.grad(nll))(f, y)
    np.testing.assert_allclose(C.loss_hessian(lik, f, 0.7), H, atol=1e-12)
    np.testing.assert_allclose(C.loss_gradient(lik, f, y, 0.7), g, atol=1e-12)


def test_empirical_fisher_is_sum_of_per_datum_gradient_outer_products():
    r, _, _, X, y, theta = _case("classification")

    def nll(t, xn, yn):
        return -C.bernoulli_log_likelihood(_net(t, xn[None, :]), yn[None])

    grads = jax.vmap(jax.grad(nll), in_axes=(None, 0, 0))(theta, X, y)  # [N, P]
    J = jax.jacfwd(_net)(theta, X)
    gf = C.loss_gradient("bernoulli", _net(theta, X), y)
    np.testing.assert_allclose(C.ef_full(J, gf), grads.T @ grads, atol=1e-12)
    np.testing.assert_allclose(C.ef_diag(J, gf), jnp.sum(grads**2, 0), atol=1e-12)


def test_mackay_fixed_point_is_the_evidence_stationary_point():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(8, 8))
    H = jnp.asarray(A @ A.T)
    theta = jnp.asarray(rng.normal(size=8))

    def ev(log_d):
        d = jnp.full(8, jnp.exp(log_d))
        return C.log_marglik(0.0, jnp.linalg.slogdet(H + jnp.diag(d))[1], d, theta)

    d = jnp.ones(8)
    for _ in range(200):
        var = jnp.diag(jnp.linalg.inv(H + jnp.diag(d)))
        d = jnp.full(8, C.mackay_fixed_point(d, var, theta, jnp.zeros(8, jnp.int32), 1)[0])
    assert abs(float(jax.grad(ev)(jnp.log(d[0])))) < 1e-8
    grid = np.linspace(-4, 4, 4001)
    best = grid[np.argmax([float(ev(g)) for g in grid[::10]]) * 10]
    assert abs(float(jnp.log(d[0])) - best) < 0.03


def test_laplace_bridge_and_probit_are_distributions():
    rng = np.random.default_rng(2)
    f = jnp.asarray(rng.normal(size=(4, 3)))
    B = rng.normal(size=(4, 3, 3))
    cov = jnp.asarray(B @ B.transpose(0, 2, 1) + 0.1 * np.eye(3))
    p = C.laplace_bridge(f, cov)
    np.testing.assert_allclose(jnp.sum(p, -1), 1.0, atol=1e-12)
    assert np.all(p > 0)
    # zero variance limit of the probit is the plug-in sigmoid
    np.testing.assert_allclose(C.probit(f[:, 0], jnp.zeros(4)), jax.nn.sigmoid(f[:, 0]))
    assert math.isclose(float(C.probit(jnp.array([2.0]), jnp.array([1e6]))[0]), 0.5, abs_tol=2e-3)


def test_make_positive_definite_clips_negative_eigenvalues():
    H = jnp.array([[1.0, 0.0], [0.0, -2.0]])
    H_pd, n = C.make_positive_definite(H)
    assert int(n) == 1
    assert np.all(np.linalg.eigvalsh(np.asarray(H_pd)) > 0)
    H_sf, n_sf = C.make_positive_definite(H, floor=1.0)  # saddle-free: |-2| = 2
    assert int(n_sf) == 1
    np.testing.assert_allclose(np.linalg.eigvalsh(np.asarray(H_sf)), [1.0, 2.0])
    H_flat, _ = C.make_positive_definite(jnp.array([[3.0, 0.0], [0.0, -1e-9]]), floor=1.0)
    np.testing.assert_allclose(np.linalg.eigvalsh(np.asarray(H_flat)), [1.0, 3.0])
    same, n0 = C.make_positive_definite(jnp.eye(2))
    assert int(n0) == 0
    np.testing.assert_array_equal(same, jnp.eye(2))


def test_unknown_likelihood_is_named():
    with pytest.raises(ValueError, match="likelihood must be one of .* received 'poisson'"):
        C.loss_hessian("poisson", jnp.zeros((2, 1)))
