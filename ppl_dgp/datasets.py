"""Bundled data sets, user CSV loading and standardisation.

Math stratum: NumPy only (no JAX, no NumPyro). The files live in ``ppl_dgp/data/`` and are read
with :mod:`importlib.resources`, so they work from a source checkout, an editable install and a
wheel alike. Provenance and licences are in ``ppl_dgp/data/README.md``.

Example:
    >>> from ppl_dgp.datasets import Standardizer, load_motorcycle
    >>> X, y = load_motorcycle()
    >>> X.shape, y.shape
    ((94, 1), (94,))
    >>> sx = Standardizer.fit(X)
    >>> bool(abs(sx.transform(X).mean()) < 1e-12)
    True
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from os import PathLike
from pathlib import Path

import numpy as np

__all__ = [
    "load_regression",
    "BENCH_NAMES",
    "CLASSIFICATION_NAMES",
    "load_breast_cancer",
    "load_classification",
    "load_digits",
    "load_linnerud",
    "split",
    "Standardizer",
    "load_bench",
    "load_csv",
    "load_motorcycle",
    "make_synth10k",
]

BENCH_NAMES: tuple[str, ...] = ("diabetes", "step1d", "synth10k", "moons")
"""Names accepted by :func:`load_bench` (the workloads shared with the peer libraries)."""


def _data_file(name: str):
    """Traversable for ``ppl_dgp/data/<name>``."""
    return resources.files("ppl_dgp").joinpath("data", name)


def load_motorcycle() -> tuple[np.ndarray, np.ndarray]:
    """Silverman's (1985) motorcycle-crash accelerations (R package ``boot``, data set ``motor``).

    Head acceleration (g) against time after impact (ms); the classic heteroscedastic,
    non-stationary 1-D regression problem used in GPflux's deep-GP tutorial.

    Returns:
        ``(X, y)`` with ``X`` the times, float64 of shape ``[N, 1]``, and ``y`` the
        accelerations, float64 of shape ``[N]``, where ``N = 94``. Original units, not
        standardised.

    References:
        Silverman, B. W. (1985). Some aspects of the spline smoothing approach to
        non-parametric regression curve fitting. JRSS B 47(1), 1-52.
    """
    with _data_file("motor.csv").open("r", newline="") as fh:
        rows = list(csv.DictReader(fh))
    X = np.array([[float(r["times"])] for r in rows], dtype=np.float64)  # [N, 1]
    y = np.array([float(r["accel"]) for r in rows], dtype=np.float64)  # [N]
    return X, y


def _read_table(name: str) -> tuple[list[str], np.ndarray]:
    """``(header, values [rows, cols] float64)`` of a bundled CSV (``.csv`` or ``.csv.gz``)."""
    raw = _data_file(name).read_bytes()
    text = gzip.decompress(raw).decode() if name.endswith(".gz") else raw.decode()
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], np.asarray(rows[1:], dtype=np.float64)


def load_breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """The Wisconsin Diagnostic Breast Cancer data (UCI; Street, Wolberg & Mangasarian 1993).

    30 features of cell nuclei (mean, standard error and worst value of ten measurements) from
    569 digitised fine-needle aspirates; label 1 = benign (357), 0 = malignant (212), as
    scikit-learn's ``load_breast_cancer``. Licence: CC BY 4.0 (see ``ppl_dgp/data/README.md``).

    Returns:
        ``(X [569, 30] float64, y [569] int64)`` in original units.

    Example:
        >>> X, y = load_breast_cancer()
        >>> X.shape, int(y.sum())
        ((569, 30), 357)
    """
    _, a = _read_table("breast_cancer.csv.gz")
    return a[:, :-1], a[:, -1].astype(np.int64)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 optical handwritten digits (UCI; Alpaydin & Kaynak 1998): 1,797 images of
    ``8 x 8`` pixel counts in ``0..16``, ten classes, as scikit-learn's ``load_digits``.
    Licence: CC BY 4.0 (see ``ppl_dgp/data/README.md``).

    Returns:
        ``(X [1797, 64] float64, y [1797] int64)``; ``X`` row-major pixels, unscaled.

    Example:
        >>> X, y = load_digits()
        >>> X.shape, sorted(set(y.tolist())) == list(range(10)), float(X.max())
        ((1797, 64), True, 16.0)
    """
    _, a = _read_table("digits.csv.gz")
    return a[:, :-1], a[:, -1].astype(np.int64)


def load_linnerud() -> tuple[np.ndarray, np.ndarray]:
    """Linnerud's exercise counts (Tenenhaus 1998): 20 middle-aged men, physiological
    measurements (weight in lb, waist in in, pulse) and three exercise counts (chin-ups,
    sit-ups, jumps). A small count data set (``dgp_poisson`` on one column) and a multi-output
    one (three outputs). From scikit-learn's ``load_linnerud`` (BSD-3-Clause).

    Returns:
        ``(X [20, 3] float64: weight, waist, pulse; Y [20, 3] int64: chins, situps, jumps)``.

    Example:
        >>> X, Y = load_linnerud()
        >>> X.shape, Y.shape, Y[0].tolist()
        ((20, 3), (20, 3), [5, 162, 60])
    """
    _, a = _read_table("linnerud.csv")
    return a[:, :3], a[:, 3:].astype(np.int64)


#: Names accepted by :func:`load_classification`.
CLASSIFICATION_NAMES: tuple[str, ...] = ("breast_cancer", "digits", "moons")


def split(
    X: np.ndarray, y: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random train/test split: ``round(test_fraction * N)`` rows held out by
    ``numpy.random.default_rng(seed).permutation`` (each part in the original row order).

    Returns:
        ``(X_train, y_train, X_test, y_test)``.
    """
    N = len(y)
    if not 0 < test_fraction < 1:
        raise ValueError(f"split: test_fraction must be in (0, 1); received {test_fraction}")
    n_test = max(1, int(round(test_fraction * N)))
    if N - n_test < 2:
        raise ValueError(f"split: {N} rows are too few to split into train and test")
    perm = np.random.default_rng(seed).permutation(N)
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return X[tr], y[tr], X[te], y[te]


def load_classification(
    name: str, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """A bundled classification set split into training and test parts (original units).

    ``breast_cancer`` and ``digits`` are split by :func:`split` (``test_fraction``, ``seed``);
    ``moons`` keeps its own train/test arrays (:func:`load_bench`).

    Returns:
        ``(X_train, y_train, X_test, y_test, description)``, labels ``int64``.

    Example:
        >>> X_tr, y_tr, X_te, y_te, what = load_classification("digits")
        >>> X_tr.shape, X_te.shape
        ((1438, 64), (359, 64))
    """
    if name == "moons":
        d = load_bench("moons")
        return (d["X_train"], d["y_train"].astype(np.int64), d["X_test"],
                d["y_test"].astype(np.int64), "`moons` (bundled split)")  # fmt: skip
    loaders = {"breast_cancer": load_breast_cancer, "digits": load_digits}
    if name not in loaders:
        raise ValueError(
            f"load_classification: name must be one of {CLASSIFICATION_NAMES}; received {name!r}"
        )
    X, y = loaders[name]()
    pct = round(100 * test_fraction)
    what = f"`{name}` ({100 - pct}/{pct} split, seed {seed})"
    return (*split(X, y, test_fraction=test_fraction, seed=seed), what)


def load_bench(name: str) -> dict[str, np.ndarray]:
    """Load one of the benchmark workloads shared with GPflux / GPyTorch / laplace-torch.

    Regression sets (``diabetes``, ``step1d``, ``synth10k``) hold ``X_train [N, D]``,
    ``Y_train [N, 1]``, ``X_test``, ``Y_test`` in original units, the train-split
    standardisation ``x_mean [D]``, ``x_std [D]``, ``y_mean [1]``, ``y_std [1]`` and
    ``Z_init [100, D]`` (initial inducing inputs in standardised units). ``moons`` holds
    ``X_train [200, 2]``, ``y_train [200]``, ``X_test [1000, 2]``, ``y_test [1000]`` and
    ``X_ood [100, 2]``. ``synth10k`` is generated from seeds (:func:`make_synth10k`), the
    others are read from ``ppl_dgp/data/<name>.npz``.

    Args:
        name: One of :data:`BENCH_NAMES`.

    Returns:
        A dict of array name to NumPy array (loaded eagerly; the file is closed).

    Raises:
        ValueError: If ``name`` is not a known workload.
    """
    if name not in BENCH_NAMES:
        raise ValueError(
            f"unknown benchmark data set {name!r}; valid names are: {', '.join(BENCH_NAMES)}"
        )
    if name == "synth10k":
        return make_synth10k()
    with _data_file(f"{name}.npz").open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def make_synth10k() -> dict[str, np.ndarray]:
    """Generate the ``synth10k`` workload: the peers' arrays, bit for bit, from NumPy seeds.

    ``N = 10000`` inputs ``x ~ N(0, I_8)`` and targets
    ``y = sin(2 x0) + 0.5 x1^2 - x2 x3 + 0.5 tanh(3 x4) + 0.1 x5 + 0.1 eps``, ``eps ~ N(0, 1)``,
    drawn by ``np.random.default_rng(2)`` (``X [N, 8]``, then ``eps [N]``). The first 1000 rows
    of ``np.random.default_rng(2).permutation(N)`` are the test split, the other 9000 the
    training split. ``Z_init`` is the standardised training inputs at
    ``np.random.default_rng(100).choice(9000, 100, replace=False)``. The SHA-256 of every array
    of the shared benchmark's ``synth10k.npz`` is checked in ``tests/test_datasets.py``.

    Returns:
        The keys of :func:`load_bench`'s regression sets: ``X_train [9000, 8]``,
        ``Y_train [9000, 1]``, ``X_test [1000, 8]``, ``Y_test [1000, 1]``, ``x_mean [8]``,
        ``x_std [8]``, ``y_mean [1]``, ``y_std [1]``, ``Z_init [100, 8]``.
    """
    N, num_test = 10000, 1000
    rng = np.random.default_rng(2)
    X = rng.normal(size=(N, 8))  # [N, 8]
    eps = rng.normal(size=N)  # [N]
    f = (
        np.sin(2 * X[:, 0])
        + 0.5 * X[:, 1] ** 2
        - X[:, 2] * X[:, 3]
        + 0.5 * np.tanh(3 * X[:, 4])
        + 0.1 * X[:, 5]
    )
    Y = (f + 0.1 * eps)[:, None]  # [N, 1]
    perm = np.random.default_rng(2).permutation(N)
    test, train = perm[:num_test], perm[num_test:]
    sx, sy = Standardizer.fit(X[train]), Standardizer.fit(Y[train])
    chosen = np.random.default_rng(100).choice(N - num_test, 100, replace=False)
    return {
        "X_train": X[train],
        "Y_train": Y[train],
        "X_test": X[test],
        "Y_test": Y[test],
        "x_mean": sx.mean,
        "x_std": sx.std,
        "y_mean": sy.mean,
        "y_std": sy.std,
        "Z_init": sx.transform(X[train])[chosen],
    }


@dataclass(frozen=True)
class Standardizer:
    """Per-column affine standardisation ``z = (a - mean) / std``.

    Attributes:
        mean: Column means, shape ``[D]`` (or ``[]`` for 1-D data).
        std: Column standard deviations, shape like ``mean``; a constant column gets 1 so
            that the transform stays finite and invertible.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, a: np.ndarray) -> Standardizer:
        """Fit to data.

        Args:
            a: Data, shape ``[N]`` or ``[N, D]``; statistics are taken over axis 0.

        Returns:
            The fitted :class:`Standardizer`.

        Raises:
            ValueError: no rows, another rank, NaN or inf.
        """
        a = np.asarray(a, dtype=np.float64)
        if a.ndim not in (1, 2) or a.shape[0] < 1:
            raise ValueError(
                f"Standardizer.fit: the data must be [N] or [N, D] with at least one row; "
                f"received shape {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            bad = np.argwhere(~np.isfinite(a))[0].tolist()
            raise ValueError(f"Standardizer.fit: the data contain NaN or inf (first at {bad})")
        mean = a.mean(axis=0)
        std = a.std(axis=0)
        std = np.where(std > 0.0, std, 1.0)
        return cls(mean=mean, std=std)

    def transform(self, a: np.ndarray) -> np.ndarray:
        """Map data to standardised units: ``(a - mean) / std``, same shape as ``a``.

        Raises:
            ValueError: the standardizer was fitted on ``[N, D]`` and ``a`` has not ``D``
                columns (NumPy would broadcast one column to ``D`` silently).
        """
        a = self._checked(a, "transform")
        return (a - self.mean) / self.std

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Map standardised values back to original units: ``z * std + mean``.

        Raises:
            ValueError: as :meth:`transform`.
        """
        z = self._checked(z, "inverse_transform")
        return z * self.std + self.mean

    def _checked(self, a: np.ndarray, owner: str) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        D = np.shape(self.mean)
        if D and np.shape(a)[-1:] != D:
            raise ValueError(
                f"Standardizer.{owner}: fitted on {D[0]} columns, so the input must be "
                f"[N, {D[0]}]; received shape {np.shape(a)}"
            )
        return a


def load_csv(
    path: str | PathLike[str],
    target: str | Sequence[str],
    features: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a regression table from a CSV file with a header row (the file is read once).

    Args:
        path: Path to the CSV file (comma-separated, first row is the header).
        target: Name of the column to predict, or a sequence of ``P`` names (several outputs,
            ``y [N, P]``).
        features: Names of the input columns, in order. ``None`` takes every column except
            the target(s), in file order.

    Returns:
        ``(X, y)``: float64 arrays of shapes ``[N, D]`` and ``[N]`` (``[N, P]`` for a
        sequence of targets, columns in its order).

    Raises:
        ValueError: If the file has no header or no data rows, if two columns share a name,
            if a named column is missing, if a target is named twice or is also a feature, or
            if a cell is empty, non-numeric, NaN or infinite; the message names the column and
            the line number.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.csv"
        >>> _ = path.write_text("x,a,b\\n0.5,1,10\\n1.5,2,20\\n")
        >>> X, Y = load_csv(path, target=["b", "a"])
        >>> X.tolist(), Y.tolist()
        ([[0.5], [1.5]], [[10.0, 1.0], [20.0, 2.0]])
    """
    targets = [target] if isinstance(target, str) else list(target)
    if not targets:
        raise ValueError(f"{path}: target names no column; received {target!r}")
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise ValueError(f"{path}: target column(s) {', '.join(map(repr, twice))} named twice")
    if features is not None and (both := [c for c in features if c in targets]):
        raise ValueError(
            f"{path}: column(s) {', '.join(map(repr, both))} given both as target and as "
            "feature; a target must not be an input"
        )
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header row")
        header = [h.strip() for h in header]
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise ValueError(
                f"{path}: duplicate column name(s) {', '.join(map(repr, dup))} in the header; "
                "every column needs its own name"
            )
        if features is None:
            features = [h for h in header if h not in targets]
        features = list(features)
        missing = [c for c in [*targets, *features] if c not in header]
        if missing:
            raise ValueError(
                f"{path}: column(s) {', '.join(map(repr, missing))} not found; "
                f"available columns: {', '.join(map(repr, header))}"
            )
        if not features:
            raise ValueError(f"{path}: no feature columns besides target {target!r}")
        cols = [header.index(c) for c in features]
        t_cols = [header.index(t) for t in targets]

        X_rows: list[list[float]] = []
        y_rows: list[list[float]] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            lineno = reader.line_num
            if len(row) != len(header):
                raise ValueError(
                    f"{path}, line {lineno}: {len(row)} fields, header has {len(header)}"
                )
            X_rows.append([_parse(row[j], header[j], path, lineno) for j in cols])
            y_rows.append([_parse(row[j], header[j], path, lineno) for j in t_cols])
    if not y_rows:
        raise ValueError(f"{path}: no data rows")
    y = np.array(y_rows, dtype=np.float64)  # [N, P]
    return np.array(X_rows, dtype=np.float64), y[:, 0] if isinstance(target, str) else y


def _parse(cell: str, column: str, path: str | PathLike[str], lineno: int) -> float:
    """Parse one cell as a finite float; reject empty, non-numeric, NaN and infinite cells."""
    text = cell.strip()
    if not text:
        raise ValueError(f"{path}, line {lineno}: empty value in column {column!r}")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"{path}, line {lineno}: non-numeric value {text!r} in column {column!r}"
        ) from None
    if math.isnan(value):
        raise ValueError(f"{path}, line {lineno}: NaN in column {column!r}")
    if math.isinf(value):
        raise ValueError(f"{path}, line {lineno}: infinite value {text!r} in column {column!r}")
    return value


def load_regression(
    data: str,
    *,
    target: str | Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """A regression data set split into training and test parts, in original units.

    ``data`` is ``"motorcycle"``, a regression workload of :func:`~ppl_dgp.datasets.load_bench`
    (its own split) or the path of a CSV file (``target`` and optional ``features`` name the
    columns; :func:`~ppl_dgp.datasets.load_csv` checks them; a sequence of ``P`` targets gives
    ``y [N, P]``, the file read once). Other data are split at random with ``test_fraction``
    held out (a seeded permutation).

    Returns:
        ``(X_train, y_train, X_test, y_test, description)``.

    Example:
        >>> X_tr, y_tr, X_te, y_te, what = load_regression("motorcycle", test_fraction=0.25)
        >>> X_tr.shape, X_te.shape, what
        ((70, 1), (24, 1), '`motorcycle` (Silverman 1985)')
    """
    if data in BENCH_NAMES:
        if data == "moons":
            raise ValueError(
                "load_regression: 'moons' is a classification set; choose a regression one"
            )
        d = load_bench(data)
        return (d["X_train"], d["Y_train"][:, 0], d["X_test"], d["Y_test"][:, 0],
                f"`{data}` (bundled benchmark split)")  # fmt: skip
    if data == "motorcycle":
        X, y = load_motorcycle()
        what = "`motorcycle` (Silverman 1985)"
    else:
        if not Path(data).is_file():
            raise ValueError(
                f"load_regression: --data {data!r} is neither a bundled data set (motorcycle, "
                f"{', '.join(n for n in BENCH_NAMES if n != 'moons')}) nor an existing CSV file"
            )
        if target is None:
            raise ValueError("load_regression: a CSV needs --target (the column to predict)")
        X, y = load_csv(data, target, features)
        if isinstance(target, str):
            what = f"`{data}` (target `{target}`)"
        else:
            pct = round(100 * test_fraction)
            what = (f"`{data}` (targets {', '.join(f'`{t}`' for t in target)}; "
                    f"{100 - pct}/{pct} split)")  # fmt: skip
    if not 0 < test_fraction < 1:
        raise ValueError(
            f"load_regression: test_fraction must be in (0, 1); received {test_fraction}"
        )
    n_test = max(1, int(round(test_fraction * len(y))))
    if len(y) - n_test < 2:
        raise ValueError(f"load_regression: {len(y)} rows are too few to split into train and test")
    perm = np.random.default_rng(seed).permutation(len(y))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return X[tr], y[tr], X[te], y[te], what


# -- the run -----------------------------------------------------------------------------------
