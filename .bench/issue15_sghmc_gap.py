"""Issue 15, must-show 5: why SGHMC (MW-MCEM) scores below the DSVI DGP-2 on concrete.

The protocol of ``.bench/issue15_sghmc_concrete.py`` (:func:`ppl_dgp.benchmarks.uci.run_split`:
split ``i`` of ``csv_splits(concrete.csv, seed=0)``, ``X`` and ``y`` standardised on the
training part, the zoo's 2-layer ``dgp`` with ``M`` k-means inducing points, test
log-likelihood and RMSE in MPa, noise variance in MPa^2), with diagnostics that separate the
predictive, the hyperparameters and the sampler:

- ``--passes K``: besides the protocol's predictive (``S = min(100, draws)`` components, one
  pass through the inner layer per component), the same posterior scored with ``K`` passes per
  draw (``K * draws`` components for SGHMC; ``100 K`` for SVI), i.e. the mixture over
  ``(u, eps)`` with more inner-layer noise samples per ``u``.
- method ``sghmc-fixed`` (after ``svi``): SGHMC samples only ``u``, the hyperparameters
  conditioned on and ``Z`` substituted at the values of the SVI fit of the same run (no
  MCEM): is the gap in the hyperparameters or in the sampled ``u``?
- ``--init-steps``: SGHMC's warm start (``SGHMC.init_steps``).
- ``--segments P``: the draws also scored in ``P`` consecutive parts (first draw index, test
  log-lik, RMSE per part), to see whether the fit drifts along the chain.
- With several chains: split-R-hat and bulk ESS of the predictive mean at the test inputs.

One JSON line per fitted method and scoring. Usage::

    .venv/bin/python .bench/issue15_sghmc_gap.py --split 0 --methods svi,sghmc [--passes 10]
        [--svi-steps 4000] [--burnin 3000] [--samples 50] [--thinning 10] [--chains 1]
        [--step-size 0.01] [--hyper-lr 0.01] [--window 100] [--objective expected]
        [--init-steps 0]   # methods of svi, sghmc, sghmc-fixed
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from numpyro.handlers import condition, substitute  # noqa: E402

from ppl_dgp.benchmarks.uci import csv_splits  # noqa: E402
from ppl_dgp.datasets import Standardizer  # noqa: E402
from ppl_dgp.infer import SGHMC, SVI, fit  # noqa: E402
from ppl_dgp.models import MODELS  # noqa: E402
from ppl_dgp.posterior import Posterior  # noqa: E402
from ppl_dgp.predictive import predict  # noqa: E402


def score(key, model, post, X_te, y_te, sy, S, passes):
    """``{S: (mlpd, rmse)}`` with the protocol's ``S`` and with ``passes`` passes per draw."""
    out = {}
    draws_total = next(iter(post.flat().values())).shape[0] if post.draws else None
    for k in sorted({1, passes}):
        p = post
        n = S * k
        if post.approx is None:  # draws: repeat each draw k times (fresh eps per pass)
            n = min(S, draws_total) * k
            p = post.replace(draws={s: np.repeat(v, k, axis=1) for s, v in post.draws.items()},
                             sample_stats={})  # fmt: skip
        pred = predict(key, model, p, X_te, num_samples=n)
        m = pred.rescale(float(sy.mean), float(sy.std)).metrics(y_te)
        out[n] = (round(float(m["mlpd"]), 4), round(float(m["rmse"]), 3))
        if k == 1:
            base = pred
    return out, base


def rhat_ess(post, model, key, X_te):
    """Split-R-hat and bulk ESS of the predictive mean per test input (several chains)."""
    import arviz as az

    C, D = next(iter(post.draws.values())).shape[:2]
    pred = predict(key, model, post, X_te, num_samples=C * D)
    means = np.asarray(pred.means).reshape(C, D, -1)  # draws spread chain-major
    ds = az.convert_to_dataset({"m": means})
    r = np.asarray(az.rhat(ds)["m"])
    e = np.asarray(az.ess(ds, method="bulk")["m"])
    return {"rhat_max": round(float(r.max()), 4), "rhat_median": round(float(np.median(r)), 4),
            "frac_rhat_le_1.05": round(float(np.mean(r <= 1.05)), 3),
            "ess_bulk_min": round(float(e.min()), 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/concrete.csv")
    ap.add_argument("--target", default="compressive_strength")
    ap.add_argument("--split", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inducing", type=int, default=100)
    ap.add_argument("--svi-steps", type=int, default=4000)
    ap.add_argument("--burnin", type=int, default=3000)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--thinning", type=int, default=10)
    ap.add_argument("--chains", type=int, default=1)
    ap.add_argument("--step-size", type=float, default=0.01)
    ap.add_argument("--hyper-lr", type=float, default=0.01)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--objective", default="expected")
    ap.add_argument("--init-steps", type=int, default=0)
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--methods", default="svi,sghmc")
    ap.add_argument("--tag", default="")
    ap.add_argument("--fit-seed", type=int, default=None, help="another key for the fits")
    ap.add_argument("--segments", type=int, default=1, help="score the draws in this many parts")
    ap.add_argument("--cache", default=None, help="a folder to keep/reuse the SVI fit in")
    args = ap.parse_args()

    splits = csv_splits(args.data, args.target, args.split + 1, seed=args.seed)
    X_tr, y_tr, X_te, y_te = splits[args.split]
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    Xs, ys, Xt = sx.transform(X_tr), sy.transform(y_tr), sx.transform(X_te)
    model = MODELS["dgp"].make(Xs, num_inducing=args.inducing)
    key_fit, key_pred = jax.random.split(jax.random.key(args.seed + args.split))
    if args.fit_seed is not None:  # another chain on the same split and test scoring
        key_fit = jax.random.key(args.fit_seed)
    svi_post = None
    for name in args.methods.split(","):
        fit_model = model
        if name == "svi":
            method = SVI(num_steps=args.svi_steps)
        else:
            extra = {} if args.init_steps == 0 else {"init_steps": args.init_steps}
            fixed = name == "sghmc-fixed"
            method = SGHMC(hyper="mcem", num_burnin=args.burnin, num_samples=args.samples,
                           thinning=args.thinning, num_chains=args.chains,
                           step_size=args.step_size, hyper_learning_rate=args.hyper_lr,
                           window=args.window, mcem_params=not fixed,
                           mcem_objective=args.objective, **extra)  # fmt: skip
            if fixed:  # hyperparameters observed, Z substituted at SVI's values
                fit_model = condition(substitute(model, data=dict(svi_post.params)),
                                      data=dict(svi_post.approx.medians))  # fmt: skip
        cached = None
        if name == "svi" and args.cache:  # the SVI fit is deterministic given the split
            cached = Path(args.cache) / f"svi_split{args.split}_steps{args.svi_steps}"
        t = time.perf_counter()
        if cached is not None and cached.with_suffix(".json").exists():
            post = Posterior.load(cached)
        else:
            post = fit(method, key_fit, fit_model, Xs, ys)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                post.save(cached)
        fit_s = time.perf_counter() - t
        if name == "svi":
            svi_post = post
            s2 = np.ravel(np.asarray(post.approx.medians["noise_variance"]))
        elif name == "sghmc-fixed":
            s2 = np.ravel(np.asarray(svi_post.approx.medians["noise_variance"]))
        else:
            s2 = np.asarray(post.draws["noise_variance"])[:, -1]
        scores, _ = score(key_pred, fit_model, post, Xt, y_te, sy, 100, args.passes)
        row = {
            "split": args.split, "method": name, "tag": args.tag,
            "scores_S_mlpd_rmse": scores,
            "noise_variance_orig": [round(float(v), 3) for v in s2 * float(sy.std) ** 2],
            "fit_seconds": round(fit_s, 1), "cfg": repr(method),
        }  # fmt: skip
        if name != "svi" and args.chains > 1:
            row.update(rhat_ess(post, fit_model, key_pred, Xt))
        if name != "svi" and args.segments > 1:  # the draws in order: does the fit drift?
            D = next(iter(post.draws.values())).shape[1]
            row["segments_mlpd_rmse"] = []
            for part in np.array_split(np.arange(D), args.segments):
                seg = post.replace(draws={s: v[:, part] for s, v in post.draws.items()},
                                   sample_stats={})  # fmt: skip
                sc, _ = score(key_pred, fit_model, seg, Xt, y_te, sy, 100, 1)
                row["segments_mlpd_rmse"].append([int(part[0]), *next(iter(sc.values()))])
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
