"""ppl_dgp: deep Gaussian processes and Bayesian neural networks as NumPyro programs.

Write a model once (``ppl_dgp.models`` has the zoo: SVGP, DGP, BNNs, in one registry), fit
it with SVI, NUTS, HMC, SGHMC, Laplace, MAP or a deep ensemble through one :func:`fit` call,
and predict with :func:`ppl_dgp.predictive.predict` (the Gaussian-mixture predictive) or
:func:`predict_proba` (class probabilities), which work for every method's :class:`Posterior`.
``posterior.save(path)`` keeps a zoo model with it; ``model, posterior = ppl_dgp.load(path)``
gives both back in a new session.
"""

from ppl_dgp.conditionals import conditional, exact_gp_predict
from ppl_dgp.elbo import DoublyStochasticELBO
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.infer import (
    HMC,
    MAP,
    NUTS,
    SGHMC,
    SVI,
    DeepEnsemble,
    Laplace,
    NonFiniteLossError,
    fit,
    run_svi,
)
from ppl_dgp.kernels import Matern12, Matern32, Matern52, SquaredExponential
from ppl_dgp.kl import gauss_kl
from ppl_dgp.layers import Hyper, LayerSpec, gp_layer
from ppl_dgp.linalg import cholesky
from ppl_dgp.posterior import Posterior, load
from ppl_dgp.predict import MixturePredictive
from ppl_dgp.predictive import predict_proba

__version__ = "0.1.0"

__all__ = [
    "HMC",
    "MAP",
    "NUTS",
    "SGHMC",
    "SVI",
    "DeepEnsemble",
    "Laplace",
    "DoublyStochasticELBO",
    "Hyper",
    "InducingPointGuide",
    "LayerSpec",
    "Matern12",
    "Matern32",
    "Matern52",
    "MixturePredictive",
    "NonFiniteLossError",
    "Posterior",
    "SquaredExponential",
    "cholesky",
    "conditional",
    "exact_gp_predict",
    "fit",
    "gauss_kl",
    "gp_layer",
    "load",
    "predict_proba",
    "run_svi",
]
