"""Figures for fits and their comparison (matplotlib, imported lazily).

ArviZ's own plots (rank, trace, k-hat) live in :mod:`ppl_dgp.diagnostics`, the one module
that imports ArviZ; this module draws from arrays and predictives, among them the
methods' marginals side by side (:func:`plot_marginals`, :func:`plot_forest`): one panel per
scalar quantity, titled with its site name (``layer0.lengthscales[1]``; no index for a scalar
site), one colour per method, one legend for the figure, no text over the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ppl_dgp.predict import MixturePredictive

__all__ = [
    "marginal_components",
    "new_figure",
    "plot_forest",
    "plot_layer_samples_1d",
    "plot_loss_traces",
    "plot_marginals",
    "plot_predictive_1d",
    "plot_output_bands",
    "plot_output_intervals",
    "plot_predictive_bands",
    "plot_reliability",
    "plot_chains",
    "plot_khat_panels",
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
    """One panel per method (three a row): data, predictive mean and 50% / 95% bands (shared
    axes, one legend)."""

    n = len(preds)
    nrows, ncols = _grid(n, 2 if n == 4 else 3)  # at most three panels a row
    fig, axes = new_figure(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows + 0.5), sharex=True,
                           sharey=True, squeeze=False, layout="constrained")  # fmt: skip
    for i, (ax, (name, pred)) in enumerate(zip(axes.flat, preds.items(), strict=False)):
        plot_predictive_1d(ax, X, y, X_grid, pred, title=name, color=f"C{i}", label=name)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for c in range(ncols):  # the lowest panel of each column carries the x axis
        ax = axes[-1 if c < n - (nrows - 1) * ncols else -2, c]
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("x")
    for ax in axes[:, 0]:
        ax.set_ylabel("y")
    _band_legend(fig)
    return _save_only(fig, path)


def _band_legend(fig: Any) -> None:
    """The shared legend of the predictive-band figures, above the panels."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color="0.5", alpha=0.25), Patch(color="0.5", alpha=0.45),
               Line2D([], [], color="0.3", lw=2),
               Line2D([], [], color="k", marker="o", ls="", ms=3)]  # fmt: skip
    fig.legend(handles, ["95% interval", "50% interval", "predictive mean", "training data"],
               loc="outside upper center", ncol=4, frameon=False, fontsize=9)  # fmt: skip


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
    """Reliability diagram, methods overlaid: accuracy against mean confidence per bin (the
    diagonal is calibration), and below it the test points per bin, a bar per method.

    Args:
        curves: ``{method: reliability_curve(...)}`` (:func:`ppl_dgp.calibration.
            reliability_curve`: ``confidence``, ``accuracy``, ``count``, ``edges``; empty bins
            are left out of the curve).
        path: where to save the PNG (``None``: return the figure).
    """
    from matplotlib.lines import Line2D

    names = list(curves)
    fig, (ax, axc) = new_figure(
        2, 1, figsize=(6.0, 6.6), sharex=True, height_ratios=(3, 1.3), layout="constrained"
    )
    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=1)
    edges = np.asarray(next(iter(curves.values()))["edges"]) if curves else np.linspace(0, 1, 11)
    width = np.diff(edges)
    n = max(len(names), 1)
    for i, name in enumerate(names):
        c = curves[name]
        count = np.asarray(c["count"])
        full = count > 0
        ax.plot(np.asarray(c["confidence"])[full], np.asarray(c["accuracy"])[full], "o-",
                color=f"C{i}", ms=4, lw=1.5, alpha=0.85)  # fmt: skip
        left = edges[:-1] + width * (0.1 + 0.8 * i / n)
        axc.bar(left[full], count[full], width=0.8 * width[full] / n, align="edge",
                color=f"C{i}")  # fmt: skip
    lo = min(
        (
            float(np.nanmin(np.asarray(c["edges"])[:-1][np.asarray(c["count"]) > 0]))
            for c in curves.values()
            if np.any(np.asarray(c["count"]) > 0)
        ),
        default=0.0,
    )
    lo = max(0.0, np.floor(lo * 10) / 10)  # the confidence is at least 1/K: show from there
    for a in (ax, axc):
        a.set_xlim(lo, 1.0)
    ax.set_ylim(-0.03, 1.03)  # a bin's accuracy may lie anywhere in [0, 1]
    ax.grid(alpha=0.3, lw=0.5)
    ax.set_ylabel("accuracy in the bin")
    ax.set_title("reliability diagram (test split)", fontsize=10)
    axc.set_ylim(0.7, 1.6 * max((float(np.max(c["count"])) for c in curves.values()),
                                default=1.0))  # fmt: skip
    _log_axis(axc, "y")  # a bin of 1 point shows beside one of 1000
    axc.set_ylabel("test points")
    axc.set_xlabel("confidence (probability of the predicted class)")
    handles = [Line2D([], [], color="k", ls="--", lw=1)]
    handles += [Line2D([], [], color=f"C{i}", marker="o", ms=4, lw=1.5) for i in range(len(names))]
    fig.legend(handles, ["calibrated", *names], loc="outside upper center",
               ncol=min(len(names) + 1, 4), frameon=False, fontsize=9)  # fmt: skip
    return _save_only(fig, path)


def _output_slice(pred: MixturePredictive, p: int) -> MixturePredictive:
    """Output ``p`` of a ``P``-output predictive (``means [S, N, P]``)."""
    return MixturePredictive(pred.means[..., p], pred.variances[..., p], pred.f_variances[..., p])


def plot_output_bands(
    X: np.ndarray,  # [N, 1]
    Y: np.ndarray,  # [N, P]
    X_grid: np.ndarray,  # [G, 1]
    preds: dict[str, MixturePredictive],  # means [S, G, P]
    path: Any = None,
    *,
    outputs: tuple[str, ...] | list[str] = (),
) -> Any:
    """Per-output predictive bands of a multi-output regression on one input: a row per
    method, a column per output (shared x; each output its own y, spanning its data and 75%
    of its range either side), data, predictive mean and 50% / 95% bands of the output's
    marginal mixture; one legend."""

    Y = np.asarray(Y)
    P = Y.shape[1]
    outputs = list(outputs) or [f"y[{p}]" for p in range(P)]
    nrows = len(preds)
    fig, axes = new_figure(nrows, P, figsize=(3.6 * P, 2.5 * nrows + 0.6), sharex=True,
                           sharey="col", squeeze=False, layout="constrained")  # fmt: skip
    for i, (name, pred) in enumerate(preds.items()):
        for p in range(P):
            ax = axes[i, p]
            plot_predictive_1d(ax, X, Y[:, p], X_grid, _output_slice(pred, p), color=f"C{i}",
                               label=name)  # fmt: skip
            ax.set_title(f"{name}: {outputs[p]}", fontsize=9)
            ax.tick_params(labelsize=8)
            if ax.get_legend() is not None:
                ax.get_legend().remove()
    for p in range(P):
        axes[-1, p].set_xlabel("x")
        # each output's axis spans its data and as much again: a far wider band (a method
        # gone wrong) runs out of the panel instead of squashing every other method's
        lo, hi = float(np.min(Y[:, p])), float(np.max(Y[:, p]))
        pad = 0.75 * ((hi - lo) or 1.0)
        axes[0, p].set_ylim(lo - pad, hi + pad)
    _band_legend(fig)
    return _save_only(fig, path)


def plot_output_intervals(
    Y_test: np.ndarray,  # [T, P]
    preds: dict[str, MixturePredictive],  # means [S, T, P]
    path: Any = None,
    *,
    outputs: tuple[str, ...] | list[str] = (),
    prob: float = 0.9,
    max_points: int = 40,
) -> Any:
    """Per-output predictive intervals at the test inputs of a multi-output regression (inputs
    of any width): a panel per output, the test points in the order of their held-out value
    (at most ``max_points``, evenly spread), the value (black) and each method's predictive
    mean and central ``prob`` interval beside it; one legend."""
    from matplotlib.lines import Line2D

    Y_test = np.asarray(Y_test)
    T, P = Y_test.shape
    outputs = list(outputs) or [f"y[{p}]" for p in range(P)]
    shown = T if T <= max_points else max_points
    width = max(3.8, 0.22 * shown + 1.5)  # a panel's
    if shown > 12:  # many points: the outputs one under another
        fig, axes = new_figure(P, 1, figsize=(width, 3.2 * P + 0.6), squeeze=False,
                               layout="constrained")  # fmt: skip
    else:
        fig, axes = new_figure(1, P, figsize=(width * P, 4.0), squeeze=False,
                               layout="constrained")  # fmt: skip
    n = len(preds)
    for p, ax in enumerate(axes.flat):
        order = np.argsort(Y_test[:, p], kind="stable")
        if T > max_points:
            order = order[np.round(np.linspace(0, T - 1, max_points)).astype(int)]
        x = np.arange(len(order))
        for i, pred in enumerate(preds.values()):
            one = _output_slice(pred, p)
            lo, hi = (np.asarray(a)[order] for a in one.interval(prob))
            mean = np.asarray(one.mean)[order]
            dx = (i + 1 - (n + 1) / 2) * 0.7 / (n + 1)  # methods side by side at each point
            ax.errorbar(x + dx, mean, yerr=[mean - lo, hi - mean], fmt="o", ms=3, lw=1,
                        capsize=2, color=f"C{i}")  # fmt: skip
        ax.scatter(x, Y_test[order, p], marker="_", s=160, lw=2, color="k", zorder=3)
        ax.set_title(outputs[p], fontsize=10)
        ax.set_xticks(x)
        ax.set_xticklabels([str(int(k)) for k in order], fontsize=7)
        ax.set_xlabel("test point (by held-out value)")
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{prob:.0%} interval")
    handles = [Line2D([], [], color=f"C{i}", marker="o", ms=3, lw=1) for i in range(n)]
    handles.append(Line2D([], [], color="k", marker="_", ms=12, lw=0, mew=2))
    fig.legend(handles, [*preds, "held-out value"], loc="outside upper center",
               ncol=min(n + 1, 7), frameon=False, fontsize=9)  # fmt: skip
    return _save_only(fig, path)


# -- the methods' marginals side by side -----------------------------------------------------


def marginal_components(
    samples: dict[str, dict[str, np.ndarray]], sites: list[str]
) -> dict[str, dict[str, np.ndarray]]:
    """Every scalar component of ``sites`` per method: ``{label: {method: draws [S]}}``.

    ``samples`` is ``{method: {site: (chain, draw, *shape)}}`` (``Posterior.draws``); chains
    are merged. A component is labelled ``site`` for a scalar site, else ``site[i]`` or
    ``site[i, j]``. Sites a method lacks are left out for that method.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for site in sites:
        for method, draws in samples.items():
            if site not in draws:
                continue
            v = np.asarray(draws[site], dtype=np.float64)
            flat = v.reshape(v.shape[0] * v.shape[1], -1)  # [S, P]
            shape = v.shape[2:]
            for j, idx in enumerate(np.ndindex(shape) if shape else [()]):
                label = f"{site}[{', '.join(map(str, idx))}]" if shape else site
                out.setdefault(label, {})[method] = flat[:, j]
    return out


def _log_axis(ax: Any, which: str = "x") -> None:
    """A log axis (``which``: ``"x"`` or ``"y"``) labelled in plain numbers, more per decade the
    fewer decades it spans (matplotlib's default labels the minor ticks of a short range as
    colliding ``a x 10^b``). Call it after the data are drawn."""
    from matplotlib import ticker

    getattr(ax, f"set_{which}scale")("log")
    lo, hi = getattr(ax, f"get_{which}lim")()
    decades = np.log10(hi / lo)
    subs = (
        (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
        if decades < 1
        else (1.0, 2.0, 5.0)
        if decades < 3
        else (1.0,)
    )
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _style(ax: Any, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_yticks([])
    ax.tick_params(labelsize=8)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return -(-n // ncols), ncols


def _shared_legend(fig: Any, methods: list[str], colors: dict[str, str], **kw: Any) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[m], lw=2, **kw) for m in methods]
    fig.legend(handles, methods, loc="outside upper center", ncol=len(methods), frameon=False)


def plot_marginals(
    samples: dict[str, dict[str, np.ndarray]],
    sites: list[str],
    path: Any = None,
    *,
    min_density_draws: int = 5,
    ncols: int = 3,
) -> Any:
    """Marginal densities of every scalar component of ``sites``, methods overlaid.

    One panel per component (:func:`marginal_components`). A method with at least
    ``min_density_draws`` draws is drawn as a Gaussian KDE (``scipy.stats.gaussian_kde``,
    Scott's bandwidth); one with fewer (a MAP, a small ensemble) as a dashed vertical line per
    draw, and so is a quantity a method holds at one value (fixed hyperparameters).
    A component positive in every method is drawn on a log axis (kernel variances and noise
    span orders of magnitude), its density taken on the log scale.

    Args:
        samples: ``{method: {site: (chain, draw, *shape)}}``.
        sites: the sites to draw (hyperparameters, typically).
        path: where to save the PNG (not saved when ``None``).
        min_density_draws: fewest draws for a density.
        ncols: panels per row.

    Returns:
        The matplotlib figure.
    """
    from scipy.stats import gaussian_kde

    comps = marginal_components(samples, sites)
    if not comps:
        raise ValueError(f"plot_marginals: no draws of {sites}")
    methods = list(samples)
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    nrows, ncols = _grid(len(comps), ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(3.6 * ncols, 2.5 * nrows + 0.5),
                           squeeze=False, layout="constrained")  # fmt: skip
    for ax, (label, per_method) in zip(axes.flat, comps.items(), strict=False):
        log = all(np.all(v > 0) for v in per_method.values())
        # methods drawn as lines interleave their dashes, so that equal values (a Laplace at
        # its MAP's hyperparameters) show every colour
        lined = [m for m, v in per_method.items()
                 if not (v.size >= min_density_draws and np.ptp(v) > 0)]  # fmt: skip
        gap = 3 * max(1, len(lined) - 1)
        for m, v in per_method.items():
            t = np.log(v) if log else v
            if t.size >= min_density_draws and np.ptp(t) > 0:
                kde = gaussian_kde(t)
                pad = 3.0 * float(np.sqrt(kde.covariance[0, 0]))  # the density reaches ~0
                g = np.linspace(t.min() - pad, t.max() + pad, 256)
                ax.plot(np.exp(g) if log else g, kde(g), color=colors[m], lw=1.6)
            else:  # few draws, or one value (a point estimate, fixed hyperparameters)
                for x in np.unique(v):
                    ax.axvline(x, color=colors[m], lw=1.4, ls=(3 * lined.index(m), (3, gap)))
        if log:
            _log_axis(ax)
        _style(ax, label)
        ax.set_xlabel("log scale" if log else "", fontsize=8)
    for ax in axes.flat[len(comps) :]:
        ax.set_visible(False)
    fig.supxlabel(
        f"marginal densities (dashed: a method's value where it has one, or one line per draw "
        f"where it has fewer than {min_density_draws} draws)",
        fontsize=9,
    )
    _shared_legend(fig, methods, colors)
    return _save_only(fig, path)


def plot_forest(
    samples: dict[str, dict[str, np.ndarray]],
    sites: list[str],
    path: Any = None,
    *,
    prob: float = 0.9,
    ncols: int = 3,
) -> Any:
    """Median and central intervals of every scalar component of ``sites``, a row per method.

    One panel per component (:func:`marginal_components`), the methods stacked in the same
    order in every panel (a point estimate is a lone marker): a thin line for the central
    ``prob`` interval, a thick one for the central 50%, a dot at the median (equal-tailed
    quantiles of the draws). Components positive in every method are on a log axis.

    Args:
        samples: ``{method: {site: (chain, draw, *shape)}}``.
        sites: the sites to draw.
        path: where to save the PNG (not saved when ``None``).
        prob: the outer interval's probability.
        ncols: panels per row.

    Returns:
        The matplotlib figure.
    """
    comps = marginal_components(samples, sites)
    if not comps:
        raise ValueError(f"plot_forest: no draws of {sites}")
    methods = list(samples)
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    nrows, ncols = _grid(len(comps), ncols)
    height = 0.3 * len(methods) + 0.9
    fig, axes = new_figure(nrows, ncols, figsize=(3.6 * ncols, height * nrows + 0.5),
                           squeeze=False, layout="constrained")  # fmt: skip
    a = (1.0 - prob) / 2.0
    for ax, (label, per_method) in zip(axes.flat, comps.items(), strict=False):
        for row, m in enumerate(methods):
            if m not in per_method:
                continue
            lo, q25, med, q75, hi = np.quantile(per_method[m], [a, 0.25, 0.5, 0.75, 1 - a])
            ax.plot([lo, hi], [row, row], color=colors[m], lw=1.0)
            ax.plot([q25, q75], [row, row], color=colors[m], lw=3.0)
            ax.plot([med], [row], "o", color=colors[m], ms=4)
        ax.margins(x=0.06)  # a lone point estimate at the range's end stays off the frame
        if all(np.all(v > 0) for v in per_method.values()):
            _log_axis(ax)
        ax.set_ylim(len(methods) - 0.5, -0.5)
        _style(ax, label)
    for ax in axes.flat[len(comps) :]:
        ax.set_visible(False)
    fig.supxlabel(f"median, central 50% and {prob:.0%} intervals of each method", fontsize=9)
    _shared_legend(fig, methods, colors, marker="o", ms=4)
    fig.get_layout_engine().set(h_pad=0.08)
    return _save_only(fig, path)


def _save_only(fig: Any, path: Any) -> Any:
    """Save a constrained-layout figure (no ``tight_layout``) and close it."""
    if path is not None:
        fig.savefig(path, dpi=100)
        _plt().close(fig)
    return fig


# -- chains and Pareto k ---------------------------------------------------------------------


def plot_chains(
    draws: dict[str, np.ndarray],
    sites: list[str],
    path: Any = None,
    *,
    diverging: np.ndarray | None = None,  # [chain, draw]
    title: str | None = None,
) -> Any:
    """Trace and per-chain density of every scalar component of ``sites``, a row each.

    Left: the draws of each chain against the draw index (one colour per chain; divergent
    transitions as black ticks under the trace). Right: each chain's density (Gaussian KDE)
    on the same value axis, so chains stuck in separate modes show as separate bumps and a
    drifting chain as a trend. Components positive in every chain are on a log value axis.

    Args:
        draws: ``{site: (chain, draw, *shape)}`` (``Posterior.draws``).
        sites: the sites to draw.
        path: where to save the PNG (not saved when ``None``).
        diverging: divergent transitions ``(chain, draw)`` (marked when given).
        title: the figure's title.

    Returns:
        The matplotlib figure.
    """
    from matplotlib.lines import Line2D
    from scipy.stats import gaussian_kde

    comps: dict[str, np.ndarray] = {}  # label -> [C, D]
    C = None
    for site in sites:
        v = np.asarray(draws[site], dtype=np.float64)
        C, D = v.shape[:2]
        flat = v.reshape(C, D, -1)
        shape = v.shape[2:]
        for j, idx in enumerate(np.ndindex(shape) if shape else [()]):
            comps[f"{site}[{', '.join(map(str, idx))}]" if shape else site] = flat[:, :, j]
    if not comps:
        raise ValueError(f"plot_chains: no draws of {sites}")
    n = len(comps)
    fig, axes = new_figure(n, 2, figsize=(9.5, 1.55 * n + 0.7), squeeze=False,
                           gridspec_kw={"width_ratios": [4, 1]}, sharey="row",
                           layout="constrained")  # fmt: skip
    for (ax, ax_d), (label, x) in zip(axes, comps.items(), strict=True):
        log = bool(np.all(x > 0))
        for c in range(x.shape[0]):
            ax.plot(x[c], color=f"C{c}", lw=0.7, alpha=0.85)
            t = np.log(x[c]) if log else x[c]
            if np.ptp(t) > 0 and t.size > 2:
                kde = gaussian_kde(t)
                pad = 3.0 * float(np.sqrt(kde.covariance[0, 0]))
                g = np.linspace(t.min() - pad, t.max() + pad, 200)
                ax_d.plot(kde(g), np.exp(g) if log else g, color=f"C{c}", lw=1.4)
        if diverging is not None and np.any(diverging):
            # a tick per divergence in a strip under the traces (x: draw, y: axes fraction)
            d = np.nonzero(np.asarray(diverging))[1]
            ax.set_ymargin(0.25)
            ax.plot(d, np.full(d.size, 0.06), marker="|", color="k", ms=7, ls="",
                    transform=ax.get_xaxis_transform())  # fmt: skip
        if log:
            _log_axis(ax, "y")
        ax.set_title(label, fontsize=10, loc="left")
        ax.tick_params(labelsize=8)
        ax_d.set_xticks([])
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        for side in ("top", "right", "bottom"):
            ax_d.spines[side].set_visible(False)
    axes[-1, 0].set_xlabel("draw", fontsize=9)
    axes[-1, 1].set_xlabel("density per chain", fontsize=9)
    handles = [Line2D([], [], color=f"C{c}", lw=2) for c in range(C)]
    names = [f"chain {c}" for c in range(C)]
    if diverging is not None and np.any(diverging):
        handles.append(Line2D([], [], color="k", marker="|", ls="", ms=8))
        names.append(f"divergent ({int(np.sum(diverging))})")
    fig.legend(handles, names, loc="outside upper center", ncol=len(names), frameon=False,
               fontsize=9)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=11)
    return _save_only(fig, path)


def plot_khat_panels(
    pareto_k: dict[str, np.ndarray],  # {method: [N]}
    good_k: dict[str, float],
    path: Any = None,
    *,
    ncols: int = 4,
) -> Any:
    """PSIS-LOO Pareto ``k`` per observation, a panel per method.

    Each panel marks its own ``good_k = min(1 - 1 / log10(S), 0.7)`` (ArviZ's threshold for
    ``S`` draws) and ``k = 0.7`` and ``k = 1``, and its title counts the observations above
    ``good_k`` and above 0.7; points above ``good_k`` are drawn in red. Shared ``k`` axis.

    Args:
        pareto_k: ``k`` per observation ``[N]`` of each method.
        good_k: each method's threshold.
        path: where to save the PNG (not saved when ``None``).
        ncols: panels per row.

    Returns:
        The matplotlib figure.

    References:
        Vehtari, Simpson, Gelman, Yao & Gabry (2024), Pareto smoothed importance sampling,
        JMLR 25(72).
    """
    from matplotlib.lines import Line2D

    if not pareto_k:
        raise ValueError("plot_khat_panels: no methods given")
    nrows, ncols = _grid(len(pareto_k), ncols)
    width = max(3.6 * ncols, 7.2)  # room for the legend above a single panel
    fig, axes = new_figure(nrows, ncols, figsize=(width, 2.7 * nrows + 0.5), squeeze=False,
                           sharey=True, layout="constrained")  # fmt: skip
    for ax, (name, k) in zip(axes.flat, pareto_k.items(), strict=False):
        k = np.asarray(k, dtype=np.float64).ravel()
        g = float(good_k[name])
        bad = k > g
        i = np.arange(k.size)
        ax.scatter(i[~bad], k[~bad], s=9, color="C0")
        ax.scatter(i[bad], k[bad], s=9, color="C3")
        ax.axhline(g, color="C1", ls="--", lw=1)
        ax.axhline(0.7, color="0.4", ls=":", lw=1)
        ax.axhline(1.0, color="k", ls="-", lw=0.6)
        nan = int(np.isnan(k).sum())  # PSIS could not fit the tail: neither good nor counted
        ax.set_title(f"{name}: {int(bad.sum())} > good_k, {int(np.sum(k > 0.7))} > 0.7"
                     + (f", {nan} NaN" if nan else "") + f" (of {k.size})",
                     fontsize=9)  # fmt: skip
        ax.tick_params(labelsize=8)
        ax.set_xlabel("observation", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("Pareto k", fontsize=9)
    for ax in axes.flat[len(pareto_k) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color="C1", ls="--"), Line2D([], [], color="0.4", ls=":"),
               Line2D([], [], color="k", lw=0.6),
               Line2D([], [], color="C3", marker="o", ls="", ms=4)]  # fmt: skip
    fig.legend(handles, ["good_k (for the method's number of draws)", "k = 0.7", "k = 1",
                         "above good_k: LOO unreliable there"],
               loc="outside upper center", ncol=4 if width >= 12 else 2, frameon=False,
               fontsize=9)  # fmt: skip
    return _save_only(fig, path)
