"""GP classification, shallow and deep: the SVGP of Hensman et al. (2015) and the DGP of
Salimbeni & Deisenroth (2017) with a Bernoulli or categorical likelihood.

``dgp_classification(X, y=None, *, layers, likelihood)`` is
:func:`~ppl_dgp.models.dgp.dgp_likelihood_model` (the layers every zoo DGP shares,
:func:`~ppl_dgp.models.dgp.dgp_layers`) observing the labels through
:func:`~ppl_dgp.outputs.likelihood_site`:

- binary: :class:`~ppl_dgp.likelihoods.Bernoulli` (probit by default) on one latent output;
- multiclass: :class:`~ppl_dgp.likelihoods.Categorical` over ``K`` latent outputs, robust-max
  (GPflow's ``MultiClass`` default) or softmax.

Where the likelihood has a deterministic marginal over a Gaussian latent (Bernoulli, robust-max)
the last layer's output is integrated out, ``y_n | u ~ int p(y_n | f) p(f | u) df`` (no
``eps`` in the last layer: the proper joint that NUTS, HMC, SGHMC and Laplace see); the softmax
samples it. SVI's bound is the doubly-stochastic one either way, with the expected
log-likelihood by Gauss–Hermite quadrature (Monte Carlo for the softmax). The deterministic site
``f`` ``[N, K]`` (``K = 1`` binary) holds the logits of ``p(y_n | global latents)``: its
sigmoid/softmax is the class probability given a draw (for the probit,
``logit Phi(mu_n / sqrt(1 + s_n^2))``), which is what
:func:`~ppl_dgp.predictive.predict_proba` averages and the Laplace predictive linearises.

Example:
    >>> import jax, numpy as np
    >>> from ppl_dgp.models import gp_classification as gpc
    >>> X = np.linspace(-2.0, 2.0, 12)[:, None]; y = (X[:, 0] > 0).astype(np.int32)
    >>> model = gpc.build_svgp_classification(X, num_inducing=4)
    >>> from ppl_dgp.infer import SVI, fit
    >>> from ppl_dgp.predictive import predict_proba
    >>> post = fit(SVI(num_steps=200, learning_rate=0.05), jax.random.key(0), model, X, y)
    >>> p = predict_proba(model, post, np.array([[-2.0], [2.0]]), num_samples=20)
    >>> p.shape, bool(p[0] < 0.5 < p[1])
    ((2,), True)
    >>> gpc.build_dgp_classification(X, y=np.arange(12) % 3, num_inducing=4).keywords[
    ...     "likelihood"].num_classes  # three classes from the labels
    3

References:
    Hensman, Matthews & Ghahramani (2015), "Scalable Variational Gaussian Process
    Classification", AISTATS. Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational
    Inference for Deep Gaussian Processes", NeurIPS. Hernández-Lobato, Hernández-Lobato &
    Dupont (2011), "Robust Multi-Class Gaussian Process Classification", NeurIPS.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from jax import Array

from ppl_dgp.layers import LayerSpec
from ppl_dgp.likelihoods import Bernoulli, Categorical, Likelihood
from ppl_dgp.models.dgp import dgp_likelihood_model, init_dgp
from ppl_dgp.zoo import ZooModel, register_model

__all__ = [
    "build_dgp_classification",
    "build_svgp_classification",
    "classification_likelihood",
    "dgp_classification",
    "init_dgp_classification",
    "svgp_classification",
]


def dgp_classification(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N] labels
    *,
    layers: tuple[LayerSpec, ...],
    likelihood: Likelihood = Bernoulli(link="probit"),
    batch_size: int | None = None,
    marginalise_output: bool | None = None,
) -> Array:  # [N, L]
    """L-layer deep GP classification: ``y_n ~ p(y | f^L(... f^1(x_n)))``.

    Sites: ``layer{l}.*`` (see :mod:`ppl_dgp.layers`), the logits ``f`` ``[N, K]``, observed
    ``y``.

    Args:
        X: inputs ``[N, D]``.
        y: labels ``[N]`` (``{0, 1}`` for a Bernoulli, ``range(K)`` for a categorical) or
            ``None`` to predict.
        layers: one :class:`~ppl_dgp.layers.LayerSpec` per layer; the last has
            ``likelihood.latent_dim`` outputs (1 binary, ``K`` multiclass).
        likelihood: :class:`~ppl_dgp.likelihoods.Bernoulli` or
            :class:`~ppl_dgp.likelihoods.Categorical`.
        batch_size: minibatch size ``B`` (``None`` = all ``N``); the likelihood is scaled by
            ``N / B`` through the plate.
        marginalise_output: integrate the last layer's output out of the likelihood (no
            ``layer{L-1}.eps``); ``None``: when the likelihood has a deterministic marginal
            (not the softmax, which must sample it).

    Returns:
        The last layer's output ``[N, L]`` for the plate's batch (its conditional mean when
        marginalised).

    Raises:
        ValueError: labels outside the likelihood's support (naming ``y``), a last layer of
            the wrong width, or ``marginalise_output=True`` with the softmax.
    """
    return dgp_likelihood_model(
        X, y, layers=layers, likelihood=likelihood, batch_size=batch_size,
        marginalise_output=marginalise_output, output_site="f", owner="dgp_classification",
    )  # fmt: skip


def svgp_classification(X: Array, y: Array | None = None, **config: Any) -> Array:
    """SVGP classification: :func:`dgp_classification` with one layer."""
    if len(config.get("layers", ())) != 1:
        raise ValueError(
            "svgp_classification: expected exactly one layer; received "
            f"{len(config.get('layers', ()))}"
        )
    return dgp_classification(X, y, **config)


def classification_likelihood(
    *, num_classes: int | None = None, y: Array | None = None, link: str | None = None
) -> Likelihood:
    """The likelihood for ``num_classes`` classes (or ``max(y) + 1`` from labels ``y``; 2 if
    neither): Bernoulli (``link`` ``"probit"`` by default, or ``"logit"``) for two classes,
    Categorical (``"robustmax"`` by default, or ``"softmax"``) for more."""
    if num_classes is None:
        num_classes = 2 if y is None else max(int(np.max(np.asarray(y))) + 1, 2)
    if not isinstance(num_classes, int | np.integer) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; received {num_classes!r}")
    if num_classes == 2:
        return Bernoulli(link=link or "probit")
    return Categorical(num_classes=int(num_classes), link=link or "robustmax")


def init_dgp_classification(
    X: Array, *, likelihood: Likelihood, num_layers: int = 2, num_inducing: int = 20,
    **kwargs: Any,
) -> dict[str, Any]:  # fmt: skip
    """:func:`~ppl_dgp.models.dgp.init_dgp`'s layers (same recipe and options) with a last
    layer of ``likelihood.latent_dim`` outputs; ``{"layers": ..., "likelihood": ...}``."""
    config = init_dgp(X, num_layers=num_layers, num_inducing=num_inducing, **kwargs)
    layers = config["layers"]
    last = dataclasses.replace(layers[-1], num_outputs=likelihood.latent_dim)
    return {"layers": (*layers[:-1], last), "likelihood": likelihood}


def build_dgp_classification(
    X: Array, *, num_inducing: int = 10, layers: int = 2, num_classes: int | None = None,
    y: Array | None = None, link: str | None = None,
) -> Any:  # fmt: skip
    """The zoo's ``dgp_classification`` on ``X`` (``M = min(num_inducing, N)``); the classes
    from ``num_classes`` or the labels ``y`` (see :func:`classification_likelihood`)."""
    lik = classification_likelihood(num_classes=num_classes, y=y, link=link)
    M = min(num_inducing, np.shape(X)[0])
    config = init_dgp_classification(X, likelihood=lik, num_layers=layers, num_inducing=M)
    return functools.partial(dgp_classification, **config)


def build_svgp_classification(
    X: Array, *, num_inducing: int = 10, num_classes: int | None = None,
    y: Array | None = None, link: str | None = None,
) -> Any:  # fmt: skip
    """The zoo's ``svgp_classification``: :func:`build_dgp_classification` with one layer."""
    lik = classification_likelihood(num_classes=num_classes, y=y, link=link)
    M = min(num_inducing, np.shape(X)[0])
    config = init_dgp_classification(X, likelihood=lik, num_layers=1, num_inducing=M)
    return functools.partial(svgp_classification, **config)


# Laplace: f is the logits of a GP's marginal, not a network's (no dense layers for a GGN over
# "all" weights). The SVGP takes the classic Laplace GP classifier: the GGN (the Fisher of the
# Bernoulli in f) over the whitened inducing values, hyperparameters at their MAP. The DGP, whose
# sites depend on its depth, takes the exact Hessian over every global latent site.
_SVGP_LAPLACE = {"laplace": {"subset_of_weights": ("layer0.u",)}}
_HESSIAN = {"laplace": {"curvature": "hessian"}}

register_model(
    ZooModel(
        name="svgp_classification",
        build=build_svgp_classification,
        likelihood="bernoulli",
        task="classification",
        output_site="f",
        predictives=("proba",),
        smoke={"num_inducing": 5},
        method_overrides=_SVGP_LAPLACE,
        description="sparse variational GP classification (Hensman et al. 2015); probit, or "
        "robust-max with num_classes > 2",
    )
)
register_model(
    ZooModel(
        name="dgp_classification",
        build=build_dgp_classification,
        likelihood="bernoulli",
        task="classification",
        output_site="f",
        predictives=("proba",),
        smoke={"num_inducing": 5, "layers": 2},
        method_overrides=_HESSIAN,
        description="L-layer deep GP classification (Salimbeni & Deisenroth 2017); probit, "
        "or robust-max with num_classes > 2",
    )
)
