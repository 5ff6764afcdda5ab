"""The chains of one method side by side (NUTS, HMC, SGHMC): each chain's means of the
hyperparameters and of the predictive mean at a few test inputs, R-hat across the chains and
each chain's own split-R-hat (:func:`ppl_dgp.diagnostics.chain_view`), which tells chains
stuck in separate modes from chains still drifting; and the stacking of the chains
(:mod:`ppl_dgp.stacking`, Yao, Vehtari & Gelman 2022) with its test MLPD."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from ppl_dgp import diagnostics, stacking
from ppl_dgp.datasets import Standardizer
from ppl_dgp.predict import MixturePredictive
from ppl_dgp.report.constants import CHAIN_VIEW_INPUTS
from ppl_dgp.report.markdown import _f, _k_count, _sampled, _table
from ppl_dgp.report.multioutput import _units


def _subset(pred: MixturePredictive, idx: np.ndarray) -> MixturePredictive:
    """The mixture of components ``idx`` only."""
    return MixturePredictive(pred.means[idx], pred.variances[idx], pred.f_variances[idx])


def _per_chain(
    r: dict[str, Any], hyper: list[str], idx: np.ndarray, labels: list[str], y_te: np.ndarray,
    sy: Standardizer,
) -> dict[str, Any] | None:  # fmt: skip
    """The chains of one method side by side, and their stacking (Yao et al. 2022).

    For a method of ``C >= 2`` chains (each with at least 4 draws and 4 predictive
    components): the :class:`~ppl_dgp.diagnostics.ChainView` of its hyperparameters and of
    the predictive mean at the test inputs ``idx`` (original units), and the stacking weights
    of its chains (:func:`ppl_dgp.stacking.stacking_weights` on each chain's PSIS-LOO,
    :func:`ppl_dgp.diagnostics.loo_per_chain`) with the test MLPD (original units) of the
    stacked predictive ``sum_k w_k p_k``, of the chains pooled by their draws, and of each
    chain. ``None`` for other methods.
    """
    post = r["posterior"]
    C, D = post.num_chains, post.num_draws
    if C < 2 or D < 4 or r["component_chain"] is None:
        return None
    chain = np.asarray(r["component_chain"])
    counts = np.bincount(chain, minlength=C)
    if counts.min() < 4:
        return None
    comps = r["components"].rescale(*_units(sy))
    means = np.asarray(comps.means)[:, idx].reshape(len(chain), -1)  # [S, P] (inputs x outputs)
    n = int(counts.min())
    per_chain = np.stack([means[chain == c][:n] for c in range(C)])  # [C, n, P]
    sites = _sampled(post, hyper)  # a method may hold some as params or point estimates
    view = diagnostics.chain_view(r["datatree"], sites, predictive=per_chain,
                                  predictive_labels=labels)  # fmt: skip
    out: dict[str, Any] = {"view": view}
    if "log_likelihood" not in r["datatree"].children:
        return out
    elpd_i, k = diagnostics.loo_per_chain(r["datatree"])  # [C, N]
    w = stacking.stacking_weights(elpd_i.T)
    y = jnp.asarray(y_te)
    lpd = np.stack([np.asarray(_subset(comps, np.flatnonzero(chain == c)).log_density(y))
                    for c in range(C)], axis=1)  # [T, C]  # fmt: skip
    if lpd.ndim == 3:  # [T, C, P]: each output's marginal, averaged as the test table's MLPD
        lpd = lpd.mean(axis=2)
    pooled = counts / counts.sum()
    out |= {
        "weights": w,
        "loo_chain": elpd_i.sum(axis=1),
        "k_chain": k,  # [C, N]
        "loo_stacked": float(stacking.stacked_log_density(elpd_i.T, w).sum()),
        "loo_equal": float(stacking.stacked_log_density(elpd_i.T, np.full(C, 1 / C)).sum()),
        "test_chain": lpd.mean(axis=0),
        "test_stacked": stacking.stacked_log_score(lpd, w),
        "test_pooled": stacking.stacked_log_score(lpd, pooled),
    }
    return out


def _chains_section(name: str, c: dict[str, Any]) -> str:
    """The per-chain view and the stacking of one method's chains (:func:`_per_chain`)."""
    v = c["view"]
    C = v.num_chains
    s = [f"\n## Chains of {name}\n\n"]
    rule = (
        f"R-hat across chains <= {v.rhat_max} for every hyperparameter and for the predictive "
        f"mean at {CHAIN_VIEW_INPUTS} test inputs"
    )
    if v.verdict == "mixing":
        worst = np.nanmax(v.rhat)
        s.append(f"The {C} chains agree ({rule}; max {worst:.3f}): their draws are pooled.\n")
        return "".join(s)
    worst = int(np.nanargmax(np.where(np.isnan(v.rhat), np.inf, v.rhat)))
    s.append(
        f"**The {C} chains disagree** (R-hat up to {v.rhat[worst]:.2f}, at "
        f"`{v.quantities[worst]}`). "
    )
    if v.verdict == "separate modes":
        s.append(
            f"Each chain is stationary on its own (its split-R-hat, its two halves as "
            f"chains, <= {v.within_max} everywhere): the chains sit in **separate modes**. "
            "More draws will not mix them; the pooled draws weight each mode by how many "
            "chains landed there, the stacking below by how well it predicts.\n"
        )
    elif v.verdict == "few draws":
        s.append(
            f"No chain drifts (its own split-R-hat <= {v.within_max}) and the chains overlap "
            f"(R-hat <= {diagnostics.SEPARATE_RHAT_MIN} everywhere), but they hold **too few "
            f"effective draws** to show that they agree to R-hat <= {v.rhat_max}: more draws "
            "are the cure (see the bulk ESS in the summary).\n"
        )
    else:
        drift = ", ".join(str(k) for k in v.drifting)
        s.append(
            f"Chain(s) {drift} are **not converged**: they drift within themselves (a "
            f"split-R-hat of the chain alone above {v.within_max}; their rank plots are "
            "not flat). A longer warm-up is the cure; stacking does not make a drifting "
            "chain a sample of anything.\n"
        )
    s.append(
        "\nPer chain: mean (sd) of each hyperparameter and of the predictive mean of y at "
        "test inputs (original units); R-hat across the chains; the largest split-R-hat of a "
        "chain on its own (its halves as two chains).\n\n"
    )
    heads = [f"chain {k}" + (" (drifting)" if k in v.drifting else "") for k in range(C)]
    s.append(_table(
        ["quantity", *heads, "R-hat", "within-chain R-hat (max)"],
        [[f"`{q}`", *(f"{_f(v.means[i, k])} ({_f(v.sds[i, k], '.2g')})" for k in range(C)),
          _f(v.rhat[i], ".3f"), _within(v.within_rhat[i])]
         for i, q in enumerate(v.quantities)],
    ))  # fmt: skip
    if "weights" not in c:
        return "".join(s)
    s.append(
        "\n**Stacking of chains** (Yao, Vehtari & Gelman 2022): weights on the chains "
        "maximising the PSIS-LOO log score of the chain mixture, sum_i log sum_k w_k "
        "p_k(y_i | y_-i), with p_k the predictive of chain k alone "
        "(`ppl_dgp.stacking.stacking_weights`). Per chain: its weight, its own PSIS-LOO elpd "
        "and Pareto k > 0.7 count, its test MLPD.\n\n"
    )
    s.append(_table(
        ["chain", "weight", "elpd_loo (chain alone)", "k > 0.7", "test MLPD (chain alone)"],
        [[k, _f(c["weights"][k], ".3f"), _f(c["loo_chain"][k], ".1f"),
          _k_count(c["k_chain"][k], 0.7, total=False), _f(c["test_chain"][k], ".3f")]
         for k in range(C)],
    ))  # fmt: skip
    if np.isnan(c["k_chain"]).any():
        s.append(
            "\nA chain's Pareto k of NaN (PSIS could not fit the tail) is counted apart "
            "(`+ n NaN`), not as good.\n"
        )
    s.append(
        f"\nTest MLPD of the stacked predictive {c['test_stacked']:.3f}, of the chains pooled "
        f"by their draws {c['test_pooled']:.3f}; LOO log score (sum over training points) of "
        f"the stacking {c['loo_stacked']:.1f}, of equal weights {c['loo_equal']:.1f}.\n"
    )
    if c["loo_stacked"] - c["loo_equal"] < 1.0:
        s.append(
            "\nThe stacking gains less than one nat of LOO over equal weights: the chains "
            "predict alike, and the weights (which then follow Monte Carlo noise) mean "
            "little.\n"
        )
    return "".join(s)


def _within(r: np.ndarray) -> str:
    """The largest within-chain split-R-hat of a quantity; ``stuck`` when a chain never moves."""
    return "stuck" if np.isnan(r).any() else f"{np.max(r):.3f}"
