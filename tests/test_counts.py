"""The zoo's count and heteroscedastic DGPs: their bounds against dense NumPy references, and
bad counts named.

The references are written out here: the whitened SVGP marginals with an explicit Cholesky
and the closed forms ``E[log Poisson(y | e^f)] = y m - exp(m + v/2) - log y!`` and
``E[log N(y | f0, e^{2 f1})] = -log(2 pi)/2 - m1 - ((y - m0)^2 + v0) exp(2 v1 - 2 m1) / 2``
(each also checked here against Monte Carlo).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.handlers import seed, substitute, trace
from scipy.special import gammaln

from ppl_dgp.collapse import collapse
from ppl_dgp.elbo import elbo_terms
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.linalg import DEFAULT_JITTER
from ppl_dgp.models import MODELS
from ppl_dgp.models import counts as cnt
from ppl_dgp.models import heteroscedastic as het
from ppl_dgp.models.dgp import init_dgp

N, M = 10, 4
X = np.linspace(-2.0, 2.0, N)[:, None]
HYPERS = {"layer0.variance": 1.3, "layer0.lengthscales": np.array([0.7])}


def _q(Q: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    S = 0.3 * rng.normal(size=(Q, M, M))
    return {
        "layer0.q_mu": 0.5 * rng.normal(size=(M, Q)),
        "layer0.q_sqrt": np.tril(S, -1) + 0.5 * np.eye(M),
    }


def _dense_q_f(Z: np.ndarray, q_mu: np.ndarray, q_sqrt: np.ndarray):
    """Whitened SVGP marginals per output ``[N, Q]`` and the KL, by explicit NumPy."""
    variance, ell = HYPERS["layer0.variance"], HYPERS["layer0.lengthscales"]

    def k(a, b):
        return variance * np.exp(-0.5 * np.sum(((a[:, None] - b[None]) / ell) ** 2, axis=-1))

    A = np.linalg.solve(np.linalg.cholesky(k(Z, Z) + DEFAULT_JITTER * np.eye(M)), k(Z, X))
    mean = A.T @ q_mu  # [N, Q]
    var = np.stack([variance - np.sum(A**2, 0) + np.sum((S.T @ A) ** 2, 0) for S in q_sqrt], axis=1)
    kl = sum(
        0.5 * (np.trace(S @ S.T) + m @ m - M - np.linalg.slogdet(S @ S.T)[1])
        for S, m in zip(q_sqrt, q_mu.T, strict=True)
    )
    return mean, var, kl


def _bound(model, y, Q):
    q = _q(Q)
    with collapse(params=q):
        tr = trace(substitute(seed(model, 0), data=HYPERS)).get_trace(X, y)
    guide = InducingPointGuide(model)
    params = {**q, **HYPERS}
    elbo_terms(jax.random.key(0), params, model, guide, X, y)  # the guide's set-up call
    terms = elbo_terms(jax.random.key(1), params, model, guide, X, y)
    mean, var, kl = _dense_q_f(np.asarray(tr["layer0.Z"]["value"]), q["layer0.q_mu"],
                               q["layer0.q_sqrt"])  # fmt: skip
    return tr, terms, mean, var, kl


def _config(**kw):
    return init_dgp(X, num_layers=1, num_inducing=M, hyperpriors=False, **kw)


def test_poisson_bound_is_the_closed_form_expectation_minus_kl():
    y = np.random.default_rng(1).poisson(np.exp(np.sin(X[:, 0]))).astype(float)
    model = functools.partial(cnt.dgp_poisson, layers=_config()["layers"])
    tr, terms, mean, var, kl = _bound(model, y, 1)
    m, v = mean[:, 0], var[:, 0]
    var_exp = y * m - np.exp(m + v / 2) - gammaln(y + 1.0)
    np.testing.assert_allclose(tr["y.var_exp"]["value"], var_exp, rtol=1e-10)
    np.testing.assert_allclose(terms["expected_log_lik"], np.sum(var_exp), rtol=1e-10)
    np.testing.assert_allclose(terms["elbo"], np.sum(var_exp) - kl, rtol=1e-9)
    # the closed form against Monte Carlo over q(f) (200,000 draws, 5 standard errors)
    f = m + np.sqrt(v) * np.random.default_rng(2).standard_normal((200_000, N))
    lp = y * f - np.exp(f) - gammaln(y + 1.0)
    se = lp.std(0) / np.sqrt(len(f))
    assert np.all(np.abs(lp.mean(0) - var_exp) < 5 * se)


def test_heteroscedastic_bound_is_the_closed_form_expectation_minus_kl():
    y = np.sin(2.0 * X[:, 0]) + 0.3 * np.random.default_rng(1).normal(size=N)
    layers = het.init_dgp_heteroscedastic(X, num_layers=1, num_inducing=M, hyperpriors=False)
    model = functools.partial(het.dgp_heteroscedastic, **layers)
    tr, terms, mean, var, kl = _bound(model, y, 2)
    (m0, m1), (v0, v1) = mean.T, var.T
    var_exp = -0.5 * np.log(2 * np.pi) - m1 - 0.5 * ((y - m0) ** 2 + v0) * np.exp(2 * (v1 - m1))
    np.testing.assert_allclose(tr["y.var_exp"]["value"], var_exp, rtol=1e-10)
    np.testing.assert_allclose(terms["elbo"], np.sum(var_exp) - kl, rtol=1e-9)
    rng = np.random.default_rng(2)
    f0 = m0 + np.sqrt(v0) * rng.standard_normal((200_000, N))
    f1 = m1 + np.sqrt(v1) * rng.standard_normal((200_000, N))
    lp = -0.5 * np.log(2 * np.pi) - f1 - 0.5 * (y - f0) ** 2 * np.exp(-2 * f1)
    assert np.all(np.abs(lp.mean(0) - var_exp) < 5 * lp.std(0) / np.sqrt(len(f0)))


def test_the_joint_observes_the_sampled_last_layer():
    """Outside collapse (NUTS, Laplace): ``y | f ~ N(f_0, exp(f_1)^2)``, ``Poisson(e^f)``."""
    y = np.arange(N, dtype=float) % 3
    for build, check in ((het.build_dgp_heteroscedastic, "het"), (cnt.build_dgp_poisson, "p")):
        model = build(X, num_inducing=M)
        tr = trace(seed(model, 3)).get_trace(X, y)
        F = np.asarray(tr["layer1.eps"]["value"])  # the sampled last layer's noise
        assert F.shape == (N, 2 if check == "het" else 1)
        fn = tr["y"]["fn"]
        if check == "het":
            assert np.all(np.asarray(fn.scale) > 0) and fn.loc.shape == (N,)
        else:
            np.testing.assert_allclose(
                fn.log_prob(jnp.asarray(y)), y * np.log(fn.rate) - fn.rate - gammaln(y + 1.0),
                rtol=1e-12,
            )  # fmt: skip


@pytest.mark.parametrize("bad", [-1.0, 1.5, np.nan])
def test_bad_counts_raise_naming_y(bad):
    model = cnt.build_dgp_poisson(X, num_inducing=M)
    y = np.ones(N)
    y[3] = bad
    with pytest.raises(ValueError, match=r"^y: Poisson observations must be|^y contains NaN"):
        model(X, y)


def test_registered_with_their_likelihood_and_task():
    assert MODELS["dgp_poisson"].task == "counts"
    assert MODELS["dgp_poisson"].likelihood == "poisson"
    assert MODELS["dgp_heteroscedastic"].likelihood == "heteroscedastic_gaussian"
    assert "mixture" in MODELS["dgp_heteroscedastic"].predictives
