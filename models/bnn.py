"""Bayesian neural networks (multilayer perceptrons) as NumPyro programs.

``f = dense_L(act(... act(dense_1(X))))`` built from :func:`~ppl_dgp.dense.dense` layers named
``layer0 .. layer{L}``, the output recorded as the deterministic site ``f`` ``[N, K]`` (the
Laplace orchestration builds its curvature from it), and one likelihood site ``y`` in the
``data`` plate:

- :func:`mlp_regression`: ``y_n ~ N(f_n, sigma^2)``, ``sigma`` fixed (a float) or learnable
  (a :class:`~ppl_dgp.layers.Hyper`: a latent site ``noise_scale`` with its prior, or a point
  parameter without one).
- :func:`mlp_binary`: ``y_n ~ Bernoulli(sigmoid(f_n))`` on one logit.
- :func:`mlp_multiclass`: ``y_n ~ Categorical(softmax(f_n))`` over ``K`` classes.

Weights have Gaussian priors ``N(0, 1/delta_l)``; ``prior_precision`` is one ``delta`` for all
layers or one per layer. ``hidden=()`` is the Bayesian linear (logistic) model.

Example:
    >>> import functools, jax, numpy as np
    >>> from ppl_dgp.infer import Laplace, fit
    >>> from ppl_dgp.models import bnn
    >>> from ppl_dgp.predictive import predict_proba
    >>> X = np.array([[-2.0], [-1.0], [1.0], [2.0]]); y = np.array([0, 0, 1, 1])
    >>> model = functools.partial(bnn.mlp_binary, hidden=(4,), prior_precision=1.0)
    >>> post = fit(Laplace(subset_of_weights="last_layer", num_steps=50, num_samples=10),
    ...            jax.random.key(0), model, X, y)
    >>> p = predict_proba(model, post, X)  # p(y = 1 | x), the GLM probit predictive
    >>> p.shape, bool(np.all(np.diff(p) > 0))
    ((4,), True)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array

from ppl_dgp.dense import dense
from ppl_dgp.dense import dropout as dropout_layer
from ppl_dgp.layers import Hyper, hyper
from ppl_dgp.validation import check_regression_data, is_concrete
from ppl_dgp.zoo import ZooModel, register_model

__all__ = [
    "ACTIVATIONS",
    "MCDropout",
    "build_bnn",
    "build_bnn_binary",
    "mlp",
    "mlp_binary",
    "mlp_multiclass",
    "mlp_regression",
]

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "identity": lambda x: x,
}


def _precisions(prior_precision: float | Sequence[float], num_layers: int) -> list[float]:
    p = np.atleast_1d(np.asarray(prior_precision, dtype=float))
    if p.ndim != 1 or p.size not in (1, num_layers):
        raise ValueError(
            f"prior_precision must be a scalar or one value per layer ({num_layers}); "
            f"received {prior_precision!r}"
        )
    if not np.all(p > 0) or not np.all(np.isfinite(p)):
        raise ValueError(f"prior_precision must be finite and > 0; received {prior_precision!r}")
    return [float(v) for v in np.broadcast_to(p, (num_layers,))]


def mlp(
    X: Array,  # [N, D]
    num_outputs: int,
    *,
    hidden: Sequence[int] = (50,),
    activation: str = "tanh",
    prior_precision: float | Sequence[float] = 1.0,
    seed: int = 0,
    init_values: Mapping[str, Any] | None = None,
    dropout: float = 0.0,
) -> Array:  # [N, K]
    """The network ``f(X)`` ``[N, K]`` as a sub-program; records the deterministic site ``f``.

    Args:
        X: inputs ``[N, D]``.
        num_outputs: ``K``.
        hidden: widths of the hidden layers (``()``: a linear model).
        activation: one of :data:`ACTIVATIONS`.
        prior_precision: scalar or one per layer (``len(hidden) + 1``), each ``> 0``.
        seed: seed of the layers' initial values.
        init_values: optional warm start ``{"layer{l}.W": [D_in, D_out], "layer{l}.b": ...}``
            (every layer; PyTorch's default draw otherwise).
        dropout: drop probability ``p`` of every hidden unit, per datum, before the next
            layer (:func:`~ppl_dgp.dense.dropout`: a fresh mask in every seeded run, the
            identity where no key is given; ``0``: no dropout, the plain MLP).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}; received {activation!r}"
        )
    widths = [int(h) for h in hidden]
    if any(h < 1 for h in widths):
        raise ValueError(f"hidden widths must be positive ints; received {tuple(hidden)}")
    deltas = _precisions(prior_precision, len(widths) + 1)
    if isinstance(dropout, bool) or not (isinstance(dropout, float | int) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be a number in [0, 1); received {dropout!r}")
    act = ACTIVATIONS[activation]
    L = len(widths)
    names = [f"layer{l}" for l in range(L + 1)]
    if init_values is not None:
        want = {f"{n}.{p}" for n in names for p in ("W", "b")}
        if set(init_values) != want:
            raise ValueError(
                f"init_values must have exactly the keys {sorted(want)}; received "
                f"{sorted(init_values)}"
            )

    def init(l: int) -> tuple | None:
        if init_values is None:
            return None
        return init_values[f"{names[l]}.W"], init_values[f"{names[l]}.b"]

    H = X
    for l, width in enumerate(widths):
        H = act(dense(names[l], H, width, prior_precision=deltas[l], seed=seed, init=init(l)))
        H = dropout_layer(H, dropout)
    f = dense(names[L], H, num_outputs, prior_precision=deltas[L], seed=seed, init=init(L))
    return numpyro.deterministic("f", f)


def mlp_regression(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N]
    *,
    hidden: Sequence[int] = (50,),
    activation: str = "tanh",
    prior_precision: float | Sequence[float] = 1.0,
    noise_scale: Hyper | float = 0.1,
    seed: int = 0,
    init_values: Mapping[str, Any] | None = None,
    dropout: float = 0.0,
) -> Array:
    """``y_n ~ N(f(x_n), sigma^2)``; ``noise_scale`` is ``sigma`` (a float: fixed).

    Sites: ``layer{l}.W``, ``layer{l}.b``, ``f``, ``noise_scale`` (when a Hyper), ``y``.
    """
    check_regression_data(X, y, num_outputs=1)
    f = mlp(X, 1, hidden=hidden, activation=activation, prior_precision=prior_precision,
            seed=seed, init_values=init_values, dropout=dropout)  # fmt: skip
    sigma = hyper("noise_scale", noise_scale)
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(f[:, 0], sigma), obs=y)
    return f


def _check_labels(y: Array | None, num_classes: int) -> None:
    if y is None or not is_concrete(y):
        return
    a = np.asarray(y)
    ok = np.all(a == np.round(a)) and np.all((a >= 0) & (a < num_classes))
    if not ok:
        bad = np.unique(a[(a != np.round(a)) | (a < 0) | (a >= num_classes)])[:5]
        raise ValueError(
            f"y must hold class labels in {{0, ..., {num_classes - 1}}}; received values "
            f"{bad.tolist()}"
        )


def mlp_binary(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N] in {0, 1}
    *,
    hidden: Sequence[int] = (50,),
    activation: str = "tanh",
    prior_precision: float | Sequence[float] = 1.0,
    seed: int = 0,
    init_values: Mapping[str, Any] | None = None,
    dropout: float = 0.0,
) -> Array:
    """``y_n ~ Bernoulli(sigmoid(f(x_n)))`` on one logit ``f [N, 1]``."""
    check_regression_data(X, y, num_outputs=1)
    _check_labels(y, 2)
    f = mlp(X, 1, hidden=hidden, activation=activation, prior_precision=prior_precision,
            seed=seed, init_values=init_values, dropout=dropout)  # fmt: skip
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=f[:, 0]), obs=y)
    return f


def mlp_multiclass(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N] in {0..K-1}
    *,
    num_classes: int,
    hidden: Sequence[int] = (50,),
    activation: str = "tanh",
    prior_precision: float | Sequence[float] = 1.0,
    seed: int = 0,
    init_values: Mapping[str, Any] | None = None,
    dropout: float = 0.0,
) -> Array:
    """``y_n ~ Categorical(softmax(f(x_n)))``, ``f [N, K]``, ``K = num_classes >= 2``."""
    if not isinstance(num_classes, int | np.integer) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; received {num_classes!r}")
    check_regression_data(X, y, num_outputs=1)
    _check_labels(y, num_classes)
    f = mlp(X, num_classes, hidden=hidden, activation=activation,
            prior_precision=prior_precision, seed=seed, init_values=init_values,
            dropout=dropout)  # fmt: skip
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=f), obs=y)
    return f


# -- MC dropout ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MCDropout:
    """MC dropout (Gal & Ghahramani 2016): a MAP fitted with dropout, predicting by ``T`` passes.

    Fit: the MAP objective of :class:`~ppl_dgp.infer.MAP` (the potential per datum, ``U(z) /
    N = -(log p(y | W) + log p(W)) / N``, the Gaussian prior being the weight decay), with a
    fresh dropout mask in every step: step ``t`` evaluates the program under
    ``seed(model, k_t)``, so :func:`~ppl_dgp.dense.dropout` draws its masks, with MAP's Adam
    (same initial point, learning rate and step keys). With ``dropout = 0`` the steps are
    MAP's, and so is the result. Predict: the Posterior holds the fitted weights ``T =
    num_passes`` times (one chain, ``T`` draws), so that every predictive of
    :mod:`ppl_dgp.predictive` runs ``T`` seeded passes, each with its own masks:
    ``p(y | x) ~= (1/T) sum_t p(y | x, W * m_t)``.

    Run it as ``MCDropout(...).run(key, model, X, y)`` on a program built with ``dropout > 0``
    (e.g. ``functools.partial(mlp_regression, dropout=0.1)``).

    Args:
        num_steps: Adam steps.
        learning_rate: Adam's learning rate.
        num_passes: ``T``, stochastic passes at prediction.

    References:
        Gal & Ghahramani (2016), "Dropout as a Bayesian Approximation: Representing Model
        Uncertainty in Deep Learning", ICML.
    """

    num_steps: int = 2000
    learning_rate: float = 1e-2
    num_passes: int = 100
    name: ClassVar[str] = "mc_dropout"

    def __post_init__(self) -> None:
        for field in ("num_steps", "num_passes"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"MCDropout.{field} must be an int >= 1; received {v!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"MCDropout.learning_rate must be > 0; received {self.learning_rate}")

    def run(self, rng_key: Array, model: Callable, X: Array, y: Array, **model_kwargs: Any) -> Any:
        """Fit ``model`` to ``(X, y)``; returns a :class:`~ppl_dgp.posterior.Posterior`."""
        # Orchestration, imported here: the zoo's modules are programs (no import upwards).
        from numpyro.handlers import seed
        from numpyro.infer.util import potential_energy

        from ppl_dgp.infer.core import constrain, initialize, timed
        from ppl_dgp.infer.loop import run_loop
        from ppl_dgp.infer.map import map_init, map_optimizer, map_step
        from ppl_dgp.posterior import Posterior

        key_init, key_run = jax.random.split(rng_key)
        X, y = jnp.asarray(X), jnp.asarray(y)
        with timed() as timer:
            info, sites = initialize(key_init, model, X, y, owner="MCDropout", **model_kwargs)
            z0 = info.param_info.z
            fixed = {k: v for k, v in z0.items() if k in set(sites.local_latent)}
            free = {k: v for k, v in z0.items() if k not in fixed}
            scale = 1.0 / X.shape[0]

            def loss_fn(z: dict, fixed: dict, key: Array) -> Array:
                return scale * potential_energy(
                    seed(model, key), (X, y), model_kwargs, {**fixed, **z}
                )

            opt = map_optimizer("adam")
            inner = map_step(loss_fn, opt)

            def step(state: tuple, key: Array, fixed: dict) -> tuple:
                return inner(state, key, fixed, key)  # the step's key seeds the masks

            res = run_loop(step, map_init(opt, free, self.learning_rate), self.num_steps,
                           key_run, args=(fixed,), desc="MCDropout", owner="MCDropout")  # fmt: skip
            z = {**fixed, **res.state[0]}
            supports = {k: info.model_trace[k]["fn"].support for k in sites.global_latent}
            T = self.num_passes
            draws = constrain(
                {
                    k: jnp.broadcast_to(jnp.asarray(z[k]), (1, T, *jnp.shape(z[k])))
                    for k in supports
                },
                supports,
            )
            timings = timer.timings()
        return Posterior(
            draws=draws,
            method=self,
            traces={"map_loss": np.asarray(res.losses)},
            params=dict(sites.params),
            timings=timings,
        )


# -- the zoo's entries ---------------------------------------------------------------------------


def build_bnn(X: Array, *, layers: int = 2, width: int = 20) -> Any:
    """The zoo's ``bnn``: an MLP with ``layers - 1`` tanh hidden layers of ``width`` units,
    ``N(0, 1)`` weights and a learnt noise scale with a LogNormal(log 0.3, 1) prior."""
    del X
    noise = Hyper(0.3, prior=dist.LogNormal(float(np.log(0.3)), 1.0))
    return functools.partial(mlp_regression, hidden=(width,) * max(layers - 1, 1),
                             noise_scale=noise)  # fmt: skip


def build_bnn_binary(X: Array, *, layers: int = 2, width: int = 20) -> Any:
    """The zoo's ``bnn_binary``: a binary MLP classifier (one logit), tanh hidden layers."""
    del X
    return functools.partial(mlp_binary, hidden=(width,) * max(layers - 1, 1))


# Laplace over all weights samples a predictive far too wide for compare's sampled
# predictive (motorcycle: elpd_loo -14303 vs -45.7 for the last layer): Laplace Redux's
# default, the last layer, is the zoo's.
_LAST_LAYER = {"laplace": {"subset_of_weights": "last_layer"}}

register_model(
    ZooModel(
        name="bnn",
        build=build_bnn,
        likelihood="gaussian",
        task="regression",
        output_site="f",
        smoke={"width": 8},
        method_overrides=_LAST_LAYER,
        description="Bayesian MLP regression with a learnt noise scale",
    )
)
register_model(
    ZooModel(
        name="bnn_binary",
        build=build_bnn_binary,
        likelihood="bernoulli",
        task="classification",
        output_site="f",
        predictives=("proba",),
        smoke={"width": 8},
        method_overrides=_LAST_LAYER,
        description="Bayesian MLP binary classifier (one logit)",
    )
)
