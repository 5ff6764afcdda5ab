"""Issue 15, must-show 5: is the DSVI DGP-2 baseline on concrete trained to convergence?

The same split, standardisation, model (the zoo's 2-layer ``dgp``, ``M`` k-means inducing
points) and scoring (``S = 100`` predictive samples, original units) as
``.bench/issue15_sghmc_concrete.py`` and :func:`ppl_dgp.benchmarks.uci.run_split`; SVI is
trained in stages through one checkpoint directory (a fit with a larger ``num_steps``
continues the checkpointed one bit for bit, :mod:`ppl_dgp.checkpoint`), and after each stage
the test log-likelihood, RMSE and noise variance are printed, one JSON line per stage.

Usage::

    .venv/bin/python .bench/issue15_concrete_svi_curve.py --split 0 [--steps 1000,2000,4000]
        [--inducing 100] [--batch B] [--lr 0.01]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ppl_dgp.benchmarks.uci import csv_splits  # noqa: E402
from ppl_dgp.datasets import Standardizer  # noqa: E402
from ppl_dgp.infer import SVI, fit  # noqa: E402
from ppl_dgp.models import MODELS  # noqa: E402
from ppl_dgp.predictive import predict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/concrete.csv")
    ap.add_argument("--target", default="compressive_strength")
    ap.add_argument("--split", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inducing", type=int, default=100)
    ap.add_argument("--steps", default="1000,2000,4000")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()

    splits = csv_splits(args.data, args.target, args.split + 1, seed=args.seed)
    X_tr, y_tr, X_te, y_te = splits[args.split]
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    Xs, ys = sx.transform(X_tr), sy.transform(y_tr)
    model = MODELS["dgp"].make(Xs, num_inducing=args.inducing)
    key_fit, key_pred = jax.random.split(jax.random.key(args.seed + args.split))
    with tempfile.TemporaryDirectory() as ckpt:
        t0 = time.perf_counter()
        for steps in (int(s) for s in args.steps.split(",")):
            method = SVI(num_steps=steps, batch_size=args.batch, learning_rate=args.lr,
                         checkpoint_dir=ckpt, checkpoint_every=max(steps, 1))  # fmt: skip
            post = fit(method, key_fit, model, Xs, ys)
            pred = predict(key_pred, model, post, sx.transform(X_te), num_samples=100)
            m = pred.rescale(float(sy.mean), float(sy.std)).metrics(y_te)
            if "noise_variance" in post.draws:  # SVI's point estimate, as constant draws
                s2 = np.ravel(np.asarray(post.draws["noise_variance"]))[-1:]
            else:
                s2 = np.ravel(np.asarray(post.approx.medians["noise_variance"]))
            print(json.dumps({
                "split": args.split, "method": "svi", "steps": steps,
                "test_loglik": float(m["mlpd"]), "rmse": float(m["rmse"]),
                "noise_variance_orig": [float(v) for v in s2 * float(sy.std) ** 2],
                "elapsed_seconds": round(time.perf_counter() - t0, 1), "M": args.inducing,
                "batch": args.batch, "lr": args.lr,
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
