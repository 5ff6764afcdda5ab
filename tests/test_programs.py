"""Program-level tests: the NumPyro DGP/SVGP programs, the inducing guide and the DSVI ELBO.

Peer values come from ``tests/data/`` (GPflow / GPflux, see ``tests/data/PROVENANCE.md``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pytest
from numpyro.handlers import seed, substitute, trace
from numpyro.infer import Trace_ELBO

from ppl_dgp.elbo import DoublyStochasticELBO, elbo_terms
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.infer import NonFiniteLossError, run_svi
from ppl_dgp.layers import Hyper, LayerSpec
from ppl_dgp.mean_functions import Identity, Zero
from ppl_dgp.models.dgp import dgp_regression, init_dgp
from ppl_dgp.models.svgp import init_svgp, svgp_regression
from ppl_dgp.predict import predict_svi

DATA = Path(__file__).parent / "data"


def _load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def _arrays(d: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in d.items() if not isinstance(v, str)}


# -- peer references through the program ---------------------------------------------------


def test_dgp_fixed_eps_matches_gpflux():
    ref = _load("dgp_fixed_eps.json")
    I, O = _arrays(ref["inputs"]), _arrays(ref["outputs"])
    layers = (
        LayerSpec(2, I["Z1"], variance=Hyper(I["var1"]), lengthscales=Hyper(I["ls1"]),
                  mean_function=Identity(), q_sqrt_init=1e-5),
        LayerSpec(1, I["Z2"], variance=Hyper(I["var2"]), lengthscales=Hyper(I["ls2"]),
                  mean_function=Zero()),
    )  # fmt: skip
    model = functools.partial(dgp_regression, layers=layers, noise_variance=Hyper(I["noise"]))
    guide = InducingPointGuide(model)
    params = {
        "layer0.q_mu": I["q_mu1"], "layer0.q_sqrt": I["q_sqrt1"],
        "layer1.q_mu": I["q_mu2"], "layer1.q_sqrt": I["q_sqrt2"],
        "layer0.Z": I["Z1"], "layer1.Z": I["Z2"],
        "layer0.variance": I["var1"], "layer0.lengthscales": I["ls1"],
        "layer1.variance": I["var2"], "layer1.lengthscales": I["ls2"],
        "noise_variance": I["noise"],
    }  # fmt: skip
    params = {k: jnp.asarray(v) for k, v in params.items()}
    X, y = jnp.asarray(I["X"]), jnp.asarray(I["Y"][:, 0])
    per_sample = []
    for s in range(I["eps"].shape[0]):
        g = substitute(guide, data={"layer0.eps": jnp.asarray(I["eps"][s])})
        t = elbo_terms(jax.random.key(s), params, model, g, X, y)
        np.testing.assert_allclose(t["kl"]["layer0"], O["kl1"], rtol=1e-9)
        np.testing.assert_allclose(t["kl"]["layer1"], O["kl2"], rtol=1e-9)
        per_sample.append(float(t["elbo"]))
    np.testing.assert_allclose(per_sample, O["elbo_per_sample"], rtol=1e-9)
    np.testing.assert_allclose(np.mean(per_sample), O["elbo_fixed_eps"], rtol=1e-9)


@pytest.mark.parametrize("case", ["whiten_jitter1e-06", "whiten_jitter0", "nowhiten_jitter1e-06",
                                  "nowhiten_jitter0"])  # fmt: skip
def test_svgp_program_matches_gpflow(case):
    ref = _load("svgp_gpflow.json")
    I, c = _arrays(ref["inputs"]), ref["cases"][case]
    spec = LayerSpec(1, I["Z"], variance=Hyper(I["kernel_variance"]),
                     lengthscales=Hyper(I["lengthscales"]), mean_function=Zero(),
                     whiten=c["whiten"], jitter=c["jitter"])  # fmt: skip
    model = functools.partial(
        svgp_regression, layers=(spec,), noise_variance=Hyper(I["noise_variance"])
    )
    guide = InducingPointGuide(model)
    params = {
        "layer0.q_mu": I["q_mu"], "layer0.q_sqrt": I["q_sqrt"], "layer0.Z": I["Z"],
        "layer0.variance": I["kernel_variance"], "layer0.lengthscales": I["lengthscales"],
        "noise_variance": I["noise_variance"],
    }  # fmt: skip
    params = {k: jnp.asarray(v) for k, v in params.items()}
    X, y = jnp.asarray(I["X"]), jnp.asarray(I["Y"][:, 0])
    t = elbo_terms(jax.random.key(0), params, model, guide, X, y)
    np.testing.assert_allclose(t["elbo"], c["elbo"], rtol=1e-9)
    np.testing.assert_allclose(t["kl"]["layer0"], c["kl"], rtol=1e-9)
    # The predictive of the one-layer program is a single Gaussian: f_mean, f_var + noise.
    pred = predict_svi(jax.random.key(1), model, guide, params, I["Xtest"], num_samples=3)
    np.testing.assert_allclose(pred.means[0], np.asarray(c["f_mean"])[:, 0], rtol=1e-9)
    np.testing.assert_allclose(pred.f_variances[1], np.asarray(c["f_var"])[:, 0], rtol=1e-9)
    np.testing.assert_allclose(pred.variance, np.asarray(c["y_var"])[:, 0], rtol=1e-9)


# -- dense references ------------------------------------------------------------------------


def _toy(N=30, D=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(N, D))
    y = np.sin(2 * X[:, 0]) + 0.1 * rng.standard_normal(N)
    return jnp.asarray(X), jnp.asarray(y)


def test_svgp_with_exact_posterior_at_Z_equal_X_is_the_exact_gp():
    """With Z = X and q(u) = p(u | y) the bound equals log p(y) and the predictive the exact GP."""
    X, y = _toy(N=10)
    N = X.shape[0]
    var, ls, s2 = 1.3, 0.4, 0.05
    spec = LayerSpec(1, X, variance=Hyper(var, fixed=True), lengthscales=Hyper(ls, fixed=True),
                     mean_function=Zero(), whiten=True, jitter=0.0, learn_Z=False)  # fmt: skip
    model = functools.partial(svgp_regression, layers=(spec,), noise_variance=Hyper(s2, fixed=True))
    guide = InducingPointGuide(model)
    Xn = np.asarray(X)
    K = var * np.exp(-0.5 * (Xn - Xn.T) ** 2 / ls**2)
    L = np.linalg.cholesky(K)
    Ky = K + s2 * np.eye(N)
    # Exact posterior p(u | y) = N(K Ky^-1 y, K - K Ky^-1 K), whitened (v = L^-1 u):
    # mean L^T Ky^-1 y and covariance I - L^T Ky^-1 L (stable forms).
    q_mu = (L.T @ np.linalg.solve(Ky, np.asarray(y)))[:, None]
    Sv = np.eye(N) - L.T @ np.linalg.solve(Ky, L)
    q_sqrt = np.linalg.cholesky(0.5 * (Sv + Sv.T))[None]
    params = {"layer0.q_mu": jnp.asarray(q_mu), "layer0.q_sqrt": jnp.asarray(q_sqrt)}
    t = elbo_terms(jax.random.key(0), params, model, guide, X, y)
    sign, logdet = np.linalg.slogdet(Ky)
    log_marglik = -0.5 * (np.asarray(y) @ np.linalg.solve(Ky, np.asarray(y)) + logdet
                          + N * np.log(2 * np.pi))  # fmt: skip
    np.testing.assert_allclose(t["elbo"], log_marglik, rtol=1e-7)
    Xs = np.linspace(-2.5, 2.5, 7)[:, None]
    Ks = var * np.exp(-0.5 * (Xs - Xn.T) ** 2 / ls**2)
    mean_exact = Ks @ np.linalg.solve(Ky, np.asarray(y))
    var_exact = var - np.sum(Ks * np.linalg.solve(Ky, Ks.T).T, axis=1)
    pred = predict_svi(jax.random.key(1), model, guide, params, Xs, num_samples=2)
    np.testing.assert_allclose(pred.mean, mean_exact, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(pred.f_variances[0], var_exact, rtol=1e-5, atol=1e-8)


def test_one_layer_dgp_bound_equals_svgp_bound():
    """A 2-layer DGP whose hidden layer is (almost) the identity has the SVGP's bound."""
    X, y = _toy(D=2)
    rng = np.random.default_rng(1)
    Z = np.asarray(X[:8])
    out = LayerSpec(1, Z, variance=Hyper(1.2), lengthscales=Hyper(np.array([0.8, 1.1])),
                    mean_function=Zero())  # fmt: skip
    hidden = LayerSpec(2, Z, variance=Hyper(1e-14), lengthscales=Hyper(np.ones(2)),
                       mean_function=Identity())  # fmt: skip
    svgp = functools.partial(svgp_regression, layers=(out,), noise_variance=Hyper(0.1))
    dgp = functools.partial(dgp_regression, layers=(hidden, out), noise_variance=Hyper(0.1))
    q_mu = jnp.asarray(rng.standard_normal((8, 1)))
    q_sqrt = jnp.asarray(np.tril(rng.standard_normal((1, 8, 8))) * 0.3 + np.eye(8) * 0.5)
    p_svgp = {"layer0.q_mu": q_mu, "layer0.q_sqrt": q_sqrt}
    p_dgp = {
        "layer0.q_mu": jnp.zeros((8, 2)), "layer0.q_sqrt": jnp.broadcast_to(jnp.eye(8), (2, 8, 8)),
        "layer1.q_mu": q_mu, "layer1.q_sqrt": q_sqrt,
    }  # fmt: skip
    e_svgp = elbo_terms(jax.random.key(0), p_svgp, svgp, InducingPointGuide(svgp), X, y)
    e_dgp = elbo_terms(jax.random.key(0), p_dgp, dgp, InducingPointGuide(dgp), X, y)
    assert abs(float(e_dgp["kl"]["layer0"])) < 1e-10  # q = p in the hidden layer
    np.testing.assert_allclose(e_dgp["elbo"], e_svgp["elbo"], rtol=1e-5)


def test_trace_elbo_estimates_the_same_bound():
    """Sampling u (Trace_ELBO) and integrating it out (DSVI) agree in expectation.

    With the last layer's output sampled (``marginalise_output=False``) Trace_ELBO's
    likelihood term is ``E[log N(y | f, s2)]``, GPflux's; with it marginalised the sampled
    bound is tighter (Jensen), which the second half checks.
    """
    X, y = _toy(N=20, D=1)
    config = init_dgp(X, num_layers=2, num_inducing=5, hyperpriors=False, inner_q_sqrt=0.3)
    model = functools.partial(dgp_regression, marginalise_output=False, **config)
    guide = InducingPointGuide(model)
    params = _init_params(model, guide, X, y)
    rng = np.random.default_rng(0)
    params["layer1.q_mu"] = jnp.asarray(rng.standard_normal((5, 1)))
    params["layer0.q_mu"] = jnp.asarray(0.3 * rng.standard_normal((5, 1)))
    keys = jax.random.split(jax.random.key(0), 4000)
    dsvi = jax.vmap(lambda k: elbo_terms(k, params, model, guide, X, y)["elbo"])(keys)
    tr = jax.vmap(lambda k: -Trace_ELBO().loss(k, params, model, guide, X, y))(keys)
    se = np.sqrt(np.var(dsvi) / len(keys) + np.var(tr) / len(keys))
    assert np.var(dsvi) < np.var(tr)  # the collapsed estimator has lower variance
    assert abs(float(np.mean(dsvi) - np.mean(tr))) < 4 * se

    marginal = functools.partial(dgp_regression, **config)  # the default program
    guide_m = InducingPointGuide(marginal)  # the same parameters; no layer1.eps site
    dsvi_m = jax.vmap(lambda k: elbo_terms(k, params, marginal, guide_m, X, y)["elbo"])(keys)
    tr_m = jax.vmap(lambda k: -Trace_ELBO().loss(k, params, marginal, guide_m, X, y))(keys)
    se_d = np.sqrt((np.var(dsvi) + np.var(dsvi_m)) / len(keys))  # (other keys per site)
    assert abs(float(np.mean(dsvi_m) - np.mean(dsvi))) < 4 * se_d  # SVI's bound: the same
    se_m = np.sqrt(np.var(dsvi) / len(keys) + np.var(tr_m) / len(keys))
    assert float(np.mean(tr_m) - np.mean(dsvi)) > 4 * se_m  # tighter


def _init_params(model, guide, *args):
    from numpyro.infer import SVI

    svi = SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
    return dict(svi.get_params(svi.init(jax.random.key(0), *args)))


def test_minibatch_bound_is_unbiased():
    X, y = _toy(N=24, D=1)
    config = init_svgp(X, num_inducing=6, hyperpriors=False)
    full = functools.partial(svgp_regression, **config)
    mini = functools.partial(svgp_regression, **config, batch_size=6)
    guide = InducingPointGuide(full)
    params = _init_params(full, guide, X, y)
    params["layer0.q_mu"] = jnp.asarray(np.random.default_rng(0).standard_normal((6, 1)))
    e_full = elbo_terms(jax.random.key(0), params, full, guide, X, y)["elbo"]
    mguide = InducingPointGuide(mini)
    keys = jax.random.split(jax.random.key(1), 3000)
    e_mini = jax.vmap(lambda k: elbo_terms(k, params, mini, mguide, X, y)["elbo"])(keys)
    se = np.std(e_mini) / np.sqrt(len(keys))
    assert np.std(e_mini) > 0  # it is a real minibatch estimate
    assert abs(float(np.mean(e_mini) - e_full)) < 4 * se


def test_svi_fit_improves_and_predicts():
    X, y = _toy(N=40)
    config = init_dgp(X, num_layers=2, num_inducing=8)
    model = functools.partial(dgp_regression, **config)
    guide = InducingPointGuide(model)
    res = run_svi(jax.random.key(0), model, guide, X, y, num_steps=300, chunk_size=100,
                  progress=False)  # fmt: skip
    assert res.losses.shape == (300,)
    assert np.mean(res.losses[-50:]) < np.mean(res.losses[:50]) - 10
    pred = predict_svi(jax.random.key(1), model, guide, res.params, X, num_samples=20)
    assert pred.means.shape == (20, 40)
    assert pred.metrics(y)["rmse"] < 0.3  # noise sd is 0.1, signal sd ~0.7
    assert res.compile_seconds > 0 and res.run_seconds > 0


def test_svi_nan_keeps_last_finite_state():
    def model():
        a = numpyro.param("a", 0.0)
        numpyro.factor("f", 10.0 * a + 0.0 * jnp.log1p(-a))  # climbs; NaN once a > 1

    def guide():
        pass

    with pytest.raises(NonFiniteLossError, match="last finite state") as err:
        run_svi(jax.random.key(0), model, guide, optimizer=optax.sgd(0.3), num_steps=200,
                elbo=Trace_ELBO(), chunk_size=50, progress=False)  # fmt: skip
    a = float(err.value.params["a"])
    assert np.isfinite(a) and a < 1.0
    assert np.all(np.isfinite(err.value.losses))


# -- bad input -------------------------------------------------------------------------------


def _model_for(X, **kw):
    config = init_svgp(np.asarray(X[:10]), num_inducing=3)
    return functools.partial(svgp_regression, **config, **kw)


def _run(model, X, y):
    return trace(seed(model, 0)).get_trace(X, y)


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.full((10, 1), np.nan), np.zeros(10), "X contains NaN"),
        (np.zeros((10, 1)), np.r_[np.zeros(9), np.inf], "y contains NaN or inf"),
        (np.zeros((10, 1)), np.zeros(9), r"y must have shape \[N\] = \[10\].*\(9,\)"),
        (np.zeros(10), np.zeros(10), r"X must have shape \[N, D\]; received \(10,\)"),
        (np.zeros((10, 1)), np.zeros((10, 1)), r"y must have shape \[N\] = \[10\]"),
    ],
)
def test_bad_data_is_named(X, y, match):
    model = _model_for(np.linspace(-1.0, 1.0, 10)[:, None])  # a model fine for good data
    with pytest.raises(ValueError, match=match):
        _run(model, X, y)


def test_bad_config_is_named():
    X = np.random.default_rng(0).standard_normal((10, 2))
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, N=10\]; received 11"):
        _run(_model_for(X, batch_size=11), jnp.asarray(X), jnp.zeros(10))
    with pytest.raises(ValueError, match=r"num_inducing \(M=20\) must be <= N=10"):
        init_dgp(X, num_inducing=20)
    with pytest.raises(ValueError, match=r"Z_init must have shape \[M, 2\]"):
        init_dgp(X, Z_init=np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"Hyper: init must be finite and > 0; received -1.0"):
        spec = LayerSpec(1, X[:3], variance=Hyper(-1.0))
        _run(functools.partial(svgp_regression, layers=(spec,)), jnp.asarray(X), jnp.zeros(10))
    with pytest.raises(ValueError, match=r"layer0: input X must have shape \[N, 3\]"):
        spec = LayerSpec(1, np.zeros((3, 3)))
        _run(functools.partial(svgp_regression, layers=(spec,)), jnp.asarray(X), jnp.zeros(10))
    with pytest.raises(ValueError, match="LayerSpec.kernel must be one of"):
        LayerSpec(1, X[:3], kernel="rbf-ish")
    with pytest.raises(ValueError, match="the last layer must have num_outputs=1"):
        spec = LayerSpec(2, X[:3])
        _run(functools.partial(dgp_regression, layers=(spec,)), jnp.asarray(X), jnp.zeros(10))


# -- predictive ------------------------------------------------------------------------------


def test_mixture_quantiles_and_log_density():
    from scipy import stats

    from ppl_dgp.predict import MixturePredictive

    rng = np.random.default_rng(0)
    means = jnp.asarray(rng.standard_normal((3, 4)))
    variances = jnp.asarray(rng.uniform(0.2, 2.0, (3, 4)))
    mix = MixturePredictive(means, variances, variances)
    lo, hi = mix.interval(0.9)
    np.testing.assert_allclose(mix.cdf(lo), 0.05, atol=1e-12)
    np.testing.assert_allclose(mix.cdf(hi), 0.95, atol=1e-12)
    y = jnp.asarray(rng.standard_normal(4))
    dens = np.mean(stats.norm.pdf(np.asarray(y)[None], np.asarray(means), np.sqrt(variances)), 0)
    np.testing.assert_allclose(mix.log_density(y), np.log(dens), rtol=1e-12)
    one = MixturePredictive(means[:1], variances[:1], variances[:1])
    np.testing.assert_allclose(
        one.quantile(0.975), stats.norm.ppf(0.975, means[0], np.sqrt(variances[0])), rtol=1e-10
    )
    second = np.mean(np.asarray(variances) + np.asarray(means) ** 2, 0)
    np.testing.assert_allclose(mix.variance, second - np.mean(np.asarray(means), 0) ** 2)


def test_prediction_compiles_once_per_model():
    from ppl_dgp.predict import _propagate_fn

    X, y = _toy(N=12)
    config = init_svgp(X, num_inducing=4, hyperpriors=False)
    model = functools.partial(svgp_regression, **config)
    guide = InducingPointGuide(model)
    params = _init_params(model, guide, X, y)
    predict_svi(jax.random.key(0), model, guide, params, X, num_samples=5)
    before = _propagate_fn.cache_info()
    pred = predict_svi(jax.random.key(1), model, guide, params, X[:7], num_samples=5)
    after = _propagate_fn.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses
    assert pred.means.shape == (5, 7)


def test_shared_values_equal_per_pass_values():
    """``values_per_pass=False`` (the medians shared by every pass, SVI's predictive) gives the
    passes that broadcasting the medians to ``[S, ...]`` gives: same keys, same noise."""
    from ppl_dgp.predict import propagate_layers

    X, y = _toy(N=20, D=2)
    config = init_dgp(X, num_layers=2, num_inducing=5, inner_q_sqrt=0.3)
    model = functools.partial(dgp_regression, **config)
    guide = InducingPointGuide(model)
    params = _init_params(model, guide, X, y)
    params = {**params, **{k: v + 0.1 for k, v in params.items() if k.endswith("q_mu")}}
    medians = {k: v for k, v in guide.median(params).items() if not k.endswith(".u")}
    S = 6
    per_pass = {k: jnp.broadcast_to(v, (S, *v.shape)) for k, v in medians.items()}
    key = jax.random.key(3)
    a = propagate_layers(key, model, per_pass, params, X, num_samples=S, batch_size=None)
    b = propagate_layers(
        key, model, medians, params, X, num_samples=S, values_per_pass=False, batch_size=None
    )
    assert list(a) == list(b) and any(k.endswith(".f_var") for k in a)
    for k in a:
        assert a[k].shape == b[k].shape, k
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-12, err_msg=k)
    f = a["layer0.f"]
    assert float(jnp.max(jnp.abs(f[0] - f[1]))) > 1e-6  # the passes draw their own noise
    with pytest.raises(ValueError, match="values_per_pass=False.*no leading axis of 6"):
        propagate_layers(key, model, per_pass, params, X, num_samples=S, values_per_pass=False,
                         batch_size=None)  # fmt: skip


def test_epoch_batches_cover_each_epoch_without_replacement():
    from ppl_dgp.infer.minibatch import BatchState, next_batch

    N, B = 23, 5
    state = (jax.random.permutation(jax.random.key(0), N), jnp.asarray(0), jax.random.key(1))
    seen = []
    for _ in range(2 * (N // B)):
        idx, state = next_batch(BatchState(*state), N, B)
        seen.append(np.asarray(idx))
    for epoch in (seen[: N // B], seen[N // B :]):
        flat = np.concatenate(epoch)
        assert len(set(flat.tolist())) == len(flat) == (N // B) * B  # no repeats in an epoch
    assert not np.array_equal(np.concatenate(seen[: N // B]), np.concatenate(seen[N // B :]))


def test_minibatch_svi_runs_with_epoch_batches():
    X, y = _toy(N=40)
    config = init_svgp(X, num_inducing=6)
    model = functools.partial(svgp_regression, **config, batch_size=10)
    guide = InducingPointGuide(model)
    res = run_svi(jax.random.key(0), model, guide, X, y, num_steps=400, progress=False)
    assert np.all(np.isfinite(res.losses))
    assert np.mean(res.losses[-50:]) < np.mean(res.losses[:50])
    full = functools.partial(svgp_regression, **config)
    pred = predict_svi(jax.random.key(1), full, InducingPointGuide(full), res.params, X)
    assert pred.metrics(y)["rmse"] < 0.3


@pytest.mark.parametrize("transform", ["triangular", "softplus"])
def test_q_sqrt_transforms_fit_and_keep_the_bound(transform):
    X, y = _toy(N=30)
    config = init_dgp(X, num_layers=2, num_inducing=6)
    model = functools.partial(dgp_regression, **config)
    guide = InducingPointGuide(model, q_sqrt_transform=transform)
    res = run_svi(jax.random.key(0), model, guide, X, y, num_steps=200, progress=False)
    assert np.all(np.isfinite(res.losses))
    L = np.asarray(res.params["layer0.q_sqrt"])
    if transform == "softplus":  # a valid Cholesky factor: lower, positive diagonal
        assert np.all(np.triu(L, 1) == 0) and np.all(np.diagonal(L, axis1=1, axis2=2) > 0)
    with pytest.raises(ValueError, match="q_sqrt_transform must be"):
        InducingPointGuide(model, q_sqrt_transform="exp")
