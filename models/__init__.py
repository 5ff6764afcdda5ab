"""The model zoo, installed as ``ppl_dgp.models``: NumPyro programs built from ``ppl_dgp`` layers.

- :mod:`ppl_dgp.models.svgp`: single-layer sparse variational GP regression.
- :mod:`ppl_dgp.models.dgp`: L-layer deep GP regression (Salimbeni & Deisenroth 2017).
- :mod:`ppl_dgp.models.bnn`: Bayesian MLPs (regression, binary and multiclass classification).
"""

from ppl_dgp.models import bnn, dgp, svgp

__all__ = ["bnn", "dgp", "svgp"]
