"""``compare`` for a regression of one or several outputs: per method the test RMSE, MLPD and
interval coverage (per output too), PSIS-LOO, the chains side by side, and the agreement with
the reference (on the predictive distribution at the test inputs, and per site) when the
reference passes its checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl_dgp import agreement, calibration, diagnostics
from ppl_dgp.models import MODELS
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import regression_metrics
from ppl_dgp.predictive import predict, spread
from ppl_dgp.report.chains import _chains_section, _per_chain, _subset
from ppl_dgp.report.constants import (
    CHAIN_VIEW_INPUTS,
    CI_PROB,
    MIN_LOO_DRAWS,
    PREDICTIVE_COMPONENTS,
    REFERENCE_PREDICTIVE_INPUTS,
)
from ppl_dgp.report.data import _Prepared
from ppl_dgp.report.figures import _figures
from ppl_dgp.report.markdown import (
    _closing_sections,
    _f,
    _gate_text,
    _loo_counts,
    _loo_section,
    _nan_k_note,
    _table,
    _timings_section,
)
from ppl_dgp.report.multioutput import _flat_outputs, _input_labels, _per_output_section, _units
from ppl_dgp.report.reference import (
    _advice,
    _fit_or_load,
    _hyper_sites,
    _progress,
    _warn_unreliable,
)


def _compare_regression(
    model_name: str, data: str, d: _Prepared, configs: dict, methods: Sequence[str],
    sources: dict, loaded: Posterior | None, ref_name: str, out: Path, key: Any,
    figures: bool, log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """:func:`~ppl_dgp.report.run_compare` for a regression of one output or of ``P``: per
    method the test RMSE, MLPD and coverage (per output), PSIS-LOO, the per-chain view and the
    stacking of the chains of a method of several, and, when the reference passes its checks,
    the agreement of each method's predictive and sites with it."""
    X_tr, y_tr, X_te, y_te, what = d.X_tr, d.y_tr, d.X_te, d.y_te, d.what
    sx, sy, X, y, Xt, yt, model = d.sx, d.sy, d.X, d.y, d.Xt, d.yt, d.model
    loc, scale = _units(sy)
    res: dict[str, dict[str, Any]] = {}
    ref_means = None  # [chain * draw, N_test]: the reference's predictive mean per draw
    for name in _progress(list(configs), "compare"):
        i = list(methods).index(name) if name in methods else len(methods)  # stable keys
        post, wall = _fit_or_load(name, i, configs, sources, loaded, ref_name, d, out, key, log)
        dt = diagnostics.to_datatree(post, model, X, y, rng_key=jax.random.fold_in(key, 100 + i))
        diagnostics.save_datatree(dt, out / f"{name}.nc")
        k_pred = jax.random.fold_in(key, 200 + i)
        if name == ref_name or post.num_chains > 1:
            # every draw: the reference's checks and the per-chain view need the chains
            per_draw = predict(
                k_pred, model, post, Xt, num_samples=post.num_chains * post.num_draws
            )
            pred = _subset(per_draw, spread(per_draw.means.shape[0], PREDICTIVE_COMPONENTS))
            if name == ref_name:
                ref_means = np.asarray(per_draw.means)
            components, drawn = per_draw, np.arange(post.num_chains * post.num_draws)
        else:
            pred = predict(k_pred, model, post, Xt, num_samples=PREDICTIVE_COMPONENTS)
            components = pred
            drawn = spread(post.num_chains * post.num_draws, PREDICTIVE_COMPONENTS)
        # the chain of each component (draws are taken chain-major); none when the
        # components are not one per draw (a predictive that integrates u out)
        comp_chain = (drawn // post.num_draws if len(drawn) == components.means.shape[0]
                      else None)  # fmt: skip
        enough = post.num_chains * post.num_draws >= MIN_LOO_DRAWS
        elpd = diagnostics.loo(dt) if enough else None
        m = pred.rescale(loc, scale).metrics(jnp.asarray(y_te))
        res[name] = {
            "posterior": post,
            "source": sources.get(name),
            "datatree": dt,
            "pred": pred,
            "components": components,
            "component_chain": comp_chain,
            "loo": elpd,
            "wall_seconds": wall,
            "test": {
                "rmse": m["rmse"],
                "mlpd": m["mlpd"],
                "coverage": calibration.coverage_table(pred, yt, (0.5, CI_PROB, 0.95)),
                **(
                    {
                        "per_output": regression_metrics(
                            pred.rescale(loc, scale), y_te, (0.5, CI_PROB, 0.95)
                        )
                    }
                    if d.outputs
                    else {}
                ),
            },
            "warnings": diagnostics.diagnostic_warnings(
                dt, elpd, **({} if elpd is None else {"khat_max": float(elpd.good_k)})
            ),
        }
        log(f"[{name}] {wall:.1f} s, test RMSE {res[name]['test']['rmse']:.3g}")
    dts = {k: r["datatree"] for k, r in res.items() if r["loo"] is not None}
    table = diagnostics.compare(dts) if len(dts) > 1 else None
    hyper = _hyper_sites(res[next(iter(res))]["posterior"])
    few = spread(len(X_te), CHAIN_VIEW_INPUTS)
    chains = {
        k: c
        for k, r in res.items()
        if (c := _per_chain(r, hyper, few, _input_labels(X_te, few, d.outputs), y_te, sy))
        is not None
    }
    agree, gate = {}, None
    if ref_name in res:
        ref = res[ref_name]
        idx = spread(len(X_te), REFERENCE_PREDICTIVE_INPUTS)
        labels = _input_labels(X_te, idx, d.outputs)
        C, D = ref["posterior"].num_chains, ref["posterior"].num_draws
        check = diagnostics.reference_check(
            ref["datatree"], hyper, predictive=ref_means[:, idx].reshape(C, D, -1),
            predictive_labels=labels,
        )  # fmt: skip
        gate = {"name": ref_name, "check": check, "source": ref["source"],
                "advice": _advice(check, ref["posterior"], model_name, data,
                                  chains.get(ref_name, {}).get("view"))}  # fmt: skip
        if check.ok:
            for name, r in res.items():
                if name == ref_name:
                    continue
                rows = agreement.marginal_discrepancies(
                    ref["posterior"].draws, r["posterior"].draws
                )
                agree[name] = {
                    "sites": agreement.site_agreement(rows),
                    "predictive": agreement.predictive_discrepancies(
                        _flat_outputs(r["pred"]),
                        _flat_outputs(ref["pred"]),
                        np.ravel(yt),
                        prob=CI_PROB,
                    ),  # fmt: skip
                }
        else:
            _warn_unreliable(gate)
    figures = _figures(res, hyper, out, X_tr, y_tr, sx, sy, model, key, d) if figures else []
    report = out / "report.md"
    report.write_text(
        _markdown(model_name, what, X_tr, X_te, configs, res, table, agree, gate, hyper, figures,
                  chains, d.outputs)
    )  # fmt: skip
    log(f"Wrote {report}")
    return {"methods": res, "compare": table, "agreement": agree, "report": report,
            "reference_check": None if gate is None else gate["check"], "figures": figures,
            "summarised_sites": hyper, "chains": chains}  # fmt: skip


def _markdown(model_name, what, X_tr, X_te, configs, res, table, agree, gate, hyper,
              figures, chains, outputs=()) -> str:  # fmt: skip
    s = [f"# Inference comparison: `{model_name}` on {what}\n\n"]
    s.append(
        f"N = {len(X_tr)} training and {len(X_te)} test points, D = {X_tr.shape[1]}; data "
        "standardised with the training split; test metrics in original units.\n\n"
    )
    s.append(_timings_section(configs, res))
    s.append("\n## Test metrics\n\n")
    if outputs:
        s.append(
            f"Over all {len(outputs)} outputs ({', '.join(f'`{o}`' for o in outputs)}): RMSE "
            "and MLPD of each output's marginal predictive, averaged over the entries of "
            "y [N, P]; coverage of the central intervals over all entries.\n\n"
        )
    s.append(_table(
        ["method", "RMSE", "MLPD", "50% coverage", f"{CI_PROB:.0%} coverage", "95% coverage"],
        [[k, _f(r["test"]["rmse"]), _f(r["test"]["mlpd"]),
          *(_f(r["test"]["coverage"][p], ".2f") for p in (0.5, CI_PROB, 0.95))]
         for k, r in res.items()],
    ))  # fmt: skip
    if outputs:
        s.append(_per_output_section(res, outputs))
    s.append(_loo_section(res, table, linearised=not outputs))
    if gate is not None:
        s.append(_agreement_section(model_name, agree, gate, res))
    for k, c in chains.items():
        s.append(_chains_section(k, c))
    s.append(_closing_sections(res, hyper, figures))
    return "".join(s)


def _agreement_section(model_name: str, agree: dict, gate: dict, res: dict) -> str:
    s, label, ok = _gate_text(gate, "the predictive mean")
    if not ok:
        return "".join(s)
    name = gate["name"]
    s.append(
        f"\n### The predictive against {label}\n\nOn the test split; the predictive is "
        "identifiable where the per-site rows below are not (inner layers can be permuted and "
        "their signs flipped without changing y). Columns: W1, the 1-D Wasserstein-1 distance "
        f"between the method's and {label}'s predictive distributions of y at each test input "
        "(exact mixture CDFs on a grid, `ppl_dgp.agreement.mixture_wasserstein`) in units of "
        f"{label}'s predictive sd there, mean and worst input (0 = the same predictive); the "
        f"{label} predictive mass inside the method's {CI_PROB:.0%} interval, mean and worst "
        f"input ({CI_PROB:.2f} when they agree; less: the method's intervals are too narrow or "
        f"misplaced); the MLPD gap (method - {label}: mean test log predictive density, the "
        f"same in any units); test coverage of the method's {CI_PROB:.0%} interval ({label}'s "
        "in brackets); the method's PSIS-LOO elpd (se) on the training split and its counts "
        "of Pareto k above 0.7 and above good_k (n/a: too few draws for LOO).\n\n"
    )
    s.append(_table(
        ["method", "W1 / sd (mean)", "W1 / sd (max)", f"{label} mass in {CI_PROB:.0%} "
         "interval (mean)", "(min)", "MLPD gap", "coverage (ref)", "elpd_loo (se)", "k > 0.7",
         "k > good_k"],
        [[k, _f(p["w1"], ".3f"), _f(p["w1_max"], ".3f"), _f(p["ref_mass"], ".2f"),
          _f(p["ref_mass_min"], ".2f"), _f(p["mlpd_gap"], ".3f"),
          f"{p['coverage']:.2f} ({p['ref_coverage']:.2f})", *_loo_counts(res[k]["loo"])]
         for k, a in agree.items() for p in [a["predictive"]]]
        + [[f"{name} (reference)", "0", "0", f"{CI_PROB:.2f}", f"{CI_PROB:.2f}", "0",
            f"{res[name]['test']['coverage'][CI_PROB]:.2f}", *_loo_counts(res[name]["loo"])]],
    ))  # fmt: skip
    s.append(_nan_k_note(res[k]["loo"] for k in [*agree, name]))
    s.append(
        "\n### Per site\n\nLargest |standardised mean difference|, median sd ratio (< 1: "
        "over-confident) and mean 1-D Wasserstein distance in reference sd units, over the "
        "site's components (0, 1, 0 = perfect agreement).\n\n"
    )
    if MODELS[model_name].output_site is not None:  # a network
        s.append(
            "A network's weights are not identifiable (hidden units can be permuted and "
            "their signs flipped), so two correct posteriors can disagree per weight: read "
            "the predictive table above.\n\n"
        )
    rows = []
    for k, a in agree.items():
        for site, v in a["sites"].items():
            rows.append([k, f"`{site}`", v["components"], _f(v["max_abs_smd"], ".2f"),
                         _f(v["median_sd_ratio"], ".2f"), _f(v["mean_w1"], ".2f")])  # fmt: skip
    s.append(_table(["method", "site", "components", "max abs SMD", "median sd ratio",
                     "mean W1"], rows))  # fmt: skip
    return "".join(s)
