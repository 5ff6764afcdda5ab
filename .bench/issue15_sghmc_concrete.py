"""Issue 15, must-show 5: SGHMC (MW-MCEM hyperparameters) against the DSVI DGP-2 on concrete.

bayesian_benchmarks' protocol as ``ppl-dgp bench uci`` runs it (:mod:`ppl_dgp.benchmarks.uci`):
90/10 splits by a seeded permutation per split (``numpy.random.default_rng([seed, i])``),
``X`` and ``y`` standardised on the training part, the zoo's 2-layer ``dgp`` with ``M``
inducing points (k-means), test log-likelihood (mean log predictive density) and RMSE in the
original units of ``y``. Per run it also prints the noise variance in original units (the MCEM
estimate per chain for SGHMC; the point estimate for SVI, whose ``hyper="delta"`` fits it by
type-II maximum likelihood inside the bound).

SGHMC's options: ``--step-size``, ``--hyper-lr`` (MW-MCEM's Adam step), ``--window``,
``--mcem-params`` (the M-step also fits the inducing inputs ``Z``, as Havasi et al. do) and
``--mcem-objective expected`` (the M-step's output term ``log N(y | m, s2) - v / (2 s2)``, so
the noise variance does not collapse when ``Z`` is fitted); see :class:`ppl_dgp.infer.SGHMC`.
The SVI baseline's convergence in its number of steps: ``.bench/issue15_concrete_svi_curve.py``.

Usage (one split per process; the splits are independent)::

    .venv/bin/python .bench/issue15_sghmc_concrete.py --split 0 [--inducing 100]
        [--svi-steps 2000] [--burnin 2000] [--samples 100] [--thinning 10] [--chains 1]
        [--step-size 0.01] [--hyper-lr 0.01] [--window 100] [--mcem-params]
        [--mcem-objective marginal|expected] [--methods svi,sghmc]

The data file is ``../shared/data/concrete.csv`` beside the checkout (``--data`` to change).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ppl_dgp.benchmarks.uci import csv_splits  # noqa: E402
from ppl_dgp.datasets import Standardizer  # noqa: E402
from ppl_dgp.infer import SGHMC, SVI, fit  # noqa: E402
from ppl_dgp.models import MODELS  # noqa: E402
from ppl_dgp.predictive import predict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/concrete.csv")
    ap.add_argument("--target", default="compressive_strength")
    ap.add_argument("--split", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inducing", type=int, default=100)
    ap.add_argument("--svi-steps", type=int, default=2000)
    ap.add_argument("--burnin", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--thinning", type=int, default=10)
    ap.add_argument("--chains", type=int, default=1)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--step-size", type=float, default=0.01)
    ap.add_argument("--hyper-lr", type=float, default=0.01)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--mcem-params", action="store_true", help="MCEM also fits Z (Havasi et al.)")
    ap.add_argument("--mcem-objective", default="marginal", help="marginal or expected")
    ap.add_argument("--methods", default="svi,sghmc", help="of svi, sghmc, sghmc-sample")
    args = ap.parse_args()

    splits = csv_splits(args.data, args.target, args.split + 1, seed=args.seed)
    X_tr, y_tr, X_te, y_te = splits[args.split]
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    Xs, ys = sx.transform(X_tr), sy.transform(y_tr)
    model = MODELS["dgp"].make(Xs, num_inducing=args.inducing)
    methods = {
        "svi": SVI(num_steps=args.svi_steps, batch_size=args.batch),
        "sghmc": SGHMC(hyper="mcem", num_burnin=args.burnin, num_samples=args.samples,
                       thinning=args.thinning, num_chains=args.chains, batch_size=args.batch,
                       step_size=args.step_size, hyper_learning_rate=args.hyper_lr,
                       window=args.window, mcem_params=args.mcem_params,
                       mcem_objective=args.mcem_objective),
        # the hyperparameters sampled in the chain (the behaviour before MW-MCEM)
        "sghmc-sample": SGHMC(num_burnin=args.burnin, num_samples=args.samples,
                              thinning=args.thinning, num_chains=args.chains,
                              batch_size=args.batch),
    }  # fmt: skip
    key_fit, key_pred = jax.random.split(jax.random.key(args.seed + args.split))
    for name in args.methods.split(","):
        t = time.perf_counter()
        post = fit(methods[name], key_fit, model, Xs, ys)
        fit_s = time.perf_counter() - t
        pred = predict(key_pred, model, post, sx.transform(X_te), num_samples=100)
        m = pred.rescale(float(sy.mean), float(sy.std)).metrics(y_te)
        trace = None
        if "noise_variance" in post.draws:
            s2 = np.asarray(post.draws["noise_variance"])[:, -1]  # per chain, last draw
            trace = np.asarray(post.draws["noise_variance"])[0] * float(sy.std) ** 2
        elif post.approx is not None and "noise_variance" in getattr(post.approx, "medians", {}):
            s2 = np.atleast_1d(np.asarray(post.approx.medians["noise_variance"]))
        else:
            s2 = np.atleast_1d(np.asarray(post.params.get("noise_variance", np.nan)))
        row = {
            "split": args.split, "method": name, "test_loglik": float(m["mlpd"]),
            "rmse": float(m["rmse"]),
            "noise_variance_orig": [float(v) for v in np.ravel(s2) * float(sy.std) ** 2],
            "fit_seconds": round(fit_s, 1), "method_cfg": repr(methods[name]),
            "M": args.inducing, "batch": args.batch,
            "n_train": len(y_tr), "n_test": len(y_te),
            "noise_trace_orig": None if trace is None else np.round(trace[::5], 4).tolist(),
        }  # fmt: skip
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
