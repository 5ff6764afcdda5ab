"""The inference contract: every method returns a Posterior that predicts and round-trips.

Sizes are smoke sizes (the contract, not the quality of the fit); the conjugate tests check
that each method targets the right posterior against a closed form.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.diagnostics import effective_sample_size

from ppl_dgp.infer import HMC, MAP, NUTS, SGHMC, SVI, DeepEnsemble, Laplace, NonFiniteLossError, fit
from ppl_dgp.infer.svi import GuideApprox
from ppl_dgp.layers import Hyper, LayerSpec
from ppl_dgp.mean_functions import Zero
from ppl_dgp.models.dgp import dgp_regression, init_dgp
from ppl_dgp.models.svgp import init_svgp, svgp_regression
from ppl_dgp.posterior import FORMAT, Posterior
from ppl_dgp.predictive import predict

# Smoke sizes stop the MAPs (MAP, ensembles) short of convergence, which they say: expected here
# (test_unconverged_map_warns checks the warning itself).
pytestmark = pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning")

N, M = 12, 3


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = np.linspace(-2.0, 2.0, N)[:, None]
    y = np.sin(2.0 * X[:, 0]) + 0.1 * rng.normal(size=N)
    return X, y


def _zoo(name: str):
    X, _ = _data()
    if name == "svgp":
        return functools.partial(svgp_regression, **init_svgp(X, num_inducing=M))
    return functools.partial(dgp_regression, **init_dgp(X, num_layers=2, num_inducing=M))


# -- Posterior -------------------------------------------------------------------------------


def _posterior(**changes) -> Posterior:
    rng = np.random.default_rng(1)
    fields = dict(
        draws={
            "layer0.u": rng.normal(size=(2, 5, 1, 3)),
            "noise_variance": rng.gamma(2.0, size=(2, 5)).astype(np.float32),
        },
        sample_stats={
            "diverging": rng.random((2, 5)) < 0.3,
            "num_steps": rng.integers(1, 64, size=(2, 5)),
        },
        params={"layer0.Z": rng.normal(size=(3, 1)), "scalar": np.asarray(0.5)},
        traces={"loss": rng.normal(size=7)},
        method=NUTS(num_chains=2),
        timings={"compile_seconds": 1.25, "run_seconds": 3.5},
    )
    return Posterior(**{**fields, **changes})


def test_posterior_save_load_round_trip_is_exact(tmp_path):
    post = _posterior()
    npz, sidecar = post.save(tmp_path / "run")
    assert (npz.name, sidecar.name) == ("run.npz", "run.json")
    meta = json.loads(sidecar.read_text())
    assert meta["format"] == FORMAT
    assert meta["posterior"]["method"]["__type__"] == "NUTS"
    with np.load(npz, allow_pickle=False) as data:
        assert set(data.files) == {
            "draws/layer0.u", "draws/noise_variance", "sample_stats/diverging",
            "sample_stats/num_steps", "params/layer0.Z", "params/scalar", "traces/loss",
        }  # fmt: skip
    loaded = Posterior.load(tmp_path / "run.npz")
    assert loaded == post
    assert loaded.draws["noise_variance"].dtype == np.float32
    assert loaded.sample_stats["diverging"].dtype == np.bool_
    assert loaded.method == NUTS(num_chains=2) and loaded.name == "nuts"
    assert (loaded.num_chains, loaded.num_draws) == (2, 5)
    assert loaded.flat()["layer0.u"].shape == (10, 1, 3)
    np.testing.assert_array_equal(loaded.flat()["layer0.u"][5], post.draws["layer0.u"][1, 0])


def test_posterior_equality_sees_every_array_and_field():
    post = _posterior()
    u = post.draws["layer0.u"].copy()
    u[1, 4, 0, 2] += 1e-12
    assert _posterior(draws={**post.draws, "layer0.u": u}) != post
    stats = {**post.sample_stats, "num_steps": post.sample_stats["num_steps"].astype(np.int32)}
    assert _posterior(sample_stats=stats) != post  # dtype differs
    assert _posterior(timings={"compile_seconds": 1.25, "run_seconds": 3.0}) == post  # ignored
    assert _posterior(params={"layer0.Z": post.params["layer0.Z"]}) != post
    assert _posterior(method=NUTS(num_chains=3)) != post
    assert _posterior(traces={}) != post


def test_posterior_rejects_inconsistent_draws(tmp_path):
    with pytest.raises(ValueError, match="disagree on \\(chain, draw\\)"):
        _posterior(draws={"a": np.zeros((2, 5)), "b": np.zeros((1, 5))})
    with pytest.raises(ValueError, match="traces"):
        _posterior(sample_stats={"loss": np.zeros((1, 7))})
    with pytest.raises(TypeError, match="method configuration"):
        _posterior(method="nuts")
    post = _posterior()
    _, sidecar = post.save(tmp_path / "run")
    sidecar.write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(ValueError, match="unknown format"):
        Posterior.load(tmp_path / "run")
    # a stored configuration is validated on load: a tampered file is an error, not a silently
    # invalid method
    post.save(tmp_path / "run")
    sidecar.write_text(sidecar.read_text().replace('"num_chains": 2', '"num_chains": -2'))
    with pytest.raises(ValueError, match="NUTS.num_chains must be a positive int; received -2"):
        Posterior.load(tmp_path / "run")


# -- the contract: every method x every zoo model ---------------------------------------------


# -- conjugate recovery: Bayesian linear regression --------------------------------------------

NOISE_SD = 0.5


def _linear_regression(X, y=None):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, NOISE_SD), obs=y)


def _conjugate_problem():
    """Orthogonal design: the exact posterior is Gaussian with a diagonal covariance."""
    n = np.arange(30)
    col0 = np.where(n % 2 == 0, 1.0, -1.0)  # +-, +-, ...
    col1 = np.where(n % 4 < 2, 1.0, -1.0)  # ++--, ...: orthogonal to col0 over 30 rows
    X = np.stack([0.2 * col0, 0.5 * col1], axis=1)  # [30, 2]
    assert abs(X[:, 0] @ X[:, 1]) < 1e-12
    y = X @ np.array([1.5, -0.7]) + NOISE_SD * np.random.default_rng(2).normal(size=30)
    precision = np.eye(2) + X.T @ X / NOISE_SD**2
    cov = np.linalg.inv(precision)
    mean = cov @ X.T @ y / NOISE_SD**2
    return X, y, mean, np.sqrt(np.diag(cov))


@pytest.mark.parametrize(
    "method",
    [
        NUTS(num_warmup=300, num_samples=500, num_chains=2),
        # A fixed trajectory near a multiple of pi (whitened) returns HMC to its start, or its
        # mirror image, on a Gaussian: 8 steps of an adapted size gave ESS ~ 15 here, and 5
        # steps passed or failed with the CPU's rounding (the adapted size sets the length).
        # A fixed size, 3 x 0.5 = 1.5 rad once the mass matrix whitens, is near a quarter
        # turn. This works here because the posterior sds (0.42, 0.18) are near the start's
        # unit mass, so early draws are accepted and the mass adaptation has draws to learn
        # from; on the exact-GP problem below a fixed size starved the adaptation (ESS 2-17).
        HMC(
            num_warmup=300,
            num_samples=500,
            num_chains=2,
            num_steps=3,
            step_size=0.5,
            adapt_step_size=False,
        ),  # fmt: skip
    ],
    ids=["nuts", "hmc"],
)
def test_mcmc_recovers_conjugate_posterior(method):
    X, y, mean, sd = _conjugate_problem()
    post = fit(method, jax.random.key(3), _linear_regression, X, y)
    w = post.draws["w"]  # [chain, draw, 2]
    assert w.shape == (2, 500, 2)
    assert post.sample_stats["diverging"].sum() == 0
    ess = np.asarray(effective_sample_size(w))  # [2]
    assert np.all(ess > 200)
    # Antithetic chains estimate ESS > draws noisily: use at most the number of draws.
    ess = np.minimum(ess, w.shape[0] * w.shape[1])
    # Mean within 4 Monte-Carlo standard errors (sd / sqrt(ESS)) of the closed form.
    mcse = sd / np.sqrt(ess)
    np.testing.assert_array_less(np.abs(w.mean(axis=(0, 1)) - mean), 4 * mcse)
    # Sd within 15%: the sd estimate's relative error is ~1 / sqrt(2 ESS) < 5% at ESS > 200.
    np.testing.assert_allclose(w.std(axis=(0, 1)), sd, rtol=0.15)

    # predict: for a non-GP model each draw gives N(x w, noise^2); the mixture's mean and
    # variance are then x mean_w and x Cov_w x + noise^2 (the closed-form predictive).
    X_new = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pred = predict(jax.random.key(4), _linear_regression, post, X_new, num_samples=1000)
    assert pred.means.shape == (1000, 3)
    np.testing.assert_allclose(pred.variances, NOISE_SD**2)
    pred_sd = np.sqrt(X_new**2 @ sd**2)
    mcse_pred = pred_sd / np.sqrt(ess.min())
    np.testing.assert_array_less(np.abs(np.asarray(pred.mean) - X_new @ mean), 4 * mcse_pred)


def test_svi_recovers_conjugate_posterior():
    """Mean-field ``AutoNormal`` is exact here (diagonal posterior covariance).

    What remains is optimisation noise: the mean within 0.1 posterior sd (plus 4 Monte-Carlo
    errors of the ``S`` draws) and the sd within 10%. The guide starts at sd 0.1, far from the
    true sds (0.41 and 0.18), so a fit that does not learn its scale fails.
    """
    X, y, mean, sd = _conjugate_problem()
    S = 4000
    method = SVI(num_steps=3000, learning_rate=5e-3, num_particles=8, num_samples=S)
    post = fit(method, jax.random.key(5), _linear_regression, X, y)
    assert isinstance(post.approx, GuideApprox) and "w_auto_loc" in post.approx.guide_params
    w = post.draws["w"]
    assert w.shape == (1, S, 2)
    np.testing.assert_array_less(np.abs(w.mean(axis=(0, 1)) - mean), 0.1 * sd + 4 * sd / np.sqrt(S))
    np.testing.assert_allclose(w.std(axis=(0, 1)), sd, rtol=0.10)
    assert post.traces["loss"].shape == (3000,)


def _linear_regression_minibatch(X, y=None, batch_size=None):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
    with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as idx:
        numpyro.sample("y", dist.Normal(X[idx] @ w, NOISE_SD), obs=None if y is None else y[idx])


@pytest.mark.parametrize(
    "method",
    [
        SGHMC(batch_size=10, step_size=0.05, num_burnin=2000, num_samples=1000, thinning=5,
              num_chains=4),
        SGHMC(batch_size=10, step_size=1e-2, friction=0.1, num_integration_steps=10,
              preconditioned=False, num_burnin=2000, num_samples=1000, thinning=5,
              num_chains=4),
    ],
    ids=["scale_adapted", "blackjax"],
)  # fmt: skip
def test_sghmc_recovers_conjugate_posterior(method):
    """Minibatches of 10 of 30 points. SG-MCMC is biased by the discretisation and the gradient
    noise (slightly over-dispersed, ECOSYSTEM.md), so the stated bound is looser than MCMC's:
    the mean within 0.15 posterior sd and the sd within 15%."""
    X, y, mean, sd = _conjugate_problem()
    post = fit(method, jax.random.key(11), _linear_regression_minibatch, X, y)
    w = post.draws["w"]
    assert w.shape == (4, 1000, 2)
    assert np.all(np.isfinite(post.sample_stats["log_density"]))
    np.testing.assert_array_less(np.abs(w.mean(axis=(0, 1)) - mean), 0.15 * sd)
    np.testing.assert_allclose(w.std(axis=(0, 1)), sd, rtol=0.15)


# -- bad input ---------------------------------------------------------------------------------


def _params_only(X, y=None):
    w = numpyro.param("w", jnp.zeros(X.shape[1]))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, 1.0), obs=y)


def _infinite_factor(X, y=None):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
    numpyro.factor("bad_term", -jnp.inf)
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, 1.0), obs=y)


@pytest.mark.parametrize("name", ["dgp", "linear"])
def test_initialize_equals_numpyros_initialize_model(name):
    """``initialize`` (one trace + a compiled value and gradient) gives NumPyro's ModelInfo:
    the same initial point (prior medians drawn with the same key), potential, gradient and
    constrained values."""
    from numpyro.infer.util import initialize_model

    from ppl_dgp.guides import init_to_model_init
    from ppl_dgp.infer import initialize

    if name == "dgp":
        model, (X, y) = _zoo("dgp"), _data()
    else:
        (X, y, _, _), model = _conjugate_problem(), _linear_regression
    X, y = jnp.asarray(X), jnp.asarray(y)
    key = jax.random.key(5)
    ours, _ = initialize(key, model, X, y)
    ref = initialize_model(key, model, init_strategy=init_to_model_init, model_args=(X, y))
    assert set(ours.param_info.z) == set(ref.param_info.z)
    for k, v in ref.param_info.z.items():
        np.testing.assert_allclose(ours.param_info.z[k], v, rtol=1e-12, err_msg=k)
        np.testing.assert_allclose(ours.param_info.z_grad[k], ref.param_info.z_grad[k],
                                   rtol=1e-9, atol=1e-12, err_msg=k)  # fmt: skip
    np.testing.assert_allclose(
        ours.param_info.potential_energy, ref.param_info.potential_energy, rtol=1e-12
    )
    z = jax.tree.map(lambda a: a + 0.01, ref.param_info.z)  # away from the initial point
    np.testing.assert_allclose(ours.potential_fn(z), ref.potential_fn(z), rtol=1e-12)
    a, b = ours.postprocess_fn(z), ref.postprocess_fn(z)
    assert set(a) == set(b)
    for k in b:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, err_msg=k)


def _nan_gradient(X, y=None):
    D = X.shape[1]
    w = numpyro.sample("w", dist.Normal(jnp.zeros(D), 1.0).to_event(1),
                       infer={"init": jnp.zeros(D)})  # fmt: skip
    numpyro.factor("kink", jnp.sqrt(jnp.abs(w[0])))  # finite at w = 0, its gradient is not
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, 1.0), obs=y)


def test_bad_input_gives_clear_errors():
    X, y = _data()
    key = jax.random.key(0)
    nuts = NUTS(num_warmup=5, num_samples=5, num_chains=1)
    with pytest.raises(
        ValueError,
        match=r"NUTS needs at least one latent sample site; the model has only params: \['w'\]",
    ):
        fit(nuts, key, _params_only, X, y)
    with pytest.raises(ValueError, match=r"HMC needs the full data: received batch_size=4"):
        fit(HMC(), key, _zoo("svgp"), X, y, batch_size=4)
    subsampled = functools.partial(_zoo("svgp"), batch_size=4)
    with pytest.raises(ValueError, match=r"NUTS needs the full data: the model subsamples"):
        fit(nuts, key, subsampled, X, y)
    with pytest.raises(
        ValueError, match=r"not finite at the initial values \(at sites \['bad_term'\]"
    ):
        fit(nuts, key, _infinite_factor, X, y)
    with pytest.raises(ValueError, match=r"not finite at the initial values \(in its gradient\)"):
        fit(nuts, key, _nan_gradient, X, y)
    with pytest.raises(ValueError, match=r"y must have shape \[N\] = \[12\]; received \(12, 1\)"):
        fit(nuts, key, _zoo("svgp"), X, y[:, None])
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, N=12\]; received 13"):
        fit(SVI(batch_size=13), key, _zoo("svgp"), X, y)
    with pytest.raises(TypeError, match="fit: unknown method"):
        fit("nuts", key, _zoo("svgp"), X, y)
    with pytest.raises(ValueError, match=r"NUTS.num_chains must be a positive int; received 0"):
        NUTS(num_chains=0)
    with pytest.raises(ValueError, match=r"SVI.hyper must be 'delta' or 'normal'"):
        SVI(hyper="laplace")
    with pytest.raises(ValueError, match=r"SGHMC.friction must be in \(0, 1\]; received 0"):
        SGHMC(friction=0)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, N=12\]; received 20"):
        fit(SGHMC(batch_size=20), key, _zoo("svgp"), X, y)
    with pytest.raises(ValueError, match=r"give the batch size once, as SGHMC.batch_size"):
        fit(SGHMC(), key, _zoo("svgp"), X, y, batch_size=4)
    with pytest.raises(ValueError, match=r"SGHMC needs at least one latent sample site"):
        fit(SGHMC(), key, _params_only, X, y)


def test_svi_guide_with_unknown_site_names_is_an_error():
    X, y = _data()

    def guide(X, y=None):  # "layer0.uu" is a typo for "layer0.u"
        numpyro.sample("layer0.uu", dist.Normal(jnp.zeros((1, M)), 1.0).to_event(2))

    msg = r"SVI.guide samples site\(s\) \['layer0.uu'\] that are not latent sites of the model"
    with pytest.raises(ValueError, match=msg + r"; the model's latent sites are \["):
        fit(SVI(num_steps=5, guide=guide), jax.random.key(0), _zoo("svgp"), X, y)


def test_svi_with_a_user_guide_and_optimizer():
    """A hand-written guide and optax optimiser go through the same contract."""
    X, y, mean, sd = _conjugate_problem()

    def guide(X, y=None):
        loc = numpyro.param("w_loc", jnp.zeros(2))
        scale = numpyro.param("w_scale", 0.1 * jnp.ones(2), constraint=dist.constraints.positive)
        numpyro.sample("w", dist.Normal(loc, scale).to_event(1))

    # a decaying step size ends at the optimum, not in its noise ball
    optimizer = optax.adam(optax.cosine_decay_schedule(2e-2, 3000))
    method = SVI(num_steps=3000, num_particles=8, num_samples=50, guide=guide, optimizer=optimizer)
    post = fit(method, jax.random.key(5), _linear_regression, X, y)
    assert post.method.guide is guide and isinstance(post.approx, GuideApprox)
    assert post.draws["w"].shape == (1, 50, 2)
    # mean-field is exact here (orthogonal design): q's parameters are the posterior's
    np.testing.assert_allclose(post.approx.guide_params["w_loc"], mean, atol=0.05 * sd.min())
    np.testing.assert_allclose(post.approx.guide_params["w_scale"], sd, rtol=0.05)


def _nan_after(X, y=None):
    """A density that becomes NaN once ``w`` leaves [-1, 1] (which SVI pushes it to do)."""
    w = numpyro.sample("w", dist.Normal(0.0, 10.0))
    numpyro.factor("cliff", jnp.where(jnp.abs(w) < 1.0, 0.0, jnp.nan))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(w, 0.1), obs=y)


def test_nan_during_svi_stops_with_the_last_finite_state():
    X, y = _data()
    y = y + 5.0  # the data pull w towards 5, across the cliff at 1
    method = SVI(num_steps=500, learning_rate=0.1)
    with pytest.raises(NonFiniteLossError, match=r"the loss became nan at step \d+") as err:
        fit(method, jax.random.key(0), _nan_after, X, y)
    losses = err.value.losses
    assert 0 < losses.size < 500 and np.all(np.isfinite(losses))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in err.value.params.values())
    assert abs(float(err.value.params["w_auto_loc"])) < 1.0  # the last finite point


# -- conjugate recovery: exact GP regression with Z = X ------------------------------------------

S2, VARIANCE, LENGTHSCALE = 0.1, 1.0, 0.8


def _exact_gp_problem():
    """SVGP with Z = X and fixed hyperparameters: its posterior predictive is the exact GP's."""
    X = np.linspace(-2.0, 2.0, 8)[:, None]
    y = np.sin(2.0 * X[:, 0]) + np.sqrt(S2) * np.random.default_rng(6).normal(size=8)
    spec = LayerSpec(
        1,
        X,
        variance=Hyper(VARIANCE, fixed=True),
        lengthscales=Hyper(LENGTHSCALE, fixed=True),
        mean_function=Zero(),
        learn_Z=False,
    )
    model = functools.partial(svgp_regression, layers=(spec,), noise_variance=Hyper(S2, fixed=True))
    X_new = np.array([[-2.5], [-0.3], [0.9], [3.0]])

    def k(a, b):  # dense reference, O(N^3)
        return VARIANCE * np.exp(-0.5 * (a[:, None, 0] - b[None, :, 0]) ** 2 / LENGTHSCALE**2)

    A = np.linalg.inv(k(X, X) + S2 * np.eye(8))
    mean = k(X_new, X) @ A @ y
    f_var = VARIANCE - np.einsum("ij,jk,ik->i", k(X_new, X), A, k(X_new, X))
    return model, X, y, X_new, mean, f_var + S2


@pytest.mark.parametrize(
    "method",
    [
        NUTS(num_warmup=200, num_samples=300, num_chains=2),
        # HMC's fixed-length trajectories mix slowly here, and how slowly depends on the
        # adapted step size, i.e. on the CPU's float rounding. With 5 steps and 200 warm-up
        # steps the ESS of the squared deviations at x = -0.3 fell to 12.6 for one key after a
        # change of rounding alone, and with 500 warm-up steps one key of six missed the
        # variance by 4.3 standard errors. With 6 steps and 500 warm-up steps six keys gave
        # z-scores of at most 2.6 (mean) and 2.3 (variance), and smallest ESS of squares of
        # 640 to 1410.
        HMC(num_warmup=500, num_samples=1500, num_chains=2, num_steps=6),
    ],
    ids=["nuts", "hmc"],
)
def test_mcmc_predictive_recovers_exact_gp(method):
    model, X, y, X_new, mean, var = _exact_gp_problem()
    post = fit(method, jax.random.key(7), model, X, y)
    assert post.sample_stats["diverging"].sum() == 0
    C, D = method.num_chains, method.num_samples
    pred = predict(jax.random.key(8), model, post, X_new, num_samples=C * D)  # every draw
    assert pred.means.shape == (C * D, 4)
    m = np.asarray(pred.means).reshape(C, D, 4)  # chain-major, as Posterior.flat()
    ess = np.minimum(np.asarray(effective_sample_size(m)), C * D)  # [4]
    assert np.all(ess > 100)
    spread = m.reshape(C * D, 4).var(axis=0)  # Var over the posterior of E[f* | u]
    # Mixture mean within 4 MCSE; mixture variance = E[var | u] (exact: fixed hyperparameters)
    # + Var[E[f* | u]], whose estimate has a relative standard error of ~sqrt(2 / ESS) with the
    # ESS of the squared deviations, not of the means: HMC's draws of a mean can be
    # antithetic (ESS above the draw count) while their squares mix slowly (fixed 5-step
    # trajectories move slowly between energy levels: ESS 43 of 3000 at one input here).
    # Above 32 the bound is below the spread itself, so the check is not vacuous.
    np.testing.assert_array_less(np.abs(np.asarray(pred.mean) - mean), 4 * np.sqrt(spread / ess))
    ess_sq = np.minimum(np.asarray(effective_sample_size((m - m.mean(axis=(0, 1))) ** 2)), C * D)
    assert np.all(ess_sq > 32), ess_sq
    np.testing.assert_array_less(
        np.abs(np.asarray(pred.variance) - var), 4 * np.sqrt(2 / ess_sq) * spread + 1e-6
    )


def test_svi_predictive_recovers_exact_gp():
    """Full-rank q(u) contains the exact posterior, and the one-layer bound is deterministic.

    So SVI is exact up to optimisation error: mean and sd within 0.1% of the predictive sd.
    """
    model, X, y, X_new, mean, var = _exact_gp_problem()
    post = fit(SVI(num_steps=2000, num_samples=10), jax.random.key(9), model, X, y)
    pred = predict(jax.random.key(10), model, post, X_new, num_samples=10)
    sd = np.sqrt(var)
    np.testing.assert_array_less(np.abs(np.asarray(pred.mean) - mean), 1e-3 * sd)
    np.testing.assert_array_less(np.abs(np.sqrt(np.asarray(pred.variance)) - sd), 1e-3 * sd)


def test_sghmc_predictive_recovers_exact_gp():
    """One layer: the minibatch estimator integrates p(f | u) exactly, so only SG-MCMC's own
    bias remains; the bound is looser than NUTS's: mean within 0.1 predictive sd, variance
    within 15%."""
    model, X, y, X_new, mean, var = _exact_gp_problem()
    method = SGHMC(batch_size=4, step_size=0.05, num_burnin=2000, num_samples=500, thinning=5,
                   num_chains=4)  # fmt: skip
    post = fit(method, jax.random.key(12), model, X, y)
    pred = predict(jax.random.key(13), model, post, X_new, num_samples=1000)
    sd = np.sqrt(var)
    np.testing.assert_array_less(np.abs(np.asarray(pred.mean) - mean), 0.1 * sd)
    np.testing.assert_allclose(np.asarray(pred.variance), var, rtol=0.15)


def test_laplace_predictive_recovers_exact_gp():
    """With fixed hyperparameters and Z = X the posterior over the whitened ``u`` is Gaussian,
    so the Laplace approximation (exact Hessian) *is* the posterior: the mixture mean within
    4 Monte-Carlo errors of its draws and the mixture variance within 10%."""

    model, X, y, X_new, mean, var = _exact_gp_problem()
    S = 2000
    method = Laplace(curvature="hessian", num_steps=3000, learning_rate=1e-2, num_samples=S)
    post = fit(method, jax.random.key(14), model, X, y)
    pred = predict(jax.random.key(15), model, post, X_new, num_samples=S)
    sd = np.sqrt(var)
    spread = np.asarray(pred.means).var(axis=0)
    np.testing.assert_array_less(np.abs(np.asarray(pred.mean) - mean), 4 * np.sqrt(spread / S))
    np.testing.assert_allclose(np.sqrt(np.asarray(pred.variance)), sd, rtol=0.05)


def test_unconverged_map_warns_and_a_converged_one_is_exact():
    """MAP on the conjugate problem: the posterior mode is the closed-form mean."""
    from ppl_dgp.infer.map import MapNotConvergedWarning

    X, y, mean, _ = _conjugate_problem()
    with pytest.warns(MapNotConvergedWarning, match="may not be converged"):
        fit(MAP(num_steps=20, learning_rate=0.05), jax.random.key(0), _linear_regression, X, y)
    for optimizer in ("adam", "lbfgs"):
        post = fit(MAP(num_steps=2000, learning_rate=0.05, optimizer=optimizer),
                   jax.random.key(0), _linear_regression, X, y)  # fmt: skip
        assert post.draws["w"].shape == (1, 1, 2)
        np.testing.assert_allclose(post.draws["w"][0, 0], mean, atol=1e-6)
        assert post.traces["map_loss"].shape == (2000,)


def test_deep_ensemble_members_converge_to_the_unique_mode_from_different_starts():
    """A log-concave posterior has one mode: every member ends there, from distinct starts."""
    X, y, mean, _ = _conjugate_problem()
    method = DeepEnsemble(num_members=4, num_steps=2000, learning_rate=0.05, init_scale=2.0)
    post = fit(method, jax.random.key(1), _linear_regression, X, y)
    w = post.draws["w"]  # (1, K, 2)
    assert w.shape == (1, 4, 2)
    np.testing.assert_allclose(w[0], np.broadcast_to(mean, (4, 2)), atol=1e-6)
    losses = post.traces["map_loss"]  # [steps, K]: the members started apart
    assert losses.shape == (2000, 4) and np.unique(np.round(losses[0], 6)).size == 4


def test_timings_count_compile_spans_inside_the_fit_only():
    """JAX stamps compile spans with ``time.time()``: a span that opened before the fit (or a
    clock that jumped, e.g. a machine paused mid-compile) counts only inside the fit's window,
    and compile time never exceeds the wall time (run time never negative)."""
    import time

    from jax import monitoring

    from ppl_dgp.infer.core import timed

    event = "/jax/core/compile/backend_compile_duration"
    before = time.time()
    with timed() as timer:
        now = time.time()
        monitoring.record_event_time_span(event, now - 100.0, now + 0.01)  # opened long ago
        monitoring.record_event_time_span(event, now + 0.01, now + 0.02)
        time.sleep(0.05)
        t = timer.timings()
    # the window opened between `before` and `now`: at most that much of the old span counts
    assert 0.02 - 1e-9 < t["compile_seconds"] <= 0.02 + (now - before) + 1e-9
    assert t["run_seconds"] >= 0.0
    with timed() as timer:  # a span reaching past now (a jumped clock): capped at the wall
        now = time.time()
        monitoring.record_event_time_span(event, now, now + 50.0)
        t = timer.timings()
    assert t["run_seconds"] >= 0.0 and t["compile_seconds"] < 1.0
