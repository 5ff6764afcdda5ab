"""Issue 15, must-show 2 (SGHMC's part): R-hat and ESS of SGHMC on the motorcycle flagship.

The flagship's data, split, standardisation and model as ``ppl-dgp compare --model dgp --data
motorcycle`` builds them (:func:`ppl_dgp.report.run_compare`: 80/20 split by seed 0, the zoo's
2-layer ``dgp`` with 10 inducing points per layer), the ``"compare"`` preset of SGHMC with the
given overrides, then ArviZ's rank-normalised split R-hat and bulk ESS of

- the predictive mean per draw at every test input (``predict`` with one component per draw,
  reshaped to ``(chain, draw, N_test)``), the quantity that is identifiable;
- every hyperparameter (with ``hyper="mcem"``: one estimate per chain, printed instead).

Usage::

    .venv/bin/python .bench/issue15_sghmc_motorcycle.py [--hyper mcem] [--chains 4]
        [--burnin 2000] [--samples 400] [--thinning 10] [--step-size 0.01]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import arviz as az  # noqa: E402

from ppl_dgp.datasets import Standardizer, load_regression  # noqa: E402
from ppl_dgp.infer import fit, make_method  # noqa: E402
from ppl_dgp.models import MODELS  # noqa: E402
from ppl_dgp.predictive import predict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hyper", default="mcem")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--burnin", type=int, default=None)
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--thinning", type=int, default=None)
    ap.add_argument("--step-size", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    X_tr, y_tr, X_te, y_te, _ = load_regression("motorcycle", test_fraction=0.2, seed=args.seed)
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    X, y, Xt = sx.transform(X_tr), sy.transform(y_tr), sx.transform(X_te)
    entry = MODELS["dgp"]
    model = entry.make(X, num_inducing=10, layers=2)
    method = make_method("sghmc", preset="compare", **{
        **entry.method_overrides.get("sghmc", {}), "hyper": args.hyper,
        "num_chains": args.chains, "num_burnin": args.burnin, "num_samples": args.samples,
        "thinning": args.thinning, "step_size": args.step_size})  # fmt: skip
    t = time.perf_counter()
    post = fit(method, jax.random.key(args.seed), model, X, y)
    fit_s = time.perf_counter() - t
    C, D = post.num_chains, post.num_draws
    pred = predict(jax.random.key(1), model, post, Xt, num_samples=C * D)
    means = np.asarray(pred.means).reshape(C, D, -1)  # chain-major components
    m = pred.rescale(float(sy.mean), float(sy.std)).metrics(y_te)
    rhat = np.asarray(az.rhat(means))
    ess = np.asarray(az.ess(means, method="bulk"))
    row = {
        "method": repr(method), "fit_seconds": round(fit_s, 1), "chains": C, "draws": D,
        "n_test": int(means.shape[-1]), "test_mlpd_orig": float(m["mlpd"]),
        "pred_mean_rhat_max": float(rhat.max()), "pred_mean_rhat_median": float(np.median(rhat)),
        "pred_mean_inputs_rhat_le_1.05": int(np.sum(rhat <= 1.05)),
        "pred_mean_ess_bulk_min": float(ess.min()),
    }  # fmt: skip
    for name, v in post.draws.items():
        if name.endswith(".u"):
            continue
        v = np.asarray(v).reshape(C, D, -1)
        if np.all(v == v[:, :1]):
            row[name] = np.round(v[:, 0], 4).tolist()  # MCEM: one estimate per chain
        else:
            row[name + ".rhat_max"] = float(np.max(az.rhat(v)))
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
