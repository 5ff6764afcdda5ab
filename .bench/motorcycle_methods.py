"""NUTS vs SGHMC vs SVI on one 2-layer DGP (motorcycle data, M = 20 per layer), side by side.

Prints one JSON object per method: timings, divergences, and for the hyperparameters and the
predictive mean at a few inputs the split R-hat, bulk ESS and ESS per second (NumPyro's
diagnostics; ArviZ's adapter is elsewhere), plus train RMSE / MLPD in original units.

    CI=1 .venv/bin/python .bench/motorcycle_methods.py [--warmup 500 --samples 500 --chains 4
        --max-tree-depth 10 --methods nuts,sghmc,svi,laplace]
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

from ppl_dgp.datasets import Standardizer, load_motorcycle
from ppl_dgp.infer import NUTS, SGHMC, SVI, Laplace, fit
from ppl_dgp.models import dgp
from ppl_dgp.predict import mixture_metrics_original_units
from ppl_dgp.predictive import predict

jax.config.update("jax_enable_x64", True)


def _diag(x: np.ndarray, seconds: float) -> dict:
    """R-hat, bulk ESS and ESS/s of draws shaped (chain, draw)."""
    ess = float(effective_sample_size(x[..., None])[0]) if x.shape[1] > 3 else float("nan")
    rhat = float(split_gelman_rubin(x[..., None])[0]) if x.shape[0] * x.shape[1] > 3 else None
    return {"rhat": rhat, "ess_bulk": ess, "ess_per_s": ess / seconds}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--methods", default="nuts,sghmc,svi,laplace")
    p.add_argument("--max-tree-depth", type=int, default=10)
    a = p.parse_args()

    X_raw, y_raw = load_motorcycle()
    sx, sy = Standardizer.fit(X_raw), Standardizer.fit(y_raw)
    X, y = sx.transform(X_raw), sy.transform(y_raw)
    model = functools.partial(dgp.dgp_regression, **dgp.init_dgp(X, num_layers=2, num_inducing=20))
    x_probe = sx.transform(np.array([[10.0], [20.0], [30.0], [45.0]]))  # ms
    methods = {
        "nuts": NUTS(
            num_warmup=a.warmup,
            num_samples=a.samples,
            num_chains=a.chains,
            max_tree_depth=a.max_tree_depth,
        ),  # fmt: skip
        "sghmc": SGHMC(
            batch_size=32, num_burnin=5000, num_samples=a.samples, thinning=10, num_chains=a.chains
        ),  # fmt: skip
        "svi": SVI(num_steps=5000, num_samples=a.samples),
        "laplace": Laplace(num_samples=a.samples),
    }
    for name in a.methods.split(","):
        t0 = time.perf_counter()
        post = fit(methods[name], jax.random.key(0), model, X, y)
        wall = time.perf_counter() - t0
        seconds = post.timings["run_seconds"]
        out = {"method": name, "wall_seconds": wall, **post.timings}
        if "diverging" in post.sample_stats:
            out["divergences"] = int(post.sample_stats["diverging"].sum())
            out["mean_tree_depth"] = float(post.sample_stats.get("tree_depth", np.nan).mean())
        hyper = {k: v for k, v in post.draws.items() if not k.endswith(".u")}
        out["hyper"] = {
            f"{k}[{i}]" if v.ndim == 3 else k: {
                "mean": float(x.mean()), "sd": float(x.std()), **_diag(x, seconds)
            }
            for k, v in hyper.items()
            for i, x in (enumerate(np.moveaxis(v, 2, 0)) if v.ndim == 3 else [(0, v)])
        }  # fmt: skip
        S = post.num_chains * post.num_draws
        pred = predict(jax.random.key(1), model, post, x_probe, num_samples=S)
        m = np.asarray(pred.means).reshape(post.num_chains, post.num_draws, -1)
        out["predictive_mean"] = {
            f"x={x:g}ms": {
                "mean": float(sy.inverse_transform(m[..., j].mean())),
                **_diag(m[..., j], seconds),
            }
            for j, x in enumerate([10, 20, 30, 45])
        }
        train = predict(jax.random.key(2), model, post, X, num_samples=min(S, 200))
        out["train"] = mixture_metrics_original_units(train, y_raw, float(sy.mean), float(sy.std))
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
