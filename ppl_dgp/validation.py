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

__all__ = [
    "DataScaleWarning",
    "check_inputs",
    "check_positive",
    "check_positive_int",
    "check_regression_data",
    "check_rng_key",
    "check_targets",
    "data_scale_issues",
    "is_concrete",
]

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


def _dtype(a: object) -> np.dtype:
    """``a``'s dtype without copying it to the host (arrays and tracers carry one)."""
    dt = getattr(a, "dtype", None)
    if isinstance(dt, np.dtype):
        return dt
    try:
        return np.asarray(a).dtype
    except (TypeError, ValueError):  # ragged lists and other non-arrays
        return np.dtype(object)


def check_inputs(X: object, *, name: str = "X") -> tuple[int, int]:
    """Check inputs ``X [N, D]``: two axes, ``N >= 1`` and ``D >= 1``, a float32 or float64
    dtype, every value finite. Host-side and cheap (nothing is traced or compiled).

    Returns:
        ``(N, D)``.

    Raises:
        ValueError: the wrong rank, no rows or columns, NaN or inf (naming ``name``).
        TypeError: an integer, boolean, complex or object dtype (a model differentiates
            through ``X``: JAX's "grad requires real-valued inputs" only after compiling).

    Example:
        >>> check_inputs(np.ones((3, 2)))
        (3, 2)
        >>> check_inputs(np.ones((3, 2), dtype=int))
        Traceback (most recent call last):
            ...
        TypeError: X must be a float array [N, D] (float32 or float64); received dtype int64 ...
    """
    shape = np.shape(X)
    if len(shape) != 2:
        raise ValueError(f"{name} must have shape [N, D]; received {shape}")
    N, D = shape
    if N < 1:
        raise ValueError(f"{name} must have at least one row; received N = 0 (shape {shape})")
    if D < 1:
        raise ValueError(f"{name} must have at least one column; received D = 0 (shape {shape})")
    dt = _dtype(X)
    if dt not in (np.float32, np.float64):
        raise TypeError(
            f"{name} must be a float array [N, D] (float32 or float64); received dtype {dt} "
            f"(convert with np.asarray({name}, dtype=float), or standardise it with "
            "ppl_dgp.datasets.Standardizer, which returns float64)"
        )
    _check_finite(name, X)
    return int(N), int(D)


def check_targets(y: object, N: int, *, name: str = "y", num_outputs: int | None = None) -> None:
    """Check targets ``y [N]`` or ``y [N, P]`` against ``N`` rows of inputs: a real, integer
    or boolean dtype (labels and counts are integers), every value finite.

    Args:
        y: the targets.
        N: the number of input rows.
        name: the argument's name, for the message.
        num_outputs: ``1`` when the model has one output (``y`` must then be ``[N]``: a column
            ``[N, 1]`` would broadcast against ``[N]`` predictions), ``None`` to accept both.

    Raises:
        ValueError: the wrong rank, a different ``N``, NaN or inf (naming ``name``).
        TypeError: a complex, string or object dtype.
    """
    shape = np.shape(y)
    if num_outputs == 1 and len(shape) != 1:
        raise ValueError(
            f"{name} must have shape [N] = [{N}] (the model has one output"
            + ("; pass y[:, 0]" if shape[1:] == (1,) else "")
            + f"); received {shape}"
        )
    if len(shape) not in (1, 2):
        raise ValueError(f"{name} must have shape [N] or [N, P] with N = {N}; received {shape}")
    if shape[0] != N:
        want = f"[N] = [{N}]" if len(shape) == 1 else f"[N, P] = [{N}, {shape[1]}]"
        raise ValueError(f"{name} must have shape {want} to match X; received {shape}")
    dt = _dtype(y)
    if dt.kind not in "fiub":
        raise TypeError(
            f"{name} must hold real numbers (or integer labels/counts); received dtype {dt}"
        )
    _check_finite(name, y)


def check_regression_data(
    X: object,
    y: object | None,
    *,
    batch_size: int | None = None,
    num_outputs: int | None = None,
) -> None:
    """Check ``X [N, D]`` (:func:`check_inputs`), ``y [N]`` or ``[N, P]`` (:func:`check_targets`;
    ``num_outputs=1`` requires ``[N]``) and ``1 <= batch_size <= N``."""
    N, _ = check_inputs(X)
    if y is not None:
        check_targets(y, N, num_outputs=num_outputs)
    if batch_size is not None:
        if not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool):
            raise TypeError(f"batch_size must be an int or None; received {batch_size!r}")
        if not 1 <= batch_size <= N:
            raise ValueError(f"batch_size must be in [1, N={N}]; received {batch_size}")


def check_rng_key(key: object, *, name: str = "rng_key", owner: str = "fit") -> None:
    """Check a JAX PRNG key: a typed key (``jax.random.key(seed)``) of shape ``[]`` or a raw
    ``uint32 [2]`` key (``jax.random.PRNGKey(seed)``).

    Raises:
        TypeError: anything else (an int seed, a float array), naming ``name``.
    """
    dt = getattr(key, "dtype", None)
    if dt is not None and jax.dtypes.issubdtype(dt, jax.dtypes.prng_key):
        if np.shape(key) == ():
            return
    elif dt == np.uint32 and np.shape(key) == (2,):
        return
    got = f"{type(key).__name__} {key!r}" if np.ndim(key) == 0 else f"shape {np.shape(key)}"
    raise TypeError(
        f"{owner}: {name} must be a JAX PRNG key, e.g. jax.random.key(0) (or a single "
        f"jax.random.PRNGKey(0)); received {got[:80]}"
        + (f" of dtype {dt}" if dt is not None else "")
    )


def check_positive(owner: str, name: str, value: object, *, allow_zero: bool = False) -> None:
    """Raise a clear ``ValueError`` for a concrete hyperparameter (scalar or array) that is not
    finite and ``> 0`` (``>= 0`` with ``allow_zero``); tracers and non-numbers are skipped
    (JAX rebuilds values from gradients and tangents, and must not be refused)."""
    if not is_concrete(value) or not isinstance(
        value, int | float | np.ndarray | np.generic | jax.Array
    ):
        return
    a = np.asarray(value)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{owner}: {name} must be a real number; received {value!r}")
    bad = ~np.isfinite(a) | ((a < 0) if allow_zero else (a <= 0))
    if np.any(bad):
        what = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}: {name} must be finite and {what}; received {a.tolist()}")


def check_positive_int(owner: str, name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; a float, bool or string raises a ``TypeError`` and a
    smaller int a ``ValueError``, both naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{owner}: {name} must be an int >= {minimum}; received {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}; received {value}")
    return int(value)


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
