"""Issue 12, must-show 3: a pathwise function sample evaluated at 10,000 inputs costs
O(features x inputs), not a Cholesky of the inputs.

One SVGP layer (SE kernel, D = 2, M = 50 inducing points, whitened q(u) with a random dense
q_sqrt), float64. Pathwise (Wilson et al. 2020, ppl_dgp.sampling): S draws of q(f), each
``u ~ q(u)``, L random Fourier features and the inducing update; the timed part is drawing the
S functions and evaluating them at N inputs (``evaluate_draws``, one draw at a time:
``batch_size=1`` keeps the N x L features of one draw in memory, not S of them), compiled
once per shape
(compile time excluded; each figure the median of 5 runs, ``block_until_ready``). The
Cholesky route: the joint q(f(X)) from ``conditional(..., full_cov=True)``, a Cholesky of the
N x N covariance (+1e-6 I) and S draws; it is O(N^3) and cannot run at N = 10,000 in a
sensible time/memory here (800 MB per covariance), so it is timed at N = 1000, 2000, 4000 and
extrapolated as N^3 to 10,000.

    CI=1 PYTHONHASHSEED=0 .venv/bin/python .bench/issue12_pathwise.py

Prints one JSON object: pathwise seconds per (S, L, N), the ratios N 40k / 10k, L 1024 / 256
and S 40 / 10 (linear: about 4 each), the Cholesky seconds per N and the extrapolation
to 10k. Timings on the
shared 2-core machine are inflated by other jobs; the ratios, measured in one sitting, are the
figures to read.

Measured (this session, CPU, the machine's load falling from ~8 to ~2 during the run):
pathwise S = 10 draws at N = 10,000 inputs: 3.3 s with L = 256 features, 6.4 s with L = 1024;
at N = 40,000: 9.5 s and 19.8 s. N x 4 -> time x 2.9-3.1, L x 4 -> x 1.9-2.1, S x 4 -> x 1.4
(linear with a fixed part: compiled-loop and per-draw set-up). Cholesky route, S = 10:
N = 1000 1.15 s, 2000 4.6 s, 4000 6.4 s; as N^3 from 4000: ~100 s at N = 10,000, against 6.4 s
for the pathwise draws, and 800 MB for the covariance alone.
"""

from __future__ import annotations

import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ppl_dgp.conditionals import conditional  # noqa: E402
from ppl_dgp.kernels import SquaredExponential  # noqa: E402
from ppl_dgp.linalg import cholesky  # noqa: E402
from ppl_dgp.sampling import evaluate_draws, sample_variational_function  # noqa: E402

D, M = 2, 50
RNG = np.random.default_rng(0)
KERNEL = SquaredExponential(variance=1.0, lengthscales=jnp.array([0.7, 1.3]))
Z = jnp.asarray(RNG.uniform(-3, 3, (M, D)))
Q_MU = jnp.asarray(RNG.normal(size=(M, 1)))
Q_SQRT = jnp.asarray(np.tril(0.3 * RNG.normal(size=(1, M, M)), -1) + 0.5 * np.eye(M)[None])
LMM = cholesky(KERNEL.K(Z), 1e-6)


def median_time(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def pathwise(S: int, L: int):
    @jax.jit
    def run(key, X):
        draws = jax.vmap(
            lambda k: sample_variational_function(
                k, KERNEL, Z, Q_MU, Q_SQRT, num_features=L, whiten=True, jitter=1e-6, Lmm=LMM
            )
        )(jax.random.split(key, S))
        return evaluate_draws(draws, X, batch_size=1)  # [S, N, 1], one draw at a time

    return run


def cholesky_route(S: int):
    @jax.jit
    def run(key, X):
        mean, cov = conditional(KERNEL, X, Z, Q_MU, Q_SQRT, whiten=True, full_cov=True,
                                jitter=1e-6)  # fmt: skip
        Lf = jnp.linalg.cholesky(cov[0] + 1e-6 * jnp.eye(X.shape[0]))  # [N, N]
        eps = jax.random.normal(key, (X.shape[0], S))
        return mean[:, 0][:, None] + Lf @ eps  # [N, S]

    return run


def main() -> None:
    key = jax.random.key(1)
    X = {n: jnp.asarray(RNG.uniform(-3, 3, (n, D))) for n in (1000, 2000, 4000, 10_000, 40_000)}
    out: dict = {"setup": {"D": D, "M": M, "kernel": "SE", "dtype": "float64",
                           "device": jax.devices()[0].platform}}  # fmt: skip
    rows = []
    # (S, L, N): N 10k -> 40k at two L; L 256 -> 1024 at two N; S 10 -> 40 at N = 10k
    for S, L, n in ((10, 256, 10_000), (10, 256, 40_000), (10, 1024, 10_000),
                    (10, 1024, 40_000), (40, 256, 10_000)):  # fmt: skip
        rows.append({"S": S, "L": L, "N": n, "seconds": median_time(pathwise(S, L), key, X[n])})
    out["pathwise"] = rows
    t = {(r["S"], r["L"], r["N"]): r["seconds"] for r in rows}
    out["ratio_N_40k_over_10k"] = {f"S=10,L={L}": t[(10, L, 40_000)] / t[(10, L, 10_000)]
                                   for L in (256, 1024)}  # fmt: skip
    out["ratio_L_1024_over_256_at_S10"] = {
        f"N={n}": t[(10, 1024, n)] / t[(10, 256, n)] for n in (10_000, 40_000)
    }
    out["ratio_S_40_over_10_at_L256_N10k"] = t[(40, 256, 10_000)] / t[(10, 256, 10_000)]
    chol = cholesky_route(10)
    crow = [{"S": 10, "N": n, "seconds": median_time(chol, key, X[n], repeats=3)}
            for n in (1000, 2000, 4000)]  # fmt: skip
    out["cholesky"] = crow
    out["cholesky_extrapolated_N10k_seconds"] = crow[-1]["seconds"] * (10_000 / 4000) ** 3
    out["pathwise_S10_L1024_N10k_seconds"] = t[(10, 1024, 10_000)]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
