"""The ArviZ adapter: DataTree layout per method, netCDF round trip, log-likelihood, compare."""

from __future__ import annotations

import functools
import warnings

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.stats import norm

from ppl_dgp import diagnostics
from ppl_dgp.infer import HMC, NUTS, SVI, fit
from ppl_dgp.models.dgp import dgp_regression, init_dgp

N, M = 12, 3


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = np.linspace(-2.0, 2.0, N)[:, None]
    return X, np.sin(2.0 * X[:, 0]) + 0.1 * rng.normal(size=N)


METHODS = {
    "svi": SVI(num_steps=100, num_samples=40),
    "nuts": NUTS(num_warmup=30, num_samples=30, num_chains=2, max_tree_depth=4),
    "hmc": HMC(num_warmup=30, num_samples=30, num_chains=2, num_steps=4),
}
ARVIZ_STATS = {
    "svi": set(),
    "nuts": {"diverging", "acceptance_rate", "step_size", "n_steps", "energy", "tree_depth"},
    "hmc": {"diverging", "acceptance_rate", "step_size", "n_steps", "energy"},
}


@pytest.fixture(scope="module")
def dgp_trees():
    X, y = _data()
    model = functools.partial(dgp_regression, **init_dgp(X, num_layers=2, num_inducing=M))
    out = {}
    with warnings.catch_warnings():
        # These short chains (30 warm-up draws) can propose extreme lengthscales whose Kmm needs
        # a larger jitter on some CPUs (their float rounding differs): linalg warns, and
        # pytest's warnings-as-errors would fail the fixture. The trees' layout is under test.
        warnings.filterwarnings("ignore", "cholesky: the matrix was not positive definite",
                                RuntimeWarning)  # fmt: skip
        for i, (name, method) in enumerate(METHODS.items()):
            post = fit(method, jax.random.key(i), model, X, y)
            dt = diagnostics.to_datatree(post, model, X, y, rng_key=jax.random.key(9))
            out[name] = (post, dt)
    return out


@pytest.mark.parametrize("name", list(METHODS))
def test_datatree_has_the_groups_and_named_dims(dgp_trees, name):
    post, dt = dgp_trees[name]
    assert set(dt.children) == {
        "posterior", "posterior_predictive", "log_likelihood", "observed_data",
        "constant_data", "traces" if name == "svi" else "sample_stats",
    }  # fmt: skip
    C, D = post.num_chains, post.num_draws
    assert (C, D) == ((1, 40) if name == "svi" else (2, 30))
    p = dt["posterior"]
    assert p["layer0.u"].dims == ("chain", "draw", "layer0_output", "layer0_inducing")
    assert p["layer1.u"].shape == (C, D, 1, M)
    assert p["layer0.lengthscales"].dims == ("chain", "draw", "layer0_input")
    assert p["noise_variance"].dims == ("chain", "draw")
    np.testing.assert_array_equal(p["layer1.u"].values, post.draws["layer1.u"])
    for group in ("log_likelihood", "posterior_predictive"):
        assert dt[group]["y"].dims == ("chain", "draw", "obs")
        assert dt[group]["y"].shape == (C, D, N)
        assert np.all(np.isfinite(dt[group]["y"].values))
    np.testing.assert_array_equal(dt["observed_data"]["y"].values, _data()[1])
    if name == "svi":
        assert dt["traces"]["loss"].dims == ("loss_step",)
    else:
        assert set(dt["sample_stats"].data_vars) == ARVIZ_STATS[name]
        assert dt["sample_stats"]["diverging"].dims == ("chain", "draw")
    assert dt.attrs["inference_method"] == name
    elpd = diagnostics.loo(dt)
    assert np.asarray(elpd.pareto_k).shape == (N,)
    assert np.isfinite(elpd.elpd)


def test_netcdf_round_trip_is_exact(dgp_trees, tmp_path):
    for name, (_, dt) in dgp_trees.items():
        path = diagnostics.save_datatree(dt, tmp_path / f"{name}.nc")
        back = diagnostics.load_datatree(path)
        assert set(back.children) == set(dt.children)
        assert back.attrs == dt.attrs
        for group in dt.children:
            a, b = dt[group].to_dataset(), back[group].to_dataset()
            assert set(a.data_vars) == set(b.data_vars)
            for v in a.data_vars:
                assert a[v].dims == b[v].dims
                assert a[v].dtype == b[v].dtype, (group, v)
                np.testing.assert_array_equal(a[v].values, b[v].values)


def test_summary_has_hdi_rhat_ess_mcse_for_mcmc(dgp_trees):
    _, dt = dgp_trees["nuts"]
    table = diagnostics.summary(dt, ["noise_variance", "layer1.variance"])
    for col in ("mean", "sd", "hdi94_lb", "hdi94_ub", "ess_bulk", "ess_tail", "r_hat"):
        assert col in table.columns, table.columns
    assert "mcse_mean" in table.columns
    assert len(table) == 2


# -- log-likelihood against a closed form, compare on a misspecified model -------------------


def _poly_model(X, y=None, *, degree=2):
    w = numpyro.sample("w", dist.Normal(0.0, 3.0).expand([degree + 1]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    powers = X[:, :1] ** np.arange(degree + 1)  # [N, degree+1]
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(powers @ w, sigma), obs=y)


def _poly_data(n=60):
    rng = np.random.default_rng(3)
    X = rng.uniform(-2, 2, size=(n, 1))
    y = 0.5 - X[:, 0] + 1.5 * X[:, 0] ** 2 + 0.3 * rng.normal(size=n)
    return X, y


def test_pointwise_log_likelihood_matches_the_closed_form():
    X, y = _poly_data(20)
    post = fit(NUTS(num_warmup=50, num_samples=20, num_chains=1), jax.random.key(1), _poly_model,
               X, y)  # fmt: skip
    ll, y_rep = diagnostics.pointwise_log_likelihood(jax.random.key(2), _poly_model, post, X, y)
    w, s = post.draws["w"], post.draws["sigma"]  # (1, 20, 3), (1, 20)
    mean = np.einsum("cdk,nk->cdn", w, X[:, :1] ** np.arange(3))
    np.testing.assert_allclose(ll, norm.logpdf(y, mean, s[..., None]), rtol=1e-10)
    assert y_rep.shape == (1, 20, 20) and not np.allclose(y_rep, mean)


# -- GP-layer programs: any likelihood, against dense closed forms -------------------------------

#: One unwhitened GP layer, fixed hyperparameters and inducing inputs, no jitter: ``f(x) | u``
#: is the dense ``N(Knm Kmm^-1 u, k(x, x) - Knm Kmm^-1 Kmn)`` below.
_SE_VARIANCE, _SE_LENGTHSCALE = 1.3, 0.8
_Z = np.linspace(-2.0, 2.0, 4)[:, None]
_NOISE = np.array([0.3, 0.5])


def _gp_program(X, y=None, *, likelihood):
    from ppl_dgp.layers import Hyper, LayerSpec, gaussian_likelihood, gp_output_layer
    from ppl_dgp.likelihoods import Bernoulli
    from ppl_dgp.outputs import likelihood_site, multi_gaussian_site

    spec = LayerSpec(
        num_outputs=2 if likelihood == "two_gaussians" else 1, Z=_Z, kernel="se",
        variance=Hyper(_SE_VARIANCE, fixed=True), lengthscales=Hyper(_SE_LENGTHSCALE, fixed=True),
        whiten=False, learn_Z=False, jitter=0.0,
    )  # fmt: skip
    data = numpyro.plate("data", X.shape[0])
    F, F_var = gp_output_layer("layer0", X, spec, plate=data)  # the output marginalised
    if likelihood == "gaussian":
        return gaussian_likelihood("y", F, y, _NOISE[0], plate=data, F_var=F_var)
    if likelihood == "bernoulli":
        return likelihood_site("y", Bernoulli(link="probit"), F, y, plate=data, F_var=F_var)
    return multi_gaussian_site("y", F, y, _NOISE, plate=data, F_var=F_var)


def _dense_conditional(X, u):
    """``(mean [C, D, N, Q], var [N])`` of ``f(X) | u`` for ``u [C, D, Q, M]`` (NumPy)."""

    def k(A, B):
        return _SE_VARIANCE * np.exp(
            -0.5 * ((A[:, None, 0] - B[None, :, 0]) / _SE_LENGTHSCALE) ** 2
        )

    A = np.linalg.solve(k(_Z, _Z), k(_Z, X))  # Kmm^-1 Kmn [M, N]
    mean = np.einsum("cdqm,mn->cdnq", u, A)
    var = _SE_VARIANCE - np.sum(k(_Z, X) * A, axis=0)
    return mean, var


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli", "two_gaussians"])
def test_pointwise_log_likelihood_of_a_gp_layer_matches_the_closed_form(likelihood):
    """One Gaussian output (the moments' closed form), a probit Bernoulli and two Gaussian
    outputs (the observation site's log_prob) against the dense formulas at each draw of u."""
    from ppl_dgp.posterior import Posterior

    rng = np.random.default_rng(4)
    X = np.linspace(-2.3, 2.1, 9)[:, None]  # no input on an inducing input
    Q = 2 if likelihood == "two_gaussians" else 1
    u = rng.normal(size=(2, 3, Q, len(_Z)))  # (chain, draw, Q, M)
    m, v = _dense_conditional(X, u)
    if likelihood == "bernoulli":
        y = (rng.uniform(size=len(X)) < 0.5).astype(np.int32)
        a = m[..., 0] / np.sqrt(1.0 + v)  # p(y = 1 | u) = Phi(m / sqrt(1 + v))
        want = np.where(y == 1, norm.logcdf(a), norm.logcdf(-a))
    else:
        y = rng.normal(size=(len(X), Q))
        want = norm.logpdf(y, m, np.sqrt(v[:, None] + _NOISE[:Q])).sum(-1)
        y = y[:, 0] if Q == 1 else y
    model = functools.partial(_gp_program, likelihood=likelihood)
    post = Posterior(draws={"layer0.u": u}, params={}, method=NUTS())
    ll, y_rep = diagnostics.pointwise_log_likelihood(jax.random.key(0), model, post, X, y)
    np.testing.assert_allclose(ll, want, rtol=1e-10, atol=1e-12)
    assert y_rep.shape == (2, 3, *np.shape(y))
    if likelihood == "gaussian":  # another posterior of the model: the same compiled block
        before = diagnostics._gaussian_block.cache_info()
        other = Posterior(draws={"layer0.u": u[:, ::-1]}, params={}, method=NUTS())
        ll2, _ = diagnostics.pointwise_log_likelihood(jax.random.key(1), model, other, X, y)
        after = diagnostics._gaussian_block.cache_info()
        assert after.hits == before.hits + 1 and after.misses == before.misses
        np.testing.assert_allclose(ll2, want[:, ::-1], rtol=1e-10, atol=1e-12)


def test_compare_ranks_the_misspecified_model_below_the_true_one():
    X, y = _poly_data()
    trees = {}
    for degree in (2, 1):
        model = functools.partial(_poly_model, degree=degree)
        post = fit(NUTS(num_warmup=150, num_samples=150, num_chains=2), jax.random.key(0),
                   model, X, y)  # fmt: skip
        trees[f"degree{degree}"] = diagnostics.to_datatree(post, model, X, y)
    table = diagnostics.compare(trees)
    assert list(table.index) == ["degree2", "degree1"]
    gap = table.loc["degree1", "elpd_diff"]  # ArviZ 1.x: elpd(model) - elpd(best) <= 0
    assert -gap > 4 * table.loc["degree1", "dse"]  # clearly worse, not within noise
    assert table.loc["degree2", "weight"] > 0.9


def test_warnings_flag_disagreeing_chains_and_divergences():
    rng = np.random.default_rng(0)
    from ppl_dgp.posterior import Posterior

    post = Posterior(
        draws={"a": np.stack([rng.normal(size=200), 5 + rng.normal(size=200)])},
        sample_stats={"diverging": np.arange(400).reshape(2, 200) % 100 == 0},
        params={},
        method=NUTS(),
    )
    msgs = diagnostics.diagnostic_warnings(diagnostics.to_datatree(post))
    assert any("R-hat" in m for m in msgs)
    assert any("4 of 400 transitions diverged" in m for m in msgs)
    ok = Posterior(draws={"a": rng.normal(size=(2, 500))}, sample_stats={}, params={},
                   method=NUTS())  # fmt: skip
    assert diagnostics.diagnostic_warnings(diagnostics.to_datatree(ok)) == []


def test_warnings_count_a_nan_pareto_k_apart():
    """A NaN k (PSIS could not fit the tail) is not a good one: it is warned of apart."""
    from types import SimpleNamespace

    from ppl_dgp.posterior import Posterior

    post = Posterior(draws={"a": np.linspace(0.0, 1.0, 50)[None]}, params={}, method=NUTS())
    elpd = SimpleNamespace(pareto_k=np.array([0.2, 0.9, np.nan, 0.1]))
    assert diagnostics.diagnostic_warnings(diagnostics.to_datatree(post), elpd) == [
        "1 of 4 observations have Pareto k > 0.70",
        "1 of 4 observations have Pareto k = NaN (PSIS could not fit the tail: their LOO "
        "cannot be trusted)",
    ]


def test_forest_and_marginal_plots_take_one_method_or_several(dgp_trees, tmp_path):
    names = sorted(dgp_trees)
    sites = ["noise_variance"]
    for chosen in (names[:1], names):
        dts = {k: dgp_trees[k][1] for k in chosen}
        for plot in (diagnostics.plot_forest, diagnostics.plot_marginals):
            path = tmp_path / f"{plot.__name__}_{len(chosen)}.png"
            plot(dts, sites, path)
            assert path.stat().st_size > 5_000, (plot.__name__, chosen)


def test_layout_is_arviz_from_dict_with_named_dims_and_a_traces_group():
    from ppl_dgp.posterior import Posterior

    rng = np.random.default_rng(1)
    C, D = 3, 2  # more chains than draws: a legitimate shape, no convention warning
    post = Posterior(
        draws={
            "layer0.u": rng.normal(size=(C, D, 2, M)),
            "layer0.lengthscales": rng.normal(size=(C, D, 4)),
            "w": rng.normal(size=(C, D, 5, 2)),
        },
        sample_stats={"accept_prob": rng.uniform(size=(C, D)), "num_steps": np.ones((C, D), int)},
        traces={"loss": rng.normal(size=7), "map_loss": rng.normal(size=(7, 3))},
        params={},
        method=NUTS(),
    )
    dt = diagnostics.to_datatree(post)
    assert set(dt.children) == {"posterior", "sample_stats", "traces"}
    p = dt["posterior"]
    assert p["layer0.u"].dims == ("chain", "draw", "layer0_output", "layer0_inducing")
    assert p["layer0.lengthscales"].dims == ("chain", "draw", "layer0_input")
    assert p["w"].dims == ("chain", "draw", "w_dim_0", "w_dim_1")  # ArviZ's default names
    for dim, n in {"chain": C, "draw": D, "layer0_inducing": M, "w_dim_0": 5}.items():
        np.testing.assert_array_equal(p[dim].values, np.arange(n))  # 0-based integer coords
    assert set(dt["sample_stats"].data_vars) == {"acceptance_rate", "n_steps"}
    np.testing.assert_array_equal(dt["sample_stats"]["n_steps"].values, np.ones((C, D)))
    t = dt["traces"]
    assert t["loss"].dims == ("loss_step",)
    assert t["map_loss"].dims == ("map_loss_step", "map_loss_dim_0")
    np.testing.assert_array_equal(t["map_loss"].values, post.traces["map_loss"])
    for group in ("posterior", "sample_stats"):  # ArviZ's own group attributes
        assert dt[group].attrs["creation_library"] == "ArviZ"
        assert list(dt[group].attrs["sample_dims"]) == ["chain", "draw"]
    assert list(dt["traces"].attrs["sample_dims"]) == []
    assert dt.attrs["inference_method"] == "nuts"
    assert dt.attrs["inference_library"] == "ppl_dgp"
    with pytest.raises(ValueError, match="contains '/'"):
        diagnostics.to_datatree(
            Posterior(draws={"mlp/w": np.zeros((1, 2))}, params={}, method=NUTS())
        )


def test_khat_plot_has_a_panel_of_each_methods_pareto_k(dgp_trees, tmp_path):
    elpds = {k: diagnostics.loo(dt) for k, (_, dt) in dgp_trees.items()}
    fig = diagnostics.plot_khat(elpds, tmp_path / "khat.png")
    assert (tmp_path / "khat.png").stat().st_size > 5_000
    panels = {ax.get_title().split(":")[0]: ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == set(elpds)
    for name, ax in panels.items():
        k, good = np.asarray(elpds[name].pareto_k), elpds[name].good_k
        xy = np.concatenate([np.asarray(c.get_offsets()) for c in ax.collections])
        xy = xy[np.argsort(xy[:, 0])]  # (observation, k), the ones above good_k in red
        np.testing.assert_array_equal(xy[:, 0], np.arange(N))
        np.testing.assert_array_equal(xy[:, 1], k)
        assert {float(line.get_ydata()[0]) for line in ax.lines} == {good, 0.7, 1.0}
        assert ax.get_title() == (
            f"{name}: {int(np.sum(k > good))} > good_k, {int(np.sum(k > 0.7))} > 0.7 (of {N})"
        )
    with pytest.raises(ValueError, match="no methods given"):
        diagnostics.plot_khat({})


# -- chains side by side: separate modes, drifting chains, stacking ----------------------------


def _two_chains(shift=0.0, trend=0.0, D=400, seed=0):
    from ppl_dgp.posterior import Posterior

    rng = np.random.default_rng(seed)
    a = (
        rng.normal(size=(2, D))
        + np.array([[0.0], [shift]])
        + np.array([[0.0], [trend]]) * (np.linspace(0, 1, D))
    )
    return Posterior(draws={"a": a, "b": rng.normal(size=(2, D, 2))}, method=NUTS(num_chains=2))


def test_chain_view_tells_separate_modes_from_drifting_chains():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(2, 200, 3))  # a thinned predictive: fewer draws than the sites
    mixing = diagnostics.chain_view(_two_chains(), predictive=pred)
    assert mixing.verdict == "mixing" and mixing.drifting == []
    assert mixing.quantities == ("a", "b[0]", "b[1]", "predictive[0]", "predictive[1]",
                                 "predictive[2]")  # fmt: skip
    assert mixing.means.shape == mixing.within_rhat.shape == (6, 2)
    modes = diagnostics.chain_view(_two_chains(shift=3.0), ["a"])
    assert modes.verdict == "separate modes" and modes.drifting == []
    assert modes.rhat[0] > 1.5 and np.all(modes.within_rhat <= diagnostics.WITHIN_RHAT_MAX)
    np.testing.assert_allclose(modes.means[0], [0.0, 3.0], atol=0.15)  # 4 sd / sqrt(400)
    few = diagnostics.chain_view(_two_chains(shift=0.4), ["a"])  # overlapping, R-hat ~1.03
    assert diagnostics.RHAT_MAX < few.rhat[0] <= diagnostics.SEPARATE_RHAT_MIN
    assert few.verdict == "few draws" and few.drifting == []
    drift = diagnostics.chain_view(_two_chains(trend=4.0), ["a"])
    assert drift.verdict == "not converged" and drift.drifting == [1]
    stuck = _two_chains(shift=3.0)
    stuck.draws["a"][1] = 3.0  # a chain that never moves is not a mode
    assert diagnostics.chain_view(stuck, ["a"]).drifting == [1]


def test_chain_view_names_bad_arguments():
    with pytest.raises(ValueError, match=r"no site\(s\) \['c'\]"):
        diagnostics.chain_view(_two_chains(), ["c"])
    with pytest.raises(ValueError, match=r"2 chains of at least 4 draws; received \(3, 50, 2\)"):
        diagnostics.chain_view(_two_chains(), predictive=np.zeros((3, 50, 2)))
    from ppl_dgp.posterior import Posterior

    one = Posterior(draws={"a": np.zeros((1, 40))}, method=NUTS(num_chains=1))
    with pytest.raises(ValueError, match=r"at least 2 chains of 4 draws; received 1 x 40"):
        diagnostics.chain_view(one)


def test_stacking_of_chains_drops_a_chain_in_a_wrong_mode():
    """Chain 0 holds exact posterior draws of a conjugate regression, chain 1 the same draws
    with the quadratic weight moved far off (a wrong mode): stacking on the chains' PSIS-LOO
    gives the wrong chain weight ~0; two identical chains get equal weights."""
    from ppl_dgp.posterior import Posterior
    from ppl_dgp.stacking import stacking_weights

    X, y = _poly_data()
    powers = X[:, :1] ** np.arange(3)
    # exact posterior of w with sigma fixed at its true value (prior N(0, 3^2) per weight)
    prec = powers.T @ powers / 0.3**2 + np.eye(3) / 9.0
    cov = np.linalg.inv(prec)
    mean = cov @ powers.T @ y / 0.3**2
    rng = np.random.default_rng(4)
    w = rng.multivariate_normal(mean, cov, size=200)
    wrong = w + np.array([0.0, 0.0, -1.5])  # the quadratic term far off: a poor fit
    sigma = np.full((2, 200), 0.3)
    for draws, expect in ((np.stack([w, wrong]), "first"), (np.stack([w, w]), "equal")):
        post = Posterior(draws={"w": draws, "sigma": sigma}, method=NUTS(num_chains=2))
        dt = diagnostics.to_datatree(post, _poly_model, X, y)
        elpd_i, k = diagnostics.loo_per_chain(dt)
        assert elpd_i.shape == k.shape == (2, 60)
        weights = stacking_weights(elpd_i.T)
        if expect == "first":
            assert weights[1] < 1e-3
            assert elpd_i[0].sum() > elpd_i[1].sum() + 100
        else:
            np.testing.assert_allclose(elpd_i[0], elpd_i[1])
            np.testing.assert_allclose(weights, [0.5, 0.5], atol=1e-9)
