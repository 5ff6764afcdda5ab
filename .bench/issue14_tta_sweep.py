"""Steps to a target test MLPD for natural-gradient / Adam settings (issue 14, must-show 3).

Loops ``ppl_dgp.benchmarks.tta.run_time_to_accuracy`` (no time budget, ``max_steps``) over
``natgrad:gamma:lr`` configurations in one process and prints, per configuration, the step at
which the MLPD first reached the target, the best MLPD and the trace (every 100 steps). The
findings are in ``issue14_tta_lr.md``.

Usage: python .bench/issue14_tta_sweep.py DATASET TARGET MAX_STEPS last:0.1:0.01,last:0.1:0.03
"""

import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

from ppl_dgp.benchmarks.tta import run_time_to_accuracy  # noqa: E402
from ppl_dgp.compile_cache import enable_compile_cache  # noqa: E402

if __name__ == "__main__":
    enable_compile_cache()
    dataset, target, max_steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    for spec in sys.argv[4].split(","):
        natgrad, gamma, lr = spec.split(":")
        try:
            r = run_time_to_accuracy(dataset, target, t0=time.time(), budget_seconds=1e9,
                                     natgrad=None if natgrad == "none" else natgrad,
                                     natgrad_gamma=float(gamma), learning_rate=float(lr),
                                     max_steps=max_steps)  # fmt: skip
        except FloatingPointError as err:
            print(dataset, spec, "non-finite:", err, flush=True)
            continue
        print(dataset, spec, r["step_at_target"], r["best_mlpd"], [t[2] for t in r["trace"]],
              flush=True)  # fmt: skip
