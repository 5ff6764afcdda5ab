"""Agreement of an approximate posterior with a reference one (normally NUTS).

Math stratum: NumPy and SciPy only. Two kinds of discrepancy:

**Marginal**, per scalar component ``j`` of each site, with reference draws ``a`` and the other
method's draws ``b`` (chains merged):

- standardised mean difference ``smd = (mean(b) - mean(a)) / sd(a)``;
- sd ratio ``sd(b) / sd(a)`` (``< 1``: the approximation is over-confident);
- ``w1 = W_1(a, b) / sd(a)``, the 1-D Wasserstein distance between the empirical marginals in
  units of the reference sd (0 for identical distributions; it sees shape, not just moments).

Components with zero reference sd are skipped (their standardised values are undefined); a
point estimate (one draw) has sd 0.

**Predictive**, at held-out inputs, between mixture predictives (anything with
``log_density(y)``, ``interval(prob)`` and ``cdf(y)``, e.g.
:class:`~ppl_dgp.predict.MixturePredictive`):

- ``mlpd_gap``: mean log predictive density of ``y`` under the method minus under the reference;
- ``coverage``: fraction of ``y`` inside the method's central ``prob`` interval (reference:
  ``ref_coverage``);
- ``ref_mass``: reference predictive mass inside the method's central ``prob`` interval,
  averaged over the inputs (``prob`` when the two predictives agree; less when the method's
  interval is too narrow); ``ref_mass_min``: the same at the worst input;
- ``w1``: the 1-D Wasserstein-1 distance between the two predictive distributions of ``y``
  at each input (:func:`mixture_wasserstein`), in units of the reference predictive sd there,
  averaged over the inputs (0: the same predictive); ``w1_max``: the worst input.

The predictive is what a DGP or a network identifies: two correct posteriors can disagree on
every inducing value or weight (layers can be permuted, signs flipped) and still give the same
distribution of ``y`` at every input, so ``w1`` and ``ref_mass`` are the agreement to read
where the per-site rows are not identifiable.

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
from scipy.special import ndtr
from scipy.stats import wasserstein_distance

__all__ = [
    "marginal_discrepancies",
    "mixture_cdf",
    "mixture_wasserstein",
    "predictive_discrepancies",
    "site_agreement",
]

#: Half-width of the integration range of :func:`mixture_wasserstein`, in component sds
#: beyond the outermost components (the mass left outside is below ``1e-22``).
W1_TAIL_SDS = 10.0
#: Grid points per smallest component sd in :func:`mixture_wasserstein` (trapezoid rule).
W1_POINTS_PER_SD = 50
#: Bounds on the number of grid points per input.
W1_MIN_POINTS, W1_MAX_POINTS = 2_001, 40_001


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
        mu_b, sd_b = b.mean(0), b.std(0, ddof=min(1, len(b) - 1))  # a point estimate: sd 0
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


def mixture_cdf(
    t: np.ndarray,  # [G]
    means: np.ndarray,  # [S]
    variances: np.ndarray,  # [S]
) -> np.ndarray:  # [G]
    """CDF of the equally weighted Gaussian mixture ``(1/S) sum_s N(m_s, v_s)`` at ``t``."""
    z = (np.asarray(t)[:, None] - np.asarray(means)[None, :]) / np.sqrt(variances)[None, :]
    return ndtr(z).mean(axis=1)


def mixture_wasserstein(
    means_a: np.ndarray,  # [S, N]
    variances_a: np.ndarray,  # [S, N]
    means_b: np.ndarray,  # [T, N]
    variances_b: np.ndarray,  # [T, N]
) -> np.ndarray:  # [N]
    """Wasserstein-1 distance between two Gaussian mixtures at each of ``N`` points.

    In one dimension

    .. math::
        W_1(p_a, p_b) = \\int_{-\\infty}^{\\infty} |F_a(t) - F_b(t)| \\, dt,

    with ``F`` the mixture CDFs ``(1/S) sum_s Phi((t - m_s) / sqrt(v_s))``. The integral is
    taken by the trapezoid rule on a uniform grid from ``W1_TAIL_SDS`` component sds below the
    lowest component to as far above the highest, with ``W1_POINTS_PER_SD`` points per
    smallest component sd (between ``W1_MIN_POINTS`` and ``W1_MAX_POINTS``). Working from the
    exact CDFs rather than from samples of the two predictives keeps the distance free of
    Monte Carlo noise (the empirical ``W_1`` of two samples of one distribution is positive).

    Args:
        means_a: component means of the first mixture ``[S, N]``.
        variances_a: its component variances ``[S, N]``.
        means_b: component means of the second mixture ``[T, N]``.
        variances_b: its component variances ``[T, N]``.

    Returns:
        ``W_1`` per point ``[N]``, in the units of ``y``.

    Example:
        Two Gaussians of equal variance are ``|m_a - m_b|`` apart:

        >>> import numpy as np
        >>> w = mixture_wasserstein(np.zeros((1, 2)), np.ones((1, 2)),
        ...                         np.array([[0.5, -2.0]]), np.ones((1, 2)))
        >>> np.round(w, 6)
        array([0.5, 2. ])
    """
    ma, va, mb, vb = (np.asarray(a, dtype=np.float64) for a in (means_a, variances_a, means_b,
                                                                  variances_b))  # fmt: skip
    if ma.shape != va.shape or mb.shape != vb.shape or ma.shape[1:] != mb.shape[1:]:
        raise ValueError(
            f"mixture_wasserstein: means and variances must be [S, N] and [T, N]; received "
            f"{ma.shape}, {va.shape}, {mb.shape}, {vb.shape}"
        )
    if not (np.all(va > 0) and np.all(vb > 0)):
        raise ValueError("mixture_wasserstein: component variances must be positive")
    out = np.empty(ma.shape[1])
    for n in range(ma.shape[1]):
        m = np.concatenate([ma[:, n], mb[:, n]])
        sd = np.sqrt(np.concatenate([va[:, n], vb[:, n]]))
        lo, hi = np.min(m - W1_TAIL_SDS * sd), np.max(m + W1_TAIL_SDS * sd)
        G = int(np.clip(W1_POINTS_PER_SD * (hi - lo) / sd.min(), W1_MIN_POINTS, W1_MAX_POINTS))
        t = np.linspace(lo, hi, G)
        gap = np.abs(mixture_cdf(t, ma[:, n], va[:, n]) - mixture_cdf(t, mb[:, n], vb[:, n]))
        out[n] = np.trapezoid(gap, t)
    return out


def predictive_discrepancies(
    pred: Any, reference: Any, y: np.ndarray, *, prob: float = 0.9
) -> dict[str, float]:
    """Predictive discrepancies of ``pred`` from ``reference`` at held-out ``y [N]``.

    Args:
        pred: the method's mixture predictive at the held-out inputs (``log_density``,
            ``interval``, ``cdf``, and component ``means`` and ``variances`` ``[S, N]``, as
            :class:`~ppl_dgp.predict.MixturePredictive`).
        reference: the reference's, at the same inputs.
        y: held-out targets ``[N]``, in the predictives' units.
        prob: the central interval's probability.

    Returns:
        ``{"mlpd_gap", "coverage", "ref_coverage", "ref_mass", "ref_mass_min", "w1",
        "w1_max"}`` (module docstring).
    """
    y = np.asarray(y, dtype=np.float64)
    lo, hi = (np.asarray(a) for a in pred.interval(prob))
    rlo, rhi = (np.asarray(a) for a in reference.interval(prob))
    mass = np.asarray(reference.cdf(hi)) - np.asarray(reference.cdf(lo))
    rm, rv = np.asarray(reference.means), np.asarray(reference.variances)
    w1 = mixture_wasserstein(np.asarray(pred.means), np.asarray(pred.variances), rm, rv)
    ref_mean = rm.mean(0)
    ref_sd = np.sqrt(np.mean(rv + rm**2, axis=0) - ref_mean**2)  # total variance
    return {
        "mlpd_gap": float(np.mean(pred.log_density(y)) - np.mean(reference.log_density(y))),
        "coverage": float(np.mean((y >= lo) & (y <= hi))),
        "ref_coverage": float(np.mean((y >= rlo) & (y <= rhi))),
        "ref_mass": float(np.mean(mass)),
        "ref_mass_min": float(np.min(mass)),
        "w1": float(np.mean(w1 / ref_sd)),
        "w1_max": float(np.max(w1 / ref_sd)),
    }
