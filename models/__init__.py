"""The model zoo, installed as ``ppl_dgp.models``: NumPyro programs built from ``ppl_dgp`` layers.

- :mod:`ppl_dgp.models.svgp`: single-layer sparse variational GP regression.
- :mod:`ppl_dgp.models.dgp`: L-layer deep GP regression (Salimbeni & Deisenroth 2017).
- :mod:`ppl_dgp.models.gp_classification`: SVGP and deep GP classification (binary, multiclass).
- :mod:`ppl_dgp.models.heteroscedastic`: deep GP regression with input-dependent noise.
- :mod:`ppl_dgp.models.counts`: deep GP for counts (Poisson).
- :mod:`ppl_dgp.models.lv_dgp`: latent-variable deep GP regression (Salimbeni et al. 2019).
- :mod:`ppl_dgp.models.hybrid`: dense layers feeding deep GP layers (hybrid NN -> GP).
- :mod:`ppl_dgp.models.bnn`: Bayesian MLPs (regression, binary and multiclass classification).
- :mod:`ppl_dgp.models.dropout`: MC dropout classifiers (MAP fit, T passes at prediction).
- :mod:`ppl_dgp.models.gplvm`: the Bayesian GPLVM (inputs are latents only).
- :mod:`ppl_dgp.models.lmc`: the linear model of coregionalisation, one kernel per latent GP.

Each module registers its entries with :func:`ppl_dgp.zoo.register_model`; :data:`MODELS`
holds them all (the CLI, the compare report and the contract test iterate it). A new model
is one module here plus its import line below.
"""

from ppl_dgp.models import (
    bnn,
    counts,
    dgp,
    dropout,
    gp_classification,
    gplvm,
    heteroscedastic,
    hybrid,
    lmc,
    lv_dgp,
    svgp,
)
from ppl_dgp.zoo import MODELS, ZooModel, register_model

__all__ = [
    "MODELS",
    "ZooModel",
    "bnn",
    "counts",
    "dgp",
    "dropout",
    "gp_classification",
    "gplvm",
    "heteroscedastic",
    "hybrid",
    "lmc",
    "lv_dgp",
    "register_model",
    "svgp",
]
