"""ppl_dgp: deep Gaussian processes and Bayesian neural networks as NumPyro programs.

Write a model once (``ppl_dgp.models`` has the zoo), fit it with doubly-stochastic SVI through
an inducing-point guide, and predict with the Gaussian-mixture predictive.
"""

from ppl_dgp.conditionals import conditional
from ppl_dgp.elbo import DoublyStochasticELBO
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.kernels import Matern12, Matern32, Matern52, SquaredExponential
from ppl_dgp.kl import gauss_kl
from ppl_dgp.layers import Hyper, LayerSpec, gp_layer
from ppl_dgp.linalg import cholesky

__version__ = "0.1.0"

__all__ = [
    "DoublyStochasticELBO",
    "Hyper",
    "InducingPointGuide",
    "LayerSpec",
    "Matern12",
    "Matern32",
    "Matern52",
    "SquaredExponential",
    "cholesky",
    "conditional",
    "gauss_kl",
    "gp_layer",
]
