"""The report's shared Markdown: number formatting and tables, the timings, PSIS-LOO and
closing sections every task's report has, and the opening of the agreement section (whether
the reference passes its checks)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ppl_dgp import diagnostics
from ppl_dgp.posterior import Posterior
from ppl_dgp.report.constants import MIN_LOO_DRAWS


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


def _sampled(post: Posterior, hyper: list[str]) -> list[str]:
    """The hyperparameters ``post`` samples: in its draws and not constant there (SGHMC's
    MCEM records its point estimates as constant draws; R-hat and ESS are undefined for
    them)."""
    out = []
    for h in hyper:
        if h not in post.draws:
            continue
        v = np.asarray(post.draws[h], dtype=float)
        if np.ptp(v) > 1e-9 * max(1.0, float(np.max(np.abs(v)))):
            out.append(h)
    return out


def _k_count(pareto_k: Any, threshold: float, *, total: bool = True) -> str:
    """The observations whose Pareto k is above ``threshold``, ``"3 / 94"`` (``"3"`` without
    ``total``), with those whose k is NaN counted apart, ``"3 / 94 + 2 NaN"``: PSIS could not
    fit their tail, so they are not good either (``k > threshold`` is False for a NaN)."""
    k = np.asarray(pareto_k, dtype=float).ravel()
    nan = int(np.sum(np.isnan(k)))
    return (f"{int(np.sum(k > threshold))}" + (f" / {k.size}" if total else "")
            + (f" + {nan} NaN" if nan else ""))  # fmt: skip


def _nan_k_note(elpds: Iterable[Any]) -> str:
    """The sentence under a table of the Pareto k counts of these LOO results (``None``: no
    LOO) when one of them holds a NaN k; else ``""``."""
    ks = [np.asarray(e.pareto_k, dtype=float) for e in elpds if e is not None]
    if not any(np.isnan(k).any() for k in ks):
        return ""
    return (
        "\nA Pareto k of NaN (PSIS could not fit the tail of the importance ratios) is counted "
        "apart (`+ n NaN`), not as good: that observation's LOO term cannot be trusted.\n"
    )


def _loo_counts(elpd: Any) -> tuple[str, str, str]:
    """``elpd_loo (se)`` and the counts of Pareto k above 0.7 and above good_k, as text (a NaN
    k counted apart, :func:`_k_count`)."""
    if elpd is None:
        return "n/a", "", ""
    return (f"{elpd.elpd:.1f} ({elpd.se:.1f})", _k_count(elpd.pareto_k, 0.7),
            _k_count(elpd.pareto_k, elpd.good_k))  # fmt: skip


def _timings_section(configs: dict, res: dict) -> str:
    s = ["## Methods and timings\n\n"]
    s.append(_table(
        ["method", "configuration", "compile (s)", "run (s)", "wall (s)"],
        [[k, f"`{_settings(configs[k])}`" + (f" from {r['source']}" if r["source"] else ""),
          _f(r["posterior"].timings.get("compile_seconds"), ".1f"),
          _f(r["posterior"].timings.get("run_seconds"), ".1f"), _f(r["wall_seconds"], ".1f")]
         for k, r in res.items()],
    ))  # fmt: skip
    return "".join(s)


def _loo_section(res: dict, table: Any, *, linearised: bool = True) -> str:
    laplace = ("a GP program's Laplace is scored here by the program's likelihood at each "
               "draw of `u`, not linearised" if not linearised else
               "a GP program's Laplace scores its linearised model: the likelihood of the GLM "
               "at each draw of `u`, as its predictive does")  # fmt: skip
    s = []
    s.append(
        "\n## PSIS-LOO\n\nPointwise log-likelihood per draw at the training inputs (inner-layer "
        "noise integrated out by Monte Carlo; see `ppl_dgp.diagnostics.pointwise_log_likelihood`)."
        f" For SVI and Laplace the draws stand in for the posterior ({laplace}), and Pareto k per "
        "observation says where that approximation's LOO cannot be trusted (k above ArviZ's "
        "threshold good_k = min(1 - 1/log10(S), 0.7) for S draws; the k-hat figure draws the "
        f"same line). Point estimates and posteriors of fewer than {MIN_LOO_DRAWS} draws have "
        "no LOO.\n\n"
    )
    s.append(_table(
        ["method", "elpd_loo", "se", "p_loo", "k > good_k", "good_k", "max k"],
        [[k, _f(r["loo"].elpd, ".1f"), _f(r["loo"].se, ".1f"), _f(r["loo"].p, ".1f"),
          _k_count(r["loo"].pareto_k, r["loo"].good_k), _f(r["loo"].good_k, ".2f"),
          _f(np.max(np.asarray(r["loo"].pareto_k)), ".2f")]
         if r["loo"] is not None else
         [k, f"n/a ({r['posterior'].num_chains * r['posterior'].num_draws} draws < "
             f"{MIN_LOO_DRAWS})", "", "", "", "", ""]
         for k, r in res.items()],
    ))  # fmt: skip
    s.append(_nan_k_note(r["loo"] for r in res.values()))
    if table is not None:
        s.append("\n`compare` (best first; elpd_diff = elpd - best elpd, stacking weights):\n\n")
        s.append(_table(
            ["method", "rank", "elpd", "elpd_diff", "dse", "weight"],
            [[k, int(row["rank"]), _f(row["elpd"], ".1f"), _f(row["elpd_diff"], ".1f"),
              _f(row["dse"], ".1f"), _f(row["weight"], ".2f")] for k, row in table.iterrows()],
        ))  # fmt: skip
    return "".join(s)


def _closing_sections(res: dict, hyper: list[str], figures: list[str]) -> str:
    """The MCMC runs' posterior summaries, the diagnostics warnings, the figures."""
    s = []
    mcmc = [k for k, r in res.items() if r["posterior"].num_chains > 1]
    for k in mcmc:
        sampled = _sampled(res[k]["posterior"], hyper)
        s.append(f"\n## Posterior summary: {k} (94% HDI)\n\n")
        held = [h for h in hyper if h in res[k]["posterior"].draws and h not in sampled]
        if held:  # e.g. SGHMC's MCEM: one value per chain, shared, recorded as constant draws
            values = ", ".join(
                f"`{h}` = {_f(float(np.ravel(res[k]['posterior'].draws[h])[0]))}" for h in held
            )
            s.append(f"Point estimates, not sampled (no R-hat or ESS): {values}.\n\n")
        cols = ["mean", "sd", "hdi94_lb", "hdi94_ub", "r_hat", "ess_bulk", "ess_tail",
                "mcse_mean"]  # fmt: skip
        if sampled:
            summ = diagnostics.summary(res[k]["datatree"], sampled)
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
                f"{_f(np.mean(stats.get('num_steps', np.nan)), '.0f')}; mean step size "
                f"{_f(np.mean(stats.get('step_size', np.nan)))}.\n"
            )
    s.append("\n## Diagnostics warnings\n\n")
    for k, r in res.items():
        w = r["warnings"]
        s.append(f"- **{k}**: " + ("none" if not w else "; ".join(w)) + "\n")
    s.append("\n## Figures\n\n" + "".join(f"![{f}]({f})\n" for f in figures))
    s.append("\nEach method's DataTree: " + ", ".join(f"`{k}.nc`" for k in res) + ".\n")
    return "".join(s)


def _gate_text(gate: dict, quantity: str) -> tuple[list[str], str, bool]:
    """The agreement section's opening, shared by regression and classification: the heading,
    then either why the reference fails its checks and what to run (``ok`` False: the section
    ends there) or that it passes; ``quantity`` is the predictive quantity the check reads.

    Returns:
        ``(parts, label, ok)``.
    """
    name, check = gate["name"], gate["check"]
    label = "NUTS" if name == "nuts" else name
    s = [f"\n## Agreement with {label}\n\n"]
    src = f" (loaded from {gate['source']})" if gate["source"] else ""
    rule = (
        f"R-hat <= {diagnostics.RHAT_MAX} and bulk ESS >= {diagnostics.ESS_BULK_MIN:g} for "
        f"every hyperparameter and for {quantity} at {diagnostics.MIN_PREDICTIVE_INPUTS} or "
        "more test inputs, and no divergences"
    )
    if not check.ok:
        s.append(
            f"**Not computed.** The {label} reference{src} ({check.num_chains} chains x "
            f"{check.num_draws} draws) fails its own checks ({rule}), so agreement with it "
            "would score the methods against a posterior that is itself wrong:\n\n"
        )
        s += [f"- {r}\n" for r in check.reasons]
        s.append("\nWhat to run:\n\n" + "".join(f"- {a}\n" for a in gate["advice"]))
        return s, label, False
    worst_r = max(check.rhat.values(), default=float("nan"))
    min_e = min(check.ess_bulk.values(), default=float("nan"))
    s.append(
        f"The {label} reference{src} passes its checks ({rule}): max R-hat {worst_r:.3f}, "
        f"min bulk ESS {min_e:.0f}, {check.num_chains} chains x {check.num_draws} draws.\n"
    )
    return s, label, True
