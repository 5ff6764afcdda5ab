"""Calibration metrics: hand-computed ECE, calibrated vs over-confident, interval coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from ppl_dgp.calibration import (
    coverage_table,
    expected_calibration_error,
    interval_coverage,
    reliability_curve,
)


def test_ece_by_hand():
    # Binary probs -> confidences 0.9, 0.9, 0.6, 0.7; bins of width 0.5: [0.5, 1.0] holds all.
    probs = np.array([0.9, 0.1, 0.6, 0.3])
    labels = np.array([1, 1, 1, 0])  # correct, wrong, correct, correct
    # One bin: accuracy 3/4, mean confidence (0.9 + 0.9 + 0.6 + 0.7) / 4 = 0.775.
    assert expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(0.025)
    # Ten bins: 0.9 bin (acc 1/2, conf 0.9), 0.6 bin (1, 0.6), 0.7 bin (1, 0.7).
    ece = (2 * 0.4 + 0.4 + 0.3) / 4
    assert expected_calibration_error(probs, labels, num_bins=10) == pytest.approx(ece)
    curve = reliability_curve(probs, labels, num_bins=10)
    assert curve["count"].sum() == 4 and curve["count"][9] == 2
    assert np.isnan(curve["accuracy"][0])


def test_calibrated_probabilities_have_small_ece_and_sharpened_ones_do_not():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, size=(20000, 3))
    p = p**3 / (p**3).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in p])
    assert expected_calibration_error(p, labels) < 0.02
    sharp = p**4 / (p**4).sum(1, keepdims=True)  # over-confident
    assert expected_calibration_error(sharp, labels) > 0.08


def test_ece_rejects_bad_inputs():
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error(np.array([[0.5, 0.6]]), np.array([0]))
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(np.array([0.5, 0.6]), np.array([0]))


class _Gaussian:
    def __init__(self, sd):
        self.sd = sd

    def interval(self, prob):
        h = self.sd * norm.ppf(0.5 + prob / 2)
        return -h * np.ones(5000), h * np.ones(5000)


def test_coverage_of_central_intervals():
    y = np.random.default_rng(1).normal(size=5000)
    table = coverage_table(_Gaussian(1.0), y)
    for p, c in table.items():
        assert c == pytest.approx(p, abs=0.02)
    assert coverage_table(_Gaussian(0.5), y, probs=(0.9,))[0.9] < 0.65
    assert interval_coverage(np.zeros(2), np.ones(2), np.array([0.5, 2.0])) == 0.5


def test_bins_are_numpy_histograms_left_closed_ones():
    # netcal's ECE (laplace-torch's calibration example) bins with numpy.histogram: [lo, hi),
    # the last bin closed. Confidences exactly on an inner edge (0.75 with 4 bins) go up.
    probs = np.array([0.75, 0.9, 0.6])
    labels = np.array([0, 1, 1])  # confidences 0.75 (wrong), 0.9 and 0.6 (correct)
    # Bins [0.5, 0.75): {0.6}, gap 0.4; [0.75, 1]: {0.75, 0.9}, accuracy 1/2, gap 0.325.
    ece = (0.4 + 2 * 0.325) / 3
    assert expected_calibration_error(probs, labels, num_bins=4) == pytest.approx(ece, rel=1e-12)
    rng = np.random.default_rng(2)
    conf = np.concatenate([rng.uniform(0.5, 1.0, 500), np.linspace(0.0, 1.0, 16)[8:]])
    labels = (rng.uniform(size=conf.size) < conf).astype(int)
    curve = reliability_curve(conf, labels, num_bins=15)
    counts, edges = np.histogram(conf, bins=15, range=(0.0, 1.0))
    np.testing.assert_array_equal(curve["count"], counts)
    np.testing.assert_array_equal(curve["edges"], edges)
