"""Hybrid NN -> GP regression: dense layers feeding deep GP layers (GPflux's ``Sequential``
of neural and GP layers).

``hybrid_regression(X, y=None, *, hidden, layers, ...)``:

.. math::
    h_n = \\phi(x_n; W) = a(\\dots a(x_n W_1 + b_1) \\dots W_H + b_H), \\qquad
    y_n = f^L(\\dots f^1(h_n)) + e_n, \\quad e_n \\sim N(0, s^2),

with Bayesian dense layers (:func:`~ppl_dgp.dense.dense`, sites ``net{l}.W``, ``net{l}.b``,
``N(0, 1/delta)`` priors) in front of the GP layers of
:func:`~ppl_dgp.models.dgp.dgp_regression` (sites ``layer{l}.*``). The network weights are
global latent sites like the kernel hyperparameters: NUTS and HMC sample them, the inducing
guide gives them point estimates (or a mean-field normal), Laplace includes them.

The first GP layer's inducing inputs live in *feature space*: :func:`init_hybrid` runs the
network at its initial weights, infers the feature width from it and places ``Z`` by k-means
on the features (users of GPflux hit shape errors when ``Z`` had the input width, GPflux
#27/#36). With ``hidden=()`` the program is the deep GP itself.

Example:
    >>> import jax.numpy as jnp
    >>> from numpyro.handlers import seed, trace
    >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]
    >>> model = build_hybrid(X, num_inducing=4, layers=1, width=3)
    >>> tr = trace(seed(model, 0)).get_trace(X)
    >>> tr["net0.W"]["value"].shape, tr["layer0.Z"]["value"].shape  # Z in the 3-D features
    ((1, 3), (4, 3))

References:
    Dutordoir et al. (2021), "GPflux: A Library for Deep Gaussian Processes", listing 1;
    Wilson, Hu, Salakhutdinov & Xing (2016), "Deep Kernel Learning", AISTATS.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array

from ppl_dgp.dense import dense, torch_default_init
from ppl_dgp.inducing import median_distance
from ppl_dgp.layers import Hyper, LayerSpec, hyper
from ppl_dgp.likelihoods import Bernoulli, Likelihood
from ppl_dgp.models.bnn import ACTIVATIONS
from ppl_dgp.models.dgp import dgp_layers, init_dgp, single_gaussian_output
from ppl_dgp.models.gp_classification import classification_likelihood
from ppl_dgp.observe import check_observations
from ppl_dgp.outputs import has_marginal, likelihood_site
from ppl_dgp.validation import check_regression_data
from ppl_dgp.zoo import ZooModel, register_model

__all__ = [
    "build_hybrid",
    "build_hybrid_classification",
    "hybrid_classification",
    "hybrid_features",
    "hybrid_regression",
    "init_hybrid",
    "init_hybrid_classification",
    "median_distance",
    "pca_network_init",
]


def _check_network(hidden: Sequence[int], activation: str, prior_precision: float) -> list[int]:
    widths = [int(h) for h in hidden]
    if any(h < 1 for h in widths) or len(widths) != len(tuple(hidden)):
        raise ValueError(f"hidden widths must be positive ints; received {tuple(hidden)}")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}; received {activation!r}"
        )
    if not float(prior_precision) > 0:
        raise ValueError(f"prior_precision must be > 0; received {prior_precision!r}")
    return widths


def hybrid_regression(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N]
    *,
    layers: tuple[LayerSpec, ...],
    hidden: Sequence[int] = (10,),
    activation: str = "tanh",
    prior_precision: float = 1.0,
    noise_variance: Hyper | float = Hyper(0.01),
    batch_size: int | None = None,
    marginalise_output: bool = True,
    seed: int = 0,
    network_init: Sequence[tuple[Any, Any]] | None = None,
) -> Array:
    """Dense layers ``net{l}`` (widths ``hidden``, activation after each) feeding GP layers.

    Sites: ``net{l}.W`` ``[D_in, D_out]``, ``net{l}.b``, ``net{l}.input`` (deterministic),
    ``layer{l}.*``, ``noise_variance``, observed ``y``. The first GP layer's ``Z`` must have the
    feature width ``hidden[-1]`` (``D`` when ``hidden=()``); :func:`init_hybrid` builds it so.

    Args:
        X: inputs ``[N, D]``.
        y: targets ``[N]`` or ``None`` to predict.
        layers: GP :class:`~ppl_dgp.layers.LayerSpec` per layer; the last has one output.
        hidden: the network's widths (``()``: no network, the deep GP).
        activation: one of :data:`~ppl_dgp.models.bnn.ACTIVATIONS`.
        prior_precision: ``delta`` of the weights' ``N(0, 1/delta)`` prior.
        noise_variance: :class:`~ppl_dgp.layers.Hyper` (or fixed) for ``s2``.
        batch_size: minibatch size ``B`` (``None`` = all ``N``).
        marginalise_output: as in :func:`~ppl_dgp.models.dgp.dgp_regression`.
        seed: seed of the weights' initial values (PyTorch's default draw).
        network_init: ``((W_l, b_l), ...)`` initial weights per dense layer instead of the
            seeded draw (:func:`init_hybrid`'s ``network_init="pca"``).

    Returns:
        The last GP layer's output ``F [N, 1]`` for the plate's batch.
    """
    check_regression_data(X, y, batch_size=batch_size, num_outputs=1)
    widths = _check_network(hidden, activation, prior_precision)
    if layers[-1].num_outputs != 1:
        raise ValueError(
            f"hybrid_regression: the last layer must have num_outputs=1; received "
            f"{layers[-1].num_outputs}"
        )
    _check_feature_width("hybrid_regression", layers, widths, X)
    s2 = hyper("noise_variance", noise_variance)
    network = _network(widths, activation, prior_precision, seed, network_init)
    out = dgp_layers(X, y, layers, batch_size=batch_size, marginalise_output=marginalise_output,
                     inputs=network)  # fmt: skip
    return single_gaussian_output(out, s2)


def _network(widths: list[int], activation: str, prior_precision: float, seed: int,
             init: Sequence[tuple[Any, Any]] | None = None) -> Any:  # fmt: skip
    """``network(H, plate) -> features``: the dense layers ``net{l}`` (global weights)."""
    act = ACTIVATIONS[activation]
    if init is not None and len(init) != len(widths):
        raise ValueError(
            f"network_init must hold one (W, b) per dense layer ({len(widths)}); received "
            f"{len(init)}"
        )

    def network(H: Array, plate: Any) -> Array:  # [B, D] -> [B, widths[-1]]
        del plate  # the weights are global
        for l, width in enumerate(widths):
            H = act(dense(f"net{l}", H, width, prior_precision=prior_precision, seed=seed,
                          init=None if init is None else init[l]))  # fmt: skip
        return H

    return network


def _check_feature_width(owner: str, layers: tuple[LayerSpec, ...], widths: list[int],
                         X: Array) -> None:  # fmt: skip
    feature_width = widths[-1] if widths else X.shape[1]
    if np.shape(layers[0].Z)[1] != feature_width:
        raise ValueError(
            f"{owner}: the first GP layer's Z must have the feature width "
            f"{feature_width} (the network's last width); received Z of shape "
            f"{np.shape(layers[0].Z)}; build the layers with init_hybrid"
        )


def hybrid_classification(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N] labels
    *,
    layers: tuple[LayerSpec, ...],
    likelihood: Likelihood = Bernoulli(link="probit"),
    hidden: Sequence[int] = (10,),
    activation: str = "tanh",
    prior_precision: float = 1.0,
    batch_size: int | None = None,
    marginalise_output: bool | None = None,
    seed: int = 0,
    network_init: Sequence[tuple[Any, Any]] | None = None,
) -> Array:  # [N, K]
    """Dense layers ``net{l}`` feeding GP layers, labels through a Bernoulli or categorical.

    .. math:: y_n \\sim p(y \\mid f^L(\\dots f^1(\\phi(x_n; W))))

    The classifier of :func:`~ppl_dgp.models.gp_classification.dgp_classification` with the
    network of :func:`hybrid_regression` in front: sites ``net{l}.*``, ``layer{l}.*``, the
    logits ``f`` ``[N, K]`` (``K = 1`` binary) and observed ``y``. Where the likelihood has a
    deterministic marginal (Bernoulli, robust-max) the last layer is integrated out by default
    (the proper joint NUTS, HMC and Laplace see); the softmax samples it.

    Args:
        X: inputs ``[N, D]``.
        y: labels ``[N]`` (``{0, 1}`` Bernoulli, ``range(K)`` categorical) or ``None``.
        layers: GP specs; the first ``Z`` of the feature width (:func:`init_hybrid`), the
            last with ``likelihood.latent_dim`` outputs.
        likelihood: :class:`~ppl_dgp.likelihoods.Bernoulli` or
            :class:`~ppl_dgp.likelihoods.Categorical`.
        hidden, activation, prior_precision, seed, network_init: the network (see
            :func:`hybrid_regression`).
        batch_size: minibatch size ``B`` (``None`` = all ``N``).
        marginalise_output: integrate the last layer out (``None``: where the likelihood has a
            deterministic marginal).

    Returns:
        The last layer's output ``[N, K]`` for the plate's batch.

    Raises:
        ValueError: labels outside the likelihood's support (naming ``y``), a last layer of
            the wrong width, ``Z`` not of the feature width, or ``marginalise_output=True``
            without a deterministic marginal.
    """
    owner = "hybrid_classification"
    check_regression_data(X, y, batch_size=batch_size, num_outputs=1)
    widths = _check_network(hidden, activation, prior_precision)
    _check_feature_width(owner, layers, widths, X)
    check_observations(likelihood, y, name="y")
    K = likelihood.latent_dim
    if layers[-1].num_outputs != K:
        raise ValueError(
            f"{owner}: the last layer must have num_outputs={K} (the latent functions of "
            f"{type(likelihood).__name__}); received {layers[-1].num_outputs}"
        )
    marginal = has_marginal(likelihood) if marginalise_output is None else marginalise_output
    if marginal and not has_marginal(likelihood):
        raise ValueError(
            f"{owner}: marginalise_output=True needs a likelihood with a deterministic "
            f"marginal (Bernoulli, robust-max); received {likelihood!r}"
        )
    network = _network(widths, activation, prior_precision, seed, network_init)
    out = dgp_layers(X, y, layers, batch_size=batch_size, marginalise_output=marginal,
                     inputs=network)  # fmt: skip
    likelihood_site("y", likelihood, out.F, out.y, plate=out.plate, F_var=out.F_var,
                    layer=None if marginal else out.last, output_site="f")  # fmt: skip
    return out.F


def hybrid_features(
    X: Array,
    *,
    hidden: Sequence[int],
    activation: str = "tanh",
    seed: int = 0,
    network_init: Sequence[tuple[Any, Any]] | None = None,
) -> np.ndarray:  # [N, hidden[-1]]
    """The network's features at its initial weights (those :func:`~ppl_dgp.dense.dense`
    starts from: ``network_init``, or PyTorch's default draw seeded by ``(seed, "net{l}")``)."""
    widths = _check_network(hidden, activation, 1.0)
    act = ACTIVATIONS[activation]
    H = jnp.asarray(X)
    for l, width in enumerate(widths):
        if network_init is None:
            W0, b0 = torch_default_init(f"net{l}", H.shape[1], width, seed)
        else:
            W0, b0 = network_init[l]
        H = act(H @ jnp.asarray(W0, H.dtype) + jnp.asarray(b0, H.dtype))
    return np.asarray(H)


def pca_network_init(
    X: Array, hidden: Sequence[int], seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:  # [N, D]
    """Initial weights whose first layer is the PCA projection of ``X`` to ``H = hidden[0]``
    components, globally scaled: ``W_0 = V_H / sd_1``, ``b_0 = -mean(X) W_0``.

    .. math:: z_n = (x_n - \\bar x) V_H / \\sigma_1

    ``V_H`` the leading right singular vectors of the centred ``X``, ``sigma_1`` the sd of the
    first component's scores: the first feature has unit sd before the activation (where tanh
    is near-linear), the others keep their relative scales, so the network starts at the PCA
    mean function a DGP's inner layer uses (Salimbeni & Deisenroth 2017). Later layers take
    PyTorch's default draw (as :func:`~ppl_dgp.dense.torch_default_init`).

    Raises:
        ValueError: ``hidden[0] > min(N, D)``.
    """
    X = np.asarray(X, dtype=float)
    widths = [int(h) for h in hidden]
    if not widths or widths[0] > min(X.shape):
        raise ValueError(
            f"pca_network_init: hidden[0] must be <= min(N, D) = {min(X.shape)}; received "
            f"hidden={tuple(hidden)}"
        )
    mean = X.mean(0)
    _, _, Vt = np.linalg.svd(X - mean, full_matrices=False)
    V = Vt[: widths[0]].T  # [D, H]
    sd = float(np.std((X - mean) @ V[:, 0]))
    W0 = V / max(sd, 1e-12)
    init = [(W0, -mean @ W0)]
    for l in range(1, len(widths)):
        init.append(torch_default_init(f"net{l}", widths[l - 1], widths[l], seed))
    return tuple(init)


def _median_lengthscales(layers: tuple[LayerSpec, ...], H: np.ndarray) -> tuple[LayerSpec, ...]:
    """Each layer's ARD lengthscales at the median distance of its inputs (``H`` through the
    inner layers' mean functions), with a LogNormal(log of it, 1) prior."""
    out = []
    for l, spec in enumerate(layers):
        ls = median_distance(H)
        prior = dist.LogNormal(float(np.log(ls)), 1.0)
        out.append(dataclasses.replace(spec, lengthscales=Hyper(np.full(H.shape[1], ls),
                                                                prior=prior)))  # fmt: skip
        if l < len(layers) - 1:
            H = np.asarray(spec.mean_function(jnp.asarray(H)))
    return tuple(out)


def init_hybrid(
    X: Array,  # [N, D]
    *,
    hidden: Sequence[int] = (10,),
    activation: str = "tanh",
    prior_precision: float = 1.0,
    seed: int = 0,
    lengthscale: float | str = 1.0,
    network_init: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Configuration of :func:`hybrid_regression`: :func:`~ppl_dgp.models.dgp.init_dgp` on the
    network's initial features (:func:`hybrid_features`), so that ``Z`` has the feature width,
    inferred, and starts at k-means centres of the features.

    Args:
        X: standardised inputs ``[N, D]``.
        hidden, activation, prior_precision, seed: the network (see :func:`hybrid_regression`).
        lengthscale: initial ARD lengthscales of every GP layer, or ``"median"``: each layer's
            at the median pairwise distance of its inputs at the initial weights
            (:func:`median_distance` of the features, then of the inner layers' mean
            functions of them), with a LogNormal(log of it, 1) prior (where ``hyperpriors``
            is true).
        network_init: ``None`` (PyTorch's default draw) or ``"pca"``: the first dense layer
            starts at the globally scaled PCA projection of ``X`` (:func:`pca_network_init`).
        **options: :func:`~ppl_dgp.models.dgp.init_dgp`'s options (``num_layers``,
            ``num_inducing``, ``hyperpriors``, ...).

    Returns:
        The keywords of :func:`hybrid_regression` (``layers``, ``noise_variance``, ``hidden``,
        ``activation``, ``prior_precision``, ``seed``).

    Raises:
        ValueError: ``lengthscale`` neither a positive number nor ``"median"``.
    """
    check_regression_data(np.asarray(X), None)
    if network_init not in (None, "pca"):
        raise ValueError(
            f"init_hybrid: network_init must be None or 'pca'; received {network_init!r}"
        )
    net_init = None if network_init is None else pca_network_init(X, hidden, seed)
    features = hybrid_features(X, hidden=hidden, activation=activation, seed=seed,
                               network_init=net_init)  # fmt: skip
    median = isinstance(lengthscale, str)
    if median and lengthscale != "median":
        raise ValueError(
            f"init_hybrid: lengthscale must be a positive number or 'median'; received "
            f"{lengthscale!r}"
        )
    if not median and not float(lengthscale) > 0:
        raise ValueError(f"init_hybrid: lengthscale must be > 0; received {lengthscale!r}")
    config = init_dgp(features, seed=seed, lengthscale=1.0 if median else float(lengthscale),
                      **options)  # fmt: skip
    if median:
        layers = _median_lengthscales(config["layers"], features)
        if options.get("hyperpriors", True) is False:  # point parameters: no prior
            layers = tuple(dataclasses.replace(s, lengthscales=Hyper(s.lengthscales.init))
                           for s in layers)  # fmt: skip
        config = {**config, "layers": layers}
    config = {**config, "hidden": tuple(int(h) for h in hidden), "activation": activation,
              "prior_precision": float(prior_precision), "seed": seed}  # fmt: skip
    if net_init is not None:
        config["network_init"] = net_init
    return config


def build_hybrid(X: Array, *, num_inducing: int = 10, layers: int = 2, width: int = 10) -> Any:
    """The zoo's ``hybrid_regression``: one tanh dense layer of ``width`` units feeding
    ``layers`` GP layers (``M = min(num_inducing, N)``, ``Z`` on the features)."""
    M = min(num_inducing, np.shape(X)[0])
    config = init_hybrid(X, hidden=(width,), num_layers=layers, num_inducing=M)
    return functools.partial(hybrid_regression, **config)


def init_hybrid_classification(
    X: Array, *, likelihood: Likelihood, **options: Any
) -> dict[str, Any]:  # [N, D]
    """Configuration of :func:`hybrid_classification`: :func:`init_hybrid` (``Z`` inferred in
    feature space) with a last layer of ``likelihood.latent_dim`` outputs and no noise.

    Args:
        X: standardised inputs ``[N, D]``.
        likelihood: the classification likelihood.
        **options: :func:`init_hybrid`'s options (``hidden``, ``num_layers``, ``num_inducing``,
            ``width``, ...).
    """
    config = init_hybrid(X, **options)
    layers = config.pop("layers")
    config.pop("noise_variance", None)
    last = dataclasses.replace(layers[-1], num_outputs=likelihood.latent_dim)
    return {**config, "layers": (*layers[:-1], last), "likelihood": likelihood}


def build_hybrid_classification(
    X: Array, *, num_inducing: int = 10, layers: int = 2, width: int = 10,
    num_classes: int | None = None, y: Array | None = None, link: str | None = None,
) -> Any:  # fmt: skip
    """The zoo's ``hybrid_classification``: one tanh dense layer of ``width`` units feeding
    ``layers`` GP layers; the likelihood from ``num_classes`` or the labels ``y`` (Bernoulli
    probit for two classes, robust-max for more; see
    :func:`~ppl_dgp.models.gp_classification.classification_likelihood`)."""
    lik = classification_likelihood(num_classes=num_classes, y=y, link=link)
    M = min(num_inducing, np.shape(X)[0])
    config = init_hybrid_classification(X, likelihood=lik, hidden=(width,), num_layers=layers,
                                        num_inducing=M)  # fmt: skip
    return functools.partial(hybrid_classification, **config)


register_model(
    ZooModel(
        name="hybrid_classification",
        build=build_hybrid_classification,
        likelihood="bernoulli",
        task="classification",
        output_site="f",
        predictives=("proba",),
        smoke={"num_inducing": 4, "layers": 1, "width": 2},
        # as dgp_classification: f is a GP marginal's logit, the exact Hessian over every site
        method_overrides={"laplace": {"curvature": "hessian"}},
        description="dense layers feeding deep GP layers, Bernoulli or robust-max labels",
    )
)
register_model(
    ZooModel(
        name="hybrid_regression",
        build=build_hybrid,
        likelihood="gaussian",
        task="regression",
        smoke={"num_inducing": 4, "layers": 1, "width": 2},
        description="dense layers feeding deep GP layers, Z in feature space",
    )
)
