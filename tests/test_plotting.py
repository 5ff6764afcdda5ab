"""Figures' text: what a panel title counts."""

import matplotlib
import numpy as np

matplotlib.use("Agg")

from ppl_dgp.plotting import plot_khat_panels  # noqa: E402


def test_khat_panel_titles_count_a_nan_k_apart():
    """A NaN Pareto k (PSIS could not fit the tail) is neither good nor silently dropped."""
    k = {"svi": np.array([0.1, 0.8, np.nan, 0.2]), "nuts": np.array([0.1, 0.2, 0.3, 0.4])}
    fig = plot_khat_panels(k, {"svi": 0.7, "nuts": 0.7})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == ["svi: 1 > good_k, 1 > 0.7, 1 NaN (of 4)",
                      "nuts: 0 > good_k, 0 > 0.7 (of 4)"]  # fmt: skip
    matplotlib.pyplot.close(fig)
