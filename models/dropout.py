"""MC dropout classifiers as zoo programs: the dropout MLP whose prediction is ``T`` passes.

Gal & Ghahramani (2016): a network trained with dropout and predicting with dropout kept on,
averaging ``T`` stochastic passes,

.. math:: p(y = k \\mid x) \\approx \\frac{1}{T} \\sum_{t=1}^{T}
    \\operatorname{softmax}(f(x; W \\odot m_t))_k,

is approximate variational inference in a Bayesian network. The programs here are
:func:`~ppl_dgp.models.bnn.mlp` with ``dropout`` ``p`` after every hidden layer, and

- observed (``y`` given): one pass, one mask per datum and unit, the likelihood
  ``y_n ~ Bernoulli(sigmoid(f_n))`` (or ``Categorical(softmax(f_n))``);
- predicting (``y=None``): ``T = num_passes`` passes of the network at once (the inputs tiled
  ``T`` times, one mask each), and the deterministic site ``f`` ``[N, K]`` holds the logits of
  the *averaged* probabilities, ``f = log((1/T) sum_t sigmoid(f_t))`` minus its complement
  (``logsumexp_t log_softmax(f_t) - log T`` for ``K > 1``), so that ``sigmoid(f)`` or
  ``softmax(f)`` is the MC dropout predictive and ``y`` is drawn from it.

The masks come from ``numpyro.prng_key()`` (:func:`~ppl_dgp.dense.dropout`): every seeded run
draws fresh ones. Training is Gal's, a fresh mask per step: :class:`~ppl_dgp.infer.MAP` (and
each member of a :class:`~ppl_dgp.infer.DeepEnsemble`, with its own masks) finds that the
program's log density asks for a key (:func:`~ppl_dgp.infer.map.seeded_potential`) and
evaluates step ``t`` under ``seed(model, k_t)``, the step's key; the steps are those of
:class:`~ppl_dgp.models.bnn.MCDropout` (``num_passes=1``). A log density evaluated without a
seed (NUTS, Laplace) has no masks: the weight-scaling network, dropout's expectation.
:func:`~ppl_dgp.predictive.predict_proba` seeds each draw, so a MAP Posterior (one draw)
predicts with ``T`` passes, and a deep ensemble with ``T`` passes per member.

Example:
    >>> import jax, numpy as np
    >>> from ppl_dgp.infer import MAP, fit
    >>> from ppl_dgp.predictive import predict_proba
    >>> X = np.linspace(-2.0, 2.0, 20)[:, None]; y = (X[:, 0] > 0).astype(np.int32)
    >>> model = build_bnn_binary_dropout(X, width=16, num_passes=50)
    >>> post = fit(MAP(num_steps=300), jax.random.key(0), model, X, y)  # a mask per step
    >>> p = predict_proba(model, post, np.array([[-2.0], [2.0]]), rng_key=jax.random.key(1))
    >>> bool(p[0] < 0.5 < p[1])
    True

References:
    Gal & Ghahramani (2016), "Dropout as a Bayesian Approximation: Representing Model
    Uncertainty in Deep Learning", ICML; Srivastava et al. (2014), "Dropout", JMLR.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array
from numpyro.handlers import block

from ppl_dgp.models.bnn import _check_labels, mlp
from ppl_dgp.validation import check_regression_data
from ppl_dgp.zoo import ZooModel, register_model

__all__ = [
    "build_bnn_binary_dropout",
    "mc_dropout_binary",
    "mc_dropout_logits",
    "mc_dropout_multiclass",
]


def _check_dropout_options(dropout: float, num_passes: int) -> None:
    if isinstance(dropout, bool) or not (isinstance(dropout, float | int) and 0 < dropout < 1):
        raise ValueError(f"dropout must be a number in (0, 1); received {dropout!r}")
    if isinstance(num_passes, bool) or not isinstance(num_passes, int | np.integer):
        raise ValueError(f"num_passes must be an int >= 1; received {num_passes!r}")
    if num_passes < 1:
        raise ValueError(f"num_passes must be an int >= 1; received {num_passes!r}")


def mc_dropout_logits(F: Array) -> Array:  # [T, N, K] -> [N, K]
    """Logits of the pass-averaged probabilities.

    .. math:: K = 1:\\ \\operatorname{logit}\\Big(\\frac{1}{T}\\sum_t \\sigma(f_t)\\Big)
        = \\operatorname{lse}_t \\log\\sigma(f_t) - \\operatorname{lse}_t \\log\\sigma(-f_t);
        \\quad K > 1:\\ \\operatorname{lse}_t \\log\\operatorname{softmax}(f_t) - \\log T

    (log-sum-exp over the passes: stable for any logits).

    Args:
        F: logits of ``T`` passes ``[T, N, K]`` (``K = 1``: one Bernoulli logit).

    Returns:
        ``[N, K]``: ``sigmoid`` / ``softmax`` of it is the mean of the passes' probabilities.
    """
    if F.ndim != 3:
        raise ValueError(f"mc_dropout_logits: F must be [T, N, K]; received shape {F.shape}")
    lse = jax.scipy.special.logsumexp
    if F.shape[-1] == 1:
        return lse(jax.nn.log_sigmoid(F), axis=0) - lse(jax.nn.log_sigmoid(-F), axis=0)
    return lse(jax.nn.log_softmax(F, axis=-1), axis=0) - jnp.log(F.shape[0])


def _network(X: Array, y: Array | None, K: int, num_passes: int, **net: Any) -> Array:
    """One masked pass when observed (records ``f``); ``T`` passes averaged when predicting."""
    if y is not None or num_passes == 1:
        return mlp(X, K, **net)
    N = X.shape[0]
    with block(hide=["f"]):  # the passes' own f [T N, K]: replaced by the averaged logits
        F = mlp(jnp.tile(X, (num_passes, 1)), K, **net)  # [T N, K], masks per row
    return numpyro.deterministic("f", mc_dropout_logits(F.reshape(num_passes, N, K)))


def mc_dropout_binary(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N] in {0, 1}
    *,
    hidden: Sequence[int] = (50,),
    activation: str = "tanh",
    prior_precision: float | Sequence[float] = 1.0,
    dropout: float = 0.1,
    num_passes: int = 100,
    seed: int = 0,
) -> Array:  # [N, 1]
    """MC dropout binary classifier: ``y_n ~ Bernoulli(sigmoid(f_n))`` (module docstring).

    Sites: ``layer{l}.W``, ``layer{l}.b`` (``N(0, 1/delta)`` priors: the weight decay), the
    logits ``f`` ``[N, 1]`` (one pass, or the ``T`` passes' average when ``y`` is ``None``),
    ``y``.

    Args:
        X: inputs ``[N, D]``.
        y: labels ``[N]`` in ``{0, 1}`` or ``None`` to predict.
        hidden, activation, prior_precision, seed: the network
            (:func:`~ppl_dgp.models.bnn.mlp`).
        dropout: drop probability ``p`` in ``(0, 1)`` after every hidden layer.
        num_passes: ``T``, stochastic passes averaged at prediction.

    Returns:
        The logits ``f`` ``[N, 1]``.
    """
    _check_dropout_options(dropout, num_passes)
    check_regression_data(X, y, num_outputs=1)
    _check_labels(y, 2)
    f = _network(X, y, 1, int(num_passes), hidden=hidden, activation=activation,
                 prior_precision=prior_precision, seed=seed, dropout=dropout)  # fmt: skip
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=f[:, 0]), obs=y)
    return f


def mc_dropout_multiclass(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N] in {0..K-1}
    *,
    num_classes: int,
    hidden: Sequence[int] = (50,),
    activation: str = "tanh",
    prior_precision: float | Sequence[float] = 1.0,
    dropout: float = 0.1,
    num_passes: int = 100,
    seed: int = 0,
) -> Array:  # [N, K]
    """MC dropout over ``K = num_classes`` classes: ``y_n ~ Categorical(softmax(f_n))``, ``f``
    ``[N, K]`` the averaged passes' log-probabilities at prediction (see
    :func:`mc_dropout_binary`)."""
    if not isinstance(num_classes, int | np.integer) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; received {num_classes!r}")
    _check_dropout_options(dropout, num_passes)
    check_regression_data(X, y, num_outputs=1)
    _check_labels(y, int(num_classes))
    f = _network(X, y, int(num_classes), int(num_passes), hidden=hidden, activation=activation,
                 prior_precision=prior_precision, seed=seed, dropout=dropout)  # fmt: skip
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=f), obs=y)
    return f


def build_bnn_binary_dropout(
    X: Array, *, layers: int = 2, width: int = 50, dropout: float = 0.1, num_passes: int = 100
) -> Any:
    """The zoo's ``bnn_binary_dropout``: :func:`mc_dropout_binary` with ``layers - 1`` tanh
    hidden layers of ``width`` units, ``p = dropout``, ``T = num_passes``."""
    del X
    return functools.partial(mc_dropout_binary, hidden=(width,) * max(layers - 1, 1),
                             dropout=float(dropout), num_passes=int(num_passes))  # fmt: skip


register_model(
    ZooModel(
        name="bnn_binary_dropout",
        build=build_bnn_binary_dropout,
        likelihood="bernoulli",
        task="classification",
        output_site="f",
        # fitted as a point estimate trained with a fresh dropout mask per step (MAP, or one
        # per member of a deep ensemble), predicting by T stochastic passes; the samplers and
        # Laplace see the unmasked log density, which is not this model
        methods=("map", "ensemble"),
        predictives=("proba",),
        smoke={"width": 8, "num_passes": 4},
        description="MC dropout binary MLP (Gal & Ghahramani 2016): MAP fit, T dropout "
        "passes at prediction",
    )
)
