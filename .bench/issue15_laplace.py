"""Issue 15: why Laplace's predictive on the flagship DGP is jagged, and the GLM predictive.

The flagship case is ``make run``'s: the zoo's ``dgp`` (2 layers, M = 10) on the motorcycle
data, 80/20 split with seed 0, standardised, exactly as ``ppl_dgp.report.run_compare`` builds
it. One run fits Laplace with the zoo's ``compare`` preset and prints:

- what the Gaussian covers (sites, sizes), the MAP of the hyperparameters, the curvature's
  smallest eigenvalues and how many were repaired;
- the spread of the hyperparameter draws (constrained), and how many draws have a lengthscale
  under 0.1 (the wiggles);
- per predictive (``--pred sampled``: the nonlinear network at the draws, the old default;
  ``--pred glm``: the linearised one) the LOO (elpd, Pareto k counts), the test MLPD and RMSE
  in original units, and the roughness of the 90% band on a 200-point grid (the mean absolute
  second difference of the band's edges, in original units).

Usage::

    PYTHONHASHSEED=0 .venv/bin/python .bench/issue15_laplace.py --pred glm
    PYTHONHASHSEED=0 .venv/bin/python .bench/issue15_laplace.py --pred sampled \
        --laplace curvature=hessian subset_of_weights=all
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ppl_dgp import diagnostics  # noqa: E402
from ppl_dgp.datasets import Standardizer, load_regression  # noqa: E402
from ppl_dgp.infer import METHODS, fit, make_method  # noqa: E402
from ppl_dgp.models import MODELS  # noqa: E402
from ppl_dgp.predictive import predict  # noqa: E402


def flagship(seed: int = 0):
    """``(model, X, y, Xt, yt_raw, X_tr_raw, sx, sy)`` as ``run_compare`` builds them."""
    X_tr, y_tr, X_te, y_te, _ = load_regression("motorcycle", test_fraction=0.2, seed=seed)
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    X, y = sx.transform(X_tr), sy.transform(y_tr)
    model = MODELS["dgp"].make(np.asarray(X), num_inducing=10, layers=2)
    a = jax.numpy.asarray
    return model, a(X), a(y), a(sx.transform(X_te)), y_te, X_tr, sx, sy


def _with_approx_hook() -> None:
    """The proposed hook in ``diagnostics.pointwise_log_likelihood`` (an approximation with its
    own likelihood per draw, Laplace's GLM), applied here until diagnostics.py has it."""
    inner = diagnostics.pointwise_log_likelihood
    if getattr(inner, "_issue15", False):
        return

    def pointwise(rng_key, model, posterior, X, y, *, likelihood_site="y", num_eps=8, **kw):
        own = getattr(posterior.approx, "pointwise_log_likelihood", None)
        if own is not None:
            out = own(jax.random.split(rng_key)[1], model, posterior, X, y,
                      likelihood_site=likelihood_site, **kw)  # fmt: skip
            if out is not None:
                return out
        return inner(rng_key, model, posterior, X, y, likelihood_site=likelihood_site,
                     num_eps=num_eps, **kw)  # fmt: skip

    pointwise._issue15 = True
    diagnostics.pointwise_log_likelihood = pointwise


def _value(s: str):
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pred", choices=["glm", "sampled"], default="glm")
    p.add_argument("--laplace", nargs="*", default=[], help="key=value Laplace overrides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=None, help="write the bands to this PNG")
    p.add_argument(
        "--no-hook",
        action="store_true",
        help="LOO as diagnostics.py computes it today (the program at the draws)",
    )
    p.add_argument(
        "--compare",
        metavar="OUT",
        default=None,
        help="instead: the report's own compare of Laplace into OUT (with the hook)",
    )
    args = p.parse_args()
    if not args.no_hook:
        _with_approx_hook()
    if args.compare:
        from ppl_dgp import report

        report.run_compare("dgp", "motorcycle", ["laplace"], args.compare, seed=args.seed)
        return
    model, X, y, Xt, yt_raw, X_tr, sx, sy = flagship(args.seed)
    over = dict(kv.split("=", 1) for kv in args.laplace)
    over = {k: _value(v) for k, v in over.items()}
    if "predictive" in {f.name for f in dataclasses.fields(METHODS["laplace"])}:
        over.setdefault("predictive", args.pred)
    method = make_method(
        "laplace", preset="compare", **{**MODELS["dgp"].method_overrides.get("laplace", {}), **over}
    )
    key = jax.random.key(args.seed)  # the report's: fold_in(key, index of the method)
    t0 = time.perf_counter()
    post = fit(method, jax.random.fold_in(key, 0), model, X, y)
    wall = time.perf_counter() - t0
    q = post.approx
    out: dict = {"method": repr(method), "wall_s_loaded_machine": round(wall, 1)}
    out["subset"] = {n: list(s) for n, s in zip(q.layout.names, q.layout.shapes, strict=True)}
    out["curvature"] = q.curvature
    out["num_clipped"] = int(q.num_clipped)
    P = np.asarray(q.precision.matrix())
    ev = np.linalg.eigvalsh(P)
    out["precision_eig_min_max"] = [float(ev[0]), float(ev[-1])]
    hyper = [k for k in post.draws if not k.endswith(".u")]
    out["map"] = {k: np.round(np.asarray(q.map[k]), 4).tolist() for k in hyper}
    spread_ = {}
    for k in hyper:
        d = np.asarray(post.draws[k]).reshape(-1)
        spread_[k] = [float(np.quantile(d, 0.05)), float(np.median(d)), float(np.quantile(d, 0.95))]
    out["draws_q05_med_q95"] = spread_
    ls = np.concatenate([np.asarray(post.draws[k]).reshape(post.num_draws, -1)
                         for k in hyper if k.endswith("lengthscales")], axis=1)  # fmt: skip
    out["draws_with_lengthscale_below_0.1"] = int(np.sum(np.any(ls < 0.1, axis=1)))
    dt = diagnostics.to_datatree(post, model, X, y, rng_key=jax.random.fold_in(key, 100))
    elpd = diagnostics.loo(dt)
    k = np.asarray(elpd.pareto_k).reshape(-1)
    out["loo"] = {"elpd_loo": float(elpd.elpd), "p_loo": float(elpd.p),
                  "k>0.7": int(np.sum(k > 0.7)), "k>1": int(np.sum(k > 1.0)),
                  "k_max": float(k.max()), "N": int(k.size)}  # fmt: skip
    pred = predict(jax.random.fold_in(key, 200), model, post, Xt, num_samples=200)
    m = pred.rescale(float(sy.mean), float(sy.std)).metrics(jax.numpy.asarray(yt_raw))
    out["test"] = {"mlpd": float(m["mlpd"]), "rmse": float(m["rmse"])}
    lo, hi = X_tr.min(), X_tr.max()
    pad = 0.05 * (hi - lo)
    grid_raw = np.linspace(lo - pad, hi + pad, 200)[:, None]
    grid = jax.numpy.asarray(sx.transform(grid_raw))
    g = predict(jax.random.fold_in(key, 300), model, post, grid, num_samples=200)
    g = g.rescale(float(sy.mean), float(sy.std))
    a, b = (np.asarray(v) for v in g.interval(0.9))
    rough = float(np.mean(np.abs(np.diff(a, 2))) + np.mean(np.abs(np.diff(b, 2)))) / 2
    out["band90_roughness"] = rough
    print(json.dumps(out, indent=1))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        _, y_tr, _, _, _ = load_regression("motorcycle", test_fraction=0.2, seed=args.seed)
        ax.scatter(X_tr[:, 0], y_tr, s=8, c="k")
        ax.plot(grid_raw[:, 0], np.asarray(g.mean), label=f"Laplace ({args.pred})")
        ax.fill_between(grid_raw[:, 0], a, b, alpha=0.3)
        ax.legend()
        fig.savefig(args.plot, dpi=90)


if __name__ == "__main__":
    main()
