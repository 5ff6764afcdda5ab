"""Issue 11's motorcycle figure: the heteroscedastic DGP's test MLPD against the
homoscedastic DGP's, seeded 80/20 split (``datasets.load_regression``), as JSON rows.

    export CI=1 PYTHONHASHSEED=0 OMP_NUM_THREADS=1
    .venv/bin/python .bench/issue11_motorcycle.py svi        # or nuts

Both models: the zoo's builders (2 layers, ``M = 20`` k-means inducing points, LogNormal
hyperpriors) on standardised ``X`` and ``y``; MLPD and RMSE in original units (the change of
variables ``mlpd - log(y_std)``), from the mixture predictive (100 passes or draws);
``fit_seconds`` is the wall time of ``fit`` (compile + run).
"""

from __future__ import annotations

import json
import math
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

from ppl_dgp.datasets import Standardizer, load_regression  # noqa: E402
from ppl_dgp.infer import NUTS, SVI, fit  # noqa: E402
from ppl_dgp.models import MODELS  # noqa: E402
from ppl_dgp.predictive import predict  # noqa: E402

METHODS = {
    "svi": SVI(num_steps=5000, learning_rate=0.01, num_samples=100),
    "nuts": NUTS(num_warmup=300, num_samples=300, num_chains=1),
}

if __name__ == "__main__":
    method = sys.argv[1]
    X_tr, y_tr, X_te, y_te, _ = load_regression("motorcycle", test_fraction=0.2, seed=0)
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    Xs, ys, Xt = sx.transform(X_tr), sy.transform(y_tr), sx.transform(X_te)
    for name in sys.argv[2].split(",") if len(sys.argv) > 2 else ("dgp", "dgp_heteroscedastic"):
        model = MODELS[name].make(Xs, num_inducing=20, layers=2)
        t = time.perf_counter()
        post = fit(METHODS[method], jax.random.key(0), model, Xs, ys)
        t_fit = time.perf_counter() - t
        pred = predict(jax.random.key(1), model, post, Xt, num_samples=100)
        m = pred.metrics(sy.transform(y_te))
        out = {"data": "motorcycle", "model": name, "method": method,
               "mlpd": m["mlpd"] - math.log(float(sy.std)), "rmse": m["rmse"] * float(sy.std),
               "fit_seconds": round(t_fit, 2),
               "compile_seconds": round(float(post.timings["compile_seconds"]), 2)}  # fmt: skip
        print(json.dumps(out), flush=True)
