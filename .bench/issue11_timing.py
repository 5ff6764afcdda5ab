"""Issue 11, must-show 3: the compile time each likelihood adds, one JSON row per
(likelihood, method) on stdout.

One program for every likelihood: :func:`~ppl_dgp.models.dgp.dgp_likelihood_model`, a
2-layer DGP (``M = 10`` per layer, ``N = 60`` seeded inputs in 2-D), the last layer with the
likelihood's latent width; the Gaussian row is :func:`~ppl_dgp.models.dgp.dgp_regression` (the
closed form every other row is compared with). Each (likelihood, method) is fitted once at a
few steps in a fresh compile cache (``compile_seconds`` is the fit's tracing + XLA compilation,
``run_seconds`` its steps); ``extra_compile_seconds`` is the difference with the Gaussian row
of the same method, run in the same process and sitting.

    export CI=1 PYTHONHASHSEED=0 OMP_NUM_THREADS=1
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        taskset -c 0 .venv/bin/python .bench/issue11_timing.py [svi,nuts,laplace] [likelihoods]

The optional second argument (comma-separated names of :func:`data`'s likelihoods) fits only
those: one likelihood per process, so that no row inherits another's compilations (in one
process the first row, the Gaussian, also pays the process's first compilations of shared
pieces, which makes every later row look cheaper). ``persistent_cache`` is JAX's persistent
compilation cache folder (``None``: off; this script does not turn it on).
``fit_cpu_seconds`` is the process's CPU time (all threads) during the fit: on a loaded
machine the wall-clock ``compile_seconds`` include the time other processes held the cores,
and the CPU time, nearly all of it compilation at these few steps, does not.

The time per fit of the figures themselves (breast cancer, digits, motorcycle, LMC) is each
figure script's ``fit_seconds`` / ``compile_seconds`` (``.bench/issue11_classification.py``,
``issue11_motorcycle.py``, ``issue11_lmc.py``), run under the same flags.

Measured (``svi,nuts``; one thread, float64, a shared 2-core machine at load 14-20, which
inflates every second several times and makes differences of a few seconds noise), compile
seconds per likelihood, SVI / NUTS: Gaussian 56.2 / 99.8 (the first row of each method also
pays the process's first compilations), heteroscedastic 33.9 / 59.1, Student-t 56.9 / 44.3,
Bernoulli probit 63.3 / 46.9, Bernoulli logit 45.4 / 44.1, robust-max 53.0 / 29.2, softmax
58.9 / 40.1, Poisson 67.9 / 32.3: no likelihood compiles slower than the Gaussian beyond
the load's noise (SVI: -22 to +12 s; NUTS: every other row below it). Run seconds (20 SVI
steps; 10 + 10 NUTS draws): 0.5-0.8 / 0.9-6.3.

The figures' fits in the same sitting (``fit_seconds``, compile in brackets): breast cancer
SVI 59 (37), NUTS 500 + 500 302 (60), Laplace 87 (77); digits DGP-2 SVI 300 steps 222 (59),
BNN MAP 15 (5), BNN Laplace 14 (7); motorcycle SVI 5000 steps homoscedastic 74 (66),
heteroscedastic 53 (48), NUTS 300 + 300 98 (71) and 149 (76); LMC 10000 SVI steps, a kernel
per latent GP 172 (64), shared kernel 93 (34).

Measured again (``svi``, one thread, float64, ``nice -n 5``, no ``taskset``, no persistent
cache, ``PPL_DGP_CACHE_DIR`` a fresh empty folder per process; the shared 2-core machine at
load 3.5-6.4), each likelihood in its own process four times (wall ``compile_seconds``) and
three times with ``fit_cpu_seconds``, min / median:

    likelihood                 compile s (wall, 4 runs)   fit CPU s (3 runs)
    gaussian                    7.3 / 17.6                12.4 / 12.7
    heteroscedastic_gaussian    8.9 / 15.4                 9.1 /  9.5
    student_t                   9.6 / 12.8                10.1 / 11.3
    bernoulli_probit            9.9 / 11.1                 9.3 / 10.2
    bernoulli_logit            14.8 / 17.1                10.8 / 12.0
    categorical_robustmax      14.7 / 18.0                11.4 / 12.6
    categorical_softmax        15.5 / 18.5                12.1 / 12.2
    poisson                    11.7 / 16.6                10.6 / 11.0  (4 runs)

No likelihood needs more CPU to compile than the Gaussian (min -3.3 to -0.3 s, median -3.2 to
-0.1 s); the wall medians are within +0.9 s of the Gaussian's and the wall spread of one
likelihood across runs (up to 15 s) is larger than any difference between likelihoods. In one
process (two runs of ``svi``) the rows after the first ranged 7.7-23 s.
"""

from __future__ import annotations

import functools
import json
import sys
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ppl_dgp.infer import NUTS, SVI, fit  # noqa: E402
from ppl_dgp.laplace import Laplace  # noqa: E402
from ppl_dgp.likelihoods import (  # noqa: E402
    Bernoulli,
    Categorical,
    HeteroscedasticGaussian,
    Poisson,
    StudentT,
)
from ppl_dgp.models.dgp import dgp_likelihood_model, dgp_regression, init_dgp  # noqa: E402

N, D, M = 60, 2, 10
METHODS = {
    "svi": lambda: SVI(num_steps=20, learning_rate=0.01, num_samples=10),
    "nuts": lambda: NUTS(num_warmup=10, num_samples=10, num_chains=1, max_tree_depth=4),
    "laplace": lambda: Laplace(curvature="hessian", num_steps=20, num_samples=10),
}


def data() -> dict[str, tuple]:
    """``{likelihood name: (likelihood or None, y)}`` on one seeded input set."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-2.0, 2.0, size=(N, D))
    f = np.sin(2.0 * X[:, 0]) + 0.5 * X[:, 1]
    return X, {
        "gaussian": (None, f + 0.1 * rng.normal(size=N)),
        "heteroscedastic_gaussian": (HeteroscedasticGaussian(),
                                     f + np.exp(0.5 * X[:, 1] - 1.5) * rng.normal(size=N)),
        "student_t": (StudentT(df=4.0), f + 0.1 * rng.standard_t(4.0, size=N)),
        "bernoulli_probit": (Bernoulli("probit"), (f > 0).astype(np.int32)),
        "bernoulli_logit": (Bernoulli("logit"), (f > 0).astype(np.int32)),
        "categorical_robustmax": (Categorical(3, link="robustmax"),
                                  np.digitize(f, [-0.5, 0.5]).astype(np.int32)),
        "categorical_softmax": (Categorical(3, link="softmax"),
                                np.digitize(f, [-0.5, 0.5]).astype(np.int32)),
        "poisson": (Poisson(link="exp"), rng.poisson(np.exp(f))),
    }  # fmt: skip


def program(X: np.ndarray, likelihood) -> functools.partial:
    config = init_dgp(X, num_layers=2, num_inducing=M)
    if likelihood is None:
        return functools.partial(dgp_regression, **config)
    import dataclasses

    layers = config["layers"]
    last = dataclasses.replace(layers[-1], num_outputs=likelihood.latent_dim)
    return functools.partial(dgp_likelihood_model, layers=(*layers[:-1], last),
                             likelihood=likelihood)  # fmt: skip


if __name__ == "__main__":
    methods = sys.argv[1].split(",") if len(sys.argv) > 1 else ["svi", "nuts", "laplace"]
    X, sets = data()
    if len(sys.argv) > 2:  # only these likelihoods (one per process: no shared warm-up)
        sets = {name: sets[name] for name in sys.argv[2].split(",")}
    # this script never turns JAX's persistent cache on: every process compiles afresh
    cache = jax.config.jax_compilation_cache_dir
    base: dict[str, float] = {}
    for method in methods:
        for name, (lik, y) in sets.items():
            model = program(X, lik)
            t, cpu = time.perf_counter(), time.process_time()
            try:
                post = fit(METHODS[method](), jax.random.key(0), model, X, y)
            except Exception as err:  # a combination the method does not support: say so
                error = f"{type(err).__name__}: {err}"[:300]
                print(json.dumps({"likelihood": name, "method": method, "error": error}),
                      flush=True)  # fmt: skip
                continue
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            c = float(post.timings.get("compile_seconds", 0.0))
            if name == "gaussian":
                base[method] = c
            row = {"likelihood": name, "method": method, "compile_seconds": round(c, 2),
                   "run_seconds": round(float(post.timings.get("run_seconds", 0.0)), 2),
                   "fit_seconds": round(wall, 2), "fit_cpu_seconds": round(cpu, 2),
                   "extra_compile_seconds": round(c - base.get(method, np.nan), 2),
                   "persistent_cache": cache}  # fmt: skip
            print(json.dumps(row), flush=True)
