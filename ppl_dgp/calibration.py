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
- The Brier score is the mean squared error of the probability vector against the one-hot
  label, ``(1/N) sum_n sum_k (p_nk - [y_n = k])^2`` (Brier 1950; in ``[0, 2]``; a binary
  ``p [N]`` counts both classes, as scikit-learn's ``brier_score_loss`` times 2).

References:
    Guo, Pleiss, Sun & Weinberger (2017), "On Calibration of Modern Neural Networks", ICML.
    Brier (1950), "Verification of forecasts expressed in terms of probability", Monthly
    Weather Review.

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
    "brier_score",
    "classification_metrics",
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


def _class_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(probs [N, K], labels [N])`` checked; binary ``p [N]`` becomes ``[1 - p, p]``."""
    _confidence(probs, labels)  # the same checks as the ECE's
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=1)
    labels = np.asarray(labels)
    if not np.all(np.isin(labels, np.arange(probs.shape[1]))):
        raise ValueError(f"labels must be integers in range({probs.shape[1]})")
    return probs, labels.astype(np.int64)


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """``(1/N) sum_n sum_k (p_nk - [y_n = k])^2`` for ``probs [N]`` (binary) or ``[N, K]``."""
    probs, labels = _class_probs(probs, labels)
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum(np.square(probs - onehot), axis=1)))


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, num_bins: int = 10
) -> dict[str, float]:
    """Accuracy, NLL, ECE and Brier score of predictive class probabilities.

    ``nll = -(1/N) sum_n log p_n(y_n)`` (from the averaged probabilities; clipped at
    ``1e-300``), ``accuracy`` of the most probable class, ``ece``
    (:func:`expected_calibration_error`, ``num_bins`` bins) and ``brier``
    (:func:`brier_score`).

    Args:
        probs: ``[N]`` probability of class 1, or ``[N, K]`` class probabilities.
        labels: ``[N]`` integer labels.

    Example:
        >>> m = classification_metrics(np.array([0.9, 0.2]), np.array([1, 0]))
        >>> m["accuracy"], round(m["brier"], 4), round(m["nll"], 4)
        (1.0, 0.05, 0.1643)
    """
    P, y = _class_probs(probs, labels)
    p_true = P[np.arange(len(y)), y]
    return {
        "accuracy": float(np.mean(P.argmax(1) == y)),
        "nll": float(-np.mean(np.log(np.maximum(p_true, 1e-300)))),
        "ece": expected_calibration_error(probs, labels, num_bins),
        "brier": brier_score(probs, labels),
    }
