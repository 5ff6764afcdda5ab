"""Inference: one entry point, ``fit(method, key, model, X, y) -> Posterior``, and its methods.

The core (:mod:`ppl_dgp.infer.core`: the registry, :func:`initialize`, timings), the minibatch
helper (:mod:`~ppl_dgp.infer.minibatch`) and the loop driver (:mod:`~ppl_dgp.infer.loop`)
are shared; each method is one module that registers its configuration class:

- :class:`SVI` (:mod:`~ppl_dgp.infer.svi`): the inducing-point guide and the doubly-stochastic
  bound, then i.i.d. draws of ``q`` as one chain;
- :class:`NUTS`, :class:`HMC` (:mod:`~ppl_dgp.infer.mcmc`): NumPyro's kernels on the exact
  joint;
- :class:`SGHMC` (:mod:`~ppl_dgp.infer.sghmc`): scale-adapted stochastic-gradient HMC on
  minibatches (Havasi et al. 2018);
- :class:`MAP` (:mod:`~ppl_dgp.infer.map`) and :class:`DeepEnsemble`
  (:mod:`~ppl_dgp.infer.ensemble`): point estimates, one or ``K`` of them;
- :class:`~ppl_dgp.laplace.Laplace` (the :mod:`ppl_dgp.laplace` package): a Gaussian at the MAP.

A new method is one module plus one import line here.
"""

from ppl_dgp.infer.core import (
    METHODS,
    ModelSites,
    fit,
    initialize,
    inspect_model,
    make_method,
    register_method,
)
from ppl_dgp.infer.ensemble import DeepEnsemble
from ppl_dgp.infer.loop import NonFiniteLossError, run_loop
from ppl_dgp.infer.map import MAP
from ppl_dgp.infer.mcmc import HMC, NUTS
from ppl_dgp.infer.sghmc import SGHMC
from ppl_dgp.infer.svi import SVI, run_svi
from ppl_dgp.laplace import Laplace

__all__ = [
    "HMC",
    "MAP",
    "METHODS",
    "NUTS",
    "SGHMC",
    "SVI",
    "DeepEnsemble",
    "Laplace",
    "ModelSites",
    "NonFiniteLossError",
    "fit",
    "initialize",
    "inspect_model",
    "make_method",
    "register_method",
    "run_loop",
    "run_svi",
]
