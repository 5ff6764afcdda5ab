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

__all__ = ["DataScaleWarning", "check_regression_data", "data_scale_issues", "is_concrete"]

#: A column (or ``y``) whose root mean square is above ``SCALE_LIMIT`` or below its inverse is
#: "far from unit scale". Standardised data have RMS 1; raw coordinates such as the two moons'
#: (within about [-2, 3]) or motorcycle times (ms, RMS ~30) stay inside; ``y x 1e8``,
#: ``y x 1e-8`` or ``X x 1e6`` do not.
SCALE_LIMIT = 100.0


class DataScaleWarning(UserWarning):
    """Inputs or targets far from unit scale for a model whose priors assume standardised data.

    The zoo's GP and dense layers put unit-scale priors on lengthscales, signal and noise
    variances and weights; data at ``1e8`` or ``1e-8`` make them meaningless and the posterior
    useless (without an error). Standardise with :class:`ppl_dgp.datasets.Standardizer`.
    """


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


def data_scale_issues(X: object, y: object | None, *, limit: float = SCALE_LIMIT) -> list[str]:
    """The parts of ``X [N, D]`` and a real-valued ``y [N]`` far from unit scale.

    A column's scale is its root mean square ``sqrt(mean(a^2))`` (an offset counts: priors are
    centred at zero); "far" is above ``limit`` or below ``1 / limit``. An all-zero column and
    integer targets (class labels) are not judged. NumPy on the host, no tracing.

    Returns:
        One description per offending part, e.g. ``"X column 0 (root mean square 1e+06)"``;
        empty when every part is within range (or the values are traced).

    Example:
        >>> import numpy as np
        >>> data_scale_issues(np.ones((4, 1)), 1e8 * np.ones(4))
        ['y (root mean square 1e+08)']
    """
    if not (is_concrete(X) and (y is None or is_concrete(y))):
        return []
    parts: list[tuple[str, np.ndarray]] = []
    Xa = np.asarray(X)
    if Xa.ndim == 2 and Xa.dtype.kind == "f":
        parts += [(f"X column {j}", Xa[:, j]) for j in range(Xa.shape[1])]
    if y is not None and np.asarray(y).dtype.kind == "f":
        parts.append(("y", np.asarray(y)))
    out = []
    for name, a in parts:
        rms = float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))
        if rms > 0.0 and not 1.0 / limit <= rms <= limit:
            out.append(f"{name} (root mean square {rms:.3g})")
    return out
