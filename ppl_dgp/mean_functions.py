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
import numpy as np
from jax import Array

__all__ = ["MeanFunction", "Zero", "Constant", "Identity", "Linear", "pca_projection"]


def _register(cls: type, meta: tuple[str, ...] = ()) -> type:
    """Frozen dataclass + pytree (``meta`` fields are auxiliary data) whose rebuild skips
    ``__post_init__``: a user's values are checked when constructed, while JAX rebuilds mean
    functions from tracers, gradients and tangents that must not be refused."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    data = tuple(f.name for f in dataclasses.fields(cls) if f.name not in meta)

    def flatten(m: Any) -> tuple[tuple, tuple]:
        return tuple(getattr(m, n) for n in data), tuple(getattr(m, n) for n in meta)

    def unflatten(aux: tuple, leaves: tuple) -> Any:
        obj = object.__new__(cls)
        for n, v in (*zip(data, leaves, strict=True), *zip(meta, aux, strict=True)):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_node(cls, flatten, unflatten)
    return cls


def _check_array(owner: str, name: str, value: Any, ndims: tuple[int, ...]) -> None:
    """A concrete parameter must be finite with one of the ranks ``ndims`` (tracers skipped)."""
    if isinstance(value, jax.core.Tracer):
        return
    a = np.asarray(value)
    if a.dtype.kind not in "fiu" or a.ndim not in ndims:
        raise ValueError(
            f"{owner}: {name} must be a real array with {' or '.join(map(str, ndims))} axes; "
            f"received {value!r}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{owner}: {name} contains NaN or inf; received {a.tolist()}")


class MeanFunction:
    """Base class: ``m(X) -> [N, Q]``."""

    def __call__(self, X: Array) -> Array:  # [N, Q]
        raise NotImplementedError


@functools.partial(_register, meta=("output_dim",))
class Zero(MeanFunction):
    """``m(X) = 0``, shape ``[N, output_dim]``."""

    output_dim: int = 1

    def __post_init__(self) -> None:
        d = self.output_dim
        if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1:
            raise ValueError(f"Zero: output_dim must be an int >= 1; received {d!r}")

    def __call__(self, X: Array) -> Array:
        return jnp.zeros((X.shape[0], self.output_dim), dtype=X.dtype)


@_register
class Constant(MeanFunction):
    """``m(X) = c`` with ``c`` of shape ``[]`` or ``[Q]``."""

    c: Any = 0.0

    def __post_init__(self) -> None:
        _check_array("Constant", "c", self.c, (0, 1))

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

    def __post_init__(self) -> None:
        _check_array("Linear mean", "A", self.A, (2,))
        _check_array("Linear mean", "b", self.b, (0, 1))

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
