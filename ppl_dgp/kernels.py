"""Covariance functions as immutable pytree values.

Each kernel is a frozen dataclass registered as a JAX pytree, so it crosses ``jit``, ``vmap``
and ``grad`` as a value; kernels compose with ``+`` and ``*``. Priors belong to the program
(:mod:`ppl_dgp.layers`), not to the kernel. Conventions follow GPflow: ``lengthscales`` is a
scalar or an ARD vector ``[D]``; ``K(X1, X2)`` is ``[N1, N2]`` and ``K_diag(X)`` is ``[N]``.

Example:
    >>> k = SquaredExponential(variance=1.5, lengthscales=jnp.array([0.7, 1.3])) + White(1e-3)
    >>> k.K(jnp.zeros((4, 2))).shape
    (4, 4)

References:
    Rasmussen & Williams (2006), *Gaussian Processes for Machine Learning*, ch. 4.
    tinygp and GPflow kernel modules.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = [
    "Kernel",
    "SquaredExponential",
    "Matern12",
    "Matern32",
    "Matern52",
    "Linear",
    "Periodic",
    "White",
    "Sum",
    "Product",
    "scaled_square_distance",
]


def _check_positive(owner: str, name: str, value: Any) -> None:
    """Raise a clear error for a concrete, non-positive hyperparameter (skip tracers)."""
    if isinstance(value, jax.core.Tracer) or not isinstance(
        value, (int, float, np.ndarray, np.generic, jax.Array)
    ):
        return
    a = np.asarray(value)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{owner}: {name} must be positive and finite; received {a.tolist()}")


def _register(cls: type) -> type:
    """Frozen dataclass + pytree whose rebuild skips ``__post_init__`` validation.

    Validation runs when a user constructs a kernel; JAX rebuilds kernels from gradients,
    tangents and optimiser states (zeros, negative entries) and must not be refused.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = tuple(f.name for f in dataclasses.fields(cls))

    def flatten(k: Any) -> tuple[tuple, None]:
        return tuple(getattr(k, n) for n in names), None

    def unflatten(_: None, leaves: tuple) -> Any:
        obj = object.__new__(cls)
        for n, v in zip(names, leaves, strict=True):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_node(cls, flatten, unflatten)
    return cls


def _check_inputs(X1: Array, X2: Array | None) -> None:
    if X1.ndim != 2:
        raise ValueError(f"kernel inputs X1 must have shape [N, D]; received {X1.shape}")
    if X2 is not None and (X2.ndim != 2 or X2.shape[1] != X1.shape[1]):
        raise ValueError(
            f"kernel inputs X2 must have shape [N2, {X1.shape[1]}]; received {X2.shape}"
        )


def scaled_square_distance(
    X1: Array,  # [N1, D]
    X2: Array,  # [N2, D]
    lengthscales: Array,  # [] or [D]
) -> Array:  # [N1, N2]
    """``r^2_{ij} = sum_d (X1_id - X2_jd)^2 / l_d^2``, clipped at zero.

    Uses ``|a|^2 + |b|^2 - 2 a.b`` (one matmul, as GPflow does), which is what makes kernel
    matrices cheap; the clip removes the tiny negative values of cancellation.
    """
    ls = jnp.asarray(lengthscales)
    ls = ls[None, :] if ls.ndim == 1 else ls  # [1, D]: explicit, no rank promotion
    A = X1 / ls
    B = X2 / ls
    a2 = jnp.sum(A * A, axis=-1)[:, None]
    b2 = jnp.sum(B * B, axis=-1)[None, :]
    return jnp.maximum(a2 + b2 - 2.0 * (A @ B.T), 0.0)


class Kernel:
    """Base class: ``K(X1, X2=None) -> [N1, N2]`` and ``K_diag(X) -> [N]``."""

    def K(self, X1: Array, X2: Array | None = None) -> Array:  # [N1, N2]
        raise NotImplementedError

    def K_diag(self, X: Array) -> Array:  # [N]
        raise NotImplementedError

    def __add__(self, other: Kernel) -> Kernel:
        return Sum(self, other)

    def __mul__(self, other: Kernel) -> Kernel:
        return Product(self, other)

    def __call__(self, X1: Array, X2: Array | None = None) -> Array:
        return self.K(X1, X2)


class _Stationary(Kernel):
    variance: Any
    lengthscales: Any

    def __post_init__(self) -> None:
        _check_positive(type(self).__name__, "variance", self.variance)
        _check_positive(type(self).__name__, "lengthscales", self.lengthscales)

    def _r2(self, X1: Array, X2: Array | None) -> Array:
        _check_inputs(X1, X2)
        ls = jnp.asarray(self.lengthscales)
        if ls.ndim == 1 and ls.shape[0] != X1.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: lengthscales must be a scalar or have shape "
                f"[{X1.shape[1]}] (the input dimension D); received {ls.shape}"
            )
        return scaled_square_distance(X1, X1 if X2 is None else X2, ls)

    def _k_of_r2(self, r2: Array) -> Array:
        raise NotImplementedError

    def K(self, X1: Array, X2: Array | None = None) -> Array:
        r2 = self._r2(X1, X2)
        if X2 is None:  # exact zeros on the diagonal (the matmul form leaves ~1e-16 there)
            r2 = jnp.where(jnp.eye(X1.shape[0], dtype=bool), 0.0, r2)
        return self._k_of_r2(r2)

    def K_diag(self, X: Array) -> Array:
        _check_inputs(X, None)
        return jnp.full(X.shape[:1], 1.0, dtype=X.dtype) * self.variance


def _row(a: Any) -> Array:
    """A per-dimension parameter ``[D]`` as ``[1, D]`` (scalars stay scalars)."""
    a = jnp.asarray(a)
    return a[None, :] if a.ndim == 1 else a


def _row3(a: Any) -> Array:
    a = jnp.asarray(a)
    return a[None, None, :] if a.ndim == 1 else a


def _safe_r(r2: Array) -> Array:
    # sqrt with a finite gradient at r = 0 (GPflow uses the same floor).
    return jnp.sqrt(jnp.maximum(r2, 1e-36))


@_register
class SquaredExponential(_Stationary):
    """Squared exponential (RBF): ``k(x, x') = s^2 exp(-r^2 / 2)``.

    ``r^2 = sum_d (x_d - x'_d)^2 / l_d^2`` with ARD lengthscales ``l`` (scalar or ``[D]``).
    """

    variance: Any = 1.0
    lengthscales: Any = 1.0

    def _k_of_r2(self, r2: Array) -> Array:
        return self.variance * jnp.exp(-0.5 * r2)


@_register
class Matern12(_Stationary):
    """Matérn 1/2 (exponential): ``k = s^2 exp(-r)``."""

    variance: Any = 1.0
    lengthscales: Any = 1.0

    def _k_of_r2(self, r2: Array) -> Array:
        return self.variance * jnp.exp(-_safe_r(r2))


@_register
class Matern32(_Stationary):
    """Matérn 3/2: ``k = s^2 (1 + sqrt(3) r) exp(-sqrt(3) r)``."""

    variance: Any = 1.0
    lengthscales: Any = 1.0

    def _k_of_r2(self, r2: Array) -> Array:
        sr = math.sqrt(3.0) * _safe_r(r2)
        return self.variance * (1.0 + sr) * jnp.exp(-sr)


@_register
class Matern52(_Stationary):
    """Matérn 5/2: ``k = s^2 (1 + sqrt(5) r + 5 r^2 / 3) exp(-sqrt(5) r)``."""

    variance: Any = 1.0
    lengthscales: Any = 1.0

    def _k_of_r2(self, r2: Array) -> Array:
        sr = math.sqrt(5.0) * _safe_r(r2)
        return self.variance * (1.0 + sr + 5.0 / 3.0 * r2) * jnp.exp(-sr)


@_register
class Periodic(Kernel):
    """Periodic (MacKay 1998, GPflow's ``Periodic(SquaredExponential)``).

    ``k(x, x') = s^2 exp(-1/2 sum_d (sin(pi (x_d - x'_d) / p_d) / l_d)^2)``.
    """

    variance: Any = 1.0
    lengthscales: Any = 1.0
    period: Any = 1.0

    def __post_init__(self) -> None:
        for name in ("variance", "lengthscales", "period"):
            _check_positive("Periodic", name, getattr(self, name))

    def K(self, X1: Array, X2: Array | None = None) -> Array:
        _check_inputs(X1, X2)
        D = X1.shape[1]
        for name in ("lengthscales", "period"):
            shape = jnp.shape(getattr(self, name))
            if shape not in ((), (D,)):
                raise ValueError(
                    f"Periodic: {name} must be a scalar or have shape [{D}] (the input "
                    f"dimension D); received {shape}"
                )
        X2 = X1 if X2 is None else X2
        diff = X1[:, None, :] - X2[None, :, :]  # [N1, N2, D]
        s = jnp.sin(jnp.pi * diff / _row3(self.period)) / _row3(self.lengthscales)
        return self.variance * jnp.exp(-0.5 * jnp.sum(s * s, axis=-1))

    def K_diag(self, X: Array) -> Array:
        _check_inputs(X, None)
        return jnp.full(X.shape[:1], 1.0, dtype=X.dtype) * self.variance


@_register
class Linear(Kernel):
    """Linear (dot product): ``k(x, x') = sum_d s_d x_d x'_d`` (``variance`` scalar or ``[D]``)."""

    variance: Any = 1.0

    def __post_init__(self) -> None:
        _check_positive("Linear", "variance", self.variance)

    def K(self, X1: Array, X2: Array | None = None) -> Array:
        _check_inputs(X1, X2)
        X2 = X1 if X2 is None else X2
        return (X1 * _row(self.variance)) @ X2.T

    def K_diag(self, X: Array) -> Array:
        _check_inputs(X, None)
        return jnp.sum(X * X * _row(self.variance), axis=-1)


@_register
class White(Kernel):
    """White noise: ``k(x, x') = s^2 [x is x']``; ``K(X, X2)`` with a distinct ``X2`` is zero."""

    variance: Any = 1.0

    def __post_init__(self) -> None:
        _check_positive("White", "variance", self.variance)

    def K(self, X1: Array, X2: Array | None = None) -> Array:
        _check_inputs(X1, X2)
        if X2 is None:
            return self.variance * jnp.eye(X1.shape[0], dtype=X1.dtype)
        return jnp.zeros((X1.shape[0], X2.shape[0]), dtype=X1.dtype)

    def K_diag(self, X: Array) -> Array:
        _check_inputs(X, None)
        return jnp.full(X.shape[:1], 1.0, dtype=X.dtype) * self.variance


@_register
class Sum(Kernel):
    """``k(x, x') = k1(x, x') + k2(x, x')``."""

    k1: Kernel
    k2: Kernel

    def K(self, X1: Array, X2: Array | None = None) -> Array:
        return self.k1.K(X1, X2) + self.k2.K(X1, X2)

    def K_diag(self, X: Array) -> Array:
        return self.k1.K_diag(X) + self.k2.K_diag(X)


@_register
class Product(Kernel):
    """``k(x, x') = k1(x, x') k2(x, x')``."""

    k1: Kernel
    k2: Kernel

    def K(self, X1: Array, X2: Array | None = None) -> Array:
        return self.k1.K(X1, X2) * self.k2.K(X1, X2)

    def K_diag(self, X: Array) -> Array:
        return self.k1.K_diag(X) * self.k2.K_diag(X)
