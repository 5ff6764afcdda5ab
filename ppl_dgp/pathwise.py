"""Pathwise function samples of a fitted GP-layer program, for a Posterior from any method.

:func:`function_samples` turns a :class:`~ppl_dgp.posterior.Posterior` and the program's layer
specs into ``S`` deep function draws: one :class:`~ppl_dgp.sampling.FunctionSample` per layer
(batched over the ``S`` draws), each a prior draw on random Fourier features plus the
inducing-point update (Wilson et al. 2020, eq. 13; :mod:`ppl_dgp.sampling`). A deep draw is
evaluated as ``f_L(... f_1(X))`` with the layers' mean functions by :func:`evaluate`, at any
inputs and as often as needed, consistently: the same draw gives the same values at the same
inputs (what Bayesian optimisation with Thompson sampling asks of a DGP; GPflux #32).

Where the layer values come from, dispatched on the type of ``posterior.approx``:

- the inducing-point guide (SVI, :class:`~ppl_dgp.infer.svi.InducingApprox`): per draw a fresh
  ``u ~ q(u)``, the other sites (kernel hyperparameters) at the guide's medians, as the SVI
  predictive does, so ``num_samples`` is not limited by the stored draws;
- any other posterior (NUTS, HMC, SGHMC, Laplace, MAP, an ensemble): the stored draws of
  ``{layer}.u`` and of the hyperparameters, spread evenly over the chains (cycled when
  ``num_samples`` exceeds them), each with its own prior features: a draw of ``p(f | u, theta)``.

The ``param`` sites (``{layer}.Z``, hyperparameters without a prior) come from
``posterior.params``; a fixed hyperparameter or ``Z`` from the spec. The layers are named
``layer0 ... layer{L-1}`` as in :func:`~ppl_dgp.models.dgp.dgp_regression` (the zoo's SVGP and
DGP); pass ``layer_names`` for another program built from :func:`~ppl_dgp.layers.gp_layer`.

Example:
    >>> import jax, numpy as np
    >>> from ppl_dgp.infer import SVI, fit
    >>> from ppl_dgp.models import MODELS
    >>> X = np.linspace(-2.0, 2.0, 16)[:, None]; y = np.sin(2.0 * X[:, 0])
    >>> model = MODELS["dgp"].make(X, smoke=True)  # two layers
    >>> post = fit(SVI(num_steps=20, num_samples=5), jax.random.key(0), model, X, y)
    >>> draws = function_samples(jax.random.key(1), model, post, num_samples=8,
    ...                          num_features=128)
    >>> len(draws), draws[0].weights.shape  # per layer; [S, L, Q]
    (2, (8, 128, 1))
    >>> X_new = np.linspace(-3.0, 3.0, 1000)[:, None]
    >>> F = evaluate(draws, X_new)  # [S, N, 1]: each row one function f_2(f_1(x))
    >>> F.shape, bool(np.allclose(evaluate(draws, X_new[::10]), F[:, ::10]))
    ((8, 1000, 1), True)

References:
    Wilson, Borovitskiy, Terenin, Mostowsky & Deisenroth (2020), "Efficiently Sampling
    Functions from Gaussian Process Posteriors", ICML; GPflux ``gpflux/sampling/``;
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ppl_dgp.infer.core import positive_int
from ppl_dgp.infer.svi import InducingApprox
from ppl_dgp.layers import KERNELS, Hyper, LayerSpec
from ppl_dgp.linalg import cholesky
from ppl_dgp.posterior import Posterior
from ppl_dgp.sampling import (
    FunctionSample,
    evaluate_draws,
    sample_inducing,
    sample_layer_function,
)

__all__ = ["evaluate", "function_samples", "layer_specs"]


def layer_specs(model: Any) -> tuple[LayerSpec, ...]:
    """The program's layer specs: ``model`` itself (a sequence of
    :class:`~ppl_dgp.layers.LayerSpec`) or its ``layers`` keyword (a ``functools.partial`` of
    :func:`~ppl_dgp.models.dgp.dgp_regression`, as the zoo builds them)."""
    if isinstance(model, LayerSpec):
        return (model,)
    if isinstance(model, Sequence) and all(isinstance(s, LayerSpec) for s in model):
        return tuple(model)
    layers = getattr(model, "keywords", {}).get("layers")
    if layers is None or not all(isinstance(s, LayerSpec) for s in layers):
        raise ValueError(
            "function_samples: cannot find the layer specs; pass the LayerSpec tuple (the "
            "'layers' of init_dgp) or a functools.partial of a GP-layer program with layers="
        )
    return tuple(layers)


def _fixed(spec: Any) -> Array:
    return jnp.asarray(spec.init if isinstance(spec, Hyper) else spec)


def _value(name: str, spec: Any, values: dict, params: dict, S: int) -> Array:
    """A site's value per draw ``[S, ...]``: a drawn/median value, a param, or the spec's."""
    if name in values:
        return jnp.asarray(values[name])
    v = jnp.asarray(params[name]) if name in params else _fixed(spec)
    return jnp.broadcast_to(v, (S, *v.shape))


@functools.partial(
    jax.jit, static_argnames=("kernel_cls", "num_features", "whiten", "jitter")
)  # fmt: skip
def _sample_layer(
    keys: Array, variance: Array, lengthscales: Array, Z: Array, u: Array, mean_function: Any,
    *, kernel_cls: type, num_features: int, whiten: bool, jitter: float,
) -> FunctionSample:  # fmt: skip
    """``S`` layer draws: ``u [S, M, Q]``, hyperparameters ``[S, ...]``, ``Z`` shared.

    ``Kmm`` is factorised batched, outside the ``vmap`` (see
    :func:`~ppl_dgp.sampling.sample_layer_function`'s ``Lmm``).
    """
    Kmm = jax.vmap(lambda var, ls: kernel_cls(variance=var, lengthscales=ls).K(Z))(
        variance, lengthscales
    )  # [S, M, M]
    Lmm = cholesky(Kmm, jitter)

    def one(key: Array, var: Array, ls: Array, u: Array, Lmm: Array) -> FunctionSample:
        kernel = kernel_cls(variance=var, lengthscales=ls)
        return sample_layer_function(
            key, kernel, Z, u, num_features=num_features, mean_function=mean_function,
            whiten=whiten, jitter=jitter, Lmm=Lmm,
        )  # fmt: skip

    return jax.vmap(one)(keys, variance, lengthscales, u, Lmm)


def _layers(
    key: Array, specs: tuple[LayerSpec, ...], names: Sequence[str], values: dict,
    params: dict, u: dict[str, Array], num_features: int, S: int,
) -> tuple[FunctionSample, ...]:  # fmt: skip
    out = []
    for k, spec, name in zip(jax.random.split(key, len(specs)), specs, names, strict=True):
        Z = jnp.asarray(params.get(f"{name}.Z", spec.Z), dtype=jnp.result_type(float))
        out.append(
            _sample_layer(
                jax.random.split(k, S),
                _value(f"{name}.variance", spec.variance, values, params, S),
                _value(f"{name}.lengthscales", spec.lengthscales, values, params, S),
                Z,
                u[name],
                spec.mean_function,
                kernel_cls=KERNELS[spec.kernel],
                num_features=num_features,
                whiten=spec.whiten,
                jitter=spec.jitter,
            )  # fmt: skip
        )
    return tuple(out)


def function_samples(
    rng_key: Array,
    model: Any,
    posterior: Posterior,
    *,
    num_samples: int = 100,
    num_features: int = 1024,
    layer_names: Sequence[str] | None = None,
) -> tuple[FunctionSample, ...]:
    """``S = num_samples`` pathwise deep function draws from a fitted GP-layer program.

    Per draw ``s`` and layer ``l``:

    .. math:: f_l^{(s)}(x) = m_l(x) + \\phi^{(s)}(x)^\\top w^{(s)}
        + k_{\\theta^{(s)}}(x, Z_l)(K_{mm} + \\epsilon I)^{-1}
        (u^{(s)} - \\Phi^{(s)}_{Z} w^{(s)} - \\sqrt{\\epsilon}\\, e^{(s)})

    with ``u^{(s)} ~ q(u)`` (SVI) or the posterior's ``s``-th draw of ``u`` and ``theta``
    (every other method); see the module docstring.

    Args:
        rng_key: PRNG key (features, prior weights and, for SVI, ``u``).
        model: the fitted program (a ``functools.partial`` with ``layers=``, as the zoo's
            ``svgp`` and ``dgp``) or its tuple of :class:`~ppl_dgp.layers.LayerSpec`.
        posterior: from :func:`~ppl_dgp.infer.fit` (or :meth:`Posterior.load`).
        num_samples: ``S``.
        num_features: ``L`` random Fourier features per layer and draw.
        layer_names: the layers' site prefixes (default ``layer0 ... layer{L-1}``).

    Returns:
        One :class:`~ppl_dgp.sampling.FunctionSample` per layer, every leaf with a leading
        axis ``S``; evaluate with :func:`evaluate`.
    """
    positive_int("function_samples", num_samples=num_samples, num_features=num_features)
    specs = layer_specs(model)
    names = [f"layer{l}" for l in range(len(specs))] if layer_names is None else layer_names
    if len(names) != len(specs):
        raise ValueError(
            f"function_samples: {len(names)} layer names for {len(specs)} layers: {names}"
        )
    params = {k: jnp.asarray(v) for k, v in posterior.params.items()}
    return _samples(posterior.approx, rng_key, specs, tuple(names), posterior, params,
                    num_samples=num_samples, num_features=num_features)  # fmt: skip


@functools.singledispatch
def _samples(
    approx: Any, rng_key: Array, specs: tuple, names: tuple, posterior: Posterior,
    params: dict, *, num_samples: int, num_features: int,
) -> tuple[FunctionSample, ...]:  # fmt: skip
    """From the stored draws of ``u`` and the hyperparameters (any sampler or Laplace)."""
    del approx
    flat = posterior.flat()
    missing = [f"{n}.u" for n in names if f"{n}.u" not in flat]
    if missing:
        raise ValueError(
            f"function_samples: the {posterior.name!r} posterior has no draws of {missing} "
            f"(its sites: {sorted(flat)})"
        )
    total = next(iter(flat.values())).shape[0]
    S = num_samples
    idx = np.round(np.linspace(0, total - 1, S)).astype(int) if S <= total else np.arange(S) % total
    values = {k: jnp.asarray(v[idx]) for k, v in flat.items()}
    u = {n: jnp.swapaxes(values[f"{n}.u"], -1, -2) for n in names}  # [S, Q, M] -> [S, M, Q]
    return _layers(rng_key, specs, names, values, params, u, num_features, S)


@_samples.register
def _samples_inducing(
    approx: InducingApprox, rng_key: Array, specs: tuple, names: tuple,
    posterior: Posterior, params: dict, *, num_samples: int, num_features: int,
) -> tuple[FunctionSample, ...]:  # fmt: skip
    """Fresh ``u ~ q(u)`` per draw; the other sites at the guide's medians."""
    del posterior
    S = num_samples
    key_u, key_f = jax.random.split(rng_key)
    u = {}
    for k, name in zip(jax.random.split(key_u, len(names)), names, strict=True):
        if name not in approx.q_mu:
            raise ValueError(
                f"function_samples: the guide has no q(u) for layer {name!r} "
                f"(it has {sorted(approx.q_mu)})"
            )
        q_mu, q_sqrt = jnp.asarray(approx.q_mu[name]), jnp.asarray(approx.q_sqrt[name])
        u[name] = jax.vmap(sample_inducing, in_axes=(0, None, None))(
            jax.random.split(k, S), q_mu, q_sqrt
        )  # [S, M, Q]
    values = {
        k: jnp.broadcast_to(jnp.asarray(v), (S, *np.shape(v))) for k, v in approx.medians.items()
    }
    return _layers(key_f, specs, names, values, params, u, num_features, S)


def evaluate(
    samples: Sequence[FunctionSample], X: Array, *, batch_size: int | None = None
) -> Array:  # [S, N, Q]
    """The deep draws at ``X [N, D]``: ``f_L^{(s)}(... f_1^{(s)}(X))`` per draw, ``[S, N, Q]``.

    Cost ``O(S N (L + M))`` per layer (no Cholesky of the inputs); ``batch_size`` bounds the
    memory to that many draws at a time (see :func:`ppl_dgp.sampling.evaluate_draws`).
    """
    return evaluate_draws(samples, jnp.asarray(X), batch_size=batch_size)
