"""``ppl-dgp compare``: fit one model with several methods and write a comparison report.

For each method (a name registered in :data:`ppl_dgp.infer.METHODS`) the command fits the
model to the training split (standardised), converts the Posterior to an ArviZ DataTree
(:mod:`ppl_dgp.diagnostics`) and saves it as ``DIR/{method}.nc``, predicts the held-out
split, and computes PSIS-LOO. With ``nuts`` among the methods, every other method is compared
with it (:mod:`ppl_dgp.agreement`). ``DIR/report.md`` collects timings, test metrics, LOO and
``compare``, agreement with NUTS, the MCMC summary and diagnostics warnings; the figures are
PNGs beside it.

Methods come from the method registry (their ``"compare"`` and ``"smoke"`` presets), models
from the zoo registry (:data:`ppl_dgp.models.MODELS`: its builder and per-method overrides): a
method or model registered there is in the report with no edit here. The computation
(:func:`run_compare`) returns the results; :func:`_markdown` and :func:`_figures` render them.

Example (the CLI's ``ppl-dgp compare``; a smoke-size run of one method here):

    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> result = run_compare("svgp", "motorcycle", ["map"], out, smoke=True, log=lambda _: None,
    ...                      overrides={"map": {"num_steps": 3000, "learning_rate": 0.05}})
    >>> result["report"].name, sorted(result["methods"])
    ('report.md', ['map'])
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl_dgp import agreement, calibration, diagnostics
from ppl_dgp.datasets import Standardizer, load_regression
from ppl_dgp.infer import METHODS, fit, make_method
from ppl_dgp.infer.core import progress_enabled
from ppl_dgp.models import MODELS
from ppl_dgp.predictive import predict

__all__ = ["DEFAULT_METHODS", "regression_models", "run_compare"]

#: The default ``--methods``.
DEFAULT_METHODS = ("svi", "nuts", "sghmc", "laplace")
CI_PROB = 0.9
#: PSIS-LOO fits a Pareto tail to the largest importance ratios: with fewer draws (a MAP, a
#: small ensemble) there is no tail to fit, and the report says so instead.
MIN_LOO_DRAWS = 50
#: Fewest draws a method needs to appear in the forest and marginal-density plots.
MIN_PLOT_DRAWS = 5


def regression_models() -> list[str]:
    """Zoo models the report can compare (a Gaussian likelihood and the mixture predictive)."""
    return [k for k, m in MODELS.items() if m.task == "regression" and "mixture" in m.predictives]


def _progress(iterable: Any, desc: str) -> Any:
    if not progress_enabled(None):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="method")


def run_compare(
    model_name: str,
    data: str,
    methods: Sequence[str],
    out: str | Path,
    *,
    target: str | None = None,
    features: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    num_inducing: int = 10,
    layers: int = 2,
    smoke: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fit ``model_name`` on ``data`` with each of ``methods``; write ``out/report.md``.

    Returns:
        ``{"methods": {name: {...metrics...}}, "compare": DataFrame, "report": Path, ...}``.
    """
    if model_name not in regression_models():
        raise ValueError(
            f"compare: unknown or unsupported model {model_name!r}; the report compares the "
            f"regression models of the zoo: {', '.join(regression_models())}"
        )
    entry = MODELS[model_name]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"compare: unknown method(s) {unknown}; registered: {', '.join(METHODS)}")
    unsupported = [m for m in methods if m not in entry.methods]
    if unsupported:
        raise ValueError(f"compare: model {model_name!r} does not support {unsupported}")
    preset = "smoke" if smoke else "compare"
    configs = {
        m: make_method(m, preset=preset, **{**entry.method_overrides.get(m, {}),
                                            **(overrides or {}).get(m, {})})
        for m in methods
    }  # fmt: skip
    if not configs:
        raise ValueError("compare: no methods given")
    X_tr, y_tr, X_te, y_te, what = load_regression(
        data, target=target, features=features, test_fraction=test_fraction, seed=seed
    )
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    X, y = jnp.asarray(sx.transform(X_tr)), jnp.asarray(sy.transform(y_tr))
    Xt, yt = jnp.asarray(sx.transform(X_te)), sy.transform(y_te)
    model = entry.make(np.asarray(X), num_inducing=num_inducing, layers=layers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    key = jax.random.key(seed)
    res: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(_progress(list(configs), "compare")):
        log(f"[{name}] fitting {type(configs[name]).__name__} ...")
        t0 = time.perf_counter()
        post = fit(configs[name], jax.random.fold_in(key, i), model, X, y)
        wall = time.perf_counter() - t0
        dt = diagnostics.to_datatree(post, model, X, y, rng_key=jax.random.fold_in(key, 100 + i))
        diagnostics.save_datatree(dt, out / f"{name}.nc")
        pred = predict(jax.random.fold_in(key, 200 + i), model, post, Xt, num_samples=200)
        enough = post.num_chains * post.num_draws >= MIN_LOO_DRAWS
        elpd = diagnostics.loo(dt) if enough else None
        m = pred.rescale(float(sy.mean), float(sy.std)).metrics(jnp.asarray(y_te))
        res[name] = {
            "posterior": post,
            "datatree": dt,
            "pred": pred,
            "loo": elpd,
            "wall_seconds": wall,
            "test": {
                "rmse": m["rmse"],
                "mlpd": m["mlpd"],
                "coverage": calibration.coverage_table(pred, yt, (0.5, CI_PROB, 0.95)),
            },
            "warnings": diagnostics.diagnostic_warnings(
                dt, elpd, **({} if elpd is None else {"khat_max": float(elpd.good_k)})
            ),
        }
        log(f"[{name}] {wall:.1f} s, test RMSE {res[name]['test']['rmse']:.3g}")
    dts = {k: r["datatree"] for k, r in res.items() if r["loo"] is not None}
    table = diagnostics.compare(dts) if len(dts) > 1 else None
    # the summarised sites: hyperparameters, not inducing values or network weights
    weights = (".u", ".W", ".b")
    hyper = [k for k in res[next(iter(res))]["posterior"].draws if not k.endswith(weights)]
    agree = {}
    if "nuts" in res:
        ref = res["nuts"]
        for name, r in res.items():
            if name == "nuts":
                continue
            rows = agreement.marginal_discrepancies(ref["posterior"].draws, r["posterior"].draws)
            agree[name] = {
                "sites": agreement.site_agreement(rows),
                "predictive": agreement.predictive_discrepancies(
                    r["pred"], ref["pred"], yt, prob=CI_PROB
                ),
            }
    figures = _figures(res, hyper, out, X_tr, y_tr, sx, sy, model, key)
    report = out / "report.md"
    report.write_text(
        _markdown(model_name, what, X_tr, X_te, configs, res, table, agree, hyper, figures)
    )
    log(f"Wrote {report}")
    return {"methods": res, "compare": table, "agreement": agree, "report": report,
            "figures": figures, "summarised_sites": hyper}  # fmt: skip


def _figures(res, hyper, out, X_tr, y_tr, sx, sy, model, key) -> list[str]:
    from ppl_dgp import plotting

    files = []
    # densities and intervals need a sample: a MAP (one draw) is in the tables, not the plots
    dts = {k: r["datatree"] for k, r in res.items()
           if r["posterior"].num_chains * r["posterior"].num_draws >= MIN_PLOT_DRAWS}  # fmt: skip
    if hyper and dts:
        diagnostics.plot_forest(dts, hyper, out / "forest.png")
        diagnostics.plot_marginals(dts, hyper, out / "marginals.png")
        files += ["forest.png", "marginals.png"]
    for name, r in res.items():
        if "diverging" in r["posterior"].sample_stats and r["posterior"].num_chains > 1:
            diagnostics.plot_rank(r["datatree"], hyper, out / f"rank_{name}.png")
            diagnostics.plot_trace(r["datatree"], hyper, out / f"trace_{name}.png")
            files += [f"rank_{name}.png", f"trace_{name}.png"]
    if X_tr.shape[1] == 1:
        lo, hi = X_tr.min(), X_tr.max()
        pad = 0.05 * (hi - lo)
        grid_raw = np.linspace(lo - pad, hi + pad, 200)[:, None]
        grid = jnp.asarray(sx.transform(grid_raw))
        preds = {
            k: predict(
                jax.random.fold_in(key, 300), model, r["posterior"], grid, num_samples=200
            ).rescale(float(sy.mean), float(sy.std))
            for k, r in res.items()
        }
        plotting.plot_predictive_bands(X_tr, y_tr, grid_raw, preds, out / "predictive.png")
        files.append("predictive.png")
    losses = {k: r["posterior"].traces["loss"] for k, r in res.items()
              if "loss" in r["posterior"].traces}  # fmt: skip
    if losses:
        plotting.plot_loss_traces(losses, out / "elbo.png")
        files.append("elbo.png")
    elpds = {k: r["loo"] for k, r in res.items() if r["loo"] is not None}
    if elpds:
        diagnostics.plot_khat(elpds, out / "khat.png")
        files.append("khat.png")
    return files


# -- markdown ----------------------------------------------------------------------------------


def _f(x: Any, spec: str = ".3g") -> str:
    try:
        return format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _settings(config: Any) -> str:
    """The configuration's non-default fields, e.g. ``NUTS(num_warmup=300, num_chains=2)``."""
    changed = [
        f"{f.name}={getattr(config, f.name)!r}"
        for f in dataclasses.fields(config)
        if f.default is dataclasses.MISSING or getattr(config, f.name) != f.default
    ]
    return f"{type(config).__name__}({', '.join(changed)})"


def _markdown(model_name, what, X_tr, X_te, configs, res, table, agree, hyper, figures) -> str:
    s = [f"# Inference comparison: `{model_name}` on {what}\n\n"]
    s.append(
        f"N = {len(X_tr)} training and {len(X_te)} test points, D = {X_tr.shape[1]}; data "
        "standardised with the training split; test metrics in original units.\n\n"
    )
    s.append("## Methods and timings\n\n")
    s.append(_table(
        ["method", "configuration", "compile (s)", "run (s)", "wall (s)"],
        [[k, f"`{_settings(configs[k])}`", _f(r["posterior"].timings.get("compile_seconds"), ".1f"),
          _f(r["posterior"].timings.get("run_seconds"), ".1f"), _f(r["wall_seconds"], ".1f")]
         for k, r in res.items()],
    ))  # fmt: skip
    s.append("\n## Test metrics\n\n")
    s.append(_table(
        ["method", "RMSE", "MLPD", "50% coverage", f"{CI_PROB:.0%} coverage", "95% coverage"],
        [[k, _f(r["test"]["rmse"]), _f(r["test"]["mlpd"]),
          *(_f(r["test"]["coverage"][p], ".2f") for p in (0.5, CI_PROB, 0.95))]
         for k, r in res.items()],
    ))  # fmt: skip
    s.append(
        "\n## PSIS-LOO\n\nPointwise log-likelihood per draw at the training inputs (inner-layer "
        "noise integrated out by Monte Carlo; see `ppl_dgp.diagnostics.pointwise_log_likelihood`)."
        " For SVI and Laplace the draws stand in for the posterior, and Pareto k per "
        "observation says where that approximation's LOO cannot be trusted (k above ArviZ's "
        "threshold good_k = min(1 - 1/log10(S), 0.7) for S draws; the k-hat figure draws the "
        f"same line). Point estimates and posteriors of fewer than {MIN_LOO_DRAWS} draws have "
        "no LOO.\n\n"
    )
    s.append(_table(
        ["method", "elpd_loo", "se", "p_loo", "k > good_k", "good_k", "max k"],
        [[k, _f(r["loo"].elpd, ".1f"), _f(r["loo"].se, ".1f"), _f(r["loo"].p, ".1f"),
          f"{int(np.sum(np.asarray(r['loo'].pareto_k) > r['loo'].good_k))} / "
          f"{np.size(r['loo'].pareto_k)}", _f(r["loo"].good_k, ".2f"),
          _f(np.max(np.asarray(r["loo"].pareto_k)), ".2f")]
         if r["loo"] is not None else
         [k, f"n/a ({r['posterior'].num_chains * r['posterior'].num_draws} draws < "
             f"{MIN_LOO_DRAWS})", "", "", "", "", ""]
         for k, r in res.items()],
    ))  # fmt: skip
    if table is not None:
        s.append("\n`compare` (best first; elpd_diff = elpd - best elpd, stacking weights):\n\n")
        s.append(_table(
            ["method", "rank", "elpd", "elpd_diff", "dse", "weight"],
            [[k, int(row["rank"]), _f(row["elpd"], ".1f"), _f(row["elpd_diff"], ".1f"),
              _f(row["dse"], ".1f"), _f(row["weight"], ".2f")] for k, row in table.iterrows()],
        ))  # fmt: skip
    if agree:
        s.append(
            "\n## Agreement with NUTS\n\nPer site: largest |standardised mean difference|, "
            "median sd ratio (< 1: over-confident) and mean 1-D Wasserstein distance in NUTS sd "
            "units, over the site's components (0, 1, 0 = perfect agreement). NUTS itself is only "
            "a reference when its own diagnostics below are clean.\n\n"
        )
        if MODELS[model_name].output_site is not None:  # a network
            s.append(
                "A network's weights are not identifiable (hidden units can be permuted and "
                "their signs flipped), so two correct posteriors can disagree per weight: read "
                "the predictive table below.\n\n"
            )
        rows = []
        for k, a in agree.items():
            for site, v in a["sites"].items():
                rows.append([k, f"`{site}`", v["components"], _f(v["max_abs_smd"], ".2f"),
                             _f(v["median_sd_ratio"], ".2f"), _f(v["mean_w1"], ".2f")])  # fmt: skip
        s.append(_table(["method", "site", "components", "max abs SMD", "median sd ratio",
                         "mean W1"], rows))  # fmt: skip
        s.append(
            f"\nPredictive, on the test split: MLPD gap (method - NUTS, standardised units), "
            f"test coverage of the method's {CI_PROB:.0%} interval (NUTS's in brackets), and the "
            f"NUTS predictive mass inside the method's {CI_PROB:.0%} interval ({CI_PROB:.2f} "
            "when they agree; less: the method's intervals are too narrow).\n\n"
        )
        s.append(_table(
            ["method", "MLPD gap", "coverage (NUTS)", "NUTS mass in interval"],
            [[k, _f(a["predictive"]["mlpd_gap"], ".3f"),
              f"{a['predictive']['coverage']:.2f} ({a['predictive']['ref_coverage']:.2f})",
              _f(a["predictive"]["ref_mass"], ".2f")] for k, a in agree.items()],
        ))  # fmt: skip
    mcmc = [k for k, r in res.items() if r["posterior"].num_chains > 1]
    for k in mcmc:
        summ = diagnostics.summary(res[k]["datatree"], hyper)
        s.append(f"\n## Posterior summary: {k} (94% HDI)\n\n")
        cols = ["mean", "sd", "hdi94_lb", "hdi94_ub", "r_hat", "ess_bulk", "ess_tail",
                "mcse_mean"]  # fmt: skip
        s.append(
            _table(
                ["parameter", *cols],
                [[f"`{i}`", *(_f(row[c]) for c in cols)] for i, row in summ.iterrows()],
            )
        )
        stats = res[k]["posterior"].sample_stats
        if "diverging" in stats:
            s.append(
                f"\nDivergences: {int(np.sum(stats['diverging']))}; mean tree depth / leapfrog "
                f"steps: {_f(np.mean(stats.get('tree_depth', np.nan)), '.1f')} / "
                f"{_f(np.mean(stats['num_steps']), '.0f')}; mean step size "
                f"{_f(np.mean(stats['step_size']))}.\n"
            )
    s.append("\n## Diagnostics warnings\n\n")
    for k, r in res.items():
        w = r["warnings"]
        s.append(f"- **{k}**: " + ("none" if not w else "; ".join(w)) + "\n")
    s.append("\n## Figures\n\n" + "".join(f"![{f}]({f})\n" for f in figures))
    s.append("\nEach method's DataTree: " + ", ".join(f"`{k}.nc`" for k in res) + ".\n")
    return "".join(s)
