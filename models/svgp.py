"""Single-layer sparse variational GP regression (Hensman et al. 2013; GPflow ``SVGP``).

The SVGP is the one-layer case of :func:`ppl_dgp.models.dgp.dgp_regression`: same sites
(``layer0.*``, ``noise_variance``, ``y``), same guide, same bound.

Example:
    >>> import functools, jax, jax.numpy as jnp, numpyro
    >>> from ppl_dgp.models import svgp
    >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]
    >>> model = functools.partial(svgp.svgp_regression, **svgp.init_svgp(X, num_inducing=4))
    >>> numpyro.infer.Predictive(model, num_samples=3)(jax.random.key(0), X)["y"].shape
    (3, 8)
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from jax import Array

from ppl_dgp.models.dgp import dgp_regression, init_dgp
from ppl_dgp.zoo import ZooModel, register_model

__all__ = ["build_svgp", "svgp_regression", "init_svgp"]


def svgp_regression(X: Array, y: Array | None = None, **config: Any) -> Array:
    """SVGP regression: :func:`~ppl_dgp.models.dgp.dgp_regression` with one layer."""
    if len(config.get("layers", ())) != 1:
        raise ValueError(
            f"svgp_regression: expected exactly one layer; received {len(config.get('layers', ()))}"
        )
    return dgp_regression(X, y, **config)


def init_svgp(X: Array, *, num_inducing: int = 20, **kwargs: Any) -> dict[str, Any]:
    """:func:`~ppl_dgp.models.dgp.init_dgp` with ``num_layers=1``."""
    return init_dgp(X, num_layers=1, num_inducing=num_inducing, **kwargs)


def build_svgp(X: Array, *, num_inducing: int = 10) -> Any:
    """The zoo's ``svgp`` on ``X`` (``M = min(num_inducing, N)``)."""
    M = min(num_inducing, np.shape(X)[0])
    return functools.partial(svgp_regression, **init_svgp(X, num_inducing=M))


register_model(
    ZooModel(
        name="svgp",
        build=build_svgp,
        likelihood="gaussian",
        task="regression",
        smoke={"num_inducing": 5},
        description="sparse variational GP regression (Hensman et al. 2013)",
    )
)
