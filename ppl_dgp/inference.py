"""One model, every inference method: ``fit(method, key, model, X, y) -> Posterior``.

This module is the front door: it gathers the method configurations and the one
:func:`predict` that works for a Posterior from any of them. A method is a small frozen
configuration; swapping one for another changes one argument.

- :class:`SVI` (:mod:`ppl_dgp.svi`): the inducing-point guide and the doubly-stochastic bound,
  then i.i.d. draws of ``q`` as one chain.
- :class:`NUTS`, :class:`HMC` (:mod:`ppl_dgp.mcmc`): NumPyro's kernels on the exact joint.
- :class:`Laplace` (:mod:`ppl_dgp.laplace`): MAP, then a Gaussian with the Hessian, GGN,
  empirical Fisher (full, diag or KFAC) of the potential; evidence-tuned prior (Laplace Redux).
- :class:`SGHMC` (:mod:`ppl_dgp.sghmc`): scale-adapted stochastic-gradient HMC on minibatches,
  the layer outputs sampled (Havasi et al. 2018).

The shared core (:func:`fit`, :func:`initialize`, :func:`inspect_model`,
:func:`register_method`) lives in :mod:`ppl_dgp.fitting`; a new method registers itself there.

Example:
    >>> # post = fit(NUTS(num_chains=4), key, model, X, y)
    >>> # post = fit(SVI(num_steps=2000), key, model, X, y)   # same model, other method
    >>> # pred = predict(key, model, post, X_test)            # MixturePredictive
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax import Array
from numpyro.handlers import seed, substitute, trace

from ppl_dgp.collapse import gaussian_output
from ppl_dgp.fitting import (
    ModelSites,
    accepts_batch_size,
    fit,
    initialize,
    inspect_model,
    positive_int,
    register_method,
)
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.laplace import Laplace
from ppl_dgp.mcmc import HMC, NUTS
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import MixturePredictive, predict_svi, propagate_layers
from ppl_dgp.sghmc import SGHMC
from ppl_dgp.svi import SVI
from ppl_dgp.validation import check_regression_data

__all__ = [
    "HMC",
    "Laplace",
    "NUTS",
    "SGHMC",
    "SVI",
    "ModelSites",
    "fit",
    "initialize",
    "inspect_model",
    "predict",
    "register_method",
]


# -- predict -------------------------------------------------------------------------------


def _spread(total: int, num: int) -> np.ndarray:
    """``min(num, total)`` indices spread evenly over ``range(total)`` (chain-major order)."""
    if num >= total:
        return np.arange(total)
    return np.round(np.linspace(0, total - 1, num)).astype(int)


def predict(
    rng_key: Array,
    model: Callable,
    posterior: Posterior,
    X_new: Array,
    *,
    num_samples: int = 100,
    likelihood_site: str = "y",
    **model_kwargs: Any,
) -> MixturePredictive:
    """The mixture predictive of ``y`` at ``X_new`` for a Posterior from any method.

    - SVI with the inducing guide: :func:`~ppl_dgp.predict.predict_svi` (``u`` integrated out
      against ``q(u)``, ``num_samples`` passes through the inner layers).
    - Every other posterior: ``S = min(num_samples, chains * draws)`` draws spread evenly over
      the chains; per draw the model runs at ``X_new`` with the draw and ``posterior.params``
      substituted and fresh layer noise. For a GP program the component is the last layer's
      prior conditional ``N(mean, var + noise)`` given the draw's ``u`` (read from
      :func:`~ppl_dgp.predict.propagate_layers`, compiled once per model, as
      :func:`~ppl_dgp.predict.layer_moments`
      does); for any other model with a Normal ``likelihood_site``, its ``loc`` and ``scale**2``.

    Args:
        rng_key: key for the layer noise (and the SVI inner-layer samples).
        model: the program that was fitted.
        posterior: from :func:`fit` (or :meth:`Posterior.load`).
        X_new: inputs ``[N, D]``.
        num_samples: mixture components ``S`` (at most the number of draws, except for SVI
            with the inducing guide).
        likelihood_site: the Gaussian observation site.
        **model_kwargs: further model keywords (``batch_size`` is forced to ``None``).

    Returns:
        :class:`~ppl_dgp.predict.MixturePredictive`, ``means``/``variances`` ``[S, N]``.
    """
    positive_int("predict", num_samples=num_samples)
    X_new = jnp.asarray(X_new)
    check_regression_data(X_new, None)
    if accepts_batch_size(model):
        model_kwargs = {**model_kwargs, "batch_size": None}
    params = {k: jnp.asarray(v) for k, v in posterior.params.items()}
    if posterior.config.get("guide") == "InducingPointGuide":
        # A fresh guide: predict_svi learns its structure from one call at X_new.
        guide = InducingPointGuide(model, hyper=posterior.config["hyper"])
        return predict_svi(
            rng_key,
            model,
            guide,
            params,
            X_new,
            num_samples=num_samples,
            likelihood_site=likelihood_site,
            **model_kwargs,
        )
    flat = posterior.flat()
    if not flat:
        raise ValueError(f"predict: the {posterior.method!r} posterior has no draws")
    total = next(iter(flat.values())).shape[0]
    idx = _spread(total, num_samples)
    draws = {k: jnp.asarray(v[idx]) for k, v in flat.items()}

    S = len(idx)
    sites = propagate_layers(
        rng_key, model, draws, params, X_new, num_samples=S, **model_kwargs
    )  # compiled once per model; layers without q(u) use p(f | u) given the drawn u
    if f"{likelihood_site}.f_mean" in sites:  # a Gaussian likelihood recorded its moments
        out = gaussian_output(sites, likelihood_site)  # [S, N]
        return MixturePredictive(out.mean, out.var, out.f_var)

    def one(key: Array, draw: dict[str, Array]) -> tuple[Array, Array, Array]:
        tr = trace(substitute(seed(model, key), data={**params, **draw})).get_trace(
            X_new, None, **model_kwargs
        )
        site = tr.get(likelihood_site)
        fn = None if site is None else site["fn"]
        if not isinstance(fn, numpyro.distributions.Normal):
            raise NotImplementedError(
                f"predict: site {likelihood_site!r} is not a Normal observation "
                f"({type(fn).__name__}); this mixture predictive is for Gaussian likelihoods. "
                "For a classifier use ppl_dgp.laplace_predictive.predict_proba (any method)"
            )
        loc = jnp.broadcast_to(fn.loc, fn.batch_shape)
        scale = jnp.broadcast_to(fn.scale, fn.batch_shape)
        return loc, scale**2, jnp.zeros_like(loc)

    keys = jax.random.split(rng_key, S)
    means, variances, f_variances = jax.jit(jax.vmap(one))(keys, draws)
    return MixturePredictive(means, variances, f_variances)
