"""The compare command's orchestration: the method table, data loading and the written report."""

from __future__ import annotations

import numpy as np
import pytest

from ppl_dgp import diagnostics, report
from ppl_dgp.cli import main
from ppl_dgp.datasets import load_regression


def test_method_registry_resolves_configs_and_rejects_unknown_names():
    from ppl_dgp.infer import METHODS, NUTS, make_method

    assert {"svi", "nuts", "hmc", "sghmc", "laplace", "map", "ensemble"} <= set(METHODS)
    nuts = make_method("nuts", num_warmup=7, num_steps=3)  # num_steps: not a NUTS field
    assert type(nuts) is NUTS
    assert (nuts.num_warmup, nuts.num_chains) == (7, NUTS.presets["compare"]["num_chains"])
    assert make_method("svi", preset="smoke").num_steps == 200
    assert make_method("nuts", preset=None) == NUTS()
    with pytest.raises(ValueError, match="unknown method 'vi'; registered methods: "):
        make_method("vi")


def test_the_cli_and_the_report_default_to_the_same_methods():
    """The CLI keeps its own copy (checked before the report's imports are paid)."""
    from ppl_dgp import cli

    assert cli.DEFAULT_METHODS == report.DEFAULT_METHODS


def test_the_report_refuses_unknown_models_and_methods(tmp_path):
    with pytest.raises(ValueError, match="unknown or unsupported model 'mlp'.*dgp"):
        report.run_compare("mlp", "motorcycle", ["svi"], tmp_path)
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['vi'\]"):
        report.run_compare("dgp", "motorcycle", ["vi"], tmp_path)


def _csv(path, n=30, bad=None):
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-2, 2, n))
    y = np.sin(2 * x) + 0.1 * rng.normal(size=n)
    rows = [f"{a:.6f},{b:.6f},{c:.3f}" for a, b, c in zip(x, y, rng.normal(size=n), strict=True)]
    if bad is not None:
        rows[3] = bad
    path.write_text("x,target,noise\n" + "\n".join(rows) + "\n")
    return path


def test_load_data_splits_a_csv_by_column_names(tmp_path):
    X_tr, y_tr, X_te, y_te, _ = load_regression(
        str(_csv(tmp_path / "d.csv")), target="target", features=["x"], test_fraction=0.2
    )
    assert X_tr.shape == (24, 1) and X_te.shape == (6, 1) and y_te.shape == (6,)
    assert len(np.intersect1d(X_tr[:, 0], X_te[:, 0])) == 0
    X_tr, *_ = load_regression(str(tmp_path / "d.csv"), target="target")
    assert X_tr.shape[1] == 2  # every other column


@pytest.mark.parametrize(
    ("args", "bad", "message"),
    [
        (["--target", "accel"], None, "column\\(s\\) 'accel' not found"),
        (["--target", "target", "--features", "x,time"], None, "'time' not found"),
        (["--target", "target"], "0.1,abc,0.2", "non-numeric value 'abc' in column 'target'"),
        (["--target", "target"], "nan,0.5,0.2", "line 5: NaN in column 'x'"),
        ([], None, "--target is needed with a CSV --data"),
    ],
)  # fmt: skip
def test_compare_cli_reports_bad_csv_clearly(tmp_path, args, bad, message):
    path = _csv(tmp_path / "d.csv", bad=bad)
    with pytest.raises(SystemExit, match=message):
        main(["compare", "--data", str(path), "--methods", "svi", "--out", str(tmp_path), *args])


def test_compare_cli_rejects_unknown_methods_and_data(tmp_path):
    with pytest.raises(SystemExit, match=r"--methods: unknown \['mcmc'\]; registered: "):
        main(["compare", "--methods", "svi,mcmc", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="neither a bundled data set"):
        main(["compare", "--data", "boston", "--methods", "svi", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--reference '.*nuts.npz': no such file") as exc:
        main(["compare", "--reference", str(tmp_path / "nuts.npz"), "--out", str(tmp_path)])
    assert exc.value.code == 2


@pytest.mark.slow  # an end-to-end run (~1-2 min on 2 cores); the notebook test also drives it
def test_compare_writes_report_figures_and_datatrees(tmp_path):
    path = _csv(tmp_path / "d.csv", n=40)
    out = tmp_path / "out"
    with pytest.warns(report.UnreliableReferenceWarning, match="no agreement with nuts computed"):
        result = report.run_compare(
            "svgp", str(path), ["svi", "nuts"], out, target="target", features=["x"],
            smoke=True, num_inducing=5, log=lambda _: None,
        )  # fmt: skip
    text = (out / "report.md").read_text()
    for heading in ("## Methods and timings", "## Test metrics", "## PSIS-LOO",
                    "## Agreement with NUTS", "## Posterior summary: nuts",
                    "## Diagnostics warnings"):  # fmt: skip
        assert heading in text
    # a smoke-size NUTS is no reference: the section says why instead of scoring against it
    assert "**Not computed.**" in text and result["agreement"] == {}
    assert all(reason in text for reason in result["reference_check"].reasons)
    assert (out / "nuts.npz").exists()  # reusable: run_compare(..., reference=out / "nuts.npz")
    for png in ("forest", "marginals", "rank_nuts", "trace_nuts", "predictive", "elbo", "khat"):
        assert (out / f"{png}.png").stat().st_size > 5_000, png
        assert f"![{png}.png]({png}.png)" in text
    for m in ("svi", "nuts"):
        dt = diagnostics.load_datatree(out / f"{m}.nc")
        assert dt["log_likelihood"]["y"].shape[-1] == 32  # the training split
        assert dt.attrs["inference_method"] == m
    assert list(result["compare"].index)[0] in ("svi", "nuts")
    used = result["methods"]["nuts"]["posterior"].method
    assert used.num_warmup == type(used).presets["smoke"]["num_warmup"]


def test_compare_runs_a_bnn_and_summarises_only_its_noise(tmp_path):
    path = _csv(tmp_path / "d.csv", n=30)
    out = tmp_path / "out"
    result = report.run_compare(
        "bnn", str(path), ["svi", "laplace"], out, target="target", features=["x"], smoke=True,
        log=lambda _: None,
    )  # fmt: skip
    text = (out / "report.md").read_text()
    assert "# Inference comparison: `bnn`" in text
    for name, r in result["methods"].items():
        assert np.isfinite(r["test"]["rmse"]) and np.isfinite(r["test"]["mlpd"]), name
        assert {"layer0.W", "layer1.b", "noise_scale"} <= set(r["posterior"].draws), name
    # the forest/marginal plots show the noise scale, not 61 network weights
    assert result["summarised_sites"] == ["noise_scale"]
    assert result["methods"]["laplace"]["posterior"].approx.layout.names == (
        "layer1.W", "layer1.b"
    )  # fmt: skip
    assert (out / "forest.png").stat().st_size > 5_000


@pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning")  # smoke sizes
def test_compare_takes_point_estimates_and_ensembles_from_the_registry(tmp_path):
    """MAP and DeepEnsemble reach the report through the method registry; with too few draws
    for PSIS-LOO the table says so, and only the sampled methods enter LOO and k-hat."""
    path = _csv(tmp_path / "d.csv", n=30)
    out = tmp_path / "out"
    result = report.run_compare(
        "svgp", str(path), ["map", "ensemble", "laplace"], out, target="target",
        features=["x"], smoke=True, log=lambda _: None,
    )  # fmt: skip
    text = (out / "report.md").read_text()
    assert "| map | n/a (1 draws < 50)" in text
    assert "| ensemble | n/a (3 draws < 50)" in text
    assert result["methods"]["map"]["loo"] is None
    assert result["methods"]["laplace"]["loo"] is not None
    for name, r in result["methods"].items():
        assert np.isfinite(r["test"]["rmse"]) and np.isfinite(r["test"]["mlpd"]), name
    assert result["compare"] is None  # one method with LOO: nothing to compare
    assert (out / "khat.png").stat().st_size > 5_000


def test_a_nan_pareto_k_is_counted_apart_not_as_good():
    """``k > threshold`` is False for a NaN k (PSIS could not fit the tail): the LOO tables
    count those apart (``+ n NaN``) and say so, and count nothing extra without them."""
    from types import SimpleNamespace

    from ppl_dgp.report.chains import _chains_section
    from ppl_dgp.report.markdown import _loo_counts, _loo_section

    k = np.array([0.1, 0.75, np.nan, 0.6, np.nan, 0.2])
    elpd = SimpleNamespace(elpd=-12.34, se=1.23, p=2.5, pareto_k=k, good_k=0.5)
    assert _loo_counts(elpd) == ("-12.3 (1.2)", "1 / 6 + 2 NaN", "2 / 6 + 2 NaN")
    text = _loo_section({"svi": {"loo": elpd}}, None)
    assert "| svi | -12.3 | 1.2 | 2.5 | 2 / 6 + 2 NaN | 0.50 | nan |" in text
    assert "A Pareto k of NaN" in text and "counted apart" in text
    clean = SimpleNamespace(elpd=-12.34, se=1.23, p=2.5, pareto_k=k[[0, 1, 3]], good_k=0.5)
    assert _loo_counts(clean) == ("-12.3 (1.2)", "1 / 3", "2 / 3")
    assert "NaN" not in _loo_section({"svi": {"loo": clean}}, None)
    # the stacking table's count per chain
    view = SimpleNamespace(
        num_chains=2, verdict="not converged", rhat=np.array([1.5]), quantities=["a"],
        within_max=1.1, drifting=[1], means=np.zeros((1, 2)), sds=np.ones((1, 2)),
        within_rhat=np.array([[1.0, 1.3]]), rhat_max=1.01,
    )  # fmt: skip
    chains = {"view": view, "weights": [0.25, 0.75], "loo_chain": [-7.0, -6.0],
              "k_chain": np.array([[0.8, np.nan, 0.1], [0.2, 0.3, 0.9]]),
              "test_chain": [-1.0, -0.9], "test_stacked": -0.9, "test_pooled": -0.95,
              "loo_stacked": -5.0, "loo_equal": -6.5}  # fmt: skip
    text = _chains_section("nuts", chains)
    assert "| 0 | 0.250 | -7.0 | 1 + 1 NaN | -1.000 |" in text
    assert "| 1 | 0.750 | -6.0 | 1 | -0.900 |" in text
    assert "Pareto k of NaN" in text
