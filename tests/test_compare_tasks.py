"""``compare`` beyond one Gaussian output: classifiers (the reliability diagram) and
multi-output regression (per-output bands), and the errors for a model that does not suit
the data."""

from __future__ import annotations

import numpy as np
import pytest

from ppl_dgp import calibration, diagnostics, report
from ppl_dgp.cli import main
from ppl_dgp.models import MODELS
from ppl_dgp.report.classification import _class_agreement_section
from ppl_dgp.report.data import _load_labels

# Smoke sizes stop the MAPs short of convergence, which they say (tested in test_inference);
# the smoke NUTS is no reference, which the report says (tested below and in test_report).
pytestmark = [
    pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning"),
    pytest.mark.filterwarnings("ignore::ppl_dgp.report.UnreliableReferenceWarning"),
    pytest.mark.filterwarnings("ignore:cholesky. the matrix was not positive definite"),
]


def _labels_csv(path, n=40, labels=None):
    """Two features, binary labels from a noisy linear rule (``labels`` replaces them)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2))
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(int)
    y = y if labels is None else np.asarray(labels)
    rows = [f"{a:.5f},{b:.5f},{c}" for (a, b), c in zip(X, y, strict=True)]
    path.write_text("x1,x2,label\n" + "\n".join(rows) + "\n")
    return path


def _outputs_csv(path, n=30):
    """One input, two outputs (``sin`` and ``cos`` with noise)."""
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(-2, 2, n))
    a, b = np.sin(2 * x) + 0.1 * rng.normal(size=n), np.cos(x) + 0.1 * rng.normal(size=n)
    path.write_text(
        "x,a,b\n"
        + "\n".join(f"{u:.5f},{v:.5f},{w:.5f}" for u, v, w in zip(x, a, b, strict=True))
        + "\n"
    )
    return path


# -- which model suits which data ---------------------------------------------------------------


def test_models_are_listed_by_the_data_they_suit():
    clf = report.classification_models()
    assert {"svgp_classification", "dgp_classification", "bnn_binary"} <= set(clf)
    assert all(MODELS[k].task == "classification" for k in clf)
    assert set(report.compare_models()) == set(report.regression_models()) | set(clf)
    assert report.models_for_data("breast_cancer") == clf
    digits = report.models_for_data("digits")  # ten classes: no one-logit classifier
    assert "svgp_classification" in digits and "bnn_binary" not in digits
    assert "dgp_multioutput" in report.models_for_data("linnerud")
    assert "svgp" not in report.models_for_data("linnerud")
    motorcycle = report.models_for_data("motorcycle")
    assert "dgp" in motorcycle and "dgp_multioutput" not in motorcycle
    assert not set(motorcycle) & set(clf)


@pytest.mark.parametrize(
    ("model", "data", "target", "message"),
    [
        ("svgp_classification", "motorcycle", None,
         "--model 'svgp_classification' is a classifier, but --data 'motorcycle' is a "
         "regression set"),
        ("dgp", "breast_cancer", None,
         "--model 'dgp' is a regression model, but --data 'breast_cancer' is a "
         "classification set"),
        ("bnn_binary", "digits", None,
         "--model 'bnn_binary' is a binary classifier .* --data 'digits' has 10 classes"),
        ("dgp_multioutput", "motorcycle", None,
         "--model 'dgp_multioutput' needs y \\[N, P\\] with P >= 2 outputs, but --data "
         "'motorcycle' has one"),
        ("svgp", "linnerud", None,
         "--model 'svgp' has one output, but --data 'linnerud' has P = 3 outputs"),
        ("svgp_classification", "d.csv", "a,b", "a classifier takes one label column"),
        ("gplvm", "motorcycle", None, "--model 'gplvm' is not a model compare takes"),
    ],
)  # fmt: skip
def test_a_model_that_does_not_suit_the_data_is_refused_by_name(model, data, target, message):
    with pytest.raises(ValueError, match=message):
        report.check_model_data(model, data, target)


def test_the_cli_refuses_a_mismatch_before_any_fit(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--model", "svgp_classification", "--data", "motorcycle",
              "--methods", "svi", "--out", str(tmp_path)])  # fmt: skip
    assert exc.value.code == 2
    assert "is a classifier, but --data 'motorcycle' is a regression set" in str(exc.value)
    capsys.readouterr()
    assert main(["compare", "--list-methods"]) == 0
    listing = capsys.readouterr().out
    assert "  digits: svgp_classification, dgp_classification" in listing
    assert "  linnerud: dgp, dgp_multioutput" in listing


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0.5] + [0, 1] * 19 + [1], r"integer class labels 0, 1, \.\.\., K-1; received 0\.5 "
                                    r"\(data row 1; 1 such rows\)"),
        ([1, 2] * 20, r"an example of each; received the labels \[1, 2\] \(no example of \[0\]\)"),
        ([-1] + [0, 1] * 19 + [0], "received -1 \\(data row 1"),
    ],
)  # fmt: skip
def test_csv_labels_outside_the_class_range_are_named(tmp_path, labels, message):
    path = _labels_csv(tmp_path / "d.csv", labels=labels)
    with pytest.raises(ValueError, match="--target 'label' of .*" + message):
        report.run_compare("svgp_classification", str(path), ["map"], tmp_path / "out",
                           target="label", log=lambda _: None)  # fmt: skip


# -- the reports --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clf")
    path = _labels_csv(tmp / "d.csv")
    out = tmp / "out"
    result = report.run_compare(
        "svgp_classification", str(path), ["svi", "nuts"], out, target="label",
        smoke=True, num_inducing=5, log=lambda _: None,
    )  # fmt: skip
    return result, out


def test_a_classifier_compare_writes_its_metrics_and_the_reliability_diagram(
    classification_run,
):
    result, out = classification_run
    text = (out / "report.md").read_text()
    assert "# Inference comparison: `svgp_classification`" in text
    assert "K = 2 classes" in text and "lengthscales started at the median" in text
    assert "| method | accuracy | NLL | ECE | Brier |" in text
    for name, r in result["methods"].items():
        probs = r["probs"]  # [N_test, K], the rows of the table
        assert probs.shape == (8, 2) and np.allclose(probs.sum(1), 1.0), name
        labels = np.asarray(
            _load_labels(
                str(out.parent / "d.csv"), target="label", features=None, test_fraction=0.2, seed=0
            )[3]
        )
        want = calibration.classification_metrics(probs, labels, num_bins=report.ECE_BINS)
        assert r["test"] == want, name
        row = (f"| {name} | {want['accuracy']:.4f} | {want['nll']:.4f} | {want['ece']:.4f} | "
               f"{want['brier']:.4f} |")  # fmt: skip
        assert row in text, row
        assert int(r["reliability"]["count"].sum()) == 8
    # draws: LOO from the site's log-likelihood (SVI's draws of q(u), NUTS's)
    assert all(r["loo"] is not None for r in result["methods"].values())
    assert "## PSIS-LOO" in text and "not linearised" in text
    # the smoke NUTS fails its checks: no agreement, and the section says why
    assert "## Agreement with NUTS" in text and "**Not computed.**" in text
    assert result["agreement"] == {} and "ppl-dgp reference" not in text
    assert "![reliability.png](reliability.png)" in text
    assert (out / "reliability.png").stat().st_size > 10_000
    dt = diagnostics.load_datatree(out / "svi.nc")
    assert dt["log_likelihood"]["y"].shape[-1] == 32


def test_the_class_agreement_table_when_the_reference_passes(classification_run):
    """Rendering of the gate's other branch: |p - p_NUTS| per method, from the probabilities."""
    result, _ = classification_run
    res = result["methods"]
    check = diagnostics.ReferenceCheck(
        reasons=(), rhat={"a": 1.001}, ess_bulk={"a": 900.0}, divergences=0, num_chains=4,
        num_draws=250,
    )  # fmt: skip
    gap = np.abs(res["svi"]["probs"] - res["nuts"]["probs"])
    agree = {"svi": {"mean_abs": float(gap.mean()), "max_abs": float(gap.max()),
                     "same_class": 1.0}}  # fmt: skip
    text = _class_agreement_section(agree, {"name": "nuts", "check": check, "source": None}, res)
    assert "passes its checks" in text
    assert f"| svi | {gap.mean():.4f} | {gap.max():.4f} | 1.000 |" in text
    assert "| nuts (reference) | 0 | 0 | 1 |" in text


@pytest.mark.filterwarnings("ignore::ppl_dgp.validation.DataScaleWarning")
def test_a_multi_output_compare_writes_per_output_rows_and_bands(tmp_path):
    path = _outputs_csv(tmp_path / "d.csv")
    out = tmp_path / "out"
    result = report.run_compare(
        "dgp_multioutput", str(path), ["svi"], out, target="a,b", features=["x"],
        smoke=True, num_inducing=5, layers=1, log=lambda _: None,
    )  # fmt: skip
    text = (out / "report.md").read_text()
    for name, r in result["methods"].items():
        per = r["test"]["per_output"]
        assert len(per["rmse"]) == len(per["mlpd"]) == 2, name
        # the overall RMSE is the root of the outputs' mean squared errors
        np.testing.assert_allclose(r["test"]["rmse"], np.sqrt(np.mean(np.square(per["rmse"]))))
        for j, o in enumerate(("a", "b")):
            assert f"| {name} | `{o}` | {per['rmse'][j]:.3g} | {per['mlpd'][j]:.3g} |" in text
    assert result["methods"]["svi"]["loo"] is not None  # y [N, P]: one datum per row
    assert "![predictive.png](predictive.png)" in text
    assert (out / "predictive.png").stat().st_size > 20_000


def test_the_per_output_figures_have_a_panel_per_output(tmp_path):
    """Bands on one input (a row per method, a column per output) and, for wider inputs, the
    test points' intervals (a panel per output), titled with the outputs' names."""
    import jax.numpy as jnp

    from ppl_dgp import plotting
    from ppl_dgp.predict import MixturePredictive

    rng = np.random.default_rng(0)
    X = np.sort(rng.uniform(-2, 2, 20))[:, None]
    Y = np.stack([np.sin(X[:, 0]), np.cos(X[:, 0]), X[:, 0]], axis=1)  # [N, 3]
    preds = {m: MixturePredictive(jnp.asarray(Y[None] + 0.1 * rng.normal(size=(4, 20, 3))),
                                  jnp.full((4, 20, 3), 0.05), jnp.full((4, 20, 3), 0.01))
             for m in ("svi", "nuts")}  # fmt: skip
    fig = plotting.plot_output_bands(X, Y, X, preds, tmp_path / "bands.png",
                                     outputs=("a", "b", "c"))  # fmt: skip
    assert [ax.get_title() for ax in fig.axes] == [
        f"{m}: {o}" for m in ("svi", "nuts") for o in ("a", "b", "c")
    ]
    fig = plotting.plot_output_intervals(Y, preds, tmp_path / "intervals.png",
                                         outputs=("a", "b", "c"), max_points=12)  # fmt: skip
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    assert all(len(ax.get_xticks()) == 12 for ax in fig.axes)  # 12 of the 20 points
    for name in ("bands", "intervals"):
        assert (tmp_path / f"{name}.png").stat().st_size > 20_000
