"""DGP-2 SVI end to end at N = 1e6 (issue 14, must-show 4): set-up, 2000 steps, predict.

The synth10k function (``ppl_dgp.datasets.make_synth10k``'s ``f``) on ``N = 1,000,000``
inputs ``x ~ N(0, I_8)`` from ``np.random.default_rng(0)``, plus ``0.1 eps``; standardised;
the zoo's 2-layer DGP with M = 100 inducing points per layer (Z by k-means on a subsample,
``ppl_dgp.inducing.kmeans``), ``fit(SVI(num_steps=2000, batch_size=1024))``, then ``predict``
(S = 100 mixture components) at 10,000 held-out points. Prints one JSON object: the seconds
of each phase (compilation included: a fresh process), the test RMSE / MLPD, and the process's
peak resident memory (``ru_maxrss``) after each phase.

Usage: python .bench/issue14_million.py [N] [steps] [batch]
"""

import json
import resource
import sys
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ppl_dgp.datasets import Standardizer  # noqa: E402
from ppl_dgp.infer import SVI, fit  # noqa: E402
from ppl_dgp.models import MODELS  # noqa: E402
from ppl_dgp.predictive import predict  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(N: int = 1_000_000, steps: int = 2000, batch: int = 1024) -> dict:
    row: dict = {"N": N, "steps": steps, "batch_size": batch, "num_inducing": 100}
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    num_test = 10_000
    X = rng.normal(size=(N + num_test, 8))
    f = (np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2 - X[:, 2] * X[:, 3]
         + 0.5 * np.tanh(3 * X[:, 4]) + 0.1 * X[:, 5])  # fmt: skip
    y = f + 0.1 * rng.normal(size=N + num_test)
    Xtr, ytr, Xte, yte = X[:N], y[:N], X[N:], y[N:]
    sx, sy = Standardizer.fit(Xtr), Standardizer.fit(ytr)
    Xs, ys, Xts = sx.transform(Xtr), sy.transform(ytr), sx.transform(Xte)
    row["data_seconds"], row["data_peak_mb"] = time.perf_counter() - t, peak_mb()

    t = time.perf_counter()
    model = MODELS["dgp"].make(Xs, num_inducing=100)  # k-means Z on a subsample
    row["setup_seconds"], row["setup_peak_mb"] = time.perf_counter() - t, peak_mb()

    t = time.perf_counter()
    post = fit(SVI(num_steps=steps, batch_size=batch), jax.random.key(0), model, Xs, ys)
    row["fit_seconds"], row["fit_peak_mb"] = time.perf_counter() - t, peak_mb()
    row["fit_compile_seconds"] = post.timings["compile_seconds"]
    row["final_loss"] = float(post.traces["loss"][-1])

    t = time.perf_counter()
    pred = predict(jax.random.key(1), model, post, Xts, num_samples=100)
    jax.block_until_ready(pred.means)
    row["predict_seconds"], row["predict_peak_mb"] = time.perf_counter() - t, peak_mb()
    m = pred.metrics(sy.transform(yte))
    row["test_rmse_original_units"] = float(m["rmse"]) * float(np.squeeze(sy.std))
    row["test_mlpd_standardised"] = float(m["mlpd"])
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps(main(*args)), flush=True)
