"""No silent wrong answers (issue 13): each case here once returned a plausible but wrong
result, or an error that named nothing; each test fails on the code before its fix."""

from __future__ import annotations

import json
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from ppl_dgp.datasets import Standardizer, load_csv
from ppl_dgp.infer import NUTS
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import MixturePredictive

# -- 6: small inputs that used to give numbers ---------------------------------------------------


def test_quantile_outside_0_1_raises_naming_p():
    pred = MixturePredictive(jnp.zeros((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)))
    for p in (1.2, -0.1, 0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="p must be in \\(0, 1\\)"):
            pred.quantile(p)


def test_standardizer_refuses_another_width():
    s = Standardizer.fit(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(ValueError, match="3 columns.*received shape \\(2, 1\\)"):
        s.transform(np.ones((2, 1)))
    with pytest.raises(ValueError, match="3 columns.*received shape \\(2, 4\\)"):
        s.inverse_transform(np.ones((2, 4)))
    assert s.transform(np.ones((2, 3))).shape == (2, 3)
    s1 = Standardizer.fit(np.arange(4.0))  # fitted on [N]: a scalar mean, any shape works
    assert s1.transform(np.ones((2, 1))).shape == (2, 1)


def test_load_csv_refuses_duplicate_column_names(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a,y\n1,2,3,4\n5,6,7,8\n")
    with pytest.raises(ValueError, match="duplicate column name.*'a'"):
        load_csv(path, "y")


# -- 7: saving and loading -------------------------------------------------------------------------


def _post(**changes) -> Posterior:
    fields = dict(
        draws={"w": np.arange(6.0).reshape(1, 6)},
        method=NUTS(num_chains=1, num_samples=np.int64(6), target_accept_prob=np.float32(0.9)),
        timings={"compile_seconds": float("nan"), "run_seconds": np.float64(1.5)},
    )
    return Posterior(**{**fields, **changes})


def test_save_writes_strict_json_with_numbers(tmp_path):
    post = _post()
    npz, sidecar = post.save(tmp_path / "p")
    text = sidecar.read_text()
    meta = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    fields = meta["posterior"]["method"]["fields"]
    assert fields["num_samples"] == 6 and isinstance(fields["num_samples"], int)
    assert isinstance(fields["target_accept_prob"], float)
    assert meta["posterior"]["timings"]["__dict__"]["run_seconds"] == 1.5
    loaded = Posterior.load(npz)
    assert loaded == post and loaded.method.num_samples == 6
    assert np.isnan(loaded.timings["compile_seconds"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.npz"]  # no temp files


def test_a_mismatched_pair_is_refused(tmp_path):
    """A save that died between its two renames left the new npz beside the old JSON."""
    _post().save(tmp_path / "a")
    _post(draws={"w": np.ones((1, 6))}).save(tmp_path / "b")
    (tmp_path / "b.npz").replace(tmp_path / "a.npz")
    with pytest.raises(ValueError, match="a.npz does not belong to .*a.json"):
        Posterior.load(tmp_path / "a")


def test_load_names_the_path_of_a_missing_truncated_or_tampered_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz and .*nothere.json not found"):
        Posterior.load(tmp_path / "nothere")
    npz, sidecar = _post().save(tmp_path / "p")
    good_json = sidecar.read_text()
    sidecar.write_text(good_json[: len(good_json) // 2])
    with pytest.raises(ValueError, match="p.json is not valid JSON"):
        Posterior.load(tmp_path / "p")
    meta = json.loads(good_json)
    del meta["posterior"]["approx"]
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="p.json has no entry for \\['approx'\\]"):
        Posterior.load(tmp_path / "p")
    meta = json.loads(good_json)
    meta["posterior"]["draws"]["__dict__"]["w"]["__array__"] = "draws/v"
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no entry 'draws/v'"):
        Posterior.load(tmp_path / "p")
    sidecar.write_text(good_json)
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="p.npz does not belong to"):
        Posterior.load(tmp_path / "p")
    meta = json.loads(good_json)
    meta["format"], _ = "ppl_dgp.posterior/2", meta.pop("npz_sha256")
    sidecar.write_text(json.dumps(meta))  # the older format has no digest: the npz is read
    with pytest.raises(ValueError, match="p.npz is not a readable npz archive"):
        Posterior.load(tmp_path / "p")
    assert not zipfile.is_zipfile(npz)


# -- 3: a Laplace tune that could not happen ------------------------------------------------------


@pytest.mark.parametrize("tune", ["fixed_point", "grid"])
def test_laplace_tune_on_a_gp_model_is_refused_not_recorded(tune):
    import jax

    from ppl_dgp.infer import Laplace, fit
    from ppl_dgp.models import MODELS

    X = np.linspace(-1.0, 1.0, 12)[:, None]
    y = np.sin(3.0 * X[:, 0])
    model = MODELS["svgp"].make(X, smoke=True)
    # a GP program's linearised Laplace tunes its hyperparameters by the evidence
    # (tune='marglik'); the prior-precision tunings have nothing to tune there
    with pytest.raises(ValueError, match=f"tune='{tune}'.*not available for a GP-layer program"):
        fit(Laplace(tune=tune, num_steps=5, num_samples=2), jax.random.key(0), model, X, y)


# -- 4: the command line checks every argument before any work -------------------------------------


def _cli_args(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    unwritable = str(blocker / "out")  # under a file: no one can create it, root included
    return [
        (["run", "--lr", "-1"], "SVI.learning_rate must be > 0; received -1"),
        (["run", "--steps", "0"], "--steps must be >= 1; received 0"),
        (["run", "--layers", "0"], "--layers must be >= 1; received 0"),
        (["run", "--num-inducing", "500"], "--num-inducing must be <= N = 94"),
        (["run", "--out", unwritable], "--out .* cannot be created"),
        (["bench", "--seeds", "a"], "--seeds must be comma-separated ints"),
        (["bench", "--steps", "0"], "--steps must be >= 1; received 0"),
        (["bench", "laplace", "--lambda", "-1"], "--lambda .* must be > 0"),
        (["compare", "--out", unwritable, "--smoke"], "--out .* cannot be created"),
        (["compare", "--svi-steps", "0"], "--svi-steps must be >= 1; received 0"),
        (["compare", "--test-fraction", "1.5"], "--test-fraction must be in \\(0, 1\\)"),
        (["compare", "--methods", "svi,nut"], "--methods: unknown \\['nut'\\]"),
        (["compare", "--data", "nothere.csv"], "--data 'nothere.csv' is neither"),
    ]


def test_cli_bad_arguments_exit_2_with_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import time

    from ppl_dgp import cli, infer, report
    from ppl_dgp.benchmarks import dgp, laplace

    def no_work(*args, **kwargs):
        pytest.fail("work started before the arguments were checked")

    for mod, name in ((infer, "fit"), (report, "run_compare"), (dgp, "main"), (laplace, "main")):
        monkeypatch.setattr(mod, name, no_work)
    slowest = 0.0
    for argv, message in _cli_args(tmp_path):
        t0 = time.perf_counter()
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        slowest = max(slowest, time.perf_counter() - t0)
        err = capsys.readouterr().err
        assert exc.value.code == 2, argv
        assert err.count("\n") == 1 and err.startswith(f"ppl-dgp {argv[0]}: error: "), err
        assert __import__("re").search(message, err), (argv, err)
    print(f"slowest bad-argument case: {slowest:.2f} s")


# -- 1, 2: a posterior predicted through a model it does not fit ----------------------------------


@pytest.fixture(scope="module")
def one_layer():
    """A 1-layer DGP posterior (NUTS, a few draws) and the data."""
    import jax

    from ppl_dgp.infer import NUTS, fit
    from ppl_dgp.models import MODELS

    X = np.linspace(-1.0, 1.0, 12)[:, None]
    y = np.sin(3.0 * X[:, 0])
    model = MODELS["dgp"].make(X, smoke=True, layers=1)
    method = NUTS(num_warmup=5, num_samples=3, num_chains=1, max_tree_depth=2)
    post = fit(method, jax.random.key(0), model, X, y)
    return X, y, model, post


def test_predict_refuses_a_posterior_of_another_architecture(one_layer):
    import jax

    from ppl_dgp.models import MODELS
    from ppl_dgp.predictive import predict

    X, _, model1, post = one_layer
    model2 = MODELS["dgp"].make(X, smoke=True, layers=2)
    pred = predict(jax.random.key(1), model1, post, X[:3], num_samples=3)  # its own model: fine
    assert pred.means.shape == (3, 3)
    with pytest.raises(ValueError, match="no draws of the model's latent site\\(s\\) \\[.*layer1"):
        predict(jax.random.key(1), model2, post, X[:3], num_samples=3)


def test_predict_refuses_a_loaded_file_with_a_renamed_or_missing_site(one_layer, tmp_path):
    import jax

    from ppl_dgp.predictive import predict

    X, _, model, post = one_layer
    _, sidecar = post.save(tmp_path / "p")
    sidecar.write_text(sidecar.read_text().replace('"layer0.u": {', '"layer0.v": {'))
    renamed = Posterior.load(tmp_path / "p")  # the npz is untouched: the pair still agrees
    assert "layer0.v" in renamed.draws
    with pytest.raises(ValueError, match="\\['layer0.u'\\].*draws of site\\(s\\) \\['layer0.v'\\]"):
        predict(jax.random.key(1), model, renamed, X[:3], num_samples=3)
    no_z = post.replace(params={k: v for k, v in post.params.items() if k != "layer0.Z"})
    with pytest.raises(
        ValueError, match="no value of the model's param site\\(s\\) \\['layer0.Z'\\]"
    ):
        predict(jax.random.key(1), model, no_z, X[:3], num_samples=3)


def test_pointwise_log_likelihood_refuses_a_posterior_without_a_param(one_layer):
    import jax

    from ppl_dgp.diagnostics import pointwise_log_likelihood

    X, y, model, post = one_layer
    no_z = post.replace(params={k: v for k, v in post.params.items() if k != "layer0.Z"})
    with pytest.raises(ValueError, match=r"no value of the model's param site\(s\) \['layer0.Z'\]"):
        pointwise_log_likelihood(jax.random.key(1), model, no_z, X, y)


def test_predict_proba_refuses_a_posterior_without_a_site():
    import jax

    from ppl_dgp.infer import MAP, fit
    from ppl_dgp.models import MODELS
    from ppl_dgp.predictive import predict_proba

    X = np.random.default_rng(0).normal(size=(16, 2))
    y = (X[:, 0] > 0).astype(np.int32)
    model = MODELS["bnn_binary"].make(X, smoke=True)
    post = fit(MAP(num_steps=5), jax.random.key(0), model, X, y)
    assert predict_proba(model, post, X[:2]).shape == (2,)
    name = next(iter(post.draws))
    cut = post.replace(draws={k: v for k, v in post.draws.items() if k != name})
    with pytest.raises(ValueError, match=f"predict_proba: .*\\['{name}'\\]"):
        predict_proba(model, cut, X[:2])


# -- 5: data far from unit scale ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("x_scale", "y_scale", "part"),
    [(1.0, 1e8, "y \\(root mean square"), (1.0, 1e-8, "y \\(root mean square"),
     (1e6, 1.0, "X column 0 \\(root mean square")],
)  # fmt: skip
def test_fit_warns_on_data_far_from_unit_scale(x_scale, y_scale, part, monkeypatch):
    import jax

    from ppl_dgp.infer import MAP, fit
    from ppl_dgp.models import MODELS
    from ppl_dgp.validation import DataScaleWarning

    X = np.linspace(-1.0, 1.0, 12)[:, None]
    y = np.sin(3.0 * X[:, 0])
    model = MODELS["svgp"].make(X * x_scale, smoke=True)
    stub = Posterior(draws={}, method=MAP())
    monkeypatch.setattr(MAP, "run", lambda *a, **k: stub)  # the warning comes before the fit
    with pytest.warns(DataScaleWarning, match=f"{part}.*Standardizer"):
        post = fit(MAP(), jax.random.key(0), model, X * x_scale, y * y_scale)
    assert post.draws == {} and post.model is model


def test_fit_does_not_warn_on_the_bundled_uses(monkeypatch):
    import jax

    from ppl_dgp.datasets import Standardizer, load_bench, load_motorcycle
    from ppl_dgp.infer import MAP, fit
    from ppl_dgp.models import MODELS
    from ppl_dgp.validation import data_scale_issues

    monkeypatch.setattr(MAP, "run", lambda *a, **k: Posterior(draws={}, method=MAP()))
    X_raw, y_raw = load_motorcycle()
    X, y = Standardizer.fit(X_raw).transform(X_raw), Standardizer.fit(y_raw).transform(y_raw)
    fit(MAP(), jax.random.key(0), MODELS["dgp"].make(X, smoke=True), X, y)  # no warning
    moons = load_bench("moons")  # raw coordinates, integer labels
    model = MODELS["bnn_binary"].make(moons["X_train"], smoke=True)
    fit(MAP(), jax.random.key(0), model, moons["X_train"], moons["y_train"])
    assert data_scale_issues(moons["X_train"], moons["y_train"].astype(float)) == []
    assert data_scale_issues(X_raw, None) == []  # motorcycle times in ms


# -- degraded results are reported ---------------------------------------------------------------


def test_every_draw_divergent_warns():
    """HMC with a step far too large for the target: every draw diverges, and fit says so."""
    import jax
    import numpyro
    import numpyro.distributions as dist

    from ppl_dgp.infer import HMC, fit
    from ppl_dgp.infer.mcmc import DivergentChainWarning

    def model(X, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(w * X[:, 0], 0.01), obs=y)

    X = np.linspace(-1.0, 1.0, 8)[:, None]
    method = HMC(num_warmup=2, num_samples=6, num_chains=1, step_size=50.0, num_steps=4,
                 adapt_step_size=False, adapt_mass_matrix=False)  # fmt: skip
    with pytest.warns(DivergentChainWarning, match=r"every one of the 6 draws of chain\(s\) \[0\]"):
        post = fit(method, jax.random.key(0), model, X, 0.5 * X[:, 0])
    assert post.sample_stats["diverging"].all()  # recorded, and now reported


def _noisy_classifier(X, y=None):
    """A logit with per-datum noise: its predictive must average over the noise too."""
    import numpyro
    import numpyro.distributions as dist

    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", X.shape[0]):
        e = numpyro.sample("e", dist.Normal(0.0, 3.0))
        f = numpyro.deterministic("f", (w * X[:, 0] + e)[:, None])
        numpyro.sample("y", dist.Bernoulli(logits=f[:, 0]), obs=y)


def test_predict_proba_draws_fresh_noise_for_every_draw():
    """Every draw runs with its own key (a DGP's inner-layer eps, dropout masks): with 200
    draws at w = 0 the probability is the noise's average, near 1/2; one key for all draws
    (the old behaviour) gave the same logit 200 times, far from 1/2."""
    import jax

    from ppl_dgp.predictive import predict_proba

    post = _post(draws={"w": np.zeros((1, 200))})
    X = np.zeros((50, 1))
    p = np.asarray(predict_proba(_noisy_classifier, post, X, num_samples=200))
    assert p.shape == (50,)
    # the mean of sigmoid(3 z) over 200 draws: sd about 0.4 / sqrt(200) = 0.03 per point
    assert np.all(np.abs(p - 0.5) < 0.15), p
    q = np.asarray(predict_proba(_noisy_classifier, post, X, num_samples=200,
                                 rng_key=jax.random.key(7)))  # fmt: skip
    assert not np.array_equal(p, q)  # the key reaches the noise
