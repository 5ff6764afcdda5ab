"""The Laplace evidence of a GP classifier (any GGN likelihood), and its hyperparameters by it.

A GP-layer program with a non-Gaussian likelihood (the zoo's ``svgp_classification``,
``dgp_classification``: Bernoulli probit/logit, robust-max or softmax Categorical) records
the logits ``f(u, h)`` ``[N, K]`` of ``p(y_n | u, h)`` as its output site; ``u`` are the
whitened inducing values (prior ``N(0, diag(delta)^-1)``, ``delta = 1``), ``h`` the kernel
hyperparameters (kernel variances, lengthscales: the prior's scale of ``f``) in unconstrained
coordinates ``z``. The Laplace approximation of ``p(y, u | h)`` around the conditional mode
``u*(h) = argmax_u p(y | u, h) p(u)`` gives the evidence

.. math::
    \\log p(y \\mid h) \\approx \\mathcal{L}(h) = \\log p(y \\mid u^*, h) + \\log p(u^*)
    + \\tfrac{P}{2} \\log 2\\pi - \\tfrac12 \\log\\det\\big(G(u^*, h) + \\mathrm{diag}(\\delta)
    \\big), \\qquad G = \\textstyle\\sum_n J_n^\\top \\Lambda_n J_n,

``J_n = d f_n / d u``, ``Lambda_n = -d^2 log p(y_n | f_n) / d f_n^2`` (the GGN; with
``curvature="ef"`` the empirical Fisher), in the fit's ``hessian_structure``. With ``u`` in
whitened coordinates and ``Z = X`` this is Rasmussen & Williams' (2006) eq. (3.32) /
Algorithm 3.2, ``-1/2 f^T K^-1 f + log p(y | f) - 1/2 log|I + W^1/2 K W^1/2|``, with ``W``
the GGN's ``Lambda`` (for the logit link the exact Hessian; for the probit the Fisher
``phi^2 / (Phi (1 - Phi))``). ``Laplace(tune="marglik")`` (L-BFGS iterations of
:func:`tune_step`) maximises ``L(h) + log p(h) + log|dh/dz|`` (the hyperprior in the
potential's coordinates: a type-II MAP; the potential ``U`` holds all of
``-log p(y, u, h)``), so the objective is

.. math::
    -U(u^*(z), z) + \\tfrac{P}{2} \\log 2\\pi - \\tfrac12 \\log\\det P(u^*(z), z).

``u*`` moves with ``z``. Each evaluation re-finds it from a warm start by damped Newton steps
on ``U`` in ``u`` (the exact Hessian, its non-positive eigenvalues lifted; a step-halving line
search keeps ``U`` from rising), and the gradient in ``z`` is the total one: implicit
differentiation of the mode, ``du*/dz = -H_uu^-1 d^2 U / du dz`` (R&W sec. 5.5.1: the
``log det`` term's dependence on ``u*`` through ``W`` is the third-derivative term of their
eq. (5.22)), taken by evaluating the objective at ``u* - H_uu^-1 grad_u U(u*, z)`` with
``u*`` and ``H_uu`` held constant (its value is ``u*``; its derivative in ``z`` is
``du*/dz``). Over ``z`` the outer optimiser is L-BFGS (a smooth, deterministic, full-batch
objective of a few dozen variables, as GPflow's and R&W's type-II fits use BFGS), with the
mode warm-started from the previous iterate. laplace-torch's online marglik (Immer et al.
2021) instead alternates Adam steps on ``u`` and on ``h`` and drops ``du*/dh``; this module's
stationary point is that of ``L(h) + log p(h)`` itself.

References:
    Rasmussen & Williams (2006), "Gaussian Processes for Machine Learning", MIT Press,
    sec. 3.4 (Algorithm 3.2) and 5.5.1.
    Immer, Bauer, Fortuin, Rätsch & Khan (2021), "Scalable Marginal Likelihood Estimation for
    Model Selection in Deep Learning", ICML.
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax import Array
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.util import potential_energy

from ppl_dgp import curvature as C
from ppl_dgp.laplace.curvature import likelihood_curvature
from ppl_dgp.laplace.structures import OutputJacobian
from ppl_dgp.laplace.subset import _Layout

__all__ = ["find_mode", "log_evidence", "mode_and_gradient", "tune_step"]

#: Newton steps on ``u`` per evaluation of the objective (warm-started), and at the start and
#: the end of the tuning (from the joint MAP, to the final hyperparameters' mode).
NEWTON_STEPS = 4
NEWTON_STEPS_FINAL = 30
_HALVINGS = 8  # the line search's step sizes 1, 1/2, ..., 2^-7 (and 0: never uphill)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The static key of the compiled pieces: exactly what they read."""

    structure: type  # a curvature type of structures.STRUCTURES
    kind: str  # "ggn" or "ef"
    lik: str  # ppl_dgp.curvature.LIKELIHOODS
    layout: _Layout  # the inducing values u
    output_site: str


def _potential(model: Callable, kw: dict, spec: _Spec, u: Array, zh: dict, fixed: dict,
               X: Array, y: Array) -> Array:  # fmt: skip
    """``U = -log p(y, u, h)`` (hyperpriors and their log-Jacobians included) at ``u [P]``."""
    z = {**fixed, **zh, **spec.layout.unravel(u)}
    return potential_energy(model, (X, y), kw, z, enum=False)


def _output(model: Callable, kw: dict, spec: _Spec, u: Array, zh: dict, fixed: dict,
            params: dict, X: Array, y: Array) -> Array:  # fmt: skip
    """The output site ``f`` ``[N, K]`` at ``u`` and the (unconstrained) ``zh``."""
    z = {**fixed, **zh, **spec.layout.unravel(u)}

    def value(site: dict) -> Array | None:
        name = site["name"]
        if site["type"] == "sample" and name in z:
            return biject_to(site["fn"].support)(z[name])
        return params.get(name) if site["type"] == "param" else None

    tr = trace(substitute(seed(model, 0), substitute_fn=value)).get_trace(X, y, **kw)
    return tr[spec.output_site]["value"]


def find_mode(model: Callable, kw: dict, spec: _Spec, u0: Array, zh: dict, fixed: dict,
              X: Array, y: Array, steps: int) -> Array:  # fmt: skip
    """``u*(h)`` ``[P]``: ``steps`` damped Newton steps on ``U`` in ``u`` from ``u0``.

    The exact Hessian with its non-positive eigenvalues replaced by ``max(|lambda|, 1)``; the
    longest step ``t d``, ``t in {1, 1/2, ..., 2^-7}``, that does not raise ``U`` (beyond
    rounding; none: ``t = 0``), so near the mode the full step gives Newton's quadratic
    convergence.
    """
    U = lambda u: _potential(model, kw, spec, u, zh, fixed, X, y)  # noqa: E731
    ts = jnp.concatenate([jnp.zeros(1), 0.5 ** jnp.arange(_HALVINGS)])

    def step(u: Array, _: None) -> tuple[Array, None]:
        H, _n = C.make_positive_definite(jax.hessian(U)(u), 0.0, floor=1.0)
        d = -jnp.linalg.solve(H, jax.grad(U)(u))
        vals = jax.vmap(lambda t: U(u + t * d))(ts)
        # the longest step not uphill beyond rounding (at the mode all are equal to within it:
        # preferring the full step there keeps Newton converging below sqrt(eps))
        ok = jnp.isfinite(vals) & (vals <= vals[0] + 1e-12 * (1.0 + jnp.abs(vals[0])))
        t = jnp.where(jnp.any(ok[1:]), ts[1:][jnp.argmax(ok[1:])], 0.0)
        return u + t * d, None

    return jax.lax.scan(step, u0, None, length=steps)[0]


def log_evidence(model: Callable, kw: dict, spec: _Spec, u: Array, zh: dict, fixed: dict,
                 params: dict, delta: Array, X: Array, y: Array) -> Array:  # fmt: skip
    """``-U(u, z) + P/2 log 2 pi - 1/2 logdet(G(u, z) + diag(delta))`` at the given ``u``
    (the module's objective when ``u = u*(z)``; ``delta [P]`` the prior precision of ``u``)."""
    f = _output(model, kw, spec, u, zh, fixed, params, X, y)
    J = jax.jacfwd(lambda v: _output(model, kw, spec, v, zh, fixed, params, X, y))(u)
    curv = likelihood_curvature(spec.structure, spec.kind, spec.lik, f, y, jnp.asarray(1.0),
                                OutputJacobian.of(J))  # fmt: skip
    logdet = curv.logdet(jnp.asarray(1.0), delta)
    P = u.shape[0]
    return (-_potential(model, kw, spec, u, zh, fixed, X, y) + 0.5 * P * math.log(2 * math.pi)
            - 0.5 * logdet)  # fmt: skip


def _objective(model: Callable, kw: dict, spec: _Spec, zh: dict, u0: Array, fixed: dict,
               params: dict, delta: Array, X: Array, y: Array) -> Array:  # fmt: skip
    """``-(log_evidence at u*(z)) / N``, differentiable in ``zh`` through ``u*`` (implicitly:
    the module docstring)."""
    zs = jax.lax.stop_gradient(zh)
    u_star = jax.lax.stop_gradient(find_mode(model, kw, spec, u0, zs, fixed, X, y,
                                             NEWTON_STEPS))  # fmt: skip
    U = lambda u, z: _potential(model, kw, spec, u, z, fixed, X, y)  # noqa: E731
    H = jax.lax.stop_gradient(jax.hessian(U)(u_star, zs))
    # value u*, derivative du*/dz = -H^-1 d(grad_u U)/dz (the implicit function theorem)
    u_z = u_star - jnp.linalg.solve(H, jax.grad(U)(u_star, zh))
    return -log_evidence(model, kw, spec, u_z, zh, fixed, params, delta, X, y) / X.shape[0]


def tune_step(model: Callable, kw: dict, spec: _Spec, opt: optax.GradientTransformation
              ) -> Callable[..., tuple]:  # fmt: skip
    """``step(state, key, fixed, params, delta, X, y) -> (state, loss, None)`` for the loop
    driver: one L-BFGS iteration on :func:`_objective` over ``zh``, ``state = (zh, u, opt
    state)`` with ``u`` the mode at ``zh`` (re-found first, warm-started)."""

    def step(state: tuple, key: Array, fixed: dict, params: dict, delta: Array, X: Array,
             y: Array) -> tuple:  # fmt: skip
        del key
        z, u, st = state
        u = find_mode(model, kw, spec, u, z, fixed, X, y, NEWTON_STEPS)
        fn = lambda v: _objective(model, kw, spec, v, u, fixed, params, delta, X, y)  # noqa: E731
        loss, g = optax.value_and_grad_from_state(fn)(z, state=st)
        upd, st = opt.update(g, st, z, value=loss, grad=g, value_fn=fn)
        return (optax.apply_updates(z, upd), u, st), loss, None

    return step


def mode_and_gradient(model: Callable, kw: dict, spec: _Spec, u0: Array, zh: dict,
                      fixed: dict, X: Array, y: Array) -> tuple[Array, Array]:  # fmt: skip
    """``(u*(zh) [P], max |grad_u U(u*)|)``: :data:`NEWTON_STEPS_FINAL` Newton steps from
    ``u0`` and how far from stationary they end."""
    u = find_mode(model, kw, spec, u0, zh, fixed, X, y, NEWTON_STEPS_FINAL)
    g = jax.grad(lambda v: _potential(model, kw, spec, v, zh, fixed, X, y))(u)
    return u, jnp.max(jnp.abs(g))
