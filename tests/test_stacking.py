"""Stacking of chains against answers known in closed form and a dense search of the simplex."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp

from ppl_dgp.stacking import stacked_log_density, stacked_log_score, stacking_weights


def test_chains_that_explain_disjoint_points_get_their_share_of_the_points():
    # Chain 0 gives points 0..n0-1 density e^a_i and the others 0 (log -inf), chain 1 the
    # reverse. The log score is sum_A (a_i + log w0) + sum_B (b_i + log w1): w0 = n0 / N.
    rng = np.random.default_rng(0)
    n0, n1 = 13, 7
    lpd = np.full((n0 + n1, 2), -np.inf)
    lpd[:n0, 0] = rng.normal(size=n0)
    lpd[n0:, 1] = rng.normal(size=n1)
    w = stacking_weights(lpd)
    np.testing.assert_allclose(w, [n0 / 20, n1 / 20], atol=1e-6)
    assert stacked_log_score(lpd, w) == pytest.approx(
        (lpd[:n0, 0].sum() + lpd[n0:, 1].sum() + n0 * np.log(n0 / 20) + n1 * np.log(n1 / 20)) / 20,
        rel=1e-9,
    )


def test_identical_chains_get_equal_weights_and_the_chains_own_score():
    rng = np.random.default_rng(1)
    col = rng.normal(-1.0, 0.5, size=50)
    lpd = np.stack([col] * 4, axis=1)
    w = stacking_weights(lpd)
    np.testing.assert_allclose(w, 0.25, atol=1e-12)
    assert stacked_log_score(lpd, w) == pytest.approx(col.mean(), rel=1e-12)


def test_a_chain_in_a_clearly_worse_mode_gets_no_weight():
    rng = np.random.default_rng(2)
    good = rng.normal(-1.0, 0.3, size=60)
    worse = good - 3.0 + 0.3 * rng.normal(size=60)  # every point ~e^-3 less likely
    w = stacking_weights(np.stack([worse, good], axis=1))
    assert w[0] < 1e-4 and w[1] > 1 - 1e-4


def test_stacking_weights_match_a_dense_search_of_the_simplex():
    rng = np.random.default_rng(3)
    N, K, step = 40, 3, 0.002
    lpd = rng.normal(size=(N, 1)) + rng.normal(0, 1.0, size=(N, K))  # overlapping chains
    w = stacking_weights(lpd)
    grid = np.array([(a, b, 1 - a - b) for a, b in itertools.product(np.arange(0, 1 + step / 2,
                     step), repeat=2) if a + b <= 1 + 1e-12])  # fmt: skip
    grid = np.clip(grid, 0, 1)
    with np.errstate(divide="ignore"):
        scores = logsumexp(lpd[None] + np.log(grid)[:, None, :], axis=2).mean(axis=1)
    best = grid[np.argmax(scores)]
    assert stacked_log_score(lpd, w) >= scores.max() - 1e-12  # no grid point is better
    np.testing.assert_allclose(w, best, atol=2 * step)


def test_stacked_log_density_is_the_log_of_the_weighted_mixture():
    lpd = np.log(np.array([[0.2, 0.4], [0.1, 0.05]]))
    w = np.array([0.25, 0.75])
    np.testing.assert_allclose(
        stacked_log_density(lpd, w), np.log([0.25 * 0.2 + 0.75 * 0.4, 0.25 * 0.1 + 0.75 * 0.05])
    )


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"lpd must be \[N, K\].*received shape \(5,\)"):
        stacking_weights(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        stacking_weights(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="-inf under every chain"):
        stacking_weights(np.array([[-np.inf, -np.inf], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"weights must be \[K\] = \[2\]"):
        stacked_log_density(np.zeros((3, 2)), np.array([0.5, 0.6]))
    assert stacking_weights(np.zeros((3, 1))).tolist() == [1.0]
