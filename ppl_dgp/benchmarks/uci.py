"""UCI regression harness, Salimbeni & Deisenroth's protocol: ``ppl-dgp bench uci``.

Data, nothing downloaded:

- a folder in the layout of the standard UCI benchmark (Hernández-Lobato & Adams 2015; Gal &
  Ghahramani 2016's ``UCI_Datasets/<name>/data``): ``data.txt`` (whitespace-separated rows),
  ``index_features.txt``, ``index_target.txt`` (0-based columns), ``index_train_<i>.txt`` and
  ``index_test_<i>.txt`` (0-based rows of split ``i``);
- or a CSV file with a header row and a ``target`` column, split 90/10 by a seeded permutation
  per split (split ``i`` uses ``numpy.random.default_rng([seed, i])``), as bayesian_benchmarks
  does with its own seeds. The bundled ``concrete.csv`` is the example.

Per split, model and method: ``X`` and ``y`` standardised on the training part, the zoo model
built with ``M`` inducing points (k-means on the training inputs), the method fitted, the
mixture predictive (``S`` components or draws) mapped back to original units, and its test
log-likelihood (mean log predictive density) and RMSE there. One JSON object per run, then a
table of mean +- standard error over the splits.

References:
    Salimbeni & Deisenroth (2017), section 5 (M = 100, S = 100, 20,000 Adam steps at 0.01);
    Hernández-Lobato & Adams (2015) for the splits.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from ppl_dgp.datasets import Standardizer, load_csv
from ppl_dgp.infer import METHODS, fit, make_method
from ppl_dgp.models import MODELS
from ppl_dgp.predictive import predict

__all__ = ["Split", "csv_splits", "main", "read_uci", "run_split", "summary_table"]

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # X_train, y_train, X_test, y_test


def _ints(path: Path) -> np.ndarray:
    return np.atleast_1d(np.loadtxt(path, dtype=np.int64))


def read_uci(folder: str | os.PathLike, num_splits: int | None = None) -> list[Split]:
    """The splits of a folder in the standard UCI layout (or its ``data/`` subfolder).

    Raises:
        ValueError: a file of the layout is missing, an index is out of range, or no split
            exists; the message names the folder and the file.
    """
    root = Path(folder)
    if not (root / "data.txt").is_file() and (root / "data" / "data.txt").is_file():
        root = root / "data"
    for name in ("data.txt", "index_features.txt", "index_target.txt"):
        if not (root / name).is_file():
            raise ValueError(f"read_uci: {root} has no {name} (the standard UCI layout)")
    data = np.loadtxt(root / "data.txt", ndmin=2)
    features, target = _ints(root / "index_features.txt"), int(_ints(root / "index_target.txt")[0])
    D = data.shape[1]
    if not (0 <= target < D) or np.any((features < 0) | (features >= D)):
        raise ValueError(f"read_uci: column indices out of range [0, {D}) in {root}")
    X, y = data[:, features], data[:, target]
    splits = []
    i = 0
    while (root / f"index_train_{i}.txt").is_file() and (num_splits is None or i < num_splits):
        tr, te = _ints(root / f"index_train_{i}.txt"), _ints(root / f"index_test_{i}.txt")
        for part in (tr, te):
            if np.any((part < 0) | (part >= len(y))):
                raise ValueError(f"read_uci: split {i} of {root} has a row outside [0, {len(y)})")
        splits.append((X[tr], y[tr], X[te], y[te]))
        i += 1
    if not splits:
        raise ValueError(f"read_uci: {root} has no index_train_0.txt")
    return splits


def csv_splits(
    path: str | os.PathLike,
    target: str,
    num_splits: int,
    *,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> list[Split]:
    """``num_splits`` seeded train/test splits of a CSV file (:func:`load_csv` checks it)."""
    if not isinstance(num_splits, int) or num_splits < 1:
        raise ValueError(f"csv_splits: num_splits must be an int >= 1; received {num_splits!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"csv_splits: test_fraction must be in (0, 1); received {test_fraction}")
    X, y = load_csv(path, target)
    n_test = max(1, int(round(test_fraction * len(y))))
    out = []
    for i in range(num_splits):
        perm = np.random.default_rng([seed, i]).permutation(len(y))
        te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        out.append((X[tr], y[tr], X[te], y[te]))
    return out


def run_split(
    split: Split,
    model_name: str,
    method_name: str,
    *,
    num_inducing: int = 100,
    num_samples: int = 100,
    seed: int = 0,
    **method_settings: object,
) -> dict:
    """Fit and score one split; figures in the original units of ``y``.

    Returns:
        ``{"model", "method", "test_loglik", "rmse", "fit_seconds", "predict_seconds",
        "compile_seconds", "n_train", "n_test"}``.
    """
    X_tr, y_tr, X_te, y_te = split
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    Xs, ys = sx.transform(X_tr), sy.transform(y_tr)
    entry = MODELS[model_name]
    if entry.task != "regression":
        raise ValueError(f"run_split: model {model_name!r} is not a regression model")
    model = entry.make(Xs, num_inducing=num_inducing)
    # a method's "uci" preset when it has one (SGHMC: Havasi et al.'s schedule), else defaults
    presets = getattr(METHODS[method_name], "presets", {}) if method_name in METHODS else {}
    method = make_method(method_name, preset="uci" if "uci" in presets else None,
                         **method_settings)  # fmt: skip
    key_fit, key_pred = jax.random.split(jax.random.key(seed))
    t = time.perf_counter()
    post = fit(method, key_fit, model, Xs, ys)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    pred = predict(key_pred, model, post, sx.transform(X_te), num_samples=num_samples)
    pred = pred.rescale(float(sy.mean), float(sy.std))
    m = pred.metrics(y_te)
    return {
        "model": model_name,
        "method": method_name,
        "test_loglik": m["mlpd"],
        "rmse": m["rmse"],
        "fit_seconds": fit_s,
        "predict_seconds": time.perf_counter() - t,
        "compile_seconds": post.timings.get("compile_seconds"),
        "n_train": len(y_tr),
        "n_test": len(y_te),
    }


def summary_table(rows: Sequence[dict]) -> str:
    """Mean +- standard error over the splits, one line per (model, method)."""
    lines = [
        f"{'model':<16} {'method':<9} {'splits':>6} {'test log-lik':>18} {'RMSE':>18}",
    ]
    keys = sorted({(r["model"], r["method"]) for r in rows})
    for model, method in keys:
        sel = [r for r in rows if (r["model"], r["method"]) == (model, method)]
        cells = []
        for field in ("test_loglik", "rmse"):
            v = np.array([r[field] for r in sel], dtype=float)
            se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
            cells.append(f"{v.mean():>9.3f} +- {se:<6.3f}")
        lines.append(f"{model:<16} {method:<9} {len(sel):>6} {cells[0]:>18} {cells[1]:>18}")
    return "\n".join(lines)


def main(
    data: str,
    *,
    target: str | None = None,
    models: Sequence[str] = ("dgp",),
    methods: Sequence[str] = ("svi",),
    num_splits: int = 3,
    num_inducing: int = 100,
    num_samples: int = 100,
    seed: int = 0,
    **method_settings: object,
) -> list[dict]:
    """Every split x model x method of ``data`` (a UCI folder or a CSV with ``target``);
    prints one JSON line per run and then :func:`summary_table`."""
    os.environ.setdefault("CI", "1")  # no progress bars between the printed rows
    for m in models:
        if m not in MODELS:
            raise ValueError(f"bench uci: unknown model {m!r}; choose from {sorted(MODELS)}")
    if Path(data).is_dir():
        splits = read_uci(data, num_splits)
    elif target is None:
        raise ValueError("bench uci: a CSV file needs --target (the column to predict)")
    else:
        splits = csv_splits(data, target, num_splits, seed=seed)
    rows = []
    for i, split in enumerate(splits):
        for m in models:
            for k in methods:
                row = run_split(split, m, k, num_inducing=num_inducing, num_samples=num_samples,
                                seed=seed + i, **method_settings)  # fmt: skip
                row = {"split": i, **row}
                rows.append(row)
                print(json.dumps({k2: round(v, 4) if isinstance(v, float) else v
                                  for k2, v in row.items()}), flush=True)  # fmt: skip
    print(summary_table(rows), flush=True)
    return rows
