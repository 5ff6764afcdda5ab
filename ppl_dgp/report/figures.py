"""The report's figures (PNGs beside it; matplotlib is imported when they are drawn): the
hyperparameters' forest and marginals, each MCMC run's rank and trace plots, the predictive
bands (per output for several), the optimisers' loss traces and the Pareto k of PSIS-LOO."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ppl_dgp import diagnostics
from ppl_dgp.predictive import predict
from ppl_dgp.report.constants import CI_PROB, MIN_CHAIN_PLOT_DRAWS, MIN_PLOT_DRAWS
from ppl_dgp.report.markdown import _sampled
from ppl_dgp.report.multioutput import _units


def _figures(res, hyper, out, X_tr, y_tr, sx, sy, model, key, d=None) -> list[str]:
    from ppl_dgp import plotting

    files = _posterior_figures(res, hyper, out)
    outputs = () if d is None else d.outputs
    if X_tr.shape[1] == 1:
        lo, hi = X_tr.min(), X_tr.max()
        pad = 0.05 * (hi - lo)
        grid_raw = np.linspace(lo - pad, hi + pad, 200)[:, None]
        grid = jnp.asarray(sx.transform(grid_raw))
        preds = {
            k: predict(
                jax.random.fold_in(key, 300), model, r["posterior"], grid, num_samples=200
            ).rescale(*_units(sy))
            for k, r in res.items()
        }
        if outputs:
            plotting.plot_output_bands(X_tr, y_tr, grid_raw, preds, out / "predictive.png",
                                       outputs=outputs)  # fmt: skip
        else:
            plotting.plot_predictive_bands(X_tr, y_tr, grid_raw, preds, out / "predictive.png")
        files.append("predictive.png")
    elif outputs:  # D > 1: the test points' intervals against their values, per output
        preds = {k: r["pred"].rescale(*_units(sy)) for k, r in res.items()}
        plotting.plot_output_intervals(d.y_te, preds, out / "predictive.png", outputs=outputs,
                                       prob=CI_PROB)  # fmt: skip
        files.append("predictive.png")
    return files + _fit_figures(res, out)


def _posterior_figures(res: dict, hyper: list[str], out: Path) -> list[str]:
    """The hyperparameters' forest and marginals, and each MCMC run's rank and trace plots."""
    from ppl_dgp import plotting

    files = []
    # a panel per hyperparameter; a method of fewer than MIN_PLOT_DRAWS draws (a MAP, a small
    # ensemble) is a line per draw in the densities
    samples = {k: r["posterior"].draws for k, r in res.items()}
    if hyper:
        plotting.plot_forest(samples, hyper, out / "forest.png", prob=CI_PROB)
        plotting.plot_marginals(
            samples, hyper, out / "marginals.png", min_density_draws=MIN_PLOT_DRAWS
        )
        files += ["forest.png", "marginals.png"]
    for name, r in res.items():
        if r["posterior"].num_chains > 1 and r["posterior"].num_draws >= MIN_CHAIN_PLOT_DRAWS:
            sites = _sampled(r["posterior"], hyper)
            if not sites:
                continue
            diagnostics.plot_rank(r["datatree"], sites, out / f"rank_{name}.png")
            diagnostics.plot_trace(r["datatree"], sites, out / f"trace_{name}.png")
            files += [f"rank_{name}.png", f"trace_{name}.png"]
    return files


def _fit_figures(res: dict, out: Path) -> list[str]:
    """The optimisers' loss traces and the PSIS-LOO Pareto k of every method with LOO."""
    from ppl_dgp import plotting

    files = []
    losses = {k: r["posterior"].traces["loss"] for k, r in res.items()
              if "loss" in r["posterior"].traces}  # fmt: skip
    if losses:
        plotting.plot_loss_traces(losses, out / "elbo.png")
        files.append("elbo.png")
    elpds = {k: r["loo"] for k, r in res.items() if r["loo"] is not None}
    if elpds:
        diagnostics.plot_khat(elpds, out / "khat.png")
        files.append("khat.png")
    return files
