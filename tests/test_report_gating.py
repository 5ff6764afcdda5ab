"""The compare report scores methods only against a reference that passes its own checks.

The reference posteriors here are synthetic (the gate is a function of draws and sample
statistics): independent draws around one value pass; chains centred apart, with divergences,
fail. Both are saved in the Posterior format and reach the report through ``reference=PATH``,
so one cheap MAP fit per report is all the fitting these tests do.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from numpyro.handlers import block, seed, trace
from scipy.stats import wasserstein_distance

from ppl_dgp import diagnostics, report
from ppl_dgp.agreement import mixture_wasserstein
from ppl_dgp.datasets import Standardizer, load_regression
from ppl_dgp.infer import NUTS
from ppl_dgp.models import MODELS
from ppl_dgp.posterior import Posterior
from ppl_dgp.reference import write_provenance
from ppl_dgp.report.data import _prepare

MAP = {"map": {"num_steps": 100, "learning_rate": 0.05}}
pytestmark = pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning")


def _csv(path, n=30):
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-2, 2, n))
    y = np.sin(2 * x) + 0.1 * rng.normal(size=n)
    path.write_text("x,y\n" + "\n".join(f"{a:.6f},{b:.6f}" for a, b in zip(x, y, strict=True)))
    return path


def _site_shapes(num_inducing=5):
    X = np.linspace(-1.0, 1.0, 24)[:, None]
    model = MODELS["svgp"].make(X, num_inducing=num_inducing, layers=1)
    with block():
        tr = trace(seed(model, jax.random.key(0))).get_trace(X, np.zeros(24))
    shapes = {
        k: np.shape(v["value"])
        for k, v in tr.items()
        if v["type"] == "sample" and not v["is_observed"] and not v["cond_indep_stack"]
    }
    return shapes, {k: np.asarray(v["value"]) for k, v in tr.items() if v["type"] == "param"}


def _synthetic(shapes, params, *, C=2, D=400, shift=0.0, divergences=0, seed=0):
    """Independent draws (log-normal for positive sites); chain ``c`` moved by ``c * shift``
    (a twentieth of that for the sites other than the noise, the worst one)."""
    rng = np.random.default_rng(seed)
    draws = {}
    for k, shape in shapes.items():
        z = 0.1 * rng.normal(size=(C, D, *shape))
        move = shift * (1.0 if "noise" in k else 0.05)
        z = z + move * np.arange(C).reshape(C, 1, *([1] * len(shape)))
        draws[k] = z if k.endswith(".u") else np.exp(z + (np.log(0.05) if "noise" in k else 0))
    diverging = np.zeros((C, D), dtype=bool)
    diverging.flat[:divergences] = True
    return Posterior(draws=draws, method=NUTS(num_warmup=200, num_chains=C, num_samples=D),
                     params=params,
                     sample_stats={"diverging": diverging})  # fmt: skip


def _provenance(csv):
    """What ``_compare`` fits on: the reference files carry it (else a warning)."""
    return _prepare("svgp", str(csv), target="y", features=None, test_fraction=0.2,
                           seed=0, num_inducing=5, layers=1).provenance  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gating")
    shapes, params = _site_shapes()
    csv = _csv(root / "d.csv")
    prov = _provenance(csv)
    good, _ = _synthetic(shapes, params).save(root / "good")
    bad, _ = _synthetic(shapes, params, D=200, shift=1.0, divergences=7).save(root / "bad")
    for path in (good, bad):
        write_provenance(path, prov)
    return {"root": root, "csv": csv, "good": good, "bad": bad, "prov": prov,
            "shapes": shapes, "params": params}  # fmt: skip


def _compare(setup, reference, out, methods=("map",)):
    return report.run_compare(
        "svgp", str(setup["csv"]), list(methods), setup["root"] / out, target="y", num_inducing=5,
        layers=1, smoke=True, overrides=MAP, reference=reference, figures=False,
        log=lambda _: None,
    )  # fmt: skip


@pytest.fixture(scope="module")
def refused(setup):
    with pytest.warns(report.UnreliableReferenceWarning) as record:
        result = _compare(setup, setup["bad"], "bad", methods=())  # nothing to fit
    return result, [str(w.message) for w in record]


@pytest.fixture(scope="module")
def accepted(setup):
    return _compare(setup, setup["good"], "good")


def test_the_report_refuses_agreement_against_a_non_converged_reference(refused, setup):
    result, messages = refused
    assert result["agreement"] == {}
    check = result["reference_check"]
    assert not check.ok and check.divergences == 7
    text = result["report"].read_text()
    section = text.split("## Agreement with NUTS")[1].split("\n## ")[0]
    assert "**Not computed.**" in section
    assert f"loaded from `{setup['bad']}`" in section
    # which checks failed, the worst values and their sites, and what to run
    assert "R-hat above 1.01 at " in section and "; worst: `noise_variance` " in section
    assert "bulk ESS below 400 at " in section
    assert "E[y | x = " in section  # the predictive at test inputs is among the failures
    assert "7 of 400 transitions diverged" in section
    assert "--methods nuts --num-warmup 1000 --num-samples 1000 --num-chains 4" in section
    assert "--reference svgp_reference/nuts.npz" in section
    assert "`ppl-dgp reference --model svgp --data " in section  # the long run, first
    assert "--reference svgp_reference/svgp-d.npz" in section
    assert "W1 / sd" not in section  # no table
    (message,) = messages
    assert "no agreement with nuts computed" in message
    for reason in check.reasons:
        assert reason in message and reason in section


def test_the_refused_reference_is_shown_chain_by_chain_and_its_chains_stacked(refused, setup):
    """The bad reference's chains are independent draws around two noise variances (each chain
    stationary, the two apart): separate modes, not a drifting chain; stacking weighs them."""
    result, _ = refused
    c = result["chains"]["nuts"]
    view = c["view"]
    assert view.verdict == "separate modes" and view.drifting == []
    i = view.quantities.index("noise_variance")
    assert view.rhat[i] > 1.5  # the chains sit apart
    np.testing.assert_allclose(view.means[i], 0.05 * np.exp([0.005, 1.005]), rtol=0.05)
    assert sum(q.startswith("E[y | x = ") for q in view.quantities) == report.CHAIN_VIEW_INPUTS
    w = c["weights"]
    assert w.shape == (2,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    # the stacking's LOO score is at least that of any fixed weighting, equal ones included
    assert c["loo_stacked"] >= max(c["loo_equal"], *c["loo_chain"]) - 1e-6
    text = result["report"].read_text()
    section = text.split("## Chains of nuts")[1].split("\n## ")[0]
    assert "**The 2 chains disagree** (R-hat up to " in section
    assert "the chains sit in **separate modes**" in section
    assert f"| 0 | {w[0]:.3f} | {c['loo_chain'][0]:.1f} |" in section
    assert f"Test MLPD of the stacked predictive {c['test_stacked']:.3f}" in section
    # the chains pooled by their draws (equal chains) are the whole predictive, original units
    _, y_tr, _, y_te, _ = load_regression(str(setup["csv"]), target="y", test_fraction=0.2)
    sy = Standardizer.fit(y_tr)
    whole = result["methods"]["nuts"]["components"].rescale(float(sy.mean), float(sy.std))
    assert c["test_pooled"] == pytest.approx(float(np.mean(whole.log_density(y_te))), rel=1e-9)
    advice = text.split("What to run:")[1]
    assert "each chain is stationary but they sit in separate modes" in advice


def test_the_report_computes_agreement_against_a_converged_reference(accepted, setup):
    check = accepted["reference_check"]
    assert check.ok, check.reasons
    assert len([k for k in check.rhat if k.startswith("E[y")]) >= 5  # predictive inputs
    assert max(check.rhat.values()) <= diagnostics.RHAT_MAX
    assert min(check.ess_bulk.values()) >= diagnostics.ESS_BULK_MIN
    pred = accepted["agreement"]["map"]["predictive"]
    assert {"w1", "w1_max", "ref_mass", "ref_mass_min", "mlpd_gap"} <= set(pred)
    assert 0 < pred["w1"] <= pred["w1_max"] and 0 < pred["ref_mass_min"] <= pred["ref_mass"] < 1
    text = accepted["report"].read_text()
    assert "passes its checks" in text and "| map | `noise_variance` |" in text
    # must-show 2's columns in one row: W1, NUTS mass in the 90% interval, MLPD gap, LOO
    assert (
        f"| map | {pred['w1']:.3f} | {pred['w1_max']:.3f} | {pred['ref_mass']:.2f} | "
        f"{pred['ref_mass_min']:.2f} | {pred['mlpd_gap']:.3f} | "
    ) in text
    assert "| map |" in text and "| n/a |  |  |" in text  # a MAP has no LOO
    ref = accepted["methods"]["nuts"]["loo"]
    k = np.asarray(ref.pareto_k)
    assert (
        f"| {ref.elpd:.1f} ({ref.se:.1f}) | {int(np.sum(k > 0.7))} / {k.size} | "
        f"{int(np.sum(k > ref.good_k))} / {k.size} |"
    ) in text.split("### The predictive against NUTS")[1]
    # chains that agree: one line, no per-chain table
    assert accepted["chains"]["nuts"]["view"].verdict == "mixing"
    section = text.split("## Chains of nuts")[1].split("\n## ")[0]
    assert "The 2 chains agree" in section and "| quantity |" not in section


def test_a_reference_path_round_trips_without_fitting_nuts(accepted, setup):
    loaded = accepted["methods"]["nuts"]
    assert loaded["posterior"] == Posterior.load(setup["good"])
    assert loaded["source"] == f"`{setup['good']}`"
    assert list(accepted["methods"]) == ["nuts", "map"]


def test_a_reference_of_another_model_is_refused_naming_the_site(setup):
    shapes = {**setup["shapes"], "layer0.u": (1, 7)}
    path, _ = _synthetic(shapes, setup["params"], D=5).save(setup["root"] / "other")
    with pytest.raises(ValueError, match=r"site 'layer0\.u' has shape \(1, 7\) per draw, the "
                                         r"model's \(1, 5\)"):  # fmt: skip
        _compare(setup, path, "other")
    with pytest.raises(ValueError, match="no reference posterior at"):
        _compare(setup, setup["root"] / "missing.npz", "missing")


def test_a_reference_fitted_on_other_data_is_refused_and_one_without_provenance_warns(setup):
    """The sites and shapes of a reference say nothing of the data it was fitted on: its
    provenance file does (``ppl_dgp.reference``), and a mismatch is an error naming it."""
    other = setup["root"] / "other_data.csv"
    other.write_text(setup["csv"].read_text().replace("x,y\n", "x,y\n0.5,3.0\n", 1))
    path, _ = _synthetic(setup["shapes"], setup["params"]).save(setup["root"] / "elsewhere")
    write_provenance(path, _provenance(other))
    want = r"fitted on other data or settings \(data: 'other_data.csv' != 'd.csv'; data_sha256: "
    with pytest.raises(ValueError, match=want):
        _compare(setup, path, "elsewhere")
    bare, _ = _synthetic(setup["shapes"], setup["params"]).save(setup["root"] / "bare")
    with pytest.warns(report.UnverifiedReferenceWarning, match="has no provenance file"):
        result = _compare(setup, bare, "bare")
    assert result["reference_check"].ok


def test_reference_check_names_the_disagreeing_site_and_needs_chains():
    rng = np.random.default_rng(1)
    draws = {"a": rng.normal(size=(2, 500)), "b": rng.normal(size=(2, 500)) + [[0.0], [2.0]]}
    post = Posterior(draws=draws, method=NUTS(num_chains=2))
    check = diagnostics.reference_check(post, predictive=rng.normal(size=(2, 500, 5)))
    assert not check.ok
    assert check.reasons[0].startswith("R-hat above 1.01 at ")
    assert "quantities; worst: `b` " in check.reasons[0]
    one = Posterior(draws={"a": rng.normal(size=(1, 500))}, method=NUTS(num_chains=1))
    assert "R-hat needs at least 2 chains" in " ".join(diagnostics.reference_check(one).reasons)
    few = diagnostics.reference_check(
        Posterior(draws={"a": rng.normal(size=(2, 500))}, method=NUTS(num_chains=2)),
        predictive=rng.normal(size=(2, 500, 3)),
    )
    assert few.reasons == ("the predictive is checked at 3 input(s), fewer than 5",)


def test_mixture_wasserstein_against_scipy_on_samples():
    rng = np.random.default_rng(2)
    S, T, N, n = 40, 25, 3, 400_000
    ma, va = rng.normal(size=(S, N)), rng.uniform(0.05, 0.5, (S, N))
    mb, vb = rng.normal(0.4, 1.5, size=(T, N)), rng.uniform(0.02, 0.3, (T, N))
    w = mixture_wasserstein(ma, va, mb, vb)
    for j in range(N):
        ca, cb = rng.integers(S, size=n), rng.integers(T, size=n)
        a = ma[ca, j] + np.sqrt(va[ca, j]) * rng.normal(size=n)
        b = mb[cb, j] + np.sqrt(vb[cb, j]) * rng.normal(size=n)
        # empirical W1 of n draws: Monte Carlo error of order sd / sqrt(n) ~ 2e-3 here
        assert w[j] == pytest.approx(wasserstein_distance(a, b), abs=1e-2), j


def test_mixture_wasserstein_closed_forms():
    # N(0, 1) and N(0, s^2): W1 = |1 - s| E|Z| = |1 - s| sqrt(2 / pi)
    w = mixture_wasserstein(np.zeros((1, 1)), np.ones((1, 1)), np.zeros((1, 1)), [[0.25]])
    # trapezoid rule on a grid of step h = (smallest sd) / 50: error O(h^2) ~ 1e-4
    assert w[0] == pytest.approx(0.5 * np.sqrt(2 / np.pi), abs=1e-4)
    # a shift of a mixture moves it by the shift; a mixture is 0 from itself
    m, v = np.array([[-1.0], [2.0]]), np.array([[0.3], [0.1]])
    assert mixture_wasserstein(m, v, m + 0.7, v)[0] == pytest.approx(0.7, abs=1e-4)
    assert mixture_wasserstein(m, v, m, v)[0] == 0.0
