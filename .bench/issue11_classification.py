"""Issue 11's classification figures: breast cancer and digits, seeded 80/20 splits.

Run (float64, one thread), one JSON object per (data, model, method) on stdout:

    export CI=1 PYTHONHASHSEED=0 OMP_NUM_THREADS=1
    .venv/bin/python .bench/issue11_classification.py breast_cancer svi,laplace,nuts
    .venv/bin/python .bench/issue11_classification.py digits dgp_svi,bnn_map,bnn_laplace

Fields: ``data, model, method, accuracy, nll, ece`` (10 equal-width bins on the confidence),
``brier``, ``fit_seconds`` (wall time of ``fit``: compile + run), ``compile_seconds``,
``predict_seconds``, and the settings. Inputs are standardised with the training split's
statistics (:class:`~ppl_dgp.datasets.Standardizer`); labels are the bundled ones.

- breast cancer: the SVGP classifier (probit, ``M`` inducing points from k-means, ARD SE
  kernel with LogNormal hyperpriors, lengthscales centred at ``sqrt(D)``): SVI with the
  inducing guide, the classic Laplace GP classifier (the zoo's: GGN over the whitened
  inducing values, hyperparameters at their MAP), NUTS on the exact joint (the marginalised
  probit output).
- digits: the 2-layer DGP classifier (robust-max over 10 latent GPs; the inner layer of
  ``width`` GPs on a PCA mean of the 64 pixels) by SVI (minibatches of 256); the BNN MLP
  (64-50-10, tanh, softmax) by MAP and by Laplace (last layer, GGN, probit GLM predictive).
"""

from __future__ import annotations

import functools
import json
import sys
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ppl_dgp.calibration import classification_metrics  # noqa: E402
from ppl_dgp.datasets import Standardizer, load_classification  # noqa: E402
from ppl_dgp.infer import MAP, NUTS, SVI, fit  # noqa: E402
from ppl_dgp.laplace import Laplace  # noqa: E402
from ppl_dgp.likelihoods import Bernoulli, Categorical  # noqa: E402
from ppl_dgp.models import bnn  # noqa: E402
from ppl_dgp.models import gp_classification as gpc  # noqa: E402
from ppl_dgp.predictive import predict_proba  # noqa: E402


def _row(data, model_name, method_name, post, model, X_te, y_te, t_fit, **settings):
    t = time.perf_counter()
    link = settings.pop("link", "probit")
    p = np.asarray(predict_proba(model, post, X_te, num_samples=settings.pop("S", 100),
                                 link=link))  # fmt: skip
    t_pred = time.perf_counter() - t
    m = classification_metrics(p, y_te)
    out = {"data": data, "model": model_name, "method": method_name, **m,
           "fit_seconds": round(t_fit, 2),
           "compile_seconds": round(float(post.timings.get("compile_seconds", 0.0)), 2),
           "predict_seconds": round(t_pred, 2), **settings}  # fmt: skip
    print(json.dumps(out), flush=True)
    return out


def breast_cancer(methods):
    X_tr, y_tr, X_te, y_te, _ = load_classification("breast_cancer", seed=0)
    sx = Standardizer.fit(X_tr)
    X_tr, X_te = sx.transform(X_tr), sx.transform(X_te)
    M, D = 32, X_tr.shape[1]
    # ARD SE with LogNormal(log sqrt(D), 1) lengthscale priors: the scale of distances between
    # standardised D-dimensional inputs (the zoo's default centres them at 1)
    config = gpc.init_dgp_classification(X_tr, likelihood=Bernoulli(), num_layers=1,
                                         num_inducing=M, lengthscale=float(np.sqrt(D)))  # fmt: skip
    model = functools.partial(gpc.svgp_classification, **config)
    configs = {
        "svi": SVI(num_steps=3000, learning_rate=0.01, num_samples=100),
        "laplace": Laplace(subset_of_weights=("layer0.u",), num_steps=3000),
        "nuts": NUTS(num_warmup=300, num_samples=300, num_chains=1),
    }
    for name in methods:
        t = time.perf_counter()
        post = fit(configs[name], jax.random.key(0), model, X_tr, y_tr)
        _row("breast_cancer", "svgp_classification", name, post, model, X_te, y_te,
             time.perf_counter() - t, M=M)  # fmt: skip


def digits(methods):
    X_tr, y_tr, X_te, y_te, _ = load_classification("digits", seed=0)
    sx = Standardizer.fit(X_tr)
    X_tr, X_te = sx.transform(X_tr), sx.transform(X_te)
    for name in methods:
        t = time.perf_counter()
        if name.startswith("dgp"):  # dgp_svi: M = 50, width 10; dgp_svi_large: 100, 20
            M, width, steps = (100, 20, 6000) if name == "dgp_svi_large" else (50, 10, 4000)
            config = gpc.init_dgp_classification(
                X_tr, likelihood=Categorical(10, link="robustmax"), num_layers=2,
                num_inducing=M, width=width,
            )  # fmt: skip
            model = functools.partial(gpc.dgp_classification, **config)
            post = fit(SVI(num_steps=steps, learning_rate=0.01, num_samples=50, batch_size=256),
                       jax.random.key(0), model, X_tr, y_tr)  # fmt: skip
            _row("digits", "dgp_classification(L=2)", "svi", post, model, X_te, y_te,
                 time.perf_counter() - t, M=M, width=width, S=50, steps=steps)  # fmt: skip
        else:
            model = functools.partial(bnn.mlp_multiclass, num_classes=10, hidden=(50,))
            if name == "bnn_map":
                post = fit(MAP(num_steps=3000, learning_rate=0.01), jax.random.key(0), model,
                           X_tr, y_tr)  # fmt: skip
                link = "nn"
            else:
                post = fit(Laplace(subset_of_weights="last_layer", num_steps=3000),
                           jax.random.key(0), model, X_tr, y_tr)  # fmt: skip
                link = "probit"
            _row("digits", "bnn_mlp(64-50-10)", name.removeprefix("bnn_"), post, model, X_te,
                 y_te, time.perf_counter() - t, link=link)  # fmt: skip


if __name__ == "__main__":
    data, methods = sys.argv[1], sys.argv[2].split(",")
    {"breast_cancer": breast_cancer, "digits": digits}[data](methods)
