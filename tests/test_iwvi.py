"""Importance-weighted VI (``ppl_dgp.elbo.ImportanceWeightedELBO``) against the standard bound
and against quadrature references.

The reference model is a one-layer latent-variable GP, ``y_n = f([x_n, w_n]) + e_n``,
``w_n ~ N(0, 1)``, with fixed, non-trivial ``q(u)``, ``q(w_n)`` and hyperparameters. Its bound's
pieces are computed here by hand in dense NumPy (the whitened SVGP marginals of ``q(f)`` at
``[x_n, w]``, the closed-form Gaussian expectation, the whitened KL), and the integrals over
``w`` by 80-point Gauss-Hermite quadrature:

- ``E[L_1] = sum_n E_{q(w_n)}[var_exp_n(w_n) + log p(w_n) - log q(w_n)] - KL`` (exact);
- ``L_inf = sum_n log E_{p(w_n)}[exp var_exp_n(w_n)] - KL``, the limit of ``L_K`` and an upper
  bound of every ``E[L_K]``.

Monte Carlo tolerances: ``R`` independent replicates of ``L_K``; a mean has standard error
``se = std / sqrt(R)`` and must lie within ``Z_TOL = 5`` standard errors (of the difference, for
two means) of its reference; a two-sided normal tail of 6e-7, with fixed seeds.
"""

import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

from ppl_dgp.elbo import (  # noqa: E402
    DoublyStochasticELBO,
    ImportanceWeightedELBO,
    elbo_terms,
    iw_elbo_terms,
)
from ppl_dgp.latent import LatentVariableGuide  # noqa: E402
from ppl_dgp.linalg import DEFAULT_JITTER  # noqa: E402
from ppl_dgp.models.lv_dgp import init_lv_dgp, lv_dgp_regression  # noqa: E402

Z_TOL = 5.0
N, M, R = 20, 6, 400


def _data():
    X = np.linspace(-2.0, 2.0, N)[:, None]
    sign = np.where(np.random.default_rng(1).random(N) < 0.5, -1.0, 1.0)
    return jnp.asarray(X), jnp.asarray(np.sin(X[:, 0]) + 0.8 * sign)  # two branches


@pytest.fixture(scope="module")
def setup():
    X, y = _data()
    config = init_lv_dgp(X, latent_dim=1, num_layers=1, num_inducing=M, hyperpriors=False)
    model = functools.partial(lv_dgp_regression, **config)
    guide = LatentVariableGuide(model)
    svi = numpyro.infer.SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
    params = dict(svi.get_params(svi.init(jax.random.key(0), X, y)))
    rng = np.random.default_rng(2)
    L = np.tril(0.3 * rng.normal(size=(M, M)), -1) + np.diag(rng.uniform(0.2, 0.6, M))
    params.update({
        "layer0.q_mu": jnp.asarray(rng.normal(size=(M, 1))),
        "layer0.q_sqrt": jnp.asarray(L[None]),
        "latent.w.loc": jnp.asarray(0.7 * rng.normal(size=(N, 1))),
        "latent.w.scale": jnp.asarray(rng.uniform(0.3, 0.8, (N, 1))),
        "layer0.variance": jnp.asarray(1.3),
        "layer0.lengthscales": jnp.asarray([1.2, 0.8]),
        "noise_variance": jnp.asarray(0.1),
    })  # fmt: skip
    assert set(params) == {
        "layer0.q_mu",
        "layer0.q_sqrt",
        "layer0.Z",
        "latent.w.loc",
        "latent.w.scale",
        "layer0.variance",
        "layer0.lengthscales",
        "noise_variance",
    }  # fmt: skip (every value of the bound is set above, Z from k-means)
    return X, y, model, guide, params


@pytest.fixture(scope="module")
def references(setup):
    """``(E[L_1], L_inf)`` by dense NumPy and Gauss-Hermite quadrature."""
    X, y, _, _, p = setup
    p = {k: np.asarray(v) for k, v in p.items()}
    Z, var, ell, s2 = p["layer0.Z"], p["layer0.variance"], p["layer0.lengthscales"], p[
        "noise_variance"]  # fmt: skip
    q_mu, Lq = p["layer0.q_mu"][:, 0], np.tril(p["layer0.q_sqrt"][0])

    def k(A, B):
        d = (A[:, None, :] - B[None, :, :]) / ell
        return var * np.exp(-0.5 * np.sum(d**2, -1))

    Lmm = np.linalg.cholesky(k(Z, Z) + DEFAULT_JITTER * np.eye(M))
    S = Lq @ Lq.T

    def var_exp(x, yn, w):  # [G] at inputs [x, w_g]
        H = np.stack([np.full_like(w, x), w], axis=1)
        A = np.linalg.solve(Lmm, k(Z, H))  # [M, G]
        m = A.T @ q_mu
        v = var - np.sum(A**2, 0) + np.sum(A * (S @ A), 0)
        return -0.5 * np.log(2 * np.pi * s2) - ((yn - m) ** 2 + v) / (2 * s2)

    kl = 0.5 * (np.trace(S) + q_mu @ q_mu - M - 2 * np.sum(np.log(np.abs(np.diag(Lq)))))
    t, wt = np.polynomial.hermite.hermgauss(80)
    wt = wt / np.sqrt(np.pi)
    e1, linf = -kl, -kl
    for n in range(N):
        x, yn = float(X[n, 0]), float(y[n])
        mq, sq = p["latent.w.loc"][n, 0], p["latent.w.scale"][n, 0]
        w = mq + np.sqrt(2.0) * sq * t  # nodes under q(w_n)
        log_ratio = -0.5 * w**2 + 0.5 * ((w - mq) / sq) ** 2 + np.log(sq)
        e1 += np.sum(wt * (var_exp(x, yn, w) + log_ratio))
        w = np.sqrt(2.0) * t  # nodes under p(w_n)
        linf += np.log(np.sum(wt * np.exp(var_exp(x, yn, w))))
    return e1, linf


@pytest.fixture(scope="module")
def bounds(setup):
    """``R`` replicates of ``L_K`` for ``K`` in 1, 4, 16 (independent keys per ``K``)."""
    X, y, model, guide, params = setup

    @functools.partial(jax.jit, static_argnums=1)
    def run(keys, K):
        def one(key):
            return iw_elbo_terms(key, params, model, guide, X, y, num_importance=K)["elbo"]

        return jax.vmap(one)(keys)

    return {K: np.asarray(run(jax.random.split(jax.random.key(K), R), K)) for K in (1, 4, 16)}


def _mean_se(v):
    return float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(len(v)))


def test_k1_is_the_standard_bound(setup):
    """Same seed, K = 1: the IWVI bound is the doubly-stochastic bound (1e-10)."""
    X, y, model, guide, params = setup
    for s in range(3):
        key = jax.random.key(10 + s)
        a = elbo_terms(key, params, model, guide, X, y)["elbo"]
        b = iw_elbo_terms(key, params, model, guide, X, y, num_importance=1)["elbo"]
        assert abs(float(a) - float(b)) <= 1e-10, (float(a), float(b))
    # and the ELBO classes' losses agree too
    loss_a = DoublyStochasticELBO().loss(key, params, model, guide, X, y)
    loss_b = ImportanceWeightedELBO(num_importance=1).loss(key, params, model, guide, X, y)
    assert abs(float(loss_a) - float(loss_b)) <= 1e-10


def test_k1_is_the_standard_bound_with_inner_layers_and_minibatches():
    """Two layers (inner-layer noise) and a subsampled plate (scale N / B), K = 1."""
    X, y = _data()
    config = init_lv_dgp(X, latent_dim=1, num_layers=2, num_inducing=4)
    model = functools.partial(lv_dgp_regression, **config, batch_size=8)
    guide = LatentVariableGuide(model, encoder="amortised")
    svi = numpyro.infer.SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
    params = svi.get_params(svi.init(jax.random.key(0), X, y))
    key = jax.random.key(3)
    a = elbo_terms(key, params, model, guide, X, y)
    b = iw_elbo_terms(key, params, model, guide, X, y, num_importance=1)
    assert b["log_weights"].shape == (1, 8)
    assert abs(float(a["elbo"]) - float(b["elbo"])) <= 1e-10
    # the minibatch estimate is scaled by N / B: the local part is (N / B) sum of 8 terms
    local = float(b["elbo"] + sum(b["kl"].values()) - b["log_prior_ratio"])
    assert local == pytest.approx(N / 8 * float(jnp.sum(b["log_weights"])), rel=1e-12)


def test_expected_k1_bound_matches_quadrature(bounds, references):
    mean, se = _mean_se(bounds[1])
    assert se < 0.05 * abs(mean)  # the check has power
    assert abs(mean - references[0]) <= Z_TOL * se, (mean, se, references[0])


def test_bound_is_non_decreasing_in_k_and_below_the_limit(bounds, references):
    """E[L_1] <= E[L_4] <= E[L_16] <= L_inf, each within 5 standard errors; and the gain from
    K = 1 to 16 is significant (more than 5 standard errors), so the test can fail."""
    stats = {K: _mean_se(v) for K, v in bounds.items()}
    for a, b in ((1, 4), (4, 16)):
        (ma, sa), (mb, sb) = stats[a], stats[b]
        assert mb - ma >= -Z_TOL * np.hypot(sa, sb), (a, b, stats)
    m16, s16 = stats[16]
    assert m16 <= references[1] + Z_TOL * s16, (stats, references)
    (m1, s1) = stats[1]
    assert m16 - m1 > Z_TOL * np.hypot(s1, s16), stats
    assert references[0] < references[1]


def test_num_importance_is_checked():
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_importance must be an int >= 1"):
            ImportanceWeightedELBO(num_importance=bad)
