"""Issue 12, must-show 2: the hybrid NN -> GP classifier on digits against the DGP-2 classifier.

Data: the bundled 8x8 digits (1797 x 64, ten classes), ``load_classification("digits",
seed=0)``: the seeded 80/20 split of issue 11's figures (1438 train, 359 test), the pixels
centred and divided by one global sd (issue 11's ``pixel_scale``). Both models by SVI with the
inducing guide, full batch, Adam 1e-2, the same number of steps, key 0, 20 samples of the
bound per step (``num_samples=20``), robust-max likelihood over 10 latent GPs; the predictive
integrates ``u`` out per class (``predict_proba``).

- ``dgp2``: the DGP-2 classifier exactly as issue 11 measures it
  (``.bench/issue11_classification.py``'s ``digits_dgp``: ``init_dgp_classification`` with
  M = 100, an inner layer of 20 GPs on a PCA mean of the 64 pixels, each layer's
  lengthscales at the median pairwise distance of its inputs); ``dgp2_bayes``: the same with
  SVI's ``hyper="normal"`` (mean-field normal over its hyperparameters, as ``_bayes`` below);
- ``hybrid_w{H}[_l{L}][_ls1][_pca][_bayes]``: ``models.hybrid.hybrid_classification``: a dense layer
  64 -> H (tanh, ``N(0, 1)`` weight priors, the guide's point estimate; ``_bayes``: SVI's
  ``hyper="normal"``, a mean-field normal over the weights and hyperparameters) feeding L GP
  layers (default 1; inner width 20 as the DGP's), M = 100 inducing points at k-means centres
  of the network's initial features (the feature width inferred), each GP layer's
  lengthscales at the median pairwise distance of its inputs
  (``init_hybrid(..., lengthscale="median")``; ``_ls1``: all at 1, the old default); ``_pca``:
  the dense layer starts at the globally scaled PCA projection of the pixels
  (``network_init="pca"``, ``hybrid.pca_network_init``), PyTorch's default draw otherwise;
  ``_lin``: no activation (the dense layer is a learnt linear projection, as the DGP-2's
  inner mean function is a fixed one); ``_pp{delta}``: weight prior precision ``delta``
  (default 1; a larger one is stronger weight decay on the point estimate); ``_netlr{k}``:
  the network's parameters (``net*``) at Adam's learning rate 1e-2 / k, the GP's at 1e-2
  (``optax.multi_transform``; ``k = 100000`` all but freezes the network at its start).

    CI=1 PYTHONHASHSEED=0 .venv/bin/python .bench/issue12_hybrid_digits.py [steps] [names] [key]

(defaults 300, ``dgp2,hybrid_w32``, key 0), e.g. ``... 300 dgp2,hybrid_w20_pca_lin_netlr100``. One
JSON row per model: accuracy, NLL, ECE (10 bins), Brier, the key, fit seconds (wall, compile
included; inflated by the shared machine's load).

Measured (this session, 300 steps each, key 0; 2 CPU cores shared by several agents, load
8-17: fit seconds 90-320, inflated and not comparable between rows), e.g.
``... 300 dgp2,hybrid_w64,hybrid_w32_bayes,hybrid_w32_ls1``:

    model                  accuracy  NLL     ECE     Brier   (right of 359)
    dgp2                   0.9889    0.0405  0.0219  0.0170  355
    dgp2_bayes             0.9889    0.0387  0.0159  0.0170  355
    hybrid_w32             0.9554    0.1823  0.0267  0.0686  343
    hybrid_w64             0.9610    0.1267  0.0115  0.0543  345
    hybrid_w32_ls1         0.9721    0.1628  0.0237  0.0550  349
    hybrid_w20_pca         0.9526    0.1622  0.0244  0.0714  342
    hybrid_w32_bayes       0.9833    0.0963  0.0187  0.0317  353
    hybrid_w64_bayes       0.9749    0.1139  0.0211  0.0454  350
    hybrid_w32_l2_bayes    0.9666    0.1406  0.0270  0.0547  347
    hybrid_w20_pca_bayes   0.9777    0.0751  0.0103  0.0341  351
    hybrid_w32_pca_bayes   0.9721    0.1090  0.0193  0.0456  349
    hybrid_w48_pca_bayes   0.9749    0.1238  0.0146  0.0412  350
    hybrid_w32_ls1_bayes   0.9721    0.0859  0.0134  0.0412  349

Key 1 (``... 300 dgp2 1`` and ``... 300 hybrid_w32_bayes 1``):

    dgp2                   0.9889    0.0421  0.0171  0.0182  355
    hybrid_w32_bayes       0.9666    0.1001  0.0176  0.0424  347

At 1000 steps (``... 1000 dgp2`` and ``... 1000 hybrid_w32_bayes``, run side by side):

    dgp2                   0.9861    0.0491  0.0167  0.0223  354
    hybrid_w32_bayes       0.9610    0.1161  0.0260  0.0519  345

The hybrid does not match the DGP-2 classifier: the best variant, a Bayesian dense layer
64 -> 32 (``hybrid_w32_bayes``), gets two test images fewer right (353 against 355) and about
2.4 times its NLL; with more steps it loses more (345 at 1000 steps: it overfits where the
DGP-2 holds at 354). What helps: the Bayesian dense layer (a mean-field normal over the 2,080
weights, SVI's ``hyper="normal"``; the point-estimated network overfits, NLL 0.13-0.18). What
does not: a wider network, a second GP layer, the median-distance lengthscale start (worse
than lengthscales at 1 with point-estimated weights, 343 vs 349), the PCA start of the
network. The DGP-2 gets 355 right at both keys; the best hybrid 353 at key 0 but 347 at key
1: its key-0 figure was its good draw, and the gap to the DGP-2 is real (2-8 images, NLL 2.4
times).
Stop 21 (load 2-7; every row by the command above with the names shown, 300 steps unless
said): the PCA-started *linear* network with a slow network learning rate matches the DGP-2.

    model                              key  accuracy  NLL     ECE     Brier   right of 359
    dgp2                               0    0.9889    0.0405  0.0219  0.0170  355
    dgp2                               1    0.9889    0.0421  0.0171  0.0182  355
    hybrid_w20_pca_netlr10             0    0.9666    0.1024  0.0158  0.0423  347
    hybrid_w20_l2_pca_netlr10          0    0.9749    0.0868  0.0187  0.0390  350
    hybrid_w20_pca_netlr10_bayes       0    0.9749    0.0786  0.0104  0.0352  350
    hybrid_w32_pp10                    0    0.9610    0.1646  0.0169  0.0565  345
    hybrid_w20_pca_lin_netlr10         0    0.9833    0.0912  0.0156  0.0338  353
    hybrid_w20_l2_pca_lin_netlr10      0    0.9833    0.0591  0.0120  0.0269  353
    hybrid_w32_pca_lin_netlr10         0    0.9721    0.0942  0.0130  0.0386  349
    hybrid_w20_pca_lin_netlr10_bayes   0    0.9805    0.0693  0.0094  0.0268  352
    hybrid_w20_pca_lin_netlr100        0    0.9889    0.0397  0.0141  0.0143  355
    hybrid_w20_pca_lin_netlr100        1    0.9889    0.0397  0.0141  0.0143  355
    hybrid_w20_pca_lin_netlr100_bayes  0    0.9582    0.1192  0.0249  0.0600  344
    hybrid_w20_pca_lin_netlr100_bayes  1    0.9666    0.1057  0.0278  0.0527  347
    hybrid_w20_pca_lin_netlr100000     0    0.9972    0.0376  0.0183  0.0138  358
    hybrid_w20_pca_lin_netlr100 (1000 steps)     0  0.9889  0.0487  0.0100  0.0199  355
    hybrid_w20_pca_lin_netlr100000 (1000 steps)  0  0.9944  0.0408  0.0148  0.0152  357

``hybrid_w20_pca_lin_netlr100`` (a linear 64 -> 20 layer started at the PCA projection,
trained at 1e-4, feeding one GP layer of M = 100) equals the DGP-2's accuracy (355) with a
slightly lower NLL (0.0397 against 0.0405 / 0.0421), and holds at 1000 steps (355, NLL 0.0487
against the DGP-2's 354 and 0.0491 of stop 20). Its two keys agree to the last digit by
construction, not by luck: with point-estimated weights and one GP layer marginalised under
the robust-max likelihood the bound and the predictive draw nothing from the key (only the
``_bayes`` rows and the DGP-2, whose inner layer is sampled, depend on it). What it says: the
gain over stop 20 comes from the network staying close to a linear PCA projection. Training
it faster, a tanh, a wider layer or a Bayesian (mean-field) layer all lose images, and the
all-but-frozen network (``netlr100000``) does best (358 at 300 steps, 357 at 1000): on these
digits a learnt network adds nothing over the fixed projection, so "matches the DGP-2" holds
for a hybrid whose network learns little.

The DGP-2's figure here (0.9889) is one image below issue 11's 0.9916 for the same recipe
(``issue11_classification.py digits dgp_svi``); I did not trace the difference (not rerun
here: that figure may predate later changes to the predictive).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from ppl_dgp.calibration import classification_metrics  # noqa: E402
from ppl_dgp.datasets import load_classification  # noqa: E402
from ppl_dgp.infer import SVI, fit  # noqa: E402
from ppl_dgp.likelihoods import Categorical  # noqa: E402
from ppl_dgp.models import hybrid  # noqa: E402
from ppl_dgp.predictive import predict_proba  # noqa: E402

M, INNER_WIDTH, S = 100, 20, 20


def _issue11():
    """Issue 11's bench module (its ``digits_dgp`` and ``pixel_scale``), loaded by path."""
    path = Path(__file__).with_name("issue11_classification.py")
    spec = importlib.util.spec_from_file_location("issue11_classification", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NAME = re.compile(
    r"hybrid_w(\d+)(?:_l(\d))?(_ls1)?(_pca)?(_lin)?(?:_pp(\d+))?(?:_netlr(\d+))?(_bayes)?"
)


def hybrid_model(X_tr, name):
    """``hybrid_w{H}[_l{L}][_ls1][_pca][_lin][_pp{delta}][_netlr{k}][_bayes]`` (module docstring);
    returns the model, SVI's ``hyper`` and the network's learning-rate divisor ``k``."""
    m = NAME.fullmatch(name)
    if m is None:
        raise ValueError(f"unknown model {name!r}")
    width, layers = int(m[1]), int(m[2] or 1)
    config = hybrid.init_hybrid_classification(
        X_tr, likelihood=Categorical(10, link="robustmax"), hidden=(width,), num_layers=layers,
        num_inducing=M, width=INNER_WIDTH, lengthscale=1.0 if m[3] else "median",
        network_init="pca" if m[4] else None, activation="identity" if m[5] else "tanh",
        prior_precision=float(m[6] or 1),
    )  # fmt: skip
    model = functools.partial(hybrid.hybrid_classification, **config)
    return model, "normal" if m[8] else "delta", int(m[7] or 1)


def optimizer(learning_rate: float, net_divisor: int):
    """Adam at ``learning_rate``; the network's parameters (``net*``) at
    ``learning_rate / net_divisor`` (``optax.multi_transform`` over the guide's names)."""
    if net_divisor == 1:
        return optax.adam(learning_rate)
    return optax.multi_transform(
        {"net": optax.adam(learning_rate / net_divisor), "rest": optax.adam(learning_rate)},
        lambda params: {k: "net" if k.startswith("net") else "rest" for k in params},
    )


def main() -> None:
    warnings.simplefilter("ignore")
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else ["dgp2", "hybrid_w32"]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    i11 = _issue11()
    X_tr0, y_tr, X_te0, y_te, _ = load_classification("digits", seed=0)
    X_tr, X_te = i11.pixel_scale(X_tr0, X_te0)
    for name in names:
        if name in ("dgp2", "dgp2_bayes"):
            model = i11.digits_dgp(X_tr, M, INNER_WIDTH)
            hyper, net_divisor = "normal" if name == "dgp2_bayes" else "delta", 1
        else:
            model, hyper, net_divisor = hybrid_model(X_tr, name)
        t = time.perf_counter()
        post = fit(SVI(num_steps=steps, learning_rate=0.01, num_samples=S, hyper=hyper,
                       optimizer=optimizer(0.01, net_divisor)),
                   jax.random.key(seed), model, X_tr, y_tr)  # fmt: skip
        seconds = time.perf_counter() - t
        p = np.asarray(predict_proba(model, post, X_te, num_samples=S))
        m = classification_metrics(p, y_te)
        row = {"model": name, **{k: round(v, 4) for k, v in m.items()}, "steps": steps,
               "key": seed, "fit_seconds": round(seconds, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
