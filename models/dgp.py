"""Deep GP regression (Salimbeni & Deisenroth 2017) as a NumPyro program.

``dgp_regression(X, y=None, *, layers, noise_variance, batch_size=None)`` stacks
:func:`~ppl_dgp.layers.gp_layer` calls and a Gaussian likelihood inside one data plate;
:func:`init_dgp` builds ``layers`` with the paper's recipe: identity (or PCA) mean functions on
the inner layers and zero mean on the last, ``Z`` from k-means (or a data subset), inner
``q_sqrt`` started at ``1e-5``.

Example:
    >>> import functools, jax.numpy as jnp
    >>> from numpyro.handlers import seed, trace
    >>> from ppl_dgp.models import dgp
    >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]
    >>> config = dgp.init_dgp(X, num_layers=2, num_inducing=4)
    >>> [(spec.num_outputs, spec.M) for spec in config["layers"]]
    [(1, 4), (1, 4)]
    >>> model = functools.partial(dgp.dgp_regression, **config)
    >>> tr = trace(seed(model, 0)).get_trace(X)
    >>> [name for name, site in tr.items() if site["type"] == "sample" and "layer1" in name]
    ['layer1.variance', 'layer1.lengthscales', 'layer1.u']
    >>> tr["y"]["value"].shape
    (8,)

References:
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array

from ppl_dgp.inducing import kmeans
from ppl_dgp.layers import (
    Hyper,
    LayerSpec,
    gaussian_likelihood,
    gp_layer,
    gp_output_layer,
    hyper,
)
from ppl_dgp.mean_functions import Identity, Zero, pca_projection
from ppl_dgp.validation import check_regression_data
from ppl_dgp.zoo import ZooModel, register_model

__all__ = ["build_dgp", "dgp_regression", "init_dgp"]


def dgp_regression(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N]
    *,
    layers: tuple[LayerSpec, ...],
    noise_variance: Hyper | float = Hyper(0.01),
    batch_size: int | None = None,
    marginalise_output: bool = True,
) -> Array:
    """L-layer deep GP regression: ``y_n = f^L(... f^1(x_n)) + e_n``, ``e_n ~ N(0, s2)``.

    Sites: ``layer{l}.*`` (see :mod:`ppl_dgp.layers`), ``noise_variance``, observed ``y``.

    Args:
        X: inputs ``[N, D]``.
        y: targets ``[N]`` or ``None`` to predict.
        layers: one :class:`~ppl_dgp.layers.LayerSpec` per layer; the last has one output.
        noise_variance: :class:`~ppl_dgp.layers.Hyper` (or a fixed value) for ``s2``.
        batch_size: minibatch size ``B`` (``None`` = all ``N``); the likelihood is scaled by
            ``N / B`` through the plate.
        marginalise_output: integrate the last layer's output out of the Gaussian likelihood
            (:func:`~ppl_dgp.layers.gp_output_layer`; no ``layer{L-1}.eps`` site), so MCMC and
            Laplace work on ``N`` fewer dimensions. ``False`` samples it like the inner layers.
            SVI's bound is the same either way.

    Returns:
        The last layer's output ``F [N, 1]`` for the plate's batch (its conditional mean when
        ``marginalise_output``).
    """
    check_regression_data(X, y, batch_size=batch_size)
    if layers[-1].num_outputs != 1:
        raise ValueError(
            f"dgp_regression: the last layer must have num_outputs=1; received "
            f"{layers[-1].num_outputs}"
        )
    N = X.shape[0]
    s2 = hyper("noise_variance", noise_variance)
    data = numpyro.plate("data", N, subsample_size=batch_size, dim=-1)
    with data as idx:
        H = X[idx]
        yb = None if y is None else y[idx]
    for l, spec in enumerate(layers[:-1]):
        H = gp_layer(f"layer{l}", H, spec, plate=data)
    last = f"layer{len(layers) - 1}"
    if marginalise_output:  # y | u ~ N(mu(u), sigma^2(u) + s2): exact, no per-datum eps
        F, F_var = gp_output_layer(last, H, layers[-1], plate=data)
        gaussian_likelihood("y", F, yb, s2, plate=data, F_var=F_var)
    else:
        F = gp_layer(last, H, layers[-1], plate=data)
        gaussian_likelihood("y", F, yb, s2, plate=data, layer=last)
    return F


def init_dgp(
    X: Array,  # [N, D]
    *,
    num_layers: int = 2,
    num_inducing: int = 20,
    width: int | None = None,
    kernel: str = "se",
    lengthscale: float = 1.0,
    inner_variance: float = 1.0,
    Z_init: Array | None = None,
    hyperpriors: bool = True,
    noise_variance: float = 0.01,
    inner_q_sqrt: float = 1e-5,
    seed: int = 0,
) -> dict[str, Any]:
    """Layer specs for :func:`dgp_regression` with the Salimbeni & Deisenroth recipe.

    Args:
        X: standardised training inputs ``[N, D]``.
        num_layers: ``L >= 1`` (``L = 1`` is the SVGP).
        num_inducing: ``M`` per layer (``M <= N``).
        width: inner layers' width ``Q`` (default ``D``); ``Q != D`` uses a PCA mean.
        kernel: kernel family for every layer.
        lengthscale: initial ARD lengthscales.
        inner_variance: initial kernel variance of the inner layers.
        Z_init: initial inducing inputs ``[M, D]`` (default: k-means centres of ``X``).
        hyperpriors: give kernel hyperparameters and noise LogNormal priors (a proper joint for
            MCMC and Laplace); ``False`` makes them point parameters (GPflux's convention).
        noise_variance: initial likelihood variance.
        inner_q_sqrt: initial ``q_sqrt`` scale of the inner layers.
        seed: seed of the k-means initialisation.

    Returns:
        ``{"layers": (LayerSpec, ...), "noise_variance": Hyper}``.
    """
    X = np.asarray(X)
    check_regression_data(X, None)
    N, D = X.shape
    if num_layers < 1:
        raise ValueError(f"init_dgp: num_layers must be >= 1; received {num_layers}")
    if Z_init is None:
        if num_inducing > N:
            raise ValueError(
                f"init_dgp: num_inducing (M={num_inducing}) must be <= N={N} for k-means "
                "initialisation; pass fewer inducing points or Z_init"
            )
        Z_init = kmeans(X, num_inducing, seed=seed)
    Z_init = np.asarray(Z_init)
    if Z_init.ndim != 2 or Z_init.shape[1] != D:
        raise ValueError(f"init_dgp: Z_init must have shape [M, {D}]; received {Z_init.shape}")
    Q = D if width is None else width

    def hp(value: float, shape: tuple[int, ...] = ()) -> Hyper:
        """Positive hyperparameter at ``value``: LogNormal(log value, 1) prior, or a param."""
        init = np.full(shape, value) if shape else value
        if not hyperpriors:
            return Hyper(init)
        return Hyper(init, prior=dist.LogNormal(float(np.log(value)), 1.0))

    specs = []
    H, Z = X, Z_init
    for l in range(num_layers):
        last = l == num_layers - 1
        D_in = H.shape[1]
        if last:
            mean_function, q_out, var0, q0 = Zero(), 1, 1.0, 1.0
        else:
            mean_function = Identity() if Q == D_in else pca_projection(jnp.asarray(H), Q)
            q_out, var0, q0 = Q, inner_variance, inner_q_sqrt
        specs.append(
            LayerSpec(
                num_outputs=q_out,
                Z=Z,
                kernel=kernel,
                variance=hp(var0),
                lengthscales=hp(lengthscale, (D_in,)),
                mean_function=mean_function,
                whiten=True,
                q_sqrt_init=q0,
            )
        )
        if not last:  # propagate the inputs and Z through the mean function
            H = np.asarray(mean_function(jnp.asarray(H)))
            Z = np.asarray(mean_function(jnp.asarray(Z)))
    return {"layers": tuple(specs), "noise_variance": hp(noise_variance)}


def build_dgp(X: Array, *, num_inducing: int = 10, layers: int = 2) -> Any:
    """The zoo's ``dgp``: :func:`dgp_regression` with :func:`init_dgp`'s recipe on ``X``
    (``M = min(num_inducing, N)``)."""
    M = min(num_inducing, np.shape(X)[0])
    return functools.partial(dgp_regression, **init_dgp(X, num_layers=layers, num_inducing=M))


register_model(
    ZooModel(
        name="dgp",
        build=build_dgp,
        likelihood="gaussian",
        task="regression",
        smoke={"num_inducing": 5, "layers": 2},
        description="L-layer deep GP regression (Salimbeni & Deisenroth 2017)",
    )
)
