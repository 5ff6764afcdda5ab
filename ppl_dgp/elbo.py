"""The doubly-stochastic ELBO (Salimbeni & Deisenroth 2017) as a NumPyro ``ELBO``.

.. math::
    \\mathcal L = \\sum_{n} \\mathbb E_{q(f^L_n)}[\\log p(y_n \\mid f^L_n)]
        - \\sum_{l} \\mathrm{KL}[q(u^l) \\,\\|\\, p(u^l)]
        + \\mathbb E_q[\\log p(\\theta) - \\log q(\\theta)]

Each layer's ``u`` is integrated out analytically against ``q(u)`` (so ``q(f^l_n | f^{l-1}_n)``
is Gaussian with the moments of :func:`~ppl_dgp.conditionals.conditional`), samples are
propagated through the inner layers with one ``eps`` per datum, the last layer's Gaussian
likelihood is taken in closed form, the KL of each layer is analytic, and minibatch terms are
scaled by ``N / B`` through the data plate. ``Trace_ELBO`` on the same model and
:class:`~ppl_dgp.guides.InducingPointGuide` estimates the same bound by sampling ``u``; this one
has a much smaller variance and is what GPflux optimises.

References:
    Salimbeni & Deisenroth (2017), eq. (4)-(5); GPflux ``DeepGP.elbo``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.infer.elbo import ELBO

from ppl_dgp.collapse import ROLE, collapse

__all__ = ["DoublyStochasticELBO", "elbo_terms"]


def elbo_terms(
    rng_key: Array,
    param_map: dict[str, Array],
    model: Any,
    guide: Any,
    *args: Any,
    **kwargs: Any,
) -> dict[str, Array]:
    """One-sample doubly-stochastic ELBO, split into its terms.

    The model runs under :class:`~ppl_dgp.collapse.collapse` with the guide's ``q(u)``; the
    terms are read from its trace: ``{layer}.kl`` sites, and ``{site}.var_exp`` (the
    closed-form expected log-likelihood) in place of an observed site's one-sample
    ``log_prob`` where the likelihood recorded one.

    Returns:
        ``{"elbo", "expected_log_lik", "kl": {layer: KL}, "log_prior_ratio"}``; the likelihood
        term is already scaled by ``N / B``.
    """
    key_guide, key_model = jax.random.split(rng_key)
    guide_trace = trace(substitute(seed(guide, key_guide), data=param_map)).get_trace(
        *args, **kwargs
    )
    with collapse(params=param_map):
        model_trace = trace(
            substitute(replay(seed(model, key_model), guide_trace), data=param_map)
        ).get_trace(*args, **kwargs)
    exp_log_lik = jnp.zeros(())
    log_prior_ratio = jnp.zeros(())
    kl: dict[str, Array] = {}
    for name, site in model_trace.items():
        if site["type"] == "deterministic":
            if site.get("infer", {}).get(ROLE) == "kl":  # recorded by the collapsed layers
                kl[site["infer"]["of"]] = site["value"]
            continue
        if site["type"] != "sample":
            continue
        scale = 1.0 if site["scale"] is None else site["scale"]
        if site["is_observed"]:
            var_exp = model_trace.get(f"{name}.var_exp")  # closed form (Gaussian likelihood)
            term = site["fn"].log_prob(site["value"]) if var_exp is None else var_exp["value"]
            exp_log_lik = exp_log_lik + scale * jnp.sum(term)
        elif site["infer"].get(ROLE) in ("inducing", "layer_noise"):
            continue  # analytic KL below; layer noise has q = p
        else:
            guide_site = guide_trace[name]
            log_p = jnp.sum(site["fn"].log_prob(site["value"]))
            log_q = jnp.sum(guide_site["fn"].log_prob(guide_site["value"]))
            log_prior_ratio = log_prior_ratio + scale * (log_p - log_q)
    elbo = exp_log_lik - sum(kl.values(), jnp.zeros(())) + log_prior_ratio
    return {
        "elbo": elbo,
        "expected_log_lik": exp_log_lik,
        "kl": kl,
        "log_prior_ratio": log_prior_ratio,
    }


class DoublyStochasticELBO(ELBO):
    """Doubly-stochastic ELBO for programs built from :func:`~ppl_dgp.layers.gp_layer`.

    Use with :class:`~ppl_dgp.guides.InducingPointGuide` (its ``{layer}.q_mu`` and
    ``{layer}.q_sqrt`` parameters are read by the collapsed layers).

    Args:
        num_particles: samples per datum (averaged).
        loss_scale: multiplies the loss (e.g. ``1 / N`` to optimise ``-ELBO / N`` as GPflux's
            Keras training does).
    """

    can_infer_discrete = False

    def __init__(self, num_particles: int = 1, loss_scale: float = 1.0):
        super().__init__(num_particles=num_particles)
        self.loss_scale = loss_scale

    def loss_with_mutable_state(
        self, rng_key: Array, param_map: dict, model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> dict:
        def single(key: Array) -> Array:
            return -elbo_terms(key, param_map, model, guide, *args, **kwargs)["elbo"]

        if self.num_particles == 1:
            loss = single(rng_key)
        else:
            loss = jnp.mean(jax.vmap(single)(jax.random.split(rng_key, self.num_particles)))
        return {"loss": self.loss_scale * loss, "mutable_state": None}
