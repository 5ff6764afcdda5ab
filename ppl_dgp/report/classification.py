"""``compare`` for a classifier: per method the test accuracy, NLL, ECE and Brier score of its
predictive class probabilities, its reliability diagram, PSIS-LOO, and ``|p - p_NUTS|``
against the reference when the reference passes its checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ppl_dgp import calibration, diagnostics
from ppl_dgp.posterior import Posterior
from ppl_dgp.predictive import predict_distribution, predict_proba, spread
from ppl_dgp.report.constants import (
    ECE_BINS,
    MIN_LOO_DRAWS,
    PREDICTIVE_COMPONENTS,
    REFERENCE_PREDICTIVE_INPUTS,
)
from ppl_dgp.report.data import _median_lengthscales, _Prepared
from ppl_dgp.report.figures import _fit_figures, _posterior_figures
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
from ppl_dgp.report.reference import (
    _advice,
    _fit_or_load,
    _hyper_sites,
    _progress,
    _warn_unreliable,
)


def _compare_classification(
    model_name: str, data: str, d: _Prepared, configs: dict, methods: Sequence[str],
    sources: dict, loaded: Posterior | None, ref_name: str, out: Path, key: Any,
    figures: bool, log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """:func:`~ppl_dgp.report.run_compare` for a classifier: per method the test accuracy,
    NLL, ECE and Brier score of its predictive class probabilities
    (:func:`ppl_dgp.predictive.predict_proba`;
    :func:`ppl_dgp.calibration.classification_metrics`, :data:`ECE_BINS` bins), its
    reliability curve, PSIS-LOO where it has draws, and, when the NUTS reference passes its
    checks (R-hat and ESS of the hyperparameters and of the class probability at
    :data:`REFERENCE_PREDICTIVE_INPUTS` test inputs, no divergences), the mean and largest
    ``|p_method - p_NUTS|`` over the test points and classes."""
    X, y, Xt, yt, model, K = d.X, d.y, d.Xt, d.yt, d.model, d.num_classes
    res: dict[str, dict[str, Any]] = {}
    ref_probs = None  # [chain * draw, N_test, K]: the reference's class probabilities per draw
    for name in _progress(list(configs), "compare"):
        i = list(methods).index(name) if name in methods else len(methods)  # stable keys
        post, wall = _fit_or_load(name, i, configs, sources, loaded, ref_name, d, out, key, log)
        dt = diagnostics.to_datatree(post, model, X, y, rng_key=jax.random.fold_in(key, 100 + i))
        diagnostics.save_datatree(dt, out / f"{name}.nc")
        k_pred = jax.random.fold_in(key, 200 + i)
        S = post.num_chains * post.num_draws
        if name == ref_name:  # every draw: the reference's checks need the chains
            ref_probs = _class_probs_per_draw(k_pred, model, post, Xt, K)
            probs = ref_probs.mean(axis=0)
        else:
            probs = _as_classes(
                predict_proba(model, post, Xt, rng_key=k_pred, num_samples=PREDICTIVE_COMPONENTS),
                K,
            )  # fmt: skip
        elpd = diagnostics.loo(dt) if S >= MIN_LOO_DRAWS else None
        res[name] = {
            "posterior": post,
            "source": sources.get(name),
            "datatree": dt,
            "probs": probs,
            "loo": elpd,
            "wall_seconds": wall,
            "test": calibration.classification_metrics(probs, yt, num_bins=ECE_BINS),
            "reliability": calibration.reliability_curve(probs, yt, ECE_BINS),
            "warnings": diagnostics.diagnostic_warnings(
                dt, elpd, **({} if elpd is None else {"khat_max": float(elpd.good_k)})
            ),
        }
        log(f"[{name}] {wall:.1f} s, test accuracy {res[name]['test']['accuracy']:.3f}")
    dts = {k: r["datatree"] for k, r in res.items() if r["loo"] is not None}
    table = diagnostics.compare(dts) if len(dts) > 1 else None
    hyper = _hyper_sites(res[next(iter(res))]["posterior"])
    agree, gate = {}, None
    if ref_name in res:
        ref = res[ref_name]
        idx = spread(len(d.X_te), REFERENCE_PREDICTIVE_INPUTS)
        C, D = ref["posterior"].num_chains, ref["posterior"].num_draws
        top = ref["probs"][idx].argmax(axis=1)  # the class the reference predicts there
        check = diagnostics.reference_check(
            ref["datatree"], hyper,
            predictive=ref_probs[:, idx, top].reshape(C, D, -1),  # [C, D, inputs]
            predictive_labels=[f"p(y = {k} | x_test[{j}])" for j, k in zip(idx, top,
                                                                             strict=True)],
        )  # fmt: skip
        gate = {"name": ref_name, "check": check, "source": ref["source"],
                "advice": _advice(check, ref["posterior"], model_name, data,
                                  reference_command=False)}  # fmt: skip
        if check.ok:
            for name, r in res.items():
                if name != ref_name:
                    gap = np.abs(r["probs"] - ref["probs"])  # [N_test, K]
                    agree[name] = {
                        "mean_abs": float(gap.mean()), "max_abs": float(gap.max()),
                        "same_class": float(np.mean(
                            r["probs"].argmax(1) == ref["probs"].argmax(1))),
                    }  # fmt: skip
        else:
            _warn_unreliable(gate)
    files = []
    if figures:
        from ppl_dgp import plotting

        files = _posterior_figures(res, hyper, out)
        plotting.plot_reliability({k: r["reliability"] for k, r in res.items()},
                                  out / "reliability.png")  # fmt: skip
        files += ["reliability.png", *_fit_figures(res, out)]
    report = out / "report.md"
    report.write_text(_markdown_classification(model_name, d, configs, res, table, agree, gate,
                                               hyper, files))  # fmt: skip
    log(f"Wrote {report}")
    return {"methods": res, "compare": table, "agreement": agree, "report": report,
            "reference_check": None if gate is None else gate["check"], "figures": files,
            "summarised_sites": hyper, "chains": {}}  # fmt: skip


def _as_classes(p: Any, K: int) -> np.ndarray:
    """Class probabilities ``[N, K]`` from ``p(y = 1) [N]`` (``K = 2``) or ``[N, K]``."""
    p = np.asarray(p, dtype=np.float64)
    return np.stack([1.0 - p, p], axis=-1) if p.ndim == 1 or p.shape[-1] != K else p


def _class_probs_per_draw(key: Any, model: Callable, post: Posterior, Xt: Any, K: int):
    """``p(y = k | x, theta_s)`` per draw ``s`` (all draws, chain-major), ``[S, N, K]``: the
    components of :func:`~ppl_dgp.predictive.predict_distribution` (for a marginalised last
    layer the exact marginal given the draw)."""
    S = post.num_chains * post.num_draws
    mix = predict_distribution(key, model, post, Xt, num_samples=S)
    base = mix.components
    base = getattr(base, "base_dist", base)
    return _as_classes(np.asarray(base.probs), K)


def _markdown_classification(model_name, d, configs, res, table, agree, gate, hyper,
                             figures) -> str:  # fmt: skip
    K = d.num_classes
    s = [f"# Inference comparison: `{model_name}` on {d.what}\n\n"]
    s.append(
        f"N = {len(d.X_tr)} training and {len(d.X_te)} test points, D = {d.X_tr.shape[1]}, "
        f"K = {K} classes; inputs standardised with the training split"
        + ("; the GP layers' lengthscales started at the median pairwise distance of their "
           "inputs" if _median_lengthscales(d.model, np.asarray(d.X)) is not d.model
           else "")
        + ".\n\n"
    )  # fmt: skip
    s.append(_timings_section(configs, res))
    s.append(
        "\n## Test metrics\n\nFrom each method's predictive class probabilities "
        "(`ppl_dgp.predictive.predict_proba`: averaged over draws; SVI integrates `u` out "
        "against q(u); Laplace by its default link: a GP's averages the program's class "
        "probability over its draws of `u`, a network's is the linearised probit): accuracy "
        "of the most probable "
        "class, NLL = -(1/N) sum_n log p(y_n), the expected calibration error over "
        f"{ECE_BINS} equal-width confidence bins (Guo et al. 2017; "
        "`ppl_dgp.calibration`), and the Brier score sum_k (p_k - [y = k])^2 averaged over "
        "the test points (in [0, 2]).\n\n"
    )
    s.append(_table(
        ["method", "accuracy", "NLL", "ECE", "Brier"],
        [[k, _f(r["test"]["accuracy"], ".4f"), _f(r["test"]["nll"], ".4f"),
          _f(r["test"]["ece"], ".4f"), _f(r["test"]["brier"], ".4f")] for k, r in res.items()],
    ))  # fmt: skip
    s.append(_loo_section(res, table, linearised=False))
    if gate is not None:
        s.append(_class_agreement_section(agree, gate, res))
    s.append(_closing_sections(res, hyper, figures))
    return "".join(s)


def _class_agreement_section(agree: dict, gate: dict, res: dict) -> str:
    s, label, ok = _gate_text(gate, "the probability of the predicted class")
    if not ok:
        return "".join(s)
    name = gate["name"]
    s.append(
        "\n"
        f"Per method on the test split: |p_method - p_{label}| of the class probabilities, "
        "mean and largest over the test points and classes (0 = the same predictive); the "
        f"share of test points where the method predicts {label}'s class; the PSIS-LOO elpd "
        "(se) and its Pareto k counts (n/a: too few draws for LOO).\n\n"
    )
    s.append(_table(
        ["method", f"mean abs(p - p_{label})", "max", f"same class as {label}",
         "elpd_loo (se)", "k > 0.7", "k > good_k"],
        [[k, _f(a["mean_abs"], ".4f"), _f(a["max_abs"], ".4f"), _f(a["same_class"], ".3f"),
          *_loo_counts(res[k]["loo"])] for k, a in agree.items()]
        + [[f"{name} (reference)", "0", "0", "1", *_loo_counts(res[name]["loo"])]],
    ))  # fmt: skip
    s.append(_nan_k_note(res[k]["loo"] for k in [*agree, name]))
    return "".join(s)
