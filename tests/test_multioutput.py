"""Multi-output deep GP regression: P independent outputs and the linear model of
coregionalisation (LMC), against single-output programs and dense NumPy references."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.handlers import seed, substitute, trace
from scipy.stats import multivariate_normal, norm

from ppl_dgp.collapse import collapse
from ppl_dgp.elbo import elbo_terms
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.infer import NUTS
from ppl_dgp.layers import Hyper
from ppl_dgp.models.dgp import dgp_regression, init_dgp
from ppl_dgp.outputs import LMC, lmc_moments
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import regression_metrics
from ppl_dgp.predictive import predict, predict_distribution

N, M, P = 9, 4, 3
X = np.linspace(-2.0, 2.0, N)[:, None]
Y = np.stack([np.sin(2 * X[:, 0]), np.cos(X[:, 0]), X[:, 0] ** 2 - 1], axis=1)  # [N, P]
S2 = np.array([0.1, 0.2, 0.05])
HYPERS = {"layer0.variance": 1.3, "layer0.lengthscales": np.array([0.7])}


def _q(Q: int, key: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(key)
    S = 0.3 * rng.normal(size=(Q, M, M))
    return {"layer0.q_mu": 0.5 * rng.normal(size=(M, Q)),
            "layer0.q_sqrt": np.tril(S, -1) + 0.5 * np.eye(M)}  # fmt: skip


def _config(num_outputs: int, **kw) -> dict:
    config = init_dgp(X, num_layers=1, num_inducing=M, hyperpriors=False,
                      num_outputs=num_outputs, **kw)  # fmt: skip
    return config


def _terms(model, y, params):
    guide = InducingPointGuide(model)
    elbo_terms(jax.random.key(0), params, model, guide, X, y)  # the guide's set-up call
    return elbo_terms(jax.random.key(1), params, model, guide, X, y)


def test_independent_outputs_are_the_sum_of_single_output_svgps():
    """P outputs sharing a kernel, one noise each: the bound is the sum of P SVGP bounds
    (each output's q(u_p), the single-output program's closed forms)."""
    config = _config(P)
    noise = Hyper(S2, fixed=True)
    model = functools.partial(dgp_regression, layers=config["layers"], noise_variance=noise)
    q = _q(P)
    total = _terms(model, Y, {**q, **HYPERS})
    one = dataclasses.replace(config["layers"][0], num_outputs=1)
    expected = 0.0
    for p in range(P):
        single = functools.partial(dgp_regression, layers=(one,),
                                   noise_variance=Hyper(S2[p], fixed=True))  # fmt: skip
        qp = {"layer0.q_mu": q["layer0.q_mu"][:, p : p + 1],
              "layer0.q_sqrt": q["layer0.q_sqrt"][p : p + 1]}  # fmt: skip
        expected = expected + _terms(single, Y[:, p], {**qp, **HYPERS})["elbo"]
    np.testing.assert_allclose(total["elbo"], expected, rtol=1e-10)


def test_lmc_with_identity_mixing_equals_independent_outputs():
    config = _config(P)
    noise = Hyper(S2, fixed=True)
    indep = functools.partial(dgp_regression, layers=config["layers"], noise_variance=noise)
    lmc = functools.partial(dgp_regression, layers=config["layers"], noise_variance=noise,
                            lmc=LMC(P, W_init=np.eye(P), fixed=True))  # fmt: skip
    q = _q(P)
    a, b = _terms(indep, Y, {**q, **HYPERS}), _terms(lmc, Y, {**q, **HYPERS})
    np.testing.assert_allclose(a["elbo"], b["elbo"], rtol=1e-12)
    # the proper joint (marginalised last layer): independent Normals vs the LMC's MVN
    u = {"layer0.u": np.random.default_rng(4).normal(size=(P, M)), **HYPERS}
    lp = [trace(substitute(seed(m, 0), data=u)).get_trace(X, Y)["y"] for m in (indep, lmc)]
    np.testing.assert_allclose(lp[0]["fn"].log_prob(Y), lp[1]["fn"].log_prob(Y), rtol=1e-12)


def test_lmc_site_is_the_dense_marginal_and_its_bound_the_closed_form():
    Q = 2
    W = np.array([[1.0, 0.5], [-0.3, 2.0], [0.7, 0.0]])
    config = _config(P, num_latent=Q)
    model = functools.partial(dgp_regression, layers=config["layers"],
                              noise_variance=Hyper(S2, fixed=True),
                              lmc=LMC(P, W_init=W, fixed=True))  # fmt: skip
    q = _q(Q, key=1)
    with collapse(params=q):
        tr = trace(substitute(seed(model, 0), data=HYPERS)).get_trace(X, Y)
    m, v = (np.asarray(tr[f"layer0.{k}"]["value"]) for k in ("f_mean", "f_var"))  # [N, Q]
    fm, fv = m @ W.T, v @ (W**2).T
    by_hand = np.sum(norm.logpdf(Y, fm, np.sqrt(S2)) - fv / (2 * S2), axis=1)
    np.testing.assert_allclose(tr["y.var_exp"]["value"], by_hand, rtol=1e-10)
    # ... and Monte Carlo over q(g) (5 standard errors)
    g = m + np.sqrt(v) * np.random.default_rng(2).standard_normal((100_000, N, Q))
    lp = np.sum(norm.logpdf(Y, g @ W.T, np.sqrt(S2)), axis=-1)
    assert np.all(np.abs(lp.mean(0) - by_hand) < 5 * lp.std(0) / np.sqrt(len(g)))
    # outside collapse: y_n | u ~ N(W m_n, W diag(v_n) W^T + diag(s2)), a dense MVN
    u = {"layer0.u": np.random.default_rng(5).normal(size=(Q, M)), **HYPERS}
    tr = trace(substitute(seed(model, 0), data=u)).get_trace(X, Y)
    with collapse(params={}):  # the same u: p(f | u)'s moments recorded
        moments = trace(substitute(seed(model, 0), data=u)).get_trace(X, Y)
    m, v = (np.asarray(moments[f"layer0.{k}"]["value"]) for k in ("f_mean", "f_var"))
    dense = [multivariate_normal.logpdf(Y[n], W @ m[n], W @ np.diag(v[n]) @ W.T + np.diag(S2))
             for n in range(N)]  # fmt: skip
    np.testing.assert_allclose(tr["y"]["fn"].log_prob(Y), dense, rtol=1e-10)
    _, mv, cov = lmc_moments(jnp.asarray(m), jnp.asarray(v), jnp.asarray(W))
    np.testing.assert_allclose(np.diagonal(cov, axis1=1, axis2=2), mv, rtol=1e-12)


def test_y_of_the_wrong_width_raises_naming_y():
    config = _config(P)
    model = functools.partial(dgp_regression, **config)
    with pytest.raises(ValueError, match=r"^y must have shape \[N, P\] = \[9, 3\].*\(9, 2\)"):
        model(X, Y[:, :2])
    with pytest.raises(ValueError, match=r"^y must have shape \[N, P\] = \[9, 3\].*\(9,\)"):
        model(X, Y[:, 0])
    lmc = functools.partial(dgp_regression, **_config(P, num_latent=2))
    with pytest.raises(ValueError, match=r"^y must have shape \[N, P\] = \[9, 3\].*LMC"):
        lmc(X, Y[:, 0])
    with pytest.raises(ValueError, match=r"LMC.W_init must have shape \[P, Q\] = \[3, 2\]"):
        functools.partial(dgp_regression, layers=config["layers"][:0] + _config(
            P, num_latent=2)["layers"], lmc=LMC(P, W_init=np.ones((3, 3))))(X, Y)  # fmt: skip


def test_multi_output_predictive_per_output():
    """Draws of u give one Gaussian per output and component; the generic mixture agrees."""
    config = _config(P)
    model = functools.partial(dgp_regression, layers=config["layers"],
                              noise_variance=Hyper(S2, fixed=True))  # fmt: skip
    S = 4
    u = np.random.default_rng(6).normal(size=(1, S, P, M))
    with seed(rng_seed=0):
        Z = np.asarray(trace(model).get_trace(X, Y)["layer0.Z"]["value"])
    post = Posterior(draws={"layer0.u": u}, method=NUTS(num_chains=1),
                     params={"layer0.Z": Z, "layer0.variance": np.asarray(1.3),
                             "layer0.lengthscales": np.array([0.7])})  # fmt: skip
    pred = predict(jax.random.key(0), model, post, X, num_samples=S)
    assert pred.means.shape == pred.variances.shape == (S, N, P)
    assert np.all(pred.variances > pred.f_variances)
    np.testing.assert_allclose(
        pred.variances - pred.f_variances, np.broadcast_to(S2, (S, N, P)), rtol=1e-10
    )
    metrics = regression_metrics(pred, Y)
    assert len(metrics["rmse"]) == P and len(metrics["coverage_0.95"]) == P
    mix = predict_distribution(jax.random.key(0), model, post, X, num_samples=S)
    # per datum the joint density of independent outputs is the mixture of products
    lp = norm.logpdf(Y[None], pred.means, np.sqrt(pred.variances)).sum(-1)  # [S, N]
    by_hand = np.log(np.mean(np.exp(lp), axis=0))
    np.testing.assert_allclose(mix.log_density(Y), by_hand, rtol=1e-10)
    np.testing.assert_allclose(
        metrics["rmse"], np.sqrt(np.mean((Y - pred.means.mean(0)) ** 2, 0)), rtol=1e-10
    )


# -- a kernel per latent GP (models/lmc.py) ------------------------------------------------------


def _lmc_config(lengthscales, W):
    from ppl_dgp.models.lmc import init_lmc

    config = init_lmc(X, num_outputs=P, num_latent=len(lengthscales), num_inducing=M,
                      lengthscales=lengthscales, hyperpriors=False, W_init=W)  # fmt: skip
    return {**config, "noise_variance": Hyper(S2, fixed=True),
            "lmc": LMC(P, W_init=W, fixed=True)}  # fmt: skip


def test_lmc_with_equal_kernels_equals_the_shared_kernel_lmc():
    """Q latent GPs with equal kernels and Z: the bound and the joint are dgp_regression's LMC
    on one Q-output layer (split q(u) and u per latent GP)."""
    from ppl_dgp.models.lmc import lmc_regression

    Q = 2
    W = np.array([[1.0, 0.5], [-0.3, 2.0], [0.7, 0.0]])
    config = _lmc_config([0.7, 0.7], W)
    per_latent = functools.partial(lmc_regression, **config)
    shared = functools.partial(dgp_regression, layers=_config(P, num_latent=Q)["layers"],
                               noise_variance=Hyper(S2, fixed=True),
                               lmc=LMC(P, W_init=W, fixed=True))  # fmt: skip
    assert np.array_equal(config["latents"][0].Z, _config(P, num_latent=Q)["layers"][0].Z)
    q = _q(Q, key=3)
    split = {}
    for k in range(Q):
        split[f"latent{k}.q_mu"] = q["layer0.q_mu"][:, k : k + 1]
        split[f"latent{k}.q_sqrt"] = q["layer0.q_sqrt"][k : k + 1]
        split[f"latent{k}.variance"] = HYPERS["layer0.variance"]
    # init_lmc fixes each latent GP's variance at 1: compare at variance 1
    hyp = {"layer0.variance": 1.0, "layer0.lengthscales": np.array([0.7])}
    a = _terms(shared, Y, {**q, **hyp})
    b = _terms(per_latent, Y, {k: v for k, v in split.items() if "variance" not in k})
    np.testing.assert_allclose(b["elbo"], a["elbo"], rtol=1e-12)
    u = np.random.default_rng(6).normal(size=(Q, M))
    lp_shared = trace(substitute(seed(shared, 0), data={"layer0.u": u, **hyp})).get_trace(X, Y)
    data = {f"latent{k}.u": u[k : k + 1] for k in range(Q)}
    lp_per = trace(substitute(seed(per_latent, 0), data=data)).get_trace(X, Y)
    np.testing.assert_allclose(lp_per["y"]["fn"].log_prob(Y), lp_shared["y"]["fn"].log_prob(Y),
                               rtol=1e-12)  # fmt: skip


def test_lmc_latent_gps_have_their_own_kernels():
    """Each latent GP's moments are those of a one-output layer with its own lengthscale, and
    y_n | u is the dense N(W m_n, W diag(v_n) W^T + diag(s2))."""
    from ppl_dgp.models.lmc import lmc_regression

    W = np.array([[1.0, 0.5], [-0.3, 2.0], [0.7, 0.0]])
    lengthscales = [0.3, 2.0]
    model = functools.partial(lmc_regression, **_lmc_config(lengthscales, W))
    u = np.random.default_rng(7).normal(size=(2, M))
    data = {f"latent{k}.u": u[k : k + 1] for k in range(2)}
    tr = trace(substitute(seed(model, 0), data=data)).get_trace(X, Y)
    m, v = [], []
    for k, ls in enumerate(lengthscales):
        one = dataclasses.replace(_config(1)["layers"][0], num_outputs=1)
        single = functools.partial(dgp_regression, layers=(one,), noise_variance=0.1)
        with collapse(params={}):
            mk = trace(substitute(seed(single, 0), data={
                "layer0.u": u[k : k + 1], "layer0.variance": 1.0,
                "layer0.lengthscales": np.array([ls])})).get_trace(X, Y[:, 0])  # fmt: skip
        m.append(np.asarray(mk["layer0.f_mean"]["value"])[:, 0])
        v.append(np.asarray(mk["layer0.f_var"]["value"])[:, 0])
    m, v = np.stack(m, 1), np.stack(v, 1)
    assert not np.allclose(v[:, 0], v[:, 1])  # two kernels, two different conditionals
    dense = [multivariate_normal.logpdf(Y[n], W @ m[n], W @ np.diag(v[n]) @ W.T + np.diag(S2))
             for n in range(N)]  # fmt: skip
    np.testing.assert_allclose(tr["y"]["fn"].log_prob(Y), dense, rtol=1e-10)
    assert tr["latent0.lengthscales"]["value"] != tr["latent1.lengthscales"]["value"]


def test_lmc_bad_input_is_named():
    from ppl_dgp.models.lmc import init_lmc, lmc_regression

    model = functools.partial(lmc_regression, **_lmc_config([0.3, 2.0], np.ones((P, 2))))
    with pytest.raises(ValueError, match=r"^y must have shape \[N, P\] = \[9, 3\].*\(9,\)"):
        model(X, Y[:, 0])
    with pytest.raises(ValueError, match=r"^y must have shape \[N, P\] = \[9, 3\].*\(9, 2\)"):
        model(X, Y[:, :2])
    config = _lmc_config([0.3, 2.0], np.ones((P, 2)))
    wide = (dataclasses.replace(config["latents"][0], num_outputs=2), config["latents"][1])
    with pytest.raises(ValueError, match=r"latents\[0\] must have num_outputs=1.*received 2"):
        lmc_regression(X, Y, **{**config, "latents": wide})
    with pytest.raises(ValueError, match=r"lengthscales must have shape \[Q\] = \[2\].*\(3,\)"):
        init_lmc(X, num_outputs=P, num_latent=2, num_inducing=M, lengthscales=[1.0, 2.0, 3.0])


def test_zoo_multioutput_entry_builds_both_mixings():
    """``dgp_multioutput``: independent outputs have no ``W``; the LMC mixes ``Q`` latent GPs
    into ``P`` outputs through ``W [P, Q]``; ``y`` is ``[N, P]`` either way."""
    from ppl_dgp.models import MODELS

    entry = MODELS["dgp_multioutput"]
    indep = entry.make(X, num_inducing=M, layers=2, num_outputs=P, mixing="independent")
    lmc = entry.make(X, num_inducing=M, layers=2, num_outputs=P, num_latent=2)
    ti = trace(seed(indep, 0)).get_trace(X, Y)
    tl = trace(seed(lmc, 0)).get_trace(X, Y)
    assert "W" not in ti and ti["layer1.u"]["value"].shape == (P, M)
    assert tl["W"]["value"].shape == (P, 2) and tl["layer1.u"]["value"].shape == (2, M)
    assert ti["y"]["value"].shape == tl["y"]["value"].shape == (N, P)
    assert ti["noise_variance"]["value"].shape == (P,)
    with pytest.raises(ValueError, match=r"num_latent is for mixing='lmc'"):
        entry.make(X, mixing="independent", num_latent=2)


@pytest.mark.slow  # compiles the predictive: ~10 s of CPU
def test_zoo_lmc_predictive_is_the_sites_marginal_per_output():
    """The zoo LMC's mixture predictive at draws of every global site: per output ``p`` and
    draw, ``N(W m_n, [W diag(v_n) W^T]_pp + s2_p)`` (the dense site's marginals), and the
    metrics come per output."""
    from ppl_dgp.infer import inspect_model
    from ppl_dgp.models import MODELS

    model = MODELS["dgp_multioutput"].make(X, num_inducing=M, layers=1, num_outputs=P)
    sites = inspect_model(jax.random.key(0), model, X, Y)
    S = 3
    trs = [trace(seed(model, s)).get_trace(X, Y) for s in range(S)]
    draws = {k: np.stack([np.asarray(t[k]["value"]) for t in trs])[None]
             for k in sites.global_latent}  # fmt: skip
    params = {k: np.asarray(trs[0][k]["value"]) for k in sites.params}
    post = Posterior(draws=draws, method=NUTS(num_chains=1), params=params)
    pred = predict(jax.random.key(0), model, post, X, num_samples=S)
    assert pred.means.shape == pred.variances.shape == (S, N, P)
    for s in range(S):
        data = {**{k: v[0, s] for k, v in draws.items()}, **params}
        fn = trace(substitute(seed(model, 0), data=data)).get_trace(X, None)["y"]["fn"]
        cov = np.asarray(fn.covariance_matrix)  # [N, P, P]
        np.testing.assert_allclose(pred.means[s], fn.loc, rtol=1e-10)
        np.testing.assert_allclose(pred.variances[s], np.diagonal(cov, axis1=1, axis2=2),
                                   rtol=1e-10)  # fmt: skip
    metrics = regression_metrics(pred, Y)
    assert len(metrics["rmse"]) == len(metrics["mlpd"]) == len(metrics["coverage_0.95"]) == P
