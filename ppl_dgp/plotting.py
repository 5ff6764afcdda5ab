"""Figures for 1-D regression fits (matplotlib, imported lazily)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ppl_dgp.predict import MixturePredictive

__all__ = ["plot_predictive_1d", "plot_layer_samples_1d"]


def _plt() -> Any:
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            import matplotlib.pyplot as plt  # noqa: F401
        except ImportError:  # pragma: no cover - headless fallback
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_predictive_1d(
    ax: Any,
    X: np.ndarray,  # [N, 1] training inputs
    y: np.ndarray,  # [N]
    X_grid: np.ndarray,  # [G, 1]
    pred: MixturePredictive,
    *,
    title: str | None = None,
    num_component_lines: int = 0,
    color: str = "C0",
    label: str = "predictive",
) -> Any:
    """Data, mixture mean and central 50% / 95% bands of ``pred`` (fitted on ``X_grid``).

    Bands are exact mixture quantiles, so a multimodal or skewed predictive shows as such.
    ``num_component_lines`` overlays that many component means (the layer-sample spread).
    """
    g = np.asarray(X_grid)[:, 0]
    lo95, hi95 = (np.asarray(a) for a in pred.interval(0.95))
    lo50, hi50 = (np.asarray(a) for a in pred.interval(0.50))
    ax.fill_between(g, lo95, hi95, color=color, alpha=0.18, lw=0, label=f"{label} 95%")
    ax.fill_between(g, lo50, hi50, color=color, alpha=0.30, lw=0, label=f"{label} 50%")
    for s in range(min(num_component_lines, pred.means.shape[0])):
        ax.plot(g, np.asarray(pred.means[s]), color=color, lw=0.5, alpha=0.4)
    ax.plot(g, np.asarray(pred.mean), color=color, lw=2, label=f"{label} mean")
    ax.scatter(np.asarray(X)[:, 0], np.asarray(y), s=10, color="k", zorder=3, label="data")
    if title:
        ax.set_title(title)
    return ax


def plot_layer_samples_1d(
    axes: Any,
    X_grid: np.ndarray,  # [G, 1]
    moments: dict[str, tuple[Any, Any, Any]],
    *,
    num_lines: int = 20,
) -> Any:
    """One panel per layer: ``num_lines`` sampled layer outputs ``F [S, G, Q]`` against ``x``.

    Each line is one pass of marginal samples (one ``eps`` per grid point, as in the
    doubly-stochastic sampler), so lines look jagged where a layer is uncertain.
    """
    g = np.asarray(X_grid)[:, 0]
    names = list(moments)
    for l, (ax, name) in enumerate(zip(np.atleast_1d(axes), names, strict=False)):
        F = np.asarray(moments[name][0])
        for s in range(min(num_lines, F.shape[0])):
            ax.plot(g, F[s, :, 0], lw=0.8, alpha=0.6)
        comp = "".join(f"f{k + 1}(" for k in reversed(range(l + 1))) + "x" + ")" * (l + 1)
        ax.set_title(f"{name}: marginal samples of {comp}")
        ax.set_xlabel("x")
    return axes


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """``plt.subplots`` behind the lazy import."""
    return _plt().subplots(nrows, ncols, **kwargs)
