"""ppl_dgp: deep Gaussian processes and Bayesian neural networks as NumPyro programs.

Write a model once (``ppl_dgp.models`` has the zoo: SVGP, DGP, BNNs), fit it with SVI, NUTS,
HMC, SGHMC or Laplace through one ``fit`` call, and predict with the Gaussian-mixture
predictive (``ppl_dgp.inference.predict`` works for every method's Posterior; the name
``ppl_dgp.predict`` is the predictive module).
"""

from ppl_dgp.conditionals import conditional, exact_gp_predict
from ppl_dgp.elbo import DoublyStochasticELBO
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.inference import HMC, NUTS, SGHMC, SVI, Laplace, fit
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
    "SGHMC",
    "SVI",
    "Laplace",
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
