"""The Laplace precision structures as values, against the dense matrices they represent, and
the caller-held compiled pieces (:class:`~ppl_dgp.laplace.LaplaceFitter`).

Every structure's ``logdet``, ``marginal_variance``, ``glm_cov`` and draws are checked
against O(P^3) NumPy on its ``matrix()``, and ``matrix()`` itself against the formula
(``s H + diag(delta)``; for KFAC ``s (A ⊗ B) + delta_W I`` built from the factors, not from
the eigendecomposition).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl_dgp import curvature as C
from ppl_dgp.infer import fit
from ppl_dgp.laplace import Laplace, LaplaceFitter
from ppl_dgp.laplace.structures import (
    DiagCurvature,
    FullCurvature,
    KronCurvature,
    OutputJacobian,
)
from ppl_dgp.models import bnn
from ppl_dgp.posterior import Posterior
from ppl_dgp.predictive import predict_proba

jax.config.update("jax_enable_x64", True)

N, K, D_IN, D_OUT = 7, 2, 3, 2


def _kron_inputs(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N, D_IN))  # layer input
    Jz = rng.normal(size=(N, K, D_OUT))  # d f / d z
    Lam = np.einsum("nkl,nml->nkm", *(2 * [rng.normal(size=(N, K, K))]))  # PSD per datum
    return a, Jz, Lam


def _full_jacobian(a, Jz):  # [N, K, D_in D_out + D_out]: W row-major, then b
    JW = (a[:, None, :, None] * Jz[:, :, None, :]).reshape(N, K, -1)
    return np.concatenate([JW, Jz], axis=-1)


def _structures():
    """``{name: (curvature, scale, delta, dense P)}`` with the dense reference built here."""
    rng = np.random.default_rng(1)
    P = 6
    G = rng.normal(size=(P, P))
    H = G @ G.T
    delta = rng.uniform(0.5, 2.0, size=P)
    s = 1.7
    a, Jz, Lam = _kron_inputs()
    A = a.T @ a / N
    B = np.einsum("nko,nkl,nlp->op", Jz, Lam, Jz)
    dW, db = 0.8, 1.3
    P_kron = np.zeros((D_IN * D_OUT + D_OUT,) * 2)
    P_kron[: D_IN * D_OUT, : D_IN * D_OUT] = s * np.kron(A, B) + dW * np.eye(D_IN * D_OUT)
    P_kron[D_IN * D_OUT :, D_IN * D_OUT :] = s * B + db * np.eye(D_OUT)
    jac = OutputJacobian(
        (N, K, D_IN * D_OUT + D_OUT),
        lambda: jnp.asarray(_full_jacobian(a, Jz)),
        lambda: {"layer0": (jnp.asarray(a), jnp.asarray(Jz))},
    )
    kron = KronCurvature.from_outer(jac, jnp.asarray(Lam))
    delta_k = np.r_[np.full(D_IN * D_OUT, dW), np.full(D_OUT, db)]
    return {
        "full": (FullCurvature(jnp.asarray(H)), s, delta, s * H + np.diag(delta)),
        "diag": (DiagCurvature(jnp.asarray(np.diag(H))), s, delta, np.diag(s * np.diag(H) + delta)),
        "kron": (kron, s, delta_k, P_kron),
    }


STRUCTURES = _structures()


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_precision_matrix_logdet_and_marginal_variance_equal_dense(name):
    curv, s, delta, P = STRUCTURES[name]
    q = curv.posterior(s, jnp.asarray(delta))
    np.testing.assert_allclose(q.matrix(), P, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q.logdet(), np.linalg.slogdet(P)[1], rtol=1e-12)
    np.testing.assert_allclose(curv.logdet(s, jnp.asarray(delta)), np.linalg.slogdet(P)[1],
                               rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(q.marginal_variance(), np.diag(np.linalg.inv(P)), rtol=1e-10)


def test_full_logdet_by_eigenvalues_for_a_uniform_prior():
    curv, s, _, _ = STRUCTURES["full"]
    d = jnp.full(6, 0.9)
    ref = np.linalg.slogdet(s * np.asarray(curv.H) + 0.9 * np.eye(6))[1]
    np.testing.assert_allclose(curv.with_eigvals().logdet(s, d), ref, rtol=1e-12)


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_glm_cov_equals_dense_j_pinv_jt(name):
    curv, s, delta, P = STRUCTURES[name]
    q = curv.posterior(s, jnp.asarray(delta))
    if name == "kron":  # the layer's input and d f / d z, and the J they make
        a, Jz, _ = _kron_inputs(seed=3)
        J = _full_jacobian(a, Jz)
        jac = OutputJacobian(J.shape, lambda: jnp.asarray(J),
                             lambda: {"layer0": (jnp.asarray(a), jnp.asarray(Jz))})  # fmt: skip
    else:
        J = np.random.default_rng(4).normal(size=(N, K, P.shape[0]))
        jac = OutputJacobian.of(jnp.asarray(J))
    ref = np.einsum("nkp,pq,nlq->nkl", J, np.linalg.inv(P), J)
    np.testing.assert_allclose(q.glm_cov(jac), ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_draws_have_covariance_p_inverse(name):
    curv, s, delta, P = STRUCTURES[name]
    q = curv.posterior(s, jnp.asarray(delta))
    S = 200_000
    d = np.asarray(q.sample(jax.random.key(0), S))
    Sigma = np.linalg.inv(P)
    sd = np.sqrt(np.diag(Sigma))
    assert d.shape == (S, P.shape[0])
    assert np.all(np.abs(d.mean(0)) < 5 * sd / np.sqrt(S))
    # entrywise Monte Carlo error of a covariance: sd_i sd_j sqrt(2 / S) at most
    err = np.abs(np.cov(d.T) - Sigma) / np.outer(sd, sd)
    assert np.max(err) < 5 * np.sqrt(2.0 / S), np.max(err)


def test_kron_factors_equal_the_math_module():
    a, Jz, Lam = _kron_inputs()
    kron = STRUCTURES["kron"][0]
    ref = C.kron_block(jnp.asarray(a), jnp.asarray(Jz), jnp.asarray(Lam))
    for got, want in zip(kron.blocks[0], ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_kron_hessian_is_a_clear_error():
    with pytest.raises(ValueError, match="kron' needs curvature 'ggn' or 'ef'"):
        KronCurvature.from_hessian(jnp.eye(2))


# -- the caller-held compiled pieces -----------------------------------------------------------


def _moons_like():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    return functools.partial(bnn.mlp_binary, hidden=(5,), activation="tanh"), X, y


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_fitter_refit_equals_a_fresh_fit_and_reuses_the_compiled_core(structure):
    model, X, y = _moons_like()
    laplace = LaplaceFitter(model)
    method = Laplace("all", structure, num_steps=30, num_samples=5, tune="marglik",
                     tune_steps=20)  # fmt: skip
    post = laplace.fit(method, jax.random.key(0), X, y)
    assert post == fit(method, jax.random.key(0), model, X, y)
    sizes = laplace.compiled_sizes()
    assert sizes["ggn_core"] == 1 and sizes["map"] == 1 and sizes["draws"] == 1
    # num_steps reaches only the MAP loop (as data), num_samples only the draws
    laplace.fit(Laplace("all", structure, num_steps=60, num_samples=5, tune="marglik",
                        tune_steps=20), jax.random.key(1), X, y)  # fmt: skip
    laplace.fit(Laplace("all", structure, num_steps=60, num_samples=9, tune="marglik",
                        tune_steps=20), jax.random.key(2), X[::-1], y[::-1])  # fmt: skip
    after = laplace.compiled_sizes()
    assert after["ggn_core"] == 1, after
    # the MAP runs in the shared loop driver: one compile for any num_steps and learning rate
    assert after["map"] == 1 and after["draws"] == 2, after
    # a field the core reads does recompile it
    laplace.fit(Laplace("all", structure, num_steps=60, num_samples=9, tune="marglik",
                        tune_steps=21), jax.random.key(2), X, y)  # fmt: skip
    assert laplace.compiled_sizes()["ggn_core"] == 2


def test_fitter_exact_hessian_path_reuses_its_pieces():
    model, X, y = _moons_like()
    laplace = LaplaceFitter(model)
    method = Laplace("last_layer", curvature="hessian", num_steps=30, num_samples=4)
    first = laplace.fit(method, jax.random.key(0), X, y)
    again = laplace.fit(Laplace("last_layer", curvature="hessian", num_steps=40, num_samples=4),
                        jax.random.key(0), X, y)  # fmt: skip
    assert laplace.compiled_sizes()["hessian"] == 1
    assert not np.array_equal(first.approx.theta_map, again.approx.theta_map)


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_saved_posterior_loads_and_predicts_identically(structure, tmp_path):
    model, X, y = _moons_like()
    post = fit(Laplace("all", structure, num_steps=30, num_samples=3), jax.random.key(0),
               model, X, y)  # fmt: skip
    post.save(tmp_path / "lap")
    back = Posterior.load(tmp_path / "lap")
    assert back == post and type(back.approx.precision) is type(post.approx.precision)
    np.testing.assert_array_equal(predict_proba(model, back, X[:5]),
                                  predict_proba(model, post, X[:5]))  # fmt: skip
