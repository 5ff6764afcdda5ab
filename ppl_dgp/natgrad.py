"""Natural gradients for the inducing guide's ``q(u)`` (Salimbeni, Eleftheriadis & Hensman 2018).

Each output ``q`` of a GP layer has ``q(v_q) = N(m, S)`` with ``m = q_mu[:, q]`` and
``S = L L^T``, ``L = tril(q_sqrt[q])`` (the whitened ``v`` when the layer whitens, as every zoo
layer does). Three parameterisations of the same Gaussian:

.. math::
    \\text{mean/sqrt: } (m, L), \\qquad
    \\text{natural: } \\theta = (S^{-1} m,\\ -\\tfrac12 S^{-1}), \\qquad
    \\text{expectation: } \\eta = (m,\\ S + m m^T).

For an exponential family the Fisher information in ``theta`` is ``d eta / d theta``, so the
natural gradient in ``theta`` is the ordinary gradient in ``eta`` (no Fisher is formed):

.. math:: \\theta \\leftarrow \\theta + \\gamma\\, \\partial \\mathcal L / \\partial \\eta .

``dL/deta`` is ``jax.grad`` of the ELBO through ``eta -> (m, cholesky(eta_2 - eta_1 eta_1^T))``.
With a Gaussian likelihood the ELBO is linear in ``eta`` apart from ``q``'s entropy, whose
gradient in ``eta`` is ``-theta``: one step with ``gamma = 1`` lands on the optimal ``q(u)``
(the collapsed bound of Titsias 2009), whatever the start. Elsewhere (inner layers, other
likelihoods) a smaller ``gamma`` is needed (the paper ramps it from ``1e-4`` to ``1e-1``).

:func:`natgrad_svi_step` puts one natural-gradient step on ``q(u)`` of chosen layers and one
step of the SVI's own optax optimizer (Adam) on every other parameter into NumPyro's
``SVIState``, with the same signature as NumPyro's ``SVI.update`` (GPflux's ``NatGradModel``
alternates them the same way, from one gradient evaluation).

Example:
    The three parameterisations round-trip (``Q = 1`` output, ``M = 2``):

    >>> import jax.numpy as jnp
    >>> q_mu = jnp.array([[1.0], [-0.5]]); q_sqrt = jnp.array([[[2.0, 0.0], [0.3, 0.5]]])
    >>> m, L = natural_to_meanvarsqrt(*meanvarsqrt_to_natural(q_mu, q_sqrt))
    >>> bool(jnp.allclose(m, q_mu) and jnp.allclose(L, q_sqrt))
    True
    >>> m, L = expectation_to_meanvarsqrt(*meanvarsqrt_to_expectation(q_mu, q_sqrt))
    >>> bool(jnp.allclose(m, q_mu) and jnp.allclose(L, q_sqrt))
    True

References:
    Salimbeni, Eleftheriadis & Hensman (2018), "Natural Gradients in Practice: Non-Conjugate
    Variational Inference in Gaussian Process Models", AISTATS, eq. (10); GPflow
    ``gpflow.optimizers.NaturalGradient`` (``XiNat``); GPflux ``NatGradModel``.
    Titsias (2009), "Variational Learning of Inducing Variables in Sparse Gaussian Processes".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.linalg import cho_solve, solve_triangular

__all__ = [
    "expectation_to_meanvarsqrt",
    "meanvarsqrt_to_expectation",
    "meanvarsqrt_to_natural",
    "natgrad_layers",
    "natgrad_svi_step",
    "natural_gradient_update",
    "natural_to_meanvarsqrt",
]


# -- the parameterisations (per output q; q_mu [M, Q], q_sqrt [Q, M, M]) ----------------------


def _eye_like(A: Array) -> Array:  # [Q, M, M] -> [Q, M, M]
    return jnp.broadcast_to(jnp.eye(A.shape[-1], dtype=A.dtype), A.shape)


def _sym(A: Array) -> Array:  # [Q, M, M]
    return 0.5 * (A + jnp.swapaxes(A, -1, -2))


def meanvarsqrt_to_expectation(q_mu: Array, q_sqrt: Array) -> tuple[Array, Array]:
    """``(m, L) -> eta = (m, S + m m^T)`` with ``S = L L^T``, ``L = tril(q_sqrt)``.

    Args:
        q_mu: means ``[M, Q]``.
        q_sqrt: ``[Q, M, M]`` (only the lower triangle is read).

    Returns:
        ``(eta_1 [M, Q], eta_2 [Q, M, M])``.
    """
    L = jnp.tril(q_sqrt)
    m = q_mu.T[..., None]  # [Q, M, 1]
    return q_mu, L @ jnp.swapaxes(L, -1, -2) + m @ jnp.swapaxes(m, -1, -2)


def expectation_to_meanvarsqrt(eta_1: Array, eta_2: Array) -> tuple[Array, Array]:
    """``eta -> (m, L)``: ``m = eta_1``, ``L = cholesky(eta_2 - eta_1 eta_1^T)``.

    Args:
        eta_1: ``[M, Q]``.
        eta_2: ``[Q, M, M]`` (symmetric).

    Returns:
        ``(q_mu [M, Q], q_sqrt [Q, M, M])`` with ``q_sqrt`` lower triangular, positive
        diagonal (NaN where ``eta_2 - eta_1 eta_1^T`` is not positive definite).
    """
    m = eta_1.T[..., None]  # [Q, M, 1]
    return eta_1, jnp.linalg.cholesky(_sym(eta_2 - m @ jnp.swapaxes(m, -1, -2)))


def meanvarsqrt_to_natural(q_mu: Array, q_sqrt: Array) -> tuple[Array, Array]:
    """``(m, L) -> theta = (S^{-1} m, -1/2 S^{-1})`` with ``S^{-1} = L^{-T} L^{-1}``.

    Args:
        q_mu: means ``[M, Q]``.
        q_sqrt: ``[Q, M, M]`` (only the lower triangle is read; any nonzero diagonal).

    Returns:
        ``(theta_1 [M, Q], theta_2 [Q, M, M])``.
    """
    L = jnp.tril(q_sqrt)
    L_inv = solve_triangular(L, _eye_like(L), lower=True)  # [Q, M, M]
    S_inv = jnp.swapaxes(L_inv, -1, -2) @ L_inv
    theta_1 = (S_inv @ q_mu.T[..., None])[..., 0].T  # [M, Q]
    return theta_1, -0.5 * S_inv


def natural_to_meanvarsqrt(theta_1: Array, theta_2: Array) -> tuple[Array, Array]:
    """``theta -> (m, L)``: ``P = -2 theta_2``, ``S = P^{-1}``, ``m = S theta_1``,
    ``L = cholesky(S)`` (GPflow's ``natural_to_meanvarsqrt``: the second Cholesky gives
    ``S = L L^T`` rather than ``L^T L``).

    Args:
        theta_1: ``[M, Q]``.
        theta_2: ``[Q, M, M]`` (symmetric negative definite).

    Returns:
        ``(q_mu [M, Q], q_sqrt [Q, M, M])``, lower triangular with a positive diagonal (NaN
        where ``-theta_2`` is not positive definite).
    """
    Lp = jnp.linalg.cholesky(-2.0 * _sym(theta_2))  # [Q, M, M], P = Lp Lp^T
    Lp_inv = solve_triangular(Lp, _eye_like(Lp), lower=True)
    S = jnp.swapaxes(Lp_inv, -1, -2) @ Lp_inv  # P^{-1}
    m = jax.vmap(lambda c, b: cho_solve((c, True), b))(Lp, theta_1.T)  # [Q, M]
    return m.T, jnp.linalg.cholesky(_sym(S))


def natural_gradient_update(
    q_mu: Array,  # [M, Q]
    q_sqrt: Array,  # [Q, M, M]
    dL_deta_1: Array,  # [M, Q]
    dL_deta_2: Array,  # [Q, M, M]
    gamma: Array | float,
) -> tuple[Array, Array]:  # [M, Q], [Q, M, M]
    """One natural-gradient ascent step: ``theta <- theta + gamma dL/deta``, back to ``(m, L)``.

    Args:
        q_mu, q_sqrt: the current ``q(u)``.
        dL_deta_1, dL_deta_2: the gradient of the objective to **maximise** (the ELBO) with
            respect to the expectation parameters.
        gamma: the step size (``1``: the optimum of a conjugate model in one step).

    Returns:
        The new ``(q_mu, q_sqrt)``.

    References:
        Salimbeni, Eleftheriadis & Hensman (2018), eq. (10).
    """
    theta_1, theta_2 = meanvarsqrt_to_natural(q_mu, q_sqrt)
    return natural_to_meanvarsqrt(theta_1 + gamma * dL_deta_1, theta_2 + gamma * dL_deta_2)


# -- one step inside SVI ---------------------------------------------------------------------


def natgrad_layers(guide: Any, which: str | Sequence[str] = "last") -> list[str]:
    """The GP layers whose ``q(u)`` gets natural gradients.

    Args:
        guide: a set-up :class:`~ppl_dgp.guides.InducingPointGuide` (after ``svi.init``).
        which: ``"last"`` (the output layer: conjugate with a Gaussian likelihood, GPflux's
            default), ``"all"``, or a sequence of layer names.

    Returns:
        Layer names, in the model's order.
    """
    names = getattr(guide, "layer_names", None)
    if names is None or getattr(guide, "prototype_trace", None) is None:
        raise ValueError(
            "natgrad_layers: guide must be an InducingPointGuide that is set up (run svi.init "
            f"first); received {guide!r}"
        )
    if which == "last":
        return [names[-1]]
    if which == "all":
        return list(names)
    if isinstance(which, str) or not all(isinstance(n, str) for n in which):
        raise ValueError(
            f"natgrad_layers: which must be 'last', 'all' or a sequence of layer names; "
            f"received {which!r}"
        )
    unknown = [n for n in which if n not in names]
    if unknown or not which:
        raise ValueError(
            f"natgrad_layers: which must name GP layers of the guide ({names}); received "
            f"{list(which)!r}"
        )
    return [n for n in names if n in which]


def _transforms(svi: Any) -> dict[str, Any]:
    """NumPyro's ``{param: unconstrained -> constrained}`` transforms of an initialised SVI."""
    fn = svi.constrain_fn
    if not isinstance(fn, functools.partial) or not fn.args or not isinstance(fn.args[0], dict):
        raise ValueError(
            "natgrad_svi_step: svi must be initialised (svi.init) before the step runs; its "
            f"constrain_fn is {fn!r}"
        )
    return fn.args[0]


def _optax_layout(optim_state: Any) -> tuple[Array, dict, Any]:
    """``(i, (params, opt_state))``: the state of an optax optimizer wrapped by NumPyro's
    ``optax_to_numpyro``."""
    ok = (
        isinstance(optim_state, tuple)
        and len(optim_state) == 2
        and isinstance(optim_state[1], tuple)
        and len(optim_state[1]) == 2
        and isinstance(optim_state[1][0], dict)
    )
    if not ok:
        raise TypeError(
            "natgrad_svi_step: the SVI's optimizer must be an optax transformation (e.g. "
            "SVI(model, guide, optax.adam(1e-2), elbo)); its state is not optax_to_numpyro's "
            "(step, (params, opt_state))"
        )
    return optim_state[0], optim_state[1][0], optim_state[1][1]


_StepSize = float | Callable[[Array], Array]


def natgrad_svi_step(
    svi: Any,
    layers: Sequence[str],
    gamma: _StepSize | Mapping[str, _StepSize] = 1.0,
) -> Callable[..., tuple[Any, Array]]:
    """``step(svi_state, *args, **kwargs) -> (svi_state, loss)``: natural gradients on ``q(u)``
    of ``layers``, the SVI's optax optimizer on every other parameter.

    A drop-in for NumPyro's ``svi.update`` (same key handling, same loss: the one of the
    state it is given). One gradient evaluation serves both: the loss is differentiated with
    respect to the other (unconstrained) parameters and to each layer's expectation
    parameters ``eta``; ``q(u)`` moves by :func:`natural_gradient_update` with the ELBO's
    gradient ``-dloss/deta / loss_scale`` (so ``gamma`` keeps its meaning under
    :class:`~ppl_dgp.elbo.DoublyStochasticELBO`'s ``loss_scale``), and the optax optimizer
    steps the rest. The optimizer sees zero gradients for the ``q(u)`` parameters and its
    result for them is then overwritten by the natural-gradient step, so neither Adam's
    moments nor a weight decay or a global-norm clip ever moves them.

    Args:
        svi: a NumPyro ``SVI`` with an optax optimizer and an
            :class:`~ppl_dgp.guides.InducingPointGuide` (``{layer}.q_mu``,
            ``{layer}.q_sqrt`` parameters); initialised before the step runs.
        layers: GP layer names (see :func:`natgrad_layers`: the last layer by default).
        gamma: the natural step size, or a schedule ``gamma(i)`` of the optimizer's step
            count (an optax schedule); or ``{layer: either}`` for each of ``layers``. ``1`` is
            exact for the last layer under a Gaussian likelihood with the full batch; inner
            layers and other likelihoods need far less (Salimbeni et al. ramp ``1e-4`` to
            ``1e-1``), minibatches somewhat less. Too large a step leaves ``-theta_2`` not
            positive definite: ``q(u)`` and the next loss are NaN, which the loop reports
            (:class:`~ppl_dgp.infer.loop.NonFiniteLossError`, with the last finite state).

    Returns:
        The step function (pure; jit it or run it inside the compiled loop).

    Example:
        >>> import functools, jax, jax.numpy as jnp, numpyro, optax
        >>> from ppl_dgp.elbo import DoublyStochasticELBO
        >>> from ppl_dgp.guides import InducingPointGuide
        >>> from ppl_dgp.models import svgp
        >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]; y = jnp.sin(3.0 * X[:, 0])
        >>> model = functools.partial(svgp.svgp_regression, **svgp.init_svgp(X, num_inducing=4))
        >>> guide = InducingPointGuide(model)
        >>> svi = numpyro.infer.SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
        >>> state = svi.init(jax.random.key(0), X, y)
        >>> step = jax.jit(natgrad_svi_step(svi, natgrad_layers(guide)))
        >>> state, loss = step(state, X, y)
        >>> bool(svi.evaluate(state, X, y) < loss)
        True
    """
    layers = list(layers)
    if not layers or not all(isinstance(n, str) for n in layers):
        raise ValueError(
            f"natgrad_svi_step: layers must be a non-empty sequence of GP layer names; "
            f"received {layers!r}"
        )
    if isinstance(gamma, Mapping):
        if set(gamma) != set(layers):
            raise ValueError(
                f"natgrad_svi_step: gamma as a mapping must have one entry per layer of "
                f"{layers}; received the keys {sorted(gamma)}"
            )
        gammas = dict(gamma)
    else:
        gammas = dict.fromkeys(layers, gamma)
    for layer, g in gammas.items():
        if not callable(g) and not float(g) > 0:
            raise ValueError(
                f"natgrad_svi_step: gamma must be > 0 or a schedule; received {g} for {layer!r}"
            )
    names = [(f"{layer}.q_mu", f"{layer}.q_sqrt", gammas[layer]) for layer in layers]
    q_keys = {k for qm, qs, _ in names for k in (qm, qs)}
    loss_scale = getattr(svi.loss, "loss_scale", 1.0)

    def step(svi_state: Any, *args: Any, **kwargs: Any) -> tuple[Any, Array]:
        if svi_state.mutable_state is not None:
            raise ValueError("natgrad_svi_step: models with mutable state are not supported")
        transforms = _transforms(svi)
        i, params, _ = _optax_layout(svi_state.optim_state)
        missing = sorted(q_keys - set(params))
        if missing:
            raise ValueError(
                f"natgrad_svi_step: layers {layers} need the guide parameters {missing}; the "
                f"SVI has {sorted(params)}"
            )
        rng_key, rng_key_step = jax.random.split(svi_state.rng_key)
        others = {k: v for k, v in params.items() if k not in q_keys}
        q = {k: transforms[k](params[k]) if k in transforms else params[k] for k in q_keys}
        etas = {qm: meanvarsqrt_to_expectation(q[qm], q[qs]) for qm, qs, _ in names}

        def loss_fn(others: dict, etas: dict) -> Array:
            p = {k: transforms[k](v) if k in transforms else v for k, v in others.items()}
            for qm, qs, _ in names:
                p[qm], p[qs] = expectation_to_meanvarsqrt(*etas[qm])
            return svi.loss.loss(rng_key_step, p, svi.model, svi.guide, *args, **kwargs,
                                 **svi.static_kwargs)  # fmt: skip

        loss, (g_others, g_etas) = jax.value_and_grad(loss_fn, argnums=(0, 1))(others, etas)
        new_q = {}
        for qm, qs, gamma_l in names:
            d1, d2 = (-g / loss_scale for g in g_etas[qm])  # dELBO/deta
            step_size = gamma_l(i) if callable(gamma_l) else gamma_l
            m, L = natural_gradient_update(q[qm], q[qs], d1, d2, step_size)
            for k, v in ((qm, m), (qs, L)):
                new_q[k] = transforms[k].inv(v) if k in transforms else v
        grads = {k: g_others[k] if k in g_others else jnp.zeros_like(v) for k, v in params.items()}
        i, (new_params, opt_state) = svi.optim.update(grads, svi_state.optim_state, value=loss)
        new_params = {**new_params, **new_q}
        return type(svi_state)((i, (new_params, opt_state)), None, rng_key), loss

    return step
