"""Deep GP regression with input-dependent noise: a heteroscedastic Gaussian on two latent
outputs of the last layer (Saul et al. 2016's chained GP, deep as in Salimbeni & Deisenroth).

``dgp_heteroscedastic(X, y=None, *, layers)`` is
:func:`~ppl_dgp.models.dgp.dgp_likelihood_model` with
:class:`~ppl_dgp.likelihoods.HeteroscedasticGaussian`: the last layer has two outputs, the
mean ``f_0`` and the log standard deviation ``f_1`` of

.. math:: y_n \\sim N\\big(f_0(h_n),\\ \\exp(f_1(h_n))^2\\big), \\qquad h_n = f^{L-1}(\\dots
    f^1(x_n)).

The last layer is sampled (its ``eps`` is a per-datum site: the log-scale has no closed-form
marginal), so the default program is the proper joint that NUTS, HMC, SGHMC and Laplace see;
SVI's bound takes the closed-form expectation
``E_q[log p] = -log(2 pi)/2 - m_1 - ((y - m_0)^2 + v_0) exp(2 v_1 - 2 m_1) / 2``.

Example:
    >>> import numpy as np
    >>> from numpyro.handlers import seed, trace
    >>> from ppl_dgp.models import heteroscedastic as het
    >>> X = np.linspace(-1.0, 1.0, 8)[:, None]
    >>> model = het.build_dgp_heteroscedastic(X, num_inducing=4)
    >>> tr = trace(seed(model, 0)).get_trace(X)
    >>> tr["layer1.eps"]["value"].shape, tr["y"]["value"].shape  # (mean, log sd) per datum
    ((8, 2), (8,))

References:
    Saul, Hensman, Vehtari & Lawrence (2016), "Chained Gaussian Processes", AISTATS;
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS; GPflux's heteroskedastic example (GPflux #75).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from jax import Array

from ppl_dgp.layers import LayerSpec
from ppl_dgp.likelihoods import HeteroscedasticGaussian
from ppl_dgp.models.dgp import dgp_likelihood_model, init_dgp
from ppl_dgp.zoo import ZooModel, register_model

__all__ = ["build_dgp_heteroscedastic", "dgp_heteroscedastic", "init_dgp_heteroscedastic"]


def dgp_heteroscedastic(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N]
    *,
    layers: tuple[LayerSpec, ...],
    likelihood: HeteroscedasticGaussian = HeteroscedasticGaussian(),
    batch_size: int | None = None,
) -> Array:  # [N, 2]
    """L-layer deep GP with a heteroscedastic Gaussian likelihood (see the module).

    Sites: ``layer{l}.*`` (the last layer with two outputs and its ``eps`` ``[N, 2]``),
    observed ``y``.

    Args:
        X: inputs ``[N, D]``.
        y: targets ``[N]`` or ``None`` to predict.
        layers: one :class:`~ppl_dgp.layers.LayerSpec` per layer; the last has two outputs
            (mean, log standard deviation).
        likelihood: the :class:`~ppl_dgp.likelihoods.HeteroscedasticGaussian`.
        batch_size: minibatch size ``B`` (``None`` = all ``N``).

    Returns:
        The last layer's sampled output ``[N, 2]``.
    """
    return dgp_likelihood_model(
        X, y, layers=layers, likelihood=likelihood, batch_size=batch_size,
        marginalise_output=False, owner="dgp_heteroscedastic",
    )  # fmt: skip


def init_dgp_heteroscedastic(
    X: Array, *, num_layers: int = 2, num_inducing: int = 20, last_q_sqrt: float = 1e-3,
    **kwargs: Any,
) -> dict[str, Any]:  # fmt: skip
    """:func:`~ppl_dgp.models.dgp.init_dgp`'s layers with a two-output last layer;
    ``{"layers": ...}``.

    The last layer's ``q(u)`` starts narrow (``last_q_sqrt``): with the prior's spread the
    bound's factor ``exp(2 v_1)`` on the squared error makes "all noise" (a large log-scale,
    a flat mean) the optimiser's first and lasting answer.
    """
    config = init_dgp(X, num_layers=num_layers, num_inducing=num_inducing, **kwargs)
    layers = config["layers"]
    last = dataclasses.replace(layers[-1], num_outputs=2, q_sqrt_init=last_q_sqrt)
    return {"layers": (*layers[:-1], last)}


def build_dgp_heteroscedastic(X: Array, *, num_inducing: int = 10, layers: int = 2) -> Any:
    """The zoo's ``dgp_heteroscedastic`` on ``X`` (``M = min(num_inducing, N)``)."""
    M = min(num_inducing, np.shape(X)[0])
    config = init_dgp_heteroscedastic(X, num_layers=layers, num_inducing=M)
    return functools.partial(dgp_heteroscedastic, **config)


register_model(
    ZooModel(
        name="dgp_heteroscedastic",
        build=build_dgp_heteroscedastic,
        likelihood="heteroscedastic_gaussian",
        task="regression",
        predictives=("mixture", "distribution"),
        smoke={"num_inducing": 4, "layers": 1},
        method_overrides={"laplace": {"curvature": "hessian"}},
        description="L-layer deep GP regression with input-dependent noise (chained GP; "
        "Saul et al. 2016)",
    )
)
