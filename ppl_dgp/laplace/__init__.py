"""The Laplace approximation (Laplace Redux), split by concept as laplace-torch is.

- :mod:`~ppl_dgp.laplace.structures`: the structures as values: curvatures
  (``FullCurvature``, ``DiagCurvature``, ``KronCurvature``; ``posterior(scale, delta)``) and
  posterior precisions (:class:`FullPrecision`, :class:`DiagPrecision`,
  :class:`KronPrecision`; ``logdet``, ``marginal_variance``, ``sample``, ``glm_cov``);
- :mod:`~ppl_dgp.laplace.curvature`: the backends (exact Hessian, GGN, empirical Fisher) and
  the dense-layer Jacobians; :mod:`~ppl_dgp.laplace.subset`: the subset ``theta`` and what
  is read from the model trace;
- :mod:`~ppl_dgp.laplace.evidence`: the Laplace evidence and the prior-precision tuning
  (marglik, fixed point, grid);
- :mod:`~ppl_dgp.laplace.approx`: what a fit leaves, :class:`LaplaceApprox`;
- :mod:`~ppl_dgp.laplace.fit`: the :class:`Laplace` method behind :func:`ppl_dgp.infer.fit`
  and :class:`LaplaceFitter`, the caller-held compiled pieces of
  :mod:`~ppl_dgp.laplace.traced` (MAP, curvature core, draws);
- :mod:`~ppl_dgp.laplace.gp`: the linearised Laplace of a GP-layer program (a DGP) in its
  inducing values, the default there;
- :mod:`~ppl_dgp.laplace.gp_marglik`: the Laplace evidence of a GP classifier (GGN over the
  inducing values at their mode) and its kernel hyperparameters by it (``tune="marglik"``);
- :mod:`~ppl_dgp.laplace.predictive`: the linearised (GLM) predictive, registered with
  :func:`ppl_dgp.predictive.predict_proba` and (GP-layer programs)
  :func:`ppl_dgp.predictive.predict` for Laplace posteriors.

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
from ppl_dgp.laplace.fit import Laplace, LaplaceFitter, NotPositiveDefiniteWarning
from ppl_dgp.laplace.predictive import glm_predictive, predict_regression

__all__ = [
    "DiagPrecision",
    "FullPrecision",
    "KronPrecision",
    "Laplace",
    "LaplaceApprox",
    "LaplaceFitter",
    "Layout",
    "NotPositiveDefiniteWarning",
    "glm_predictive",
    "predict_regression",
]
