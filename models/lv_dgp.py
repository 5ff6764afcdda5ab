"""Latent-variable deep GP regression (Salimbeni, Dutordoir, Hensman & Deisenroth 2019).

``lv_dgp_regression(X, y=None, *, layers, latent_dim, ...)`` is
:func:`~ppl_dgp.models.dgp.dgp_regression` with a per-datum latent ``w_n ~ N(0, I)``
concatenated to the first layer's inputs (:func:`~ppl_dgp.latent.latent_layer`):

.. math::
    y_n = f^L(\\dots f^1([x_n, w_n])) + e_n, \\qquad w_n \\sim N(0, I_{\\mathrm{dim}}),
    \\quad e_n \\sim N(0, s^2),

so ``p(y_n | x_n)`` is a continuous mixture over ``w_n`` (multimodal or skewed where the data
are), even with one GP layer (a GP conditional density estimator, Dutordoir et al. 2018). With
``latent_dim = 0`` it is the plain deep GP, site for site. :func:`init_lv_dgp` applies the
deep GP recipe (:func:`~ppl_dgp.models.dgp.init_dgp`) to the augmented inputs ``[X, w]`` with
the latent columns of ``Z`` drawn from the prior ``N(0, I)``.

Fit it with :class:`~ppl_dgp.latent.LatentVariableGuide` and
:class:`~ppl_dgp.elbo.ImportanceWeightedELBO` (IWVI), the standard bound, or any method of
:func:`~ppl_dgp.infer.fit` (NUTS and HMC sample ``w``; the default SVI guide uses ``q(w) = p(w)``).

Example:
    >>> import jax.numpy as jnp
    >>> from numpyro.handlers import seed, trace
    >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]
    >>> model = build_lv_dgp(X, num_inducing=4, layers=2, latent_dim=1)
    >>> tr = trace(seed(model, 0)).get_trace(X)
    >>> tr["latent.w"]["value"].shape, tr["layer0.Z"]["value"].shape
    ((8, 1), (4, 2))

References:
    Salimbeni, Dutordoir, Hensman & Deisenroth (2019), "Deep Gaussian Processes with
    Importance-Weighted Variational Inference", ICML. Dutordoir, Salimbeni, Deisenroth &
    Hensman (2018), "Gaussian Process Conditional Density Estimation", NeurIPS.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from jax import Array

from ppl_dgp.latent import latent_layer
from ppl_dgp.layers import Hyper, LayerSpec, hyper
from ppl_dgp.models.dgp import dgp_layers, init_dgp, single_gaussian_output
from ppl_dgp.validation import check_regression_data
from ppl_dgp.zoo import ZooModel, register_model

__all__ = ["build_lv_dgp", "init_lv_dgp", "lv_dgp_regression"]


def lv_dgp_regression(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N]
    *,
    layers: tuple[LayerSpec, ...],
    latent_dim: int = 1,
    noise_variance: Hyper | float = Hyper(0.01),
    batch_size: int | None = None,
    marginalise_output: bool = True,
    latent_name: str = "latent",
) -> Array:
    """L-layer deep GP on ``[x_n, w_n]``, ``w_n ~ N(0, I_latent_dim)``, Gaussian likelihood.

    Sites: ``{latent_name}.w`` ``[N, latent_dim]`` (none when ``latent_dim = 0``),
    ``layer{l}.*``, ``noise_variance``, observed ``y``. The first layer's ``Z`` has
    ``D + latent_dim`` columns.

    Args:
        X: inputs ``[N, D]``.
        y: targets ``[N]`` or ``None`` to predict (``w`` is then drawn from its prior).
        layers: one :class:`~ppl_dgp.layers.LayerSpec` per layer; the last has one output.
        latent_dim: ``dim`` of ``w_n`` (``0``: the plain deep GP).
        noise_variance: :class:`~ppl_dgp.layers.Hyper` (or a fixed value) for ``s2``.
        batch_size: minibatch size ``B`` (``None`` = all ``N``).
        marginalise_output: as in :func:`~ppl_dgp.models.dgp.dgp_regression`.
        latent_name: prefix of the latent site.

    Returns:
        The last layer's output ``F [N, 1]`` for the plate's batch.
    """
    check_regression_data(X, y, batch_size=batch_size, num_outputs=1)
    if layers[-1].num_outputs != 1:
        raise ValueError(
            f"lv_dgp_regression: the last layer must have num_outputs=1; received "
            f"{layers[-1].num_outputs}"
        )
    D_first = np.shape(layers[0].Z)[1]
    if D_first != X.shape[1] + latent_dim:
        raise ValueError(
            f"lv_dgp_regression: the first layer's Z must have D + latent_dim = "
            f"{X.shape[1]} + {latent_dim} columns; received {D_first}"
        )
    s2 = hyper("noise_variance", noise_variance)
    out = dgp_layers(
        X, y, layers, batch_size=batch_size, marginalise_output=marginalise_output,
        inputs=lambda H, plate: latent_layer(latent_name, H, latent_dim, plate=plate),
    )  # fmt: skip
    return single_gaussian_output(out, s2)


def init_lv_dgp(
    X: Array,  # [N, D]
    *,
    latent_dim: int = 1,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Layer specs for :func:`lv_dgp_regression`: :func:`~ppl_dgp.models.dgp.init_dgp` on
    ``[X, W0]`` with ``W0 ~ N(0, I)`` ``[N, latent_dim]`` drawn from a generator seeded by
    ``seed`` (the inducing inputs' latent columns start spread like the prior of ``w``; an
    inner layer's default width is ``D + latent_dim``, with the identity mean).

    Args:
        X: standardised inputs ``[N, D]``.
        latent_dim: ``dim >= 0`` of ``w``.
        seed: seed of ``W0`` and of the k-means.
        **options: the other :func:`~ppl_dgp.models.dgp.init_dgp` options (``num_layers``,
            ``num_inducing``, ``width``, ``kernel``, ``hyperpriors``, ...).

    Returns:
        ``{"layers", "noise_variance", "latent_dim"}``.
    """
    X = np.asarray(X)
    check_regression_data(X, None)
    if not isinstance(latent_dim, int | np.integer) or latent_dim < 0:
        raise ValueError(f"init_lv_dgp: latent_dim must be an int >= 0; received {latent_dim!r}")
    W0 = np.random.default_rng(seed).normal(size=(X.shape[0], int(latent_dim)))
    config = init_dgp(np.concatenate([X, W0], axis=1), seed=seed, **options)
    return {**config, "latent_dim": int(latent_dim)}


def build_lv_dgp(X: Array, *, num_inducing: int = 10, layers: int = 2, latent_dim: int = 1) -> Any:
    """The zoo's ``lv_dgp_regression``: :func:`lv_dgp_regression` with :func:`init_lv_dgp`'s
    recipe on ``X`` (``M = min(num_inducing, N)``, 1-3 layers)."""
    if layers not in (1, 2, 3):
        raise ValueError(f"build_lv_dgp: layers must be 1, 2 or 3; received {layers!r}")
    M = min(num_inducing, np.shape(X)[0])
    config = init_lv_dgp(X, latent_dim=latent_dim, num_layers=layers, num_inducing=M)
    return functools.partial(lv_dgp_regression, **config)


register_model(
    ZooModel(
        name="lv_dgp_regression",
        build=build_lv_dgp,
        likelihood="gaussian",
        task="regression",
        smoke={"num_inducing": 4, "layers": 1},
        description="latent-variable deep GP regression, w_n ~ N(0, I) on the first layer's "
        "inputs (Salimbeni et al. 2019)",
    )
)
