"""Calibration of predictive distributions: interval coverage (regression), ECE (classification).

Math stratum: NumPy only; probabilities and labels in, numbers out, so the same functions serve
every model and method.

- Regression: a central ``p`` interval is calibrated when a fraction ``p`` of held-out targets
  falls inside it (:func:`interval_coverage`, :func:`coverage_table`).
- Classification: bin the predicted probability of the predicted class (the *confidence*);
  in a calibrated model each bin's accuracy equals its mean confidence. The expected
  calibration error is the count-weighted mean gap,
  ``ECE = sum_b (n_b / N) |acc_b - conf_b|`` (Guo et al. 2017), and
  :func:`reliability_curve` gives the per-bin points of the reliability diagram. Bins are
  ``numpy.histogram``'s, ``[lo, hi)`` with the last one closed, as in netcal's ``ECE`` that
  laplace-torch's calibration example uses, so our figures compare with the peers' (the
  shared benchmark's two-moons ECE: 15 bins on ``max(p, 1 - p)``).

References:
    Guo, Pleiss, Sun & Weinberger (2017), "On Calibration of Modern Neural Networks", ICML.

Example:
    Three correct predictions with confidences 0.9, 0.8 and 0.7, each alone in its bin, are
    off by 0.1, 0.2 and 0.3 (the accuracy is 1):

    >>> import numpy as np
    >>> round(expected_calibration_error(np.array([0.9, 0.8, 0.3]), np.array([1, 1, 0])), 6)
    0.2
    >>> interval_coverage(np.array([0.0, 0.0]), np.array([1.0, 1.0]), np.array([0.5, 2.0]))
    0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "coverage_table",
    "expected_calibration_error",
    "interval_coverage",
    "reliability_curve",
]


def interval_coverage(lower: np.ndarray, upper: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``y [N]`` inside ``[lower, upper]`` (each ``[N]``)."""
    lower, upper, y = (np.asarray(a, dtype=np.float64) for a in (lower, upper, y))
    if not lower.shape == upper.shape == y.shape:
        raise ValueError(
            f"interval_coverage: shapes differ: {lower.shape}, {upper.shape}, {y.shape}"
        )
    return float(np.mean((y >= lower) & (y <= upper)))


def coverage_table(
    pred: Any, y: np.ndarray, probs: Sequence[float] = (0.5, 0.8, 0.9, 0.95)
) -> dict[float, float]:
    """Empirical coverage of ``pred``'s central intervals (anything with ``interval(prob)``)."""
    return {p: interval_coverage(*pred.interval(p), y) for p in probs}


def _confidence(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence [N], correct [N])`` from binary ``probs [N]`` or class ``probs [N, K]``."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=1)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"calibration: probs must be [N] or [N, K] and labels [N]; received "
            f"{probs.shape} and {labels.shape}"
        )
    if np.any(probs < 0) or np.any(probs > 1) or not np.allclose(probs.sum(1), 1.0, atol=1e-6):
        raise ValueError("calibration: probs must lie in [0, 1] and sum to 1 per row")
    pred = probs.argmax(1)
    return probs.max(1), (pred == labels).astype(np.float64)


def reliability_curve(
    probs: np.ndarray, labels: np.ndarray, num_bins: int = 10
) -> dict[str, np.ndarray]:
    """Per-bin mean confidence, accuracy and count (equal-width bins on the confidence).

    Args:
        probs: ``[N]`` probability of class 1, or ``[N, K]`` class probabilities.
        labels: ``[N]`` integer labels.
        num_bins: equal-width bins over ``[0, 1]`` (the confidence is at least ``1/K``).

    Returns:
        ``{"confidence", "accuracy", "count", "edges"}``; bins are ``[edges[b], edges[b+1])``
        (the last one closed: ``numpy.histogram``'s and netcal's convention); empty bins have
        ``count = 0`` and NaN confidence/accuracy.
    """
    conf, correct = _confidence(probs, labels)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, num_bins - 1)
    count = np.bincount(b, minlength=num_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=num_bins) / count
        acc = np.bincount(b, weights=correct, minlength=num_bins) / count
    return {"confidence": mean_conf, "accuracy": acc, "count": count, "edges": edges}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 10) -> float:
    """``ECE = sum_b (n_b / N) |acc_b - conf_b|`` over equal-width confidence bins."""
    c = reliability_curve(probs, labels, num_bins)
    full = c["count"] > 0
    gaps = np.abs(c["accuracy"][full] - c["confidence"][full])
    return float(np.sum(c["count"][full] * gaps) / np.sum(c["count"]))
