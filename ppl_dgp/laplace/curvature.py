"""Curvature backends of the Laplace approximation: exact Hessian, GGN, empirical Fisher.

Each returns a curvature value of :mod:`ppl_dgp.laplace.structures` (full, diagonal or KFAC)
that :meth:`posterior(scale, delta) <ppl_dgp.laplace.structures.FullCurvature.posterior>`
turns into a posterior precision:

- :func:`likelihood_curvature`: the generalised Gauss-Newton
  ``G = sum_n J_n^T Lam_n J_n`` (``Lam_n = -d^2 log p(y_n | f_n) / d f_n^2``) or the empirical
  Fisher (``Lam_n = g_n g_n^T``, ``g_n = d(-log p(y_n | f_n)) / d f_n``) of the likelihood,
  from the output Jacobian ``J = d f / d theta``;
- :func:`hessian_curvature`: the exact Hessian of the potential (prior included), repaired to
  be positive definite;
- :func:`dense_output_jacobians` / :func:`dense_jacobian`: ``J`` of a network of
  :func:`~ppl_dgp.dense.dense` layers without a Jacobian through the whole network, and
  :func:`output_jacobian`, which offers ``J`` in the form each structure reads.

The formulas are in :mod:`ppl_dgp.curvature`.

References:
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS
    (laplace-torch: ``laplace/curvature``).
    Martens & Grosse (2015), "Optimizing Neural Networks with Kronecker-factored Approximate
    Curvature", ICML.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

from ppl_dgp import curvature as C
from ppl_dgp.laplace.structures import OutputJacobian
from ppl_dgp.laplace.subset import _Layout

__all__ = [
    "dense_jacobian",
    "dense_output_jacobians",
    "hessian_curvature",
    "likelihood_curvature",
    "output_jacobian",
]


def dense_output_jacobians(
    f_sites: Callable[[dict], Array], values: dict, layers: dict, N: int
) -> dict[str, Array]:
    """``{layer: d f_n / d z_n}`` ``[N, K, D_out]`` per dense layer (``z = a W + b``).

    ``f_sites(overrides) -> f [N, K]`` evaluates the network with some sites replaced. Each
    bias is replaced by ``N`` per-datum copies ``b_n = b`` ``[N, D_out]`` (``a W + b_n`` is the
    same ``z``), so ``d f_{n,k} / d b_n = d f_{n,k} / d z_n``, and one reverse pass per output
    ``k`` of ``sum_n f_{n,k}`` gives every datum's Jacobian at once: ``K`` backward passes
    instead of one forward pass per bias entry (``jacfwd``) or one backward per ``(n, k)``.
    Assumes, like the dense Jacobian itself, that data rows do not interact.
    """
    tiles = {b: jnp.broadcast_to(values[b], (N, *jnp.shape(values[b]))) for _, b in layers.values()}
    f, vjp = jax.vjp(f_sites, tiles)
    K = f.shape[1]
    cot = jnp.broadcast_to(jnp.eye(K, dtype=f.dtype)[:, None, :], (K, N, K))  # [K, N, K]
    (grads,) = jax.vmap(vjp)(cot)  # {bias: [K, N, D_out]}
    return {layer: jnp.swapaxes(grads[b], 0, 1) for layer, (_, b) in layers.items()}


def dense_jacobian(Jz: dict, inputs: dict, layout: _Layout, layers: dict) -> Array:
    """``J = d f / d theta`` ``[N, K, P]`` of dense layers: ``d f / d W[i, o] = a_i d f / d z_o``,
    ``d f / d b = d f / d z`` (``a`` the layer input ``[N, D_in]``), in the layout's order."""
    parts = []
    for n in layout.names:
        layer = n.rsplit(".", 1)[0]
        if n == layers[layer][1]:
            parts.append(Jz[layer])
        else:
            JW = inputs[layer][:, None, :, None] * Jz[layer][:, :, None, :]
            parts.append(JW.reshape(JW.shape[0], JW.shape[1], -1))
    return jnp.concatenate(parts, axis=-1)


def output_jacobian(
    f_of: Callable[[Array], Array],
    f_sites: Callable[[dict], Array],
    theta: Array,
    values: dict,
    inputs: Callable[[], dict],
    layout: _Layout,
    layers: dict,
    shape: tuple[int, int],
    memory_limit_gb: float = float("inf"),
) -> OutputJacobian:
    """``J = d f / d theta`` at ``theta`` as an :class:`~ppl_dgp.laplace.structures.OutputJacobian`.

    When the subset is exactly the dense layers' ``W`` and ``b``, ``J`` is assembled from the
    layer inputs (``inputs() -> {layer: a}``) and :func:`dense_output_jacobians` (``K``
    reverse passes), and KFAC reads the per-layer factors; otherwise ``J`` is
    ``jax.jacrev`` of ``f_of`` (``[P] -> [N, K]``): reverse mode, because the library's
    Cholesky (:func:`ppl_dgp.linalg.cholesky`, a custom VJP) has no forward-mode rule, and a
    GP layer's hyperparameters in the subset reach it.
    """
    N, K = shape
    dense = bool(layers) and {n for v in layers.values() for n in v} == set(layout.names)
    if not dense:
        full = lambda: jax.jacrev(f_of)(theta)  # noqa: E731
        return OutputJacobian((N, K, layout.P), full, None, memory_limit_gb)
    Jz: dict = {}

    def jz() -> dict:  # traced once, shared by both forms
        if not Jz:
            Jz.update(dense_output_jacobians(f_sites, values, layers, N))
        return Jz

    def per_layer() -> dict:
        a = inputs()
        return {layer: (a[layer], jz()[layer]) for layer in layers}

    full = lambda: dense_jacobian(jz(), inputs(), layout, layers)  # noqa: E731
    return OutputJacobian((N, K, layout.P), full, per_layer, memory_limit_gb)


def likelihood_curvature(
    structure: type, kind: str, lik: str, f_map: Array, y: Array, sigma: Array,
    jac: OutputJacobian,
) -> object:  # fmt: skip
    """The GGN (``kind="ggn"``, Gaussian at ``sigma = 1``: scaled by ``1 / sigma^2`` later) or
    empirical Fisher (``"ef"``) of the likelihood ``lik`` in ``structure`` (a curvature type
    of :data:`~ppl_dgp.laplace.structures.STRUCTURES`)."""
    if kind == "ggn":
        Lam = C.loss_hessian(lik, f_map, 1.0)  # [N, K, K]
    else:
        g = C.loss_gradient(lik, f_map, y, sigma)  # [N, K]
        Lam = g[:, :, None] * g[:, None, :]
    return structure.from_outer(jac, Lam)


def hessian_curvature(structure: type, H: Array) -> tuple[object, Array]:
    """``(curvature, number repaired)``: the exact Hessian ``H`` ``[P, P]`` of the potential
    in ``structure``, non-positive eigenvalues (diagonal entries) -> ``max(|lam|, 1)``."""
    return structure.from_hessian(H)
