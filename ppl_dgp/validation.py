"""Input checks with errors that name the argument, the expected and the received value.

Example:
    >>> import numpy as np
    >>> check_regression_data(np.ones((3, 1)), np.ones(3))  # fine: returns None
    >>> check_regression_data(np.ones((3, 1)), np.ones(4))
    Traceback (most recent call last):
        ...
    ValueError: y must have shape [N] = [3] to match X; received (4,)
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["check_regression_data", "is_concrete"]


def is_concrete(x: object) -> bool:
    """True for values we can inspect now (not JAX tracers)."""
    return not isinstance(x, jax.core.Tracer)


def _check_finite(name: str, a: object) -> None:
    if is_concrete(a):
        arr = np.asarray(a)
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[:3].tolist()
            raise ValueError(f"{name} contains NaN or inf (first at index {bad}); clean the data")


def check_regression_data(X: object, y: object | None, *, batch_size: int | None = None) -> None:
    """Check ``X [N, D]``, ``y [N]`` (finite, matching ``N``) and ``1 <= batch_size <= N``."""
    shape = np.shape(X)
    if len(shape) != 2:
        raise ValueError(f"X must have shape [N, D]; received {shape}")
    N = shape[0]
    if N < 1:
        raise ValueError("X must have at least one row; received N = 0")
    _check_finite("X", X)
    if y is not None:
        y_shape = np.shape(y)
        if len(y_shape) != 1:
            raise ValueError(f"y must have shape [N] = [{N}]; received {y_shape}")
        if y_shape[0] != N:
            raise ValueError(f"y must have shape [N] = [{N}] to match X; received {y_shape}")
        _check_finite("y", y)
    if batch_size is not None and not 1 <= batch_size <= N:
        raise ValueError(f"batch_size must be in [1, N={N}]; received {batch_size}")
