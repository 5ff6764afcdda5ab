"""Deep ensembles: ``K`` independently initialised MAP fits, one posterior of ``K`` draws.

Lakshminarayanan, Pritzel & Blundell (2017) train ``K`` networks from different random
initialisations and predict with the equally weighted mixture of their predictives. Here each
member is a MAP of the model's joint (:func:`~ppl_dgp.infer.map.map_estimate`, the members
vectorised in one compiled loop) started from the model's initial point perturbed in
unconstrained space, ``z_k = z_0 + s * e_k``, ``e_k ~ N(0, I)`` (``s`` = ``init_scale``); the
members are stored as the draws of one chain, ``(1, K, ...)``, so every predictive treats the
ensemble as the mixture it is. The loss traces are ``traces["map_loss"]`` ``[steps, K]``.

References:
    Lakshminarayanan, Pritzel & Blundell (2017), "Simple and Scalable Predictive Uncertainty
    Estimation using Deep Ensembles", NeurIPS.

Example:
    >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
    >>> from ppl_dgp.infer import DeepEnsemble, fit
    >>> def model(X, y=None):
    ...     w = numpyro.sample("w", dist.Normal(0.0, 10.0))
    ...     with numpyro.plate("data", X.shape[0]):
    ...         numpyro.sample("y", dist.Normal(w * X[:, 0], 1.0), obs=y)
    >>> X = np.ones((20, 1)); y = 2.0 * np.ones(20)
    >>> post = fit(DeepEnsemble(num_members=3, num_steps=500, learning_rate=0.1),
    ...            jax.random.key(0), model, X, y)
    >>> post.draws["w"].shape
    (1, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import numpy as np
from jax import Array

from ppl_dgp.infer.core import constrain, initialize, positive_int, register_method, timed
from ppl_dgp.infer.map import check_map_fields, map_estimate
from ppl_dgp.posterior import Posterior

__all__ = ["DeepEnsemble"]


@register_method
@dataclasses.dataclass(frozen=True)
class DeepEnsemble:
    """``K`` MAP fits from perturbed initial points (see the module docstring).

    Args:
        num_members: ``K``.
        num_steps: optimisation steps per member.
        learning_rate: Adam's learning rate on ``U / N``.
        optimizer: ``"adam"`` or ``"lbfgs"``.
        init_scale: ``s``, the standard deviation of the perturbation of the initial point in
            unconstrained space (per-datum latents are not perturbed: the latent inputs start
            at their initial value in every member).
        local_latents: as for :class:`~ppl_dgp.infer.map.MAP`.
    """

    num_members: int = 5
    num_steps: int = 2000
    learning_rate: float = 1e-2
    optimizer: str = "adam"
    init_scale: float = 0.5
    local_latents: str = "auto"
    name: ClassVar[str] = "ensemble"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # members start s = 0.5 away from the model's initial point: on the motorcycle DGP
        # 2000 steps left the loss falling 0.026 per datum over the last 200 (MAP's warning)
        "compare": {"num_members": 5, "num_steps": 5000},
        "smoke": {"num_members": 3, "num_steps": 200},
    }

    def __post_init__(self) -> None:
        positive_int("DeepEnsemble", num_members=self.num_members)
        check_map_fields("DeepEnsemble", self)
        if not self.init_scale >= 0:
            raise ValueError(f"DeepEnsemble.init_scale must be >= 0; received {self.init_scale}")

    def run(
        self, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any
    ) -> Posterior:
        """Fit (see :func:`~ppl_dgp.infer.fit`); the data are already checked."""
        key_init, key_perturb, key_run = jax.random.split(rng_key, 3)
        K = self.num_members
        with timed() as timer:
            info, sites = initialize(key_init, model, X, y, owner="DeepEnsemble", **model_kwargs)
            z0 = info.param_info.z
            keys = dict(zip(z0, jax.random.split(key_perturb, len(z0)), strict=True))
            local = set(sites.local_latent)

            def start(name: str, v: Array) -> Array:
                v = jax.numpy.broadcast_to(v, (K, *np.shape(v)))
                if name in local:
                    return v
                return v + self.init_scale * jax.random.normal(keys[name], v.shape, v.dtype)

            z_init = {k: start(k, v) for k, v in z0.items()}
            z, losses = map_estimate(
                info, sites, key_run, num_steps=self.num_steps, learning_rate=self.learning_rate,
                optimizer=self.optimizer, local_latents=self.local_latents, N=int(X.shape[0]),
                z0=z_init, members=K, owner="DeepEnsemble",
            )  # fmt: skip
            supports = {k: info.model_trace[k]["fn"].support for k in sites.global_latent}
            draws = constrain({k: z[k][None] for k in supports}, supports)  # (1, K, ...)
            timings = timer.timings()
        return Posterior(
            draws=draws,
            method=self,
            traces={"map_loss": np.asarray(losses)},
            params=dict(sites.params),
            timings=timings,
        )
