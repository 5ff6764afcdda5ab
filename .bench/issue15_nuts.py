"""Issue 15: why NUTS does not converge on the flagship DGP, and what each change buys.

The flagship case is ``make run``'s: the zoo's ``dgp`` (2 layers, M = 10) on the motorcycle
data, 80/20 split with seed 0, standardised, exactly as ``ppl_dgp.report.run_compare`` builds
it. One run fits NUTS with the settings on the command line and prints, per summarised site
(hyperparameters; ``u`` for information), R-hat, bulk ESS and per-chain means, the divergences
(and where in hyperparameter space they happen), the report's gate
(``diagnostics.reference_check`` on the hyperparameters and the predictive mean at 10 test
inputs) and the wall time.

Usage (one configuration per run; ``--model-opt key=value`` goes to ``init_dgp``)::

    PYTHONHASHSEED=0 .venv/bin/python .bench/issue15_nuts.py --warmup 200 --samples 200 \
        --chains 2 --depth 6
    PYTHONHASHSEED=0 .venv/bin/python .bench/issue15_nuts.py --preset compare

``--preset compare`` uses the zoo's NUTS settings for the dgp (``make_method("nuts",
preset="compare", **overrides)``), i.e. exactly what ``make run`` fits.

Measured 2026-12-03 (2 shared cores, load average 17-32: wall times inflated, not comparable
across rows); hyperparameter R-hat / min bulk ESS, predictive-mean R-hat / min ESS:

===================================================  =========  =========  ==========  =====
run (M = 10 unless said; chains x (warm-up + draws))  hyper R   hyper ESS  pred R/ESS  div.
===================================================  =========  =========  ==========  =====
old priors, 2 x (200 + 200), depth 6 (make run)       2.11       3          1.43 / 4    113
noise prior median 0.1 only                           1.20       8          1.14 / 10   2
+ inner variance median 0.1 (sigma 1)                 1.67       4          1.22 / 12   5
+ inner var 0.1, ls 1 (sigma 0.5)                     1.55       4          1.34 / 5    71
standardised priors (var 0.05, ls 2), 2 x (200+200)   1.03       68         1.01 / 182  0
same, dense_mass="global"                             1.20       8          1.30 / 5    3
same, 4 x (400 + 400)                                 1.25       12         1.09 / 29   65
M = 20, 4 x (400 + 400)                               1.011      285        1.005/1400  0
M = 20, 4 x (500 + 800)                               1.013      286        1.002/2017  0
M = 20, 4 x (500 + 800), dense_mass="global"          1.019      227        1.004/1496  35
M = 20, 8 x (400 + 400)                               1.013      533        1.002/2477  1
M = 20, 8 x (500 + 700), target 0.9 (the preset)      1.0075     682        1.002/3764  0
===================================================  =========  =========  ==========  =====

Findings: with the old noise prior (LogNormal(log 0.01, 1)) the inner layer's per-datum
``eps`` explain the noise (noise variance 0.007) and the divergences sit at large inner
variance and small noise (a funnel); with M = 10 the sparse outer layer's conditional variance
between inducing points competes with the noise, and the posterior has two modes in (outer
lengthscale, noise), (0.21, 0.05) and (0.31, 0.13), which chains never cross; M = 20 removes
the second mode (noise 0.19 in every chain).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ppl_dgp import diagnostics  # noqa: E402
from ppl_dgp.datasets import Standardizer, load_regression  # noqa: E402
from ppl_dgp.infer import NUTS, fit, make_method  # noqa: E402
from ppl_dgp.models import MODELS  # noqa: E402
from ppl_dgp.predictive import predict, spread  # noqa: E402


def with_priors(model, scheme: str):
    """The zoo's model with another set of hyperpriors (experiments; ``"zoo"``: unchanged)."""
    import dataclasses
    import functools

    import numpyro.distributions as dist

    from ppl_dgp.layers import Hyper

    if scheme == "zoo":
        return model
    kw = dict(model.keywords)
    want = dict(kv.split("=") for kv in scheme.split(","))  # site=median:sigma

    def h(name, old):
        if name not in want:
            return old
        med, sig = (float(t) for t in want[name].split(":"))
        init = np.full(np.shape(old.init), med) if np.ndim(old.init) else med
        return Hyper(init, prior=dist.LogNormal(float(np.log(med)), sig))

    kw["noise_variance"] = h("noise_variance", kw["noise_variance"])
    kw["layers"] = tuple(
        dataclasses.replace(s, variance=h(f"layer{l}.variance", s.variance),
                            lengthscales=h(f"layer{l}.lengthscales", s.lengthscales))
        for l, s in enumerate(kw["layers"])
    )  # fmt: skip
    return functools.partial(model.func, **kw)


def flagship(seed: int = 0, num_inducing: int = 10):
    """``(model, X, y, Xt)`` as ``run_compare`` builds them for ``--model dgp --data
    motorcycle``."""
    X_tr, y_tr, X_te, _, _ = load_regression("motorcycle", test_fraction=0.2, seed=seed)
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    X, y = sx.transform(X_tr), sy.transform(y_tr)
    Xt = sx.transform(X_te)
    model = MODELS["dgp"].make(np.asarray(X), num_inducing=num_inducing, layers=2)
    return model, jax.numpy.asarray(X), jax.numpy.asarray(y), jax.numpy.asarray(Xt)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=["compare"], default=None)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--accept", type=float, default=0.8)
    p.add_argument("--dense", default="false", help="true, false or global")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-inducing", type=int, default=10)
    p.add_argument("--priors", default="zoo", help="site=median:sigma,... LogNormal priors")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args()
    model, X, y, Xt = flagship(num_inducing=a.num_inducing)
    model = with_priors(model, a.priors)
    if a.preset:
        overrides = MODELS["dgp"].method_overrides.get("nuts", {})
        method = make_method("nuts", preset=a.preset, **overrides)
    else:
        method = NUTS(num_warmup=a.warmup, num_samples=a.samples, num_chains=a.chains,
                      max_tree_depth=a.depth, target_accept_prob=a.accept,
                      dense_mass={"true": True, "false": False}.get(a.dense, a.dense))  # fmt: skip
    print(method)
    key = jax.random.key(a.seed)
    t0 = time.perf_counter()
    post = fit(method, jax.random.fold_in(key, 1), model, X, y)
    wall = time.perf_counter() - t0
    C, D = post.num_chains, post.num_draws
    per = predict(jax.random.fold_in(key, 201), model, post, Xt, num_samples=C * D)
    idx = spread(len(Xt), 10)
    pm = np.asarray(per.means)[:, idx].reshape(C, D, -1)
    dt = diagnostics.to_datatree(post, model, X, y, rng_key=jax.random.fold_in(key, 101))
    hyper = [k for k in post.draws if not k.endswith(".u")]
    check = diagnostics.reference_check(dt, hyper, predictive=pm)
    import arviz as az

    ds = dt["posterior"].to_dataset()
    rhat, ess = az.rhat(ds), az.ess(ds, method="bulk")
    stats = post.sample_stats
    div = np.asarray(stats["diverging"], bool)
    out = {"wall_s": round(wall, 1), "divergent": int(div.sum()), "draws": C * D,
           "ok": bool(check.ok), "sites": {}}  # fmt: skip
    for k in post.draws:
        v = np.asarray(post.draws[k]).reshape(C, D, -1)
        r, e = np.atleast_1d(rhat[k].values).ravel(), np.atleast_1d(ess[k].values).ravel()
        out["sites"][k] = {"rhat_max": float(r.max()), "ess_min": float(e.min()),
                           "chain_means": np.round(v[..., 0].mean(1), 3).tolist()}  # fmt: skip
    pr = np.asarray(az.rhat(az.convert_to_dataset(pm))["x"]).ravel()
    pe = np.asarray(az.ess(az.convert_to_dataset(pm), method="bulk")["x"]).ravel()
    out["predictive"] = {"rhat_max": float(pr.max()), "ess_min": float(pe.min()),
                         "chain_means": np.round(pm.mean(1)[:, :4], 3).tolist()}  # fmt: skip
    out["tree_depth_mean"] = float(np.mean(stats["tree_depth"]))
    out["step_size"] = np.round(np.asarray(stats["step_size"])[:, -1], 4).tolist()
    out["accept"] = float(np.mean(stats["accept_prob"]))
    if div.any():  # where the divergences are: median of each hyperparameter at divergent
        # draws against the others
        first = {k: np.asarray(post.draws[k]).reshape(C, D, -1)[..., 0] for k in hyper}
        out["at_divergent"] = {k: [round(float(np.median(v[div])), 3),
                                   round(float(np.median(v[~div])), 3)]
                               for k, v in first.items()}  # fmt: skip
        out["divergent_per_chain"] = div.sum(1).tolist()
    out["reasons"] = list(check.reasons)
    for k, v in out.items():
        print(f"{k}: {json.dumps(v) if not isinstance(v, dict) else ''}")
        if isinstance(v, dict):
            for kk, vv in v.items():
                print(f"    {kk}: {json.dumps(vv)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"method": str(method), **out}, f, indent=1)


if __name__ == "__main__":
    main()
