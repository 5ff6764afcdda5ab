"""The pointwise log-likelihood of a classifier's or a multi-output GP's posterior for PSIS-LOO
(``diagnostics.pointwise_log_likelihood``'s GP-layer estimator is for one Gaussian output)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl_dgp.posterior import Posterior


class _SiteLogLikelihood:
    """Stands in for the approximation of a GP classifier's or a multi-output GP's posterior
    while :func:`~ppl_dgp.diagnostics.to_datatree` computes its pointwise log-likelihood by
    :func:`_site_log_likelihood`: ``diagnostics.pointwise_log_likelihood``'s GP-layer
    estimator and the Laplace GLM's are for one Gaussian output. A Laplace posterior is then
    scored by the program's likelihood at its draws of ``u`` (not linearised)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def pointwise_log_likelihood(self, key, model, posterior, X, y, *, likelihood_site="y",
                                 **model_kwargs):  # fmt: skip
        del model_kwargs  # batch_size=None: the whole training set
        return _site_log_likelihood(key, model, posterior, X, y, site=likelihood_site)


def _with_site_log_likelihood(post: Posterior) -> Posterior:
    """``post`` for :func:`~ppl_dgp.diagnostics.to_datatree` of a classifier or multi-output
    model with GP layers (its draws have ``{layer}.u``); other posteriors unchanged (the
    DataTree's other groups read the draws, statistics and traces only)."""
    if not any(k.endswith(".u") for k in post.draws):
        return post
    return dataclasses.replace(post, approx=_SiteLogLikelihood(post.approx))


def _site_log_likelihood(
    key: Any, model: Callable, post: Posterior, X: Any, y: Any, *, site: str = "y",
    num_eps: int = 8, block: int = 256,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``log p(y_n | theta_s)`` ``(chain, draw, N)`` and a replicate ``y_rep`` ``(chain,
    draw, N, ...)`` per draw ``s`` and datum ``n`` for any likelihood of a GP-layer program
    (a multi-output ``y_n [P]`` is one datum).

    .. math:: \\log p(y_n \\mid \\theta_s) \\approx \\log \\frac1K \\sum_{k=1}^K
        p(y_n \\mid \\theta_s, \\epsilon_{nk})

    The draw's global sites (``u`` included: SVI's draws of ``q(u)`` are treated as MCMC's)
    are substituted and the site's distribution taken from
    :func:`~ppl_dgp.predict.propagate_site` (for a marginalised last layer the exact
    marginal, e.g. ``Phi(m / sqrt(1 + v))``); the inner layers' per-datum noise ``eps`` is a
    local latent integrated out by ``K = num_eps`` passes (``K = 1`` for one GP layer), as
    :func:`ppl_dgp.diagnostics.pointwise_log_likelihood` does for a Gaussian site.
    """
    from jax.scipy.special import logsumexp

    from ppl_dgp.predict import propagate_site

    flat = {k: jnp.asarray(v) for k, v in post.flat().items()}
    params = {k: jnp.asarray(v) for k, v in post.params.items()}
    C, D, N = post.num_chains, post.num_draws, X.shape[0]
    layers = {k for k in post.draws if k.endswith(".u")}
    K = num_eps if len(layers) > 1 else 1
    k_ll, k_rep = jax.random.split(key)
    ll, rep = [], []
    for b, start in enumerate(range(0, C * D, block)):
        idx = np.arange(start, min(start + block, C * D))
        vals = {k: jnp.repeat(v[idx], K, axis=0) for k, v in flat.items()}
        comps, _ = propagate_site(jax.random.fold_in(k_ll, b), model, vals, params, X,
                                  num_samples=len(idx) * K, site=site)  # fmt: skip
        lp = comps.log_prob(jnp.asarray(y)).reshape(len(idx), K, N)
        ll.append(np.asarray(logsumexp(lp, axis=1) - np.log(K)))
        draw = np.asarray(comps.sample(jax.random.fold_in(k_rep, b)))
        rep.append(draw.reshape(len(idx), K, *draw.shape[1:])[:, 0])
    rep = np.concatenate(rep)
    return np.concatenate(ll).reshape(C, D, N), rep.reshape(C, D, *rep.shape[1:])
