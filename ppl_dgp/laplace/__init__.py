"""The Laplace approximation (Laplace Redux), split by concept as laplace-torch is.

- :mod:`~ppl_dgp.laplace.approx`: what a fit leaves, :class:`LaplaceApprox` with its
  precision structure (:class:`FullPrecision`, :class:`DiagPrecision`,
  :class:`KronPrecision`);
- :mod:`~ppl_dgp.laplace.ggn`: the subset layout, the GGN / empirical-Fisher curvature, the
  evidence tuning and the draws, compiled as one core;
- :mod:`~ppl_dgp.laplace.fit`: the :class:`Laplace` method behind :func:`ppl_dgp.infer.fit`
  (MAP, curvature, tuning, draws);
- :mod:`~ppl_dgp.laplace.predictive`: the linearised (GLM) predictive, registered with
  :func:`ppl_dgp.predictive.predict_proba` for Laplace posteriors.

The formulas are in :mod:`ppl_dgp.curvature` (math, no NumPyro).

References:
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS.
"""

from ppl_dgp.laplace.approx import (
    DiagPrecision,
    FullPrecision,
    KronPrecision,
    LaplaceApprox,
    Layout,
)
from ppl_dgp.laplace.fit import Laplace, NotPositiveDefiniteWarning
from ppl_dgp.laplace.predictive import glm_predictive, predict_regression

__all__ = [
    "DiagPrecision",
    "FullPrecision",
    "KronPrecision",
    "Laplace",
    "LaplaceApprox",
    "Layout",
    "NotPositiveDefiniteWarning",
    "glm_predictive",
    "predict_regression",
]
