"""Deep GP regression of counts: a Poisson likelihood with the exp link on the last layer.

``dgp_poisson(X, y=None, *, layers)`` is :func:`~ppl_dgp.models.dgp.dgp_likelihood_model`
with :class:`~ppl_dgp.likelihoods.Poisson`:

.. math:: y_n \\sim \\operatorname{Poisson}\\big(b \\exp f^L(\\dots f^1(x_n))\\big)

(``b`` the bin size). The last layer is sampled (a Poisson has no closed-form marginal over a
Gaussian latent), so the default program is the proper joint that NUTS, HMC, SGHMC and
Laplace see; SVI's bound takes the closed-form expectation
``E_q[log p] = y (log b + m) - b exp(m + v / 2) - log y!``. Counts are checked: a negative or
non-integer ``y`` raises a ``ValueError`` naming ``y``.

Example:
    >>> import numpy as np
    >>> from numpyro.handlers import seed, trace
    >>> from ppl_dgp.models import counts
    >>> X = np.linspace(-1.0, 1.0, 8)[:, None]
    >>> model = counts.build_dgp_poisson(X, num_inducing=4)
    >>> tr = trace(seed(model, 0)).get_trace(X)
    >>> bool(np.all(tr["y"]["value"] >= 0)), tr["layer1.eps"]["value"].shape
    (True, (8, 1))
    >>> model(X, -np.ones(8))
    Traceback (most recent call last):
    ...
    ValueError: y: Poisson observations must be non-negative integer counts; received -1.0 (entry 0)

References:
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS; GPflow ``Poisson``; Hensman, Matthews & Ghahramani (2015).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from jax import Array

from ppl_dgp.layers import LayerSpec
from ppl_dgp.likelihoods import Poisson
from ppl_dgp.models.dgp import dgp_likelihood_model, init_dgp
from ppl_dgp.zoo import ZooModel, register_model

__all__ = ["build_dgp_poisson", "dgp_poisson"]


def dgp_poisson(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N] counts
    *,
    layers: tuple[LayerSpec, ...],
    likelihood: Poisson = Poisson(link="exp"),
    batch_size: int | None = None,
) -> Array:  # [N, 1]
    """L-layer deep GP with a Poisson likelihood (see the module).

    Sites: ``layer{l}.*`` (the last layer with its ``eps`` ``[N, 1]``), observed ``y``.

    Args:
        X: inputs ``[N, D]``.
        y: non-negative integer counts ``[N]`` or ``None`` to predict.
        layers: one :class:`~ppl_dgp.layers.LayerSpec` per layer; the last has one output
            (the log rate).
        likelihood: the :class:`~ppl_dgp.likelihoods.Poisson` (link, bin size).
        batch_size: minibatch size ``B`` (``None`` = all ``N``).

    Returns:
        The last layer's sampled output ``[N, 1]``.
    """
    return dgp_likelihood_model(
        X, y, layers=layers, likelihood=likelihood, batch_size=batch_size,
        marginalise_output=False, owner="dgp_poisson",
    )  # fmt: skip


def build_dgp_poisson(
    X: Array, *, num_inducing: int = 10, layers: int = 2, binsize: float = 1.0
) -> Any:
    """The zoo's ``dgp_poisson`` on ``X`` (``M = min(num_inducing, N)``; exp link)."""
    M = min(num_inducing, np.shape(X)[0])
    config = init_dgp(X, num_layers=layers, num_inducing=M)
    return functools.partial(
        dgp_poisson, layers=config["layers"], likelihood=Poisson(link="exp", binsize=binsize)
    )


register_model(
    ZooModel(
        name="dgp_poisson",
        build=build_dgp_poisson,
        likelihood="poisson",
        task="counts",
        predictives=("distribution",),
        smoke={"num_inducing": 4, "layers": 1},
        method_overrides={"laplace": {"curvature": "hessian"}},
        description="L-layer deep GP for counts: Poisson likelihood, exp link",
    )
)
