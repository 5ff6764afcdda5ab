"""Figures for fits and their comparison (matplotlib, imported lazily).

ArviZ's own plots (forest, densities, rank, trace) live in :mod:`ppl_dgp.diagnostics`, the
one module that imports ArviZ; this module draws from arrays and predictives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ppl_dgp.predict import MixturePredictive

__all__ = [
    "new_figure",
    "plot_layer_samples_1d",
    "plot_loss_traces",
    "plot_predictive_1d",
    "plot_predictive_bands",
    "plot_reliability",
]


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


def _finish(fig: Any, path: Any) -> Any:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        _plt().close(fig)
    return fig


def plot_predictive_bands(
    X: np.ndarray,  # [N, 1]
    y: np.ndarray,  # [N]
    X_grid: np.ndarray,  # [G, 1]
    preds: dict[str, MixturePredictive],
    path: Any = None,
) -> Any:
    """One panel per method: data, predictive mean and 50% / 95% bands (shared axes)."""
    n = len(preds)
    fig, axes = new_figure(1, n, figsize=(4.2 * n, 3.6), sharex=True, sharey=True, squeeze=False)
    for i, (ax, (name, pred)) in enumerate(zip(axes[0], preds.items(), strict=True)):
        plot_predictive_1d(ax, X, y, X_grid, pred, title=name, color=f"C{i}", label=name)
        ax.set_xlabel("x")
    axes[0, 0].set_ylabel("y")
    axes[0, 0].legend(loc="best", fontsize=7)
    return _finish(fig, path)


def plot_loss_traces(losses: dict[str, np.ndarray], path: Any = None) -> Any:
    """Loss (negative ELBO) per step, raw and smoothed, log-scaled when positive."""
    fig, ax = new_figure(1, 1, figsize=(6, 3.6))
    for i, (name, loss) in enumerate(losses.items()):
        loss = np.asarray(loss, dtype=float)
        w = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(loss, color=f"C{i}", alpha=0.25, lw=0.6)
        ax.plot(np.arange(w - 1, len(loss)), smooth, color=f"C{i}", lw=1.5, label=name)
    if all(np.all(np.asarray(v) > 0) for v in losses.values()):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (-ELBO)")
    ax.set_title(f"SVI loss trace (moving average of {w})")
    ax.legend()
    return _finish(fig, path)


def plot_reliability(curves: dict[str, dict[str, np.ndarray]], path: Any = None) -> Any:
    """Reliability diagram: accuracy against confidence per bin (from ``reliability_curve``)."""
    fig, ax = new_figure(1, 1, figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=1, label="calibrated")
    for i, (name, c) in enumerate(curves.items()):
        full = np.asarray(c["count"]) > 0
        ax.plot(np.asarray(c["confidence"])[full], np.asarray(c["accuracy"])[full], "o-",
                color=f"C{i}", label=name)  # fmt: skip
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("reliability diagram")
    ax.legend(fontsize=8)
    return _finish(fig, path)
