"""Issue 14, must-show 6: DGP-3 SVI at N = 1e6, M = 500, B = 10,000 on an accelerator.

The synth10k function on ``N = 1,000,000`` inputs ``x ~ N(0, I_8)`` (``default_rng(0)``) plus
``0.1 eps``, standardised; the zoo's ``dgp`` with 3 layers and M = 500 inducing points per layer
(Z by k-means on a subsample); ``fit(SVI(batch_size=10_000))``. One process per dtype (float32
/ float64 is JAX's global x64 switch). The steady step time is taken from two fits in the same
process, ``(run_seconds(S2) - run_seconds(S1)) / (S2 - S1)``, so that compilation (reported
apart, ``compile_seconds`` of the first fit) and set-up cancel; throughput is ``B`` over it.
Then NUTS on the motorcycle DGP-2 (the ``compare`` model) with chains vectorised on the
device. Prints one JSON object per line.

Usage: python .bench/issue14_gpu.py svi float32|float64 [N] [M] [B] [S1] [S2]
       python .bench/issue14_gpu.py nuts [chains] [warmup] [samples]
"""

import json
import os
import sys
import time


def svi(dtype: str, N: int, M: int, B: int, S1: int, S2: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    if os.environ.get("MATMUL_PRECISION"):  # e.g. "highest": no TF32 for float32 on GPUs
        jax.config.update("jax_default_matmul_precision", os.environ["MATMUL_PRECISION"])
    import numpy as np

    from ppl_dgp.datasets import Standardizer
    from ppl_dgp.infer import SVI, fit
    from ppl_dgp.models import MODELS

    f = np.float64 if dtype == "float64" else np.float32
    row: dict = {
        "job": "svi_dgp3",
        "dtype": dtype,
        "matmul_precision": os.environ.get("MATMUL_PRECISION", "default"),
        "N": N,
        "M": M,
        "batch_size": B,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
    }
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 8))
    y = (np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2 - X[:, 2] * X[:, 3]
         + 0.5 * np.tanh(3 * X[:, 4]) + 0.1 * X[:, 5]) + 0.1 * rng.normal(size=N)  # fmt: skip
    Xs = Standardizer.fit(X).transform(X).astype(f)
    ys = Standardizer.fit(y).transform(y).astype(f)
    t = time.perf_counter()
    model = MODELS["dgp"].make(Xs, num_inducing=M, layers=3)
    row["setup_seconds"] = round(time.perf_counter() - t, 3)
    Xd, yd = jax.device_put(Xs), jax.device_put(ys)
    runs = {}
    for S in (S1, S2):
        t = time.perf_counter()
        post = fit(SVI(num_steps=S, batch_size=B), jax.random.key(0), model, Xd, yd)
        wall = time.perf_counter() - t
        runs[S] = (wall, post.timings)
        row[f"fit{S}_wall_seconds"] = round(wall, 3)
        row[f"fit{S}_compile_seconds"] = round(post.timings["compile_seconds"], 3)
        row[f"fit{S}_final_loss"] = float(post.traces["loss"][-1])
    per_step = (runs[S2][1]["run_seconds"] - runs[S1][1]["run_seconds"]) / (S2 - S1)
    row["seconds_per_step"] = round(per_step, 6)
    row["points_per_second"] = round(B / per_step, 1)
    return row


def nuts(chains: int, warmup: int, samples: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from numpyro.diagnostics import split_gelman_rubin

    from ppl_dgp.datasets import Standardizer, load_motorcycle
    from ppl_dgp.infer import NUTS, fit
    from ppl_dgp.models import MODELS

    X, y = load_motorcycle()
    Xs, ys = Standardizer.fit(X).transform(X), Standardizer.fit(y).transform(y)
    model = MODELS["dgp"].make(Xs)
    row: dict = {
        "job": "nuts_motorcycle_dgp2",
        "chains": chains,
        "warmup": warmup,
        "samples": samples,
        "devices": jax.device_count(),
        "device": str(jax.devices()[0].device_kind),
        "chain_method": "vectorized",
    }
    t = time.perf_counter()
    post = fit(
        NUTS(num_chains=chains, num_warmup=warmup, num_samples=samples),
        jax.random.key(0),
        model,
        Xs,
        ys,
    )
    row["fit_seconds"] = round(time.perf_counter() - t, 3)
    row["compile_seconds"] = round(post.timings["compile_seconds"], 3)
    row["max_split_rhat"] = max(  # over every element of every site
        float(np.nanmax(split_gelman_rubin(v))) for v in post.draws.values()
    )
    row["divergences"] = int(np.sum(post.sample_stats.get("diverging", 0)))
    return row


if __name__ == "__main__":
    import numpy as np

    a = sys.argv[1:]
    if a[0] == "svi":
        nums = [int(v) for v in a[2:]] + [1_000_000, 500, 10_000, 50, 550][len(a) - 2 :]
        out = svi(a[1], *nums)
    else:
        nums = [int(v) for v in a[1:]] + [8, 300, 300][len(a) - 1 :]
        out = nuts(*nums)
    print(json.dumps(out), flush=True)
