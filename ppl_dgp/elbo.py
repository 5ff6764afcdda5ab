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
import numpy as np
from jax import Array
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.infer.elbo import ELBO

from ppl_dgp.collapse import ROLE, collapse

__all__ = ["DoublyStochasticELBO", "ImportanceWeightedELBO", "elbo_terms", "iw_elbo_terms"]


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
        elif guide_trace[name]["infer"].get(ROLE) in ("inducing", "layer_noise"):
            # The guide's own tag decides: analytic KL below; layer noise has q = p. A local
            # latent with a q of its own (a latent input's q(w_n)) counts log p - log q.
            continue
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


# -- importance-weighted VI ---------------------------------------------------------------------


def _importance_keys(key: Array, K: int) -> Array:
    """``K`` keys whose first is ``key`` itself (so that ``K = 1`` is the one-sample bound)."""
    if K == 1:
        return key[None]
    return jnp.concatenate([key[None], jax.random.split(jax.random.fold_in(key, 1), K - 1)])


def _split_terms(model_trace: dict, guide_trace: dict) -> dict[str, Any]:
    """The bound's terms of one collapsed run: per-datum log weights and the global terms.

    Per datum ``n`` (sites inside the data plate): the observed site's ``log p(y_n | .)`` (its
    closed-form ``var_exp`` where recorded) plus ``log p(w_n) - log q(w_n)`` of every local
    latent with a ``q`` of its own; layer noise (``q = p``) and inducing values (analytic KL)
    drop out. Global latents give ``log p - log q`` (scaled as their sites are).
    """
    local: Array | None = None
    scale: Any = None
    frames: Any = None
    kl: dict[str, Array] = {}
    log_prior_ratio = jnp.zeros(())
    for name, site in model_trace.items():
        if site["type"] == "deterministic":
            if site.get("infer", {}).get(ROLE) == "kl":
                kl[site["infer"]["of"]] = site["value"]
            continue
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            var_exp = model_trace.get(f"{name}.var_exp")
            term = site["fn"].log_prob(site["value"]) if var_exp is None else var_exp["value"]
        elif guide_trace[name]["infer"].get(ROLE) in ("inducing", "layer_noise"):
            continue
        else:
            guide_site = guide_trace[name]
            log_p = site["fn"].log_prob(site["value"])
            log_q = guide_site["fn"].log_prob(guide_site["value"])
            if not site["cond_indep_stack"]:
                s = 1.0 if site["scale"] is None else site["scale"]
                log_prior_ratio = log_prior_ratio + s * (jnp.sum(log_p) - jnp.sum(log_q))
                continue
            term = log_p - log_q
        stack = tuple(f.name for f in site["cond_indep_stack"])
        if len(stack) != 1 or jnp.ndim(term) != 1:
            raise ValueError(
                f"ImportanceWeightedELBO: site {name!r} must give one term per datum of one "
                f"data plate; received plates {list(stack)} and terms of shape "
                f"{jnp.shape(term)}"
            )
        if frames is None:
            frames, scale = stack, jnp.asarray(1.0 if site["scale"] is None else site["scale"])
        elif stack != frames or jnp.shape(term) != jnp.shape(local):
            raise ValueError(
                f"ImportanceWeightedELBO: site {name!r} is in plate(s) {list(stack)} with "
                f"{jnp.shape(term)} terms; the other per-datum sites are in {list(frames)} with "
                f"{jnp.shape(local)}"
            )
        local = term if local is None else local + term
    if local is None:
        raise ValueError("ImportanceWeightedELBO: the model has no observed site in a data plate")
    return {"local": local, "scale": scale, "kl": kl, "log_prior_ratio": log_prior_ratio}


def iw_elbo_terms(
    rng_key: Array,
    param_map: dict[str, Array],
    model: Any,
    guide: Any,
    *args: Any,
    num_importance: int,
    **kwargs: Any,
) -> dict[str, Any]:
    """One-sample importance-weighted bound (IWVI), split into its terms.

    With ``K = num_importance`` draws ``(w_n^k, f_n^k) ~ q`` of every datum's local latents
    (the guide's ``q(w_n)`` and the layers' noise, ``q(f | u) = p(f | u)``, so its ratio
    cancels) given one draw of the global latents,

    .. math::
        \\mathcal L_K = \\sum_n \\log \\frac1K \\sum_{k=1}^K
            \\exp\\Big(\\mathbb E_{q(f^L_n \\mid f^{L-1,k}_n)}[\\log p(y_n \\mid f^L_n)]
            + \\log p(w^k_n) - \\log q(w^k_n)\\Big)
            - \\sum_l \\mathrm{KL}[q(u^l) \\,\\|\\, p(u^l)]
            + \\log p(\\theta) - \\log q(\\theta).

    The inner term is the per-datum term of :func:`elbo_terms` (``u`` collapsed against
    ``q(u)``, the Gaussian likelihood in closed form), so ``K = 1`` is exactly the standard
    bound at the same key, and ``E[L_K]`` is non-decreasing in ``K`` with ``L_K <= log p(y)``
    (Burda et al. 2016, theorem 1, applied to ``w``; the inner ``exp E log`` is at most the
    expected likelihood, so ``L_K`` still bounds the evidence). Minibatch terms are scaled by
    ``N / B`` outside the log-sum-exp.

    Returns:
        ``{"elbo", "kl": {layer: KL}, "log_prior_ratio", "log_weights" [K, B]}``.

    References:
        Salimbeni, Dutordoir, Hensman & Deisenroth (2019), "Deep Gaussian Processes with
        Importance-Weighted Variational Inference", ICML, section 3; Burda, Grosse &
        Salakhutdinov (2016), "Importance Weighted Autoencoders", ICLR.
    """
    K = _check_num_importance(num_importance)
    key_guide, key_model = jax.random.split(rng_key)
    guide_trace = trace(substitute(seed(guide, key_guide), data=param_map)).get_trace(
        *args, **kwargs
    )
    # The global latents (and the minibatch) are drawn once and shared by the K samples.
    held = {
        name: site["value"]
        for name, site in guide_trace.items()
        if site["type"] == "plate" or (site["type"] == "sample" and not site["cond_indep_stack"])
    }

    def one(kg: Array, km: Array) -> dict[str, Any]:
        g = substitute(substitute(seed(guide, kg), data=param_map), data=held)
        g_trace = trace(g).get_trace(*args, **kwargs)
        with collapse(params=param_map):
            m_trace = trace(substitute(replay(seed(model, km), g_trace), data=param_map)).get_trace(
                *args, **kwargs
            )
        return _split_terms(m_trace, g_trace)

    terms = jax.vmap(one)(_importance_keys(key_guide, K), _importance_keys(key_model, K))
    log_w = terms["local"]  # [K, B]
    scale = jax.tree.map(lambda v: v[0], terms["scale"])
    kl = {k: v[0] for k, v in terms["kl"].items()}  # the same for every k (globals held)
    log_prior_ratio = terms["log_prior_ratio"][0]
    local = jnp.sum(jax.nn.logsumexp(log_w, axis=0) - jnp.log(K))
    elbo = scale * local - sum(kl.values(), jnp.zeros(())) + log_prior_ratio
    return {"elbo": elbo, "kl": kl, "log_prior_ratio": log_prior_ratio, "log_weights": log_w}


def _check_num_importance(K: Any) -> int:
    if not isinstance(K, int | np.integer) or isinstance(K, bool) or K < 1:
        raise ValueError(f"num_importance must be an int >= 1; received {K!r}")
    return int(K)


class ImportanceWeightedELBO(ELBO):
    """The importance-weighted bound of latent-variable deep GPs (IWVI) as a NumPyro ``ELBO``.

    ``K = num_importance`` samples of each datum's local latents per step (see
    :func:`iw_elbo_terms`); ``K = 1`` is :class:`DoublyStochasticELBO`. Use with
    :class:`~ppl_dgp.latent.LatentVariableGuide` (or any guide of the inducing family).

    Args:
        num_importance: ``K >= 1``.
        num_particles: independent bounds averaged per step.
        loss_scale: multiplies the loss (e.g. ``1 / N``).

    References:
        Salimbeni, Dutordoir, Hensman & Deisenroth (2019), ICML.
    """

    can_infer_discrete = False

    def __init__(self, num_importance: int = 5, num_particles: int = 1, loss_scale: float = 1.0):
        super().__init__(num_particles=num_particles)
        self.num_importance = _check_num_importance(num_importance)
        self.loss_scale = loss_scale

    def loss_with_mutable_state(
        self, rng_key: Array, param_map: dict, model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> dict:
        def single(key: Array) -> Array:
            return -iw_elbo_terms(
                key, param_map, model, guide, *args, num_importance=self.num_importance,
                **kwargs,
            )["elbo"]  # fmt: skip

        if self.num_particles == 1:
            loss = single(rng_key)
        else:
            loss = jnp.mean(jax.vmap(single)(jax.random.split(rng_key, self.num_particles)))
        return {"loss": self.loss_scale * loss, "mutable_state": None}
