"""Agreement of an approximate posterior with a reference one (normally NUTS).

Math stratum: NumPy and SciPy only. Two kinds of discrepancy:

**Marginal**, per scalar component ``j`` of each site, with reference draws ``a`` and the other
method's draws ``b`` (chains merged):

- standardised mean difference ``smd = (mean(b) - mean(a)) / sd(a)``;
- sd ratio ``sd(b) / sd(a)`` (``< 1``: the approximation is over-confident);
- ``w1 = W_1(a, b) / sd(a)``, the 1-D Wasserstein distance between the empirical marginals in
  units of the reference sd (0 for identical distributions; it sees shape, not just moments).

Components with zero reference sd are skipped (their standardised values are undefined).

**Predictive**, at held-out inputs, between mixture predictives (anything with
``log_density(y)``, ``interval(prob)`` and ``cdf(y)``, e.g.
:class:`~ppl_dgp.predict.MixturePredictive`):

- ``mlpd_gap``: mean log predictive density of ``y`` under the method minus under the reference;
- ``coverage``: fraction of ``y`` inside the method's central ``prob`` interval (reference:
  ``ref_coverage``);
- ``ref_mass``: reference predictive mass inside the method's central ``prob`` interval,
  averaged over the inputs (``prob`` when the two predictives agree; less when the method's
  interval is too narrow).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = {"w": rng.normal(size=(2, 500))}
    >>> b = {"w": 0.5 * rng.normal(size=(1, 500))}
    >>> row = marginal_discrepancies(a, b)[0]
    >>> round(row["sd_ratio"], 1)
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

__all__ = ["marginal_discrepancies", "predictive_discrepancies", "site_agreement"]


def _flat(v: np.ndarray) -> np.ndarray:  # (chain, draw, *shape) -> [S, P]
    v = np.asarray(v, dtype=np.float64)
    return v.reshape(v.shape[0] * v.shape[1], -1)


def marginal_discrepancies(
    reference: Mapping[str, np.ndarray],
    other: Mapping[str, np.ndarray],
    sites: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Per-component discrepancies of ``other``'s marginals from ``reference``'s.

    Args:
        reference: ``{site: (chain, draw, *shape)}`` draws (e.g. ``Posterior.draws`` of NUTS).
        other: the same sites from the method under test (any number of chains and draws).
        sites: the sites to compare (default: those present in both).

    Returns:
        One dict per scalar component: ``site``, ``index`` (flat component index), ``smd``,
        ``sd_ratio``, ``w1`` (see the module docstring).
    """
    names = sites if sites is not None else [k for k in reference if k in other]
    rows = []
    for name in names:
        a, b = _flat(reference[name]), _flat(other[name])
        if a.shape[1] != b.shape[1]:
            raise ValueError(
                f"marginal_discrepancies: site {name!r} has {a.shape[1]} components in the "
                f"reference and {b.shape[1]} in the other posterior"
            )
        mu_a, sd_a = a.mean(0), a.std(0, ddof=1)
        mu_b, sd_b = b.mean(0), b.std(0, ddof=1)
        for j in range(a.shape[1]):
            if not sd_a[j] > 0:
                continue
            rows.append(
                {
                    "site": name,
                    "index": j,
                    "smd": float((mu_b[j] - mu_a[j]) / sd_a[j]),
                    "sd_ratio": float(sd_b[j] / sd_a[j]),
                    "w1": float(wasserstein_distance(a[:, j], b[:, j]) / sd_a[j]),
                }
            )
    return rows


def site_agreement(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Summaries per site of :func:`marginal_discrepancies` rows.

    Returns:
        ``{site: {"max_abs_smd", "median_sd_ratio", "mean_w1", "max_w1", "components"}}``.
    """
    out: dict[str, dict[str, float]] = {}
    for site in dict.fromkeys(r["site"] for r in rows):
        sel = [r for r in rows if r["site"] == site]
        out[site] = {
            "max_abs_smd": max(abs(r["smd"]) for r in sel),
            "median_sd_ratio": float(np.median([r["sd_ratio"] for r in sel])),
            "mean_w1": float(np.mean([r["w1"] for r in sel])),
            "max_w1": max(r["w1"] for r in sel),
            "components": len(sel),
        }
    return out


def predictive_discrepancies(
    pred: Any, reference: Any, y: np.ndarray, *, prob: float = 0.9
) -> dict[str, float]:
    """Predictive discrepancies of ``pred`` from ``reference`` at held-out ``y [N]``.

    Returns:
        ``{"mlpd_gap", "coverage", "ref_coverage", "ref_mass"}`` (module docstring).
    """
    y = np.asarray(y, dtype=np.float64)
    lo, hi = (np.asarray(a) for a in pred.interval(prob))
    rlo, rhi = (np.asarray(a) for a in reference.interval(prob))
    mass = np.asarray(reference.cdf(hi)) - np.asarray(reference.cdf(lo))
    return {
        "mlpd_gap": float(np.mean(pred.log_density(y)) - np.mean(reference.log_density(y))),
        "coverage": float(np.mean((y >= lo) & (y <= hi))),
        "ref_coverage": float(np.mean((y >= rlo) & (y <= rhi))),
        "ref_mass": float(np.mean(mass)),
    }
