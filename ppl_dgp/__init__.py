"""ppl_dgp: deep Gaussian processes and Bayesian neural networks as NumPyro programs.

Write a model once (``ppl_dgp.models`` has the zoo), fit it with doubly-stochastic SVI through
an inducing-point guide or with NUTS/HMC through one ``fit`` call, and predict with the
Gaussian-mixture predictive (``ppl_dgp.inference.predict`` for every method).
"""

from ppl_dgp.conditionals import conditional, exact_gp_predict
from ppl_dgp.elbo import DoublyStochasticELBO
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.inference import HMC, NUTS, SVI, fit
from ppl_dgp.kernels import Matern12, Matern32, Matern52, SquaredExponential
from ppl_dgp.kl import gauss_kl
from ppl_dgp.layers import Hyper, LayerSpec, gp_layer
from ppl_dgp.linalg import cholesky
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import MixturePredictive, predict_svi
from ppl_dgp.svi import run_svi

__version__ = "0.1.0"

__all__ = [
    "HMC",
    "NUTS",
    "SVI",
    "DoublyStochasticELBO",
    "Hyper",
    "InducingPointGuide",
    "LayerSpec",
    "Matern12",
    "Matern32",
    "Matern52",
    "MixturePredictive",
    "Posterior",
    "SquaredExponential",
    "cholesky",
    "conditional",
    "exact_gp_predict",
    "fit",
    "gauss_kl",
    "gp_layer",
    "predict_svi",
    "run_svi",
]
