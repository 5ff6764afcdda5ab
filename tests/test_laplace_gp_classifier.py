"""The Laplace evidence of a GP classifier and its hyperparameters by it (``tune="marglik"``).

The reference is Rasmussen & Williams (2006), Algorithm 3.1 (the mode by Newton) and the
evidence of Algorithm 3.2 / eq. (3.32), on a full GP (``Z = X``, no jitter: the whitened
inducing values are ``u = L^-1 f``), computed densely in NumPy with ``W`` the GGN's curvature
of the probit likelihood, its Fisher ``phi^2 / (Phi (1 - Phi))`` (the GGN in the logits
``log Phi(f) - log Phi(-f)`` that the program records). The hyperprior is LogNormal(0, 1) on
the kernel variance and the lengthscale; in ``z = log h`` its log density plus the log-Jacobian
is ``-z^2 / 2 - log(2 pi) / 2``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy.stats import norm

from ppl_dgp.infer import fit
from ppl_dgp.laplace import Laplace
from ppl_dgp.laplace import gp_marglik as GM
from ppl_dgp.laplace.structures import FullCurvature
from ppl_dgp.laplace.subset import _Layout
from ppl_dgp.layers import Hyper, LayerSpec
from ppl_dgp.likelihoods import Bernoulli
from ppl_dgp.models.gp_classification import svgp_classification

jax.config.update("jax_enable_x64", True)

X = np.linspace(-2.0, 2.0, 8)[:, None]
Y = np.array([0, 0, 1, 0, 1, 1, 0, 1])


def _model():
    spec = LayerSpec(
        num_outputs=1, Z=X.copy(), variance=Hyper(1.0, prior=dist.LogNormal(0.0, 1.0)),
        lengthscales=Hyper(np.ones(1), prior=dist.LogNormal(0.0, 1.0)), learn_Z=False,
        jitter=0.0,
    )  # fmt: skip
    return functools.partial(svgp_classification, layers=(spec,), likelihood=Bernoulli())


def _dense_evidence(log_var: float, log_ls: float) -> float:
    """R&W Algorithm 3.1 (the mode, exact Newton) and eq. (3.32) with the Fisher ``W``:
    ``-1/2 a^T f + log p(y | f) - 1/2 log|I + W^1/2 K W^1/2|``, ``a = grad log p = K^-1 f``."""
    x = X[:, 0]
    K = np.exp(log_var) * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / np.exp(2 * log_ls))
    s = 2.0 * Y - 1.0
    f = np.zeros(len(x))
    for _ in range(100):
        r = norm.pdf(f) / norm.cdf(s * f)  # d log Phi(s f) / d (s f)
        grad = s * r
        W = r**2 + s * f * r  # -d^2 log Phi(s f) / d f^2 (R&W eq. 3.16)
        sw = np.sqrt(W)
        L = np.linalg.cholesky(np.eye(len(x)) + sw[:, None] * K * sw[None, :])
        b = W * f + grad
        a = b - sw * np.linalg.solve(L.T, np.linalg.solve(L, sw * (K @ b)))
        f = K @ a
    r = norm.pdf(f) / norm.cdf(s * f)
    assert np.max(np.abs(s * r - a)) < 1e-12  # the mode: K^-1 f = grad log p(y | f)
    WF = norm.pdf(f) ** 2 / (norm.cdf(f) * norm.cdf(-f))  # the GGN's (Fisher) curvature
    sw = np.sqrt(WF)
    _, logdet = np.linalg.slogdet(np.eye(len(x)) + sw[:, None] * K * sw[None, :])
    return float(-0.5 * a @ f + np.sum(norm.logcdf(s * f)) - 0.5 * logdet)


def _dense_objective(z: np.ndarray) -> float:
    """The evidence plus the hyperprior in ``z = (log variance, log lengthscale)``."""
    return _dense_evidence(*z) - 0.5 * float(z @ z) - np.log(2 * np.pi)


def _dense_gradient(z: np.ndarray, h: float = 1e-4) -> np.ndarray:
    e = np.eye(2) * h
    return np.array([(_dense_objective(z + e[i]) - _dense_objective(z - e[i])) / (2 * h)
                     for i in range(2)])  # fmt: skip


def test_evidence_and_its_gradient_through_the_mode_match_the_dense_reference():
    """At hyperparameters away from the optimum: the evidence (with the hyperprior) at the mode
    ``u*`` equals R&W's, and its gradient in ``z`` (the mode moving with ``z``: implicit
    differentiation) equals the dense one by central differences, re-finding the mode at each
    point. Dropping ``du*/dz`` (``u*`` held fixed) gives a different gradient."""
    model, N = _model(), X.shape[0]
    spec = GM._Spec(FullCurvature, "ggn", "bernoulli", _Layout(("layer0.u",), ((1, N),)), "f")
    z = np.array([np.log(2.0), np.log(0.7)])
    zh = {"layer0.variance": jnp.asarray(z[0]), "layer0.lengthscales": jnp.asarray(z[1:])}
    args = ({}, {}, jnp.ones(N), jnp.asarray(X), jnp.asarray(Y))
    u = jax.jit(lambda v: GM.find_mode(model, {}, spec, jnp.zeros(N), v, {}, *args[3:], 30))(zh)
    evidence = jax.value_and_grad(lambda v: GM.log_evidence(model, {}, spec, u, v, *args))
    ev, g_fixed = jax.jit(evidence)(zh)  # u held at u*(z)
    assert abs(float(ev) - _dense_objective(z)) < 1e-8 * (1.0 + abs(float(ev)))
    g = jax.jit(jax.grad(lambda v: GM._objective(model, {}, spec, v, u, *args)))(zh)
    g = -N * np.array([g["layer0.variance"], g["layer0.lengthscales"][0]])
    ref = _dense_gradient(z)
    assert np.max(np.abs(g - ref)) < 1e-6 * (1.0 + np.max(np.abs(ref)))
    g_fixed = np.array([g_fixed["layer0.variance"], g_fixed["layer0.lengthscales"][0]])
    assert np.max(np.abs(g_fixed - ref)) > 1e-3  # the mode's motion matters here


@pytest.mark.slow  # ~20 s: the compiles of the MAP, the L-BFGS evidence loop and the GGN core
def test_tuned_hyperparameters_are_a_stationary_point_of_the_dense_evidence():
    """``fit(Laplace(tune="marglik"))`` takes the kernel variance and lengthscale (from their
    joint MAP with ``u``) to a stationary point of R&W's evidence plus the hyperprior (dense
    central differences; at the hyperprior's mode that gradient is far from 0), ``u`` to its
    mode there, and the Posterior's evidence (no hyperprior) is R&W's at that point."""
    method = Laplace(num_steps=300, learning_rate=0.05, tune="marglik", tune_steps=40,
                     num_samples=4)  # fmt: skip
    post = fit(method, jax.random.key(0), _model(), X, Y)
    z = np.log([float(post.approx.map["layer0.variance"]),
                float(post.approx.map["layer0.lengthscales"][0])])  # fmt: skip
    ref0 = _dense_gradient(np.zeros(2))  # at the hyperprior's mode: far from stationary
    assert np.max(np.abs(ref0)) > 0.1
    assert np.max(np.abs(_dense_gradient(z))) < 1e-5
    assert post.traces["evidence_mode_grad"][-1] < 1e-10
    assert post.approx.layout.names == ("layer0.u",)
    lml = float(post.approx.log_marglik)
    assert abs(lml - _dense_evidence(*z)) < 1e-8 * (1.0 + abs(lml))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tune": "fixed_point"}, "tune='fixed_point'.*not available for a GP-layer program"),
        ({"tune": "grid"}, "tune='grid'.*not available for a GP-layer program"),
        ({"tune": "marglik", "prior_structure": "layer"}, "prior_structure='layer'"),
        ({"tune": "marglik", "tune_noise": True}, "tune_noise needs a Gaussian likelihood"),
    ],
)
def test_a_tune_that_cannot_apply_to_a_gp_classifier_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(Laplace(num_steps=2, num_samples=2, **kwargs), jax.random.key(0), _model(), X, Y)


def test_marglik_without_hyperparameter_sites_is_refused():
    """Hyperparameters without a prior are fixed params: nothing for the evidence to tune."""
    spec = LayerSpec(num_outputs=1, Z=X.copy(), variance=Hyper(1.0), lengthscales=Hyper(1.0),
                     learn_Z=False)  # fmt: skip
    model = functools.partial(svgp_classification, layers=(spec,), likelihood=Bernoulli())
    with pytest.raises(ValueError, match="tune='marglik'.*has none as sample sites"):
        fit(Laplace(num_steps=2, num_samples=2, tune="marglik"), jax.random.key(0), model, X, Y)


def test_a_gp_classifiers_laplace_predicts_with_the_programs_own_probit_by_default():
    """``predict_proba`` without a link: a GP classifier's Laplace over ``u`` averages the
    program's ``Phi(m / sqrt(1 + v))`` over its draws of ``u`` (``"nn"``), not the linearised
    logit; the result equals asking for ``link="nn"``, and differs from ``"probit"``."""
    from ppl_dgp.predictive import default_link, predict_proba

    post = fit(Laplace(num_steps=50, num_samples=20), jax.random.key(0), _model(), X, Y)
    assert default_link(post.approx) == "nn"
    Xt = np.linspace(-2.5, 2.5, 5)[:, None]
    p = predict_proba(_model(), post, Xt, rng_key=jax.random.key(1), num_samples=20)
    p_nn = predict_proba(_model(), post, Xt, link="nn", rng_key=jax.random.key(1),
                         num_samples=20)  # fmt: skip
    p_probit = predict_proba(_model(), post, Xt, link="probit")
    np.testing.assert_array_equal(np.asarray(p), np.asarray(p_nn))
    assert np.max(np.abs(np.asarray(p) - np.asarray(p_probit))) > 1e-6
