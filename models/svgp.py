"""Single-layer sparse variational GP regression (Hensman et al. 2013; GPflow ``SVGP``).

The SVGP is the one-layer case of :func:`ppl_dgp.models.dgp.dgp_regression`: same sites
(``layer0.*``, ``noise_variance``, ``y``), same guide, same bound.

Example:
    >>> # from ppl_dgp.models import svgp
    >>> # model = functools.partial(svgp.svgp_regression, **svgp.init_svgp(X, num_inducing=20))
"""

from __future__ import annotations

from typing import Any

from jax import Array

from ppl_dgp.models.dgp import dgp_regression, init_dgp

__all__ = ["svgp_regression", "init_svgp"]


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
