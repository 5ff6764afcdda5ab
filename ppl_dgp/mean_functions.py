"""Mean functions ``m(X) -> [N, Q]`` as pytree values, and the PCA projection helper.

Salimbeni & Deisenroth (2017) give inner DGP layers an identity mean (or a linear projection
onto the top principal components when the layer's width differs from its input's) and the
last layer a zero mean, so that the DGP starts close to a single-layer GP.

References:
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS, section 4.

Example:
    >>> import jax.numpy as jnp
    >>> X = jnp.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.1]])  # [N=3, D=2]
    >>> Zero(output_dim=2)(X).shape, Identity()(X).shape
    ((3, 2), (3, 2))
    >>> pca_projection(X, 1)(X).shape  # onto the top principal direction: [N, Q=1]
    (3, 1)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["MeanFunction", "Zero", "Constant", "Identity", "Linear", "pca_projection"]


def _register(cls: type, meta: tuple[str, ...] = ()) -> type:
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in meta]
    return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=list(meta))


class MeanFunction:
    """Base class: ``m(X) -> [N, Q]``."""

    def __call__(self, X: Array) -> Array:  # [N, Q]
        raise NotImplementedError


@functools.partial(_register, meta=("output_dim",))
class Zero(MeanFunction):
    """``m(X) = 0``, shape ``[N, output_dim]``."""

    output_dim: int = 1

    def __call__(self, X: Array) -> Array:
        return jnp.zeros((X.shape[0], self.output_dim), dtype=X.dtype)


@_register
class Constant(MeanFunction):
    """``m(X) = c`` with ``c`` of shape ``[]`` or ``[Q]``."""

    c: Any = 0.0

    def __call__(self, X: Array) -> Array:
        c = jnp.atleast_1d(jnp.asarray(self.c, dtype=X.dtype))
        return jnp.broadcast_to(c[None, :], (X.shape[0], c.shape[0]))


@_register
class Identity(MeanFunction):
    """``m(X) = X`` (inner DGP layers whose width equals the input's)."""

    def __call__(self, X: Array) -> Array:
        return X


@_register
class Linear(MeanFunction):
    """``m(X) = X A + b`` with ``A`` of shape ``[D, Q]`` and ``b`` of shape ``[Q]``."""

    A: Any
    b: Any = 0.0

    def __call__(self, X: Array) -> Array:
        A = jnp.asarray(self.A, dtype=X.dtype)
        if A.ndim != 2 or A.shape[0] != X.shape[1]:
            raise ValueError(
                f"Linear mean: A must have shape [{X.shape[1]}, Q]; received {A.shape}"
            )
        b = jnp.asarray(self.b, dtype=X.dtype)
        return X @ A + (b[None, :] if b.ndim == 1 else b)


def pca_projection(X: Array, Q: int) -> Linear:
    """Linear mean that projects ``X [N, D]`` onto its top ``Q`` principal directions.

    ``A`` holds the first ``Q`` right singular vectors of the centred ``X`` (as columns); when
    ``Q > D`` the extra columns are zero-padded (Salimbeni & Deisenroth 2017 pad with zeros).

    Args:
        X: inputs ``[N, D]``.
        Q: output width of the layer.

    Returns:
        ``Linear(A=[D, Q], b=0)``.
    """
    if X.ndim != 2:
        raise ValueError(f"pca_projection: X must have shape [N, D]; received {X.shape}")
    if Q < 1:
        raise ValueError(f"pca_projection: Q must be >= 1; received {Q}")
    D = X.shape[1]
    if Q == D:
        return Linear(A=jnp.eye(D, dtype=X.dtype), b=jnp.zeros((Q,), X.dtype))
    Xc = X - jnp.mean(X, axis=0, keepdims=True)
    _, _, Vt = jnp.linalg.svd(Xc, full_matrices=False)  # Vt [min(N, D), D]
    V = Vt.T[:, : min(Q, Vt.shape[0])]  # [D, <=Q]
    A = jnp.zeros((D, Q), dtype=X.dtype).at[:, : V.shape[1]].set(V)
    return Linear(A=A, b=jnp.zeros((Q,), X.dtype))
