"""SGHMC with Havasi et al.'s MW-MCEM hyperparameters (``SGHMC(hyper="mcem")``).

The dense reference: Monte Carlo EM has the fixed points of the marginal posterior
``p(y | theta) p(theta)`` (EM's fixed points are stationary points of the marginal whatever the
missing data's parameterisation). For one GP layer with its output integrated out that marginal
is Gaussian (the FITC form), so the MCEM noise variance must agree with the type-II MAP of the
O(N^3) log marginal likelihood plus the model's LogNormal log prior, found here by SciPy.

The test fails (kept as a strict xfail, an open defect): the MCEM noise variance is 0.045
against a MAP of 0.014 here, and with ``Z = X`` (the exact GP) 0.067 (step 0.01) and 0.036
(step 0.05) against 0.026; there SGHMC's two chains on the 15 whitened inducing values ended
several posterior sds apart on an exactly Gaussian posterior (the diagonal preconditioner does
not undo the correlations of ``K + jitter``), so over-dispersed E-step samples are one
suspect; a lag of the ``u`` chain behind the Adam M-steps is another.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from numpyro.distributions import constraints
from scipy.stats import lognorm, multivariate_normal, norm

from ppl_dgp.infer import SGHMC, fit, make_method
from ppl_dgp.infer.core import initialize
from ppl_dgp.infer.sghmc import hyperparameter_sites, minibatch_log_density
from ppl_dgp.layers import Hyper
from ppl_dgp.models.dgp import dgp_regression, init_dgp
from ppl_dgp.predictive import predict

N = 15


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = np.sort(rng.uniform(-2.0, 2.0, N))[:, None]
    y = np.sin(1.5 * X[:, 0]) + 0.2 * rng.normal(size=N)
    return X, y


@pytest.fixture(scope="module")
def exact_gp(data):
    """One GP layer on ``M = 5`` inducing inputs, the last layer integrated out, so that
    ``p(y | theta) = N(0, Q_nn + diag(K_nn - Q_nn) + s2 I)`` (``Q_nn = K_nm K_mm^-1 K_mn``, the
    FITC marginal) in closed form; a LogNormal(log 0.05, 1) noise prior.

    The kernel is fixed: in the whitened parameterisation (``f = L(theta) u``) EM's steps on
    the kernel variance and lengthscales are slowed by the coupling of ``theta`` and ``u``
    (given ``u`` the M-step can barely move them; two chains of 3,000 steps ended at kernel
    variances 0.36 and 1.68 around a MAP of 0.48), which a cheap test cannot wait out.
    """
    X, _ = data
    Z = np.linspace(-2.0, 2.0, 5)[:, None]
    config = init_dgp(X, num_layers=1, Z_init=Z, noise_variance=0.05)
    spec = dataclasses.replace(config["layers"][0], variance=Hyper(1.0, fixed=True),
                               lengthscales=Hyper(np.full(1, 0.8), fixed=True))  # fmt: skip
    config = {**config, "layers": (spec,)}
    return functools.partial(dgp_regression, **config), config


def _mcem(model, data, num_burnin: int, window: int, **settings):
    method = SGHMC(hyper="mcem", num_burnin=num_burnin, num_samples=20, thinning=5,
                   num_chains=2, window=window, **settings)  # fmt: skip
    return fit(method, jax.random.key(0), model, *data)


@pytest.fixture(scope="module")
def short_fit(data, exact_gp):
    """A few MCEM steps: enough to check where the estimates go, not their value. ``Z`` is
    fitted too (``mcem_params``, the UCI setting), so one compiled fit serves both tests."""
    return _mcem(exact_gp[0], data, num_burnin=20, window=5, mcem_params=True)


def _dense_map(X: np.ndarray, y: np.ndarray, config: dict) -> float:
    """Type-II MAP of the noise variance: argmax over s2 of log N(y | 0, C + s2 I) + log p(s2),
    ``C = Q_nn + diag(K_nn - Q_nn)`` from the model's kernel, inducing inputs and jitter, and
    its LogNormal prior; O(N^3) NumPy and SciPy."""
    spec = config["layers"][0]
    prior = config["noise_variance"].prior
    var, ell = float(spec.variance.init), float(np.ravel(spec.lengthscales.init)[0])
    Z = np.asarray(spec.Z)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return var * np.exp(-0.5 * (a[:, None, 0] - b[None, :, 0]) ** 2 / ell**2)

    Kmm = k(Z, Z) + spec.jitter * np.eye(len(Z))
    Knm = k(X, Z)
    Q = Knm @ np.linalg.solve(Kmm, Knm.T)
    C = Q + np.diag(var - np.diag(Q))

    def neg(log_s2: float) -> float:
        s2 = float(np.exp(log_s2))
        lp = multivariate_normal(np.zeros(len(y)), C + s2 * np.eye(len(y))).logpdf(y)
        return -(lp + lognorm(s=float(prior.scale), scale=np.exp(float(prior.loc))).logpdf(s2))

    res = scipy.optimize.minimize_scalar(neg, bounds=(np.log(1e-4), np.log(10.0)),
                                         method="bounded", options={"xatol": 1e-8})  # fmt: skip
    assert res.success, res.message
    return float(np.exp(res.x))


def test_hyperparameter_sites_are_the_non_inducing_global_sites(data):
    X, y = data
    model = functools.partial(dgp_regression, **init_dgp(X, num_layers=2, num_inducing=5))
    info, sites = initialize(jax.random.key(0), model, jnp.asarray(X), jnp.asarray(y))
    got = hyperparameter_sites(info.model_trace, sites.global_latent)
    assert set(got) == {"layer0.variance", "layer0.lengthscales", "layer1.variance",
                        "layer1.lengthscales", "noise_variance"}  # fmt: skip
    assert set(sites.global_latent) - set(got) == {"layer0.u", "layer1.u"}


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="open defect (issue 15): the MCEM noise variance comes out above the dense type-II "
    "MAP (0.045 against 0.014 here; 0.067 against 0.026 with Z = X), i.e. the E-step's u "
    "are over-dispersed or the u chain lags the M-steps; not resolved",
)
def test_mcem_noise_variance_agrees_with_dense_type2_map(data, exact_gp):
    X, y = data
    ref = _dense_map(X, y, exact_gp[1])
    post = _mcem(exact_gp[0], data, num_burnin=2000, window=50)
    est = np.asarray(post.draws["noise_variance"])  # [2, 20]
    assert np.all(est == est[:, :1])  # a point estimate, fixed after burn-in (Havasi et al.)
    # Adam at lr 0.01 on one window sample per step keeps jittering by a few lr-steps in log
    # space around the fixed point; 0.1 in log (10%) is several times that
    np.testing.assert_allclose(np.log(est[:, 0]), np.log(ref), atol=0.1)
    u = np.asarray(post.draws["layer0.u"])
    assert np.all(np.std(u, axis=1) > 0)  # u is sampled, not optimised


def test_predict_uses_the_mcem_hyperparameters(data, exact_gp, short_fit):
    """The Posterior carries the MCEM values as draws, and predict applies them: the noise
    part of every component's variance is the chain's estimate, and perturbing it moves it."""
    X, _ = data
    model, _ = exact_gp
    Xs = np.linspace(-2.5, 2.5, 7)[:, None]
    pred = predict(jax.random.key(1), model, short_fit, Xs, num_samples=40)
    noise = np.asarray(pred.variances - pred.f_variances)
    fitted = np.asarray(short_fit.draws["noise_variance"])  # [2, 20]
    assert np.all(fitted == fitted[:, :1])  # a point estimate per chain, fixed after burn-in
    chains = fitted[:, 0]
    assert np.all(np.abs(np.log(chains / 0.05)) > 1e-3)  # moved by the M-steps from its init
    assert np.all(np.min(np.abs(noise[..., None] - chains), axis=-1) < 1e-9 * chains.max())
    draws = dict(short_fit.draws)
    draws["noise_variance"] = np.full_like(draws["noise_variance"], 0.37)
    moved = dataclasses.replace(short_fit, draws=draws)
    pred2 = predict(jax.random.key(1), model, moved, Xs, num_samples=40)
    np.testing.assert_allclose(np.asarray(pred2.variances - pred2.f_variances), 0.37,
                               rtol=1e-9)  # fmt: skip
    assert np.all(np.abs(noise - 0.37) > 0.05)  # the fitted values were not 0.37 already


def test_mcem_params_enter_the_log_density(data, exact_gp):
    """``mcem_params=True`` makes the params (``Z``) coordinates of the M-step: the minibatch
    log density then takes them from ``z``. On one GP layer with the output integrated out it
    is, in closed form (whitened ``u``, ``k_n = k(Z, x_n)``, ``L L^T = K_zz + jitter I``),
    ``log N(u | 0, I) + log p(s2) + log s2 + sum_n log N(y_n | k_n^T L^-T u,
    k(x_n, x_n) - |L^-1 k_n|^2 + s2)``, here at inducing inputs other than the model's; and
    with ``expected_output`` the likelihood term is ``log N(y_n | m_n, s2) - v_n / (2 s2)``."""
    X, y = data
    model, config = exact_gp
    spec = config["layers"][0]
    info, sites = initialize(jax.random.key(0), model, jnp.asarray(X), jnp.asarray(y))
    supports = {k: info.model_trace[k]["fn"].support for k in sites.global_latent}
    assert set(sites.params) == {"layer0.Z"}
    log_density = minibatch_log_density(model, sites, supports, jnp.asarray(X), jnp.asarray(y),
                                         None, params={"layer0.Z": constraints.real})  # fmt: skip
    rng = np.random.default_rng(5)
    Z = np.array([[-1.7], [-0.6], [0.1], [0.9], [1.6]])
    u = rng.normal(size=(5, 1))
    s2 = 0.07
    z = {"layer0.u": jnp.asarray(u.T), "noise_variance": jnp.log(s2), "layer0.Z": jnp.asarray(Z)}
    got = float(log_density(z, jax.random.key(1), None))

    var, ell = float(spec.variance.init), float(np.ravel(spec.lengthscales.init)[0])
    k = lambda a, b: var * np.exp(-0.5 * (a[:, None, 0] - b[None, :, 0]) ** 2 / ell**2)  # noqa: E731
    L = np.linalg.cholesky(k(Z, Z) + spec.jitter * np.eye(5))
    A = np.linalg.solve(L, k(Z, X))  # [M, N]
    mean, fvar = A.T @ u[:, 0], var - np.sum(A**2, axis=0)
    prior = config["noise_variance"].prior
    want = (norm.logpdf(u).sum() + lognorm(s=float(prior.scale), scale=np.exp(float(prior.loc)))
            .logpdf(s2) + np.log(s2) + norm.logpdf(y, mean, np.sqrt(fvar + s2)).sum())  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # mcem_objective="expected": E_{N(f | m, v)} log N(y | f, s2) = log N(y | m, s2) - v / (2 s2)
    expected = minibatch_log_density(
        model,
        sites,
        supports,
        jnp.asarray(X),
        jnp.asarray(y),
        None,
        params={"layer0.Z": constraints.real},
        expected_output=True,
    )
    got = float(expected(z, jax.random.key(1), None))
    want += (norm.logpdf(y, mean, np.sqrt(s2)) - 0.5 * fvar / s2).sum() - norm.logpdf(
        y, mean, np.sqrt(fvar + s2)
    ).sum()
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_mcem_params_are_fitted_and_predicted_with(data, exact_gp, short_fit):
    """A fit with ``mcem_params=True`` moves ``Z`` off its initial value, carries it as a
    param (one set for the pooled chains, not a draw), and predict uses it."""
    X, _ = data
    model, config = exact_gp
    Z0 = np.asarray(config["layers"][0].Z)
    post = short_fit
    Z = np.asarray(post.params["layer0.Z"])
    assert Z.shape == Z0.shape and np.all(np.isfinite(Z))
    assert "layer0.Z" not in post.draws
    assert 1e-3 < np.max(np.abs(Z - Z0)) < 0.5  # 20 Adam steps of lr 0.01 at most
    Xs = np.linspace(-2.5, 2.5, 7)[:, None]
    pred = predict(jax.random.key(1), model, post, Xs, num_samples=8)
    back = dataclasses.replace(post, params={**post.params, "layer0.Z": Z0})
    pred0 = predict(jax.random.key(1), model, back, Xs, num_samples=8)
    assert np.max(np.abs(np.asarray(pred.means) - np.asarray(pred0.means))) > 1e-4


def test_mcem_arguments_are_checked(data):
    X, y = data
    with pytest.raises(ValueError, match=r"SGHMC.hyper must be one of \('sample', 'mcem'\); "
                                         r"received 'em'"):  # fmt: skip
        SGHMC(hyper="em")
    with pytest.raises(ValueError, match=r"SGHMC.window"):
        SGHMC(window=0)
    with pytest.raises(ValueError, match=r"SGHMC.hyper_learning_rate must be > 0; received 0"):
        SGHMC(hyper_learning_rate=0)
    with pytest.raises(ValueError, match=r"SGHMC.mcem_params=True .* needs hyper='mcem'; "
                                         r"received hyper='sample'"):  # fmt: skip
        SGHMC(mcem_params=True)
    with pytest.raises(ValueError, match=r"needs pool_chains=True .* received num_chains=2, "
                                         r"pool_chains=False"):  # fmt: skip
        SGHMC(hyper="mcem", mcem_params=True, num_chains=2, pool_chains=False)
    with pytest.raises(ValueError, match=r"SGHMC.mcem_objective must be one of \('marginal', "
                                         r"'expected'\); received 'elbo'"):  # fmt: skip
        SGHMC(mcem_objective="elbo")

    def noise_only(X, y=None):
        import numpyro

        from ppl_dgp.layers import hyper

        s2 = hyper("noise_variance", Hyper(1.0, prior=numpyro.distributions.LogNormal(0.0, 1.0)))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", numpyro.distributions.Normal(0.0, s2**0.5), obs=y)

    with pytest.raises(ValueError, match=r"needs a sampled site .* \['noise_variance'\]"):
        fit(SGHMC(hyper="mcem", num_burnin=2, num_samples=2), jax.random.key(0), noise_only,
            X, y)  # fmt: skip


def test_uci_setting_is_mcem_with_fitted_inducing_inputs():
    """The documented UCI setting builds and is Havasi et al.'s schedule with MW-MCEM fitting
    ``Z`` under the expected output term; the compare preset is not changed by it."""
    method = make_method("sghmc", preset="uci")
    assert (method.hyper, method.mcem_params, method.mcem_objective) == ("mcem", True, "expected")
    assert (method.num_burnin, method.num_samples, method.thinning) == (10000, 100, 50)
    assert method.init_steps == 1000 and SGHMC().init_steps == 0  # warm start: UCI only
    assert not any(k.startswith("mcem_") for k in SGHMC.presets["compare"])
    assert make_method("sghmc", preset="compare").mcem_params is False
    with pytest.raises(ValueError, match=r"sghmc's preset must be one of \(None, 'compare', "
                                         r"'smoke', 'uci'\); received 'fast'"):  # fmt: skip
        make_method("sghmc", preset="fast")
    with pytest.raises(ValueError, match=r"mcem_objective='expected' sets MW-MCEM's M-step "
                                         r"term: it needs hyper='mcem'; received "
                                         r"hyper='sample'"):  # fmt: skip
        SGHMC(hyper="sample", mcem_objective="expected")


def _dense_joint_map(X: np.ndarray, y: np.ndarray, config: dict) -> tuple[np.ndarray, float]:
    """The joint MAP of the whitened ``u`` and the noise variance ``s2`` (constrained space, no
    Jacobian) of the one-layer GP with its output integrated out: argmax of ``log N(u | 0, I) +
    log p(s2) + sum_n log N(y_n | a_n^T u, k_nn - |a_n|^2 + s2)``, ``a_n = L^-1 k(Z, x_n)``,
    ``L L^T = K_zz + jitter I``; NumPy and SciPy's L-BFGS over ``(u, log s2)``."""
    spec = config["layers"][0]
    prior = config["noise_variance"].prior
    var, ell = float(spec.variance.init), float(np.ravel(spec.lengthscales.init)[0])
    Z = np.asarray(spec.Z)
    k = lambda a, b: var * np.exp(-0.5 * (a[:, None, 0] - b[None, :, 0]) ** 2 / ell**2)  # noqa: E731
    L = np.linalg.cholesky(k(Z, Z) + spec.jitter * np.eye(len(Z)))
    A = np.linalg.solve(L, k(Z, X))  # [M, N]
    fvar = var - np.sum(A**2, axis=0)
    log_prior = lognorm(s=float(prior.scale), scale=np.exp(float(prior.loc))).logpdf

    def neg(x: np.ndarray) -> float:
        u, s2 = x[:-1], float(np.exp(x[-1]))
        return -(norm.logpdf(u).sum() + log_prior(s2)
                 + norm.logpdf(y, A.T @ u, np.sqrt(fvar + s2)).sum())  # fmt: skip

    res = scipy.optimize.minimize(neg, np.zeros(len(Z) + 1), method="L-BFGS-B",
                                  options={"ftol": 1e-14, "gtol": 1e-10})  # fmt: skip
    assert res.success, res.message
    return res.x[:-1], float(np.exp(res.x[-1]))


def test_warm_start_reaches_the_dense_joint_map(data, exact_gp):
    """``init_steps``: the chain and MW-MCEM start at the joint MAP of ``(u, s2)``. With one
    burn-in step and a negligible M-step (Adam at 1e-9), the fitted noise variance is the warm
    start's, which must be the dense joint MAP (the layer has no ``eps``: the objective is
    deterministic on the full batch, so Adam converges); without the warm start it is not."""
    X, y = data
    model, config = exact_gp
    u_ref, s2_ref = _dense_joint_map(X, y, config)

    def start(init_steps: int) -> tuple[float, np.ndarray]:
        method = SGHMC(hyper="mcem", num_burnin=1, num_samples=2, thinning=1,
                       hyper_learning_rate=1e-9, init_steps=init_steps,
                       init_learning_rate=0.05)  # fmt: skip
        post = fit(method, jax.random.key(0), model, X, y)
        u = np.asarray(post.draws["layer0.u"])[0, 0].ravel()  # after two SGHMC steps
        return float(np.asarray(post.draws["noise_variance"])[0, 0]), u

    s2, u = start(3000)
    np.testing.assert_allclose(np.log(s2), np.log(s2_ref), atol=1e-3)
    # u took two SGHMC steps (step 0.01) from the warm start, a move far smaller than 0.02;
    # the MAP's coordinates are O(1) away from the initial u = 0
    np.testing.assert_allclose(u, u_ref, atol=0.02)
    assert abs(np.log(start(0)[0]) - np.log(s2_ref)) > 0.1  # the model's initial 0.05 is not it
    with pytest.raises(ValueError, match=r"SGHMC.init_steps must be a positive int; received -1"):
        SGHMC(init_steps=-1)
    with pytest.raises(ValueError, match=r"SGHMC.init_learning_rate must be > 0; received 0"):
        SGHMC(init_learning_rate=0)


def test_a_diverging_warm_start_raises_with_the_last_finite_point(data):
    """A warm start whose loss goes non-finite stops the fit (it would hand NaN to the
    sampler): a FloatingPointError naming init_steps and init_learning_rate, keeping the last
    point whose loss and gradient were finite. Adam's first step at lr 1e3 moves the noise
    scale's log by about 1e3, so exp overflows (or underflows to a zero scale) at step 1; the
    last finite point is then the model's initial one."""
    import numpyro
    import numpyro.distributions as dist

    from ppl_dgp.infer.loop import NonFiniteLossError

    def model(X, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(w * X[:, 0], s), obs=y)

    X, y = data
    method = SGHMC(init_steps=20, init_learning_rate=1e3, num_burnin=1, num_samples=1,
                   thinning=1)  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"SGHMC.init_steps=20 Adam steps at "
                                                 r"SGHMC.init_learning_rate=1000.0\) diverged: "
                                                 r".* at step 1 ") as err:  # fmt: skip
        fit(method, jax.random.key(0), model, X, y)
    assert isinstance(err.value, NonFiniteLossError) and err.value.step == 1
    assert err.value.losses.shape == (1,) and np.isfinite(err.value.losses).all()
    # the start (NumPyro's initial values are drawn in (-2, 2), unconstrained), not the point
    # that one step of about 1e3 reached
    state = err.value.state
    assert set(state) == {"w", "s"}
    assert all(np.isfinite(v) and abs(float(v)) < 2.0 for v in state.values()), state


def _exact_u_posterior(X, y, spec, s2):
    """``p(u | y)`` of one whitened GP layer with the output integrated out and every
    hyperparameter fixed: Gaussian, precision ``P = I + A W A^T``, mean ``P^-1 A W y``,
    ``A = L^-1 K(Z, X)``, ``W = diag(1 / (k_nn - |a_n|^2 + s2))``; NumPy."""
    var, ell = float(spec.variance.init), float(np.ravel(spec.lengthscales.init)[0])
    Z = np.asarray(spec.Z)
    k = lambda a, b: var * np.exp(-0.5 * (a[:, None, 0] - b[None, :, 0]) ** 2 / ell**2)  # noqa: E731
    L = np.linalg.cholesky(k(Z, Z) + spec.jitter * np.eye(len(Z)))
    A = np.linalg.solve(L, k(Z, X))  # [M, N]
    w = 1.0 / (var - np.sum(A**2, axis=0) + s2)
    cov = np.linalg.inv(np.eye(len(Z)) + (A * w) @ A.T)
    return cov @ (A * w) @ y, cov


def test_sghmc_samples_the_exact_gaussian_posterior_of_u(data, exact_gp):
    """Is the scale-adapted integrator's stationary distribution right (no bias from its
    friction, injected noise or preconditioner)? With the noise variance fixed too, the chain's
    one site is ``u`` and its posterior is Gaussian in closed form (:func:`_exact_u_posterior`).
    Full batch (the only error then is the integrator's), step 0.05 (Havasi et al.'s 0.01 gives
    the same agreement with 5x the steps: ``.bench/issue15_sghmc_exact.py``): the draws' mean
    within 4 Monte Carlo standard errors (bulk ESS), their covariance, in the exact posterior's
    whitened coordinates, the identity within the sampling spread of a covariance estimated
    from ``ESS`` draws (extreme eigenvalues ``(1 +- sqrt(M / ESS))^2``), with margin."""
    import arviz as az

    X, y = data
    _, config = exact_gp
    s2 = 0.04
    config = {**config, "noise_variance": Hyper(s2, fixed=True)}
    model = functools.partial(dgp_regression, **config)
    mean, cov = _exact_u_posterior(X, y, config["layers"][0], s2)
    C, S, M = 4, 500, len(mean)
    method = SGHMC(step_size=0.05, num_burnin=500, num_samples=S, thinning=10, num_chains=C)
    post = fit(method, jax.random.key(0), model, X, y)
    assert set(post.draws) == {"layer0.u"}
    u = np.asarray(post.draws["layer0.u"]).reshape(C, S, M)
    ess = np.asarray(az.ess(az.convert_to_dataset({"u": u}), method="bulk")["u"])
    assert ess.min() > 100  # enough for the checks below to mean something
    flat = u.reshape(C * S, M)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(flat.mean(0) - mean) / sd, 4.0 / np.sqrt(ess))
    white = np.linalg.solve(np.linalg.cholesky(cov), (flat - mean).T)  # [M, C S]
    eig = np.linalg.eigvalsh(white @ white.T / (C * S))
    spread = np.sqrt(M / ess.min())
    assert (1 - 2 * spread) ** 2 < eig.min() and eig.max() < (1 + 2 * spread) ** 2, (eig, ess)
    # a sampler, not an optimiser: the spread is the posterior's, not zero
    assert eig.min() > 0.5
