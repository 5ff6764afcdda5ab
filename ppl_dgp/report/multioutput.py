"""Several outputs ``y [N, P]`` in the report: the data (``linnerud`` or a CSV with
``--target a,b,c``), the predictive back in each output's units, the outputs flattened for the
agreement, the test-input labels per output, and the per-output table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from ppl_dgp.datasets import Standardizer, load_linnerud, load_regression, split
from ppl_dgp.predict import MixturePredictive
from ppl_dgp.report.constants import CI_PROB
from ppl_dgp.report.markdown import _f, _table
from ppl_dgp.report.tasks import MULTI_OUTPUT_DATA, _targets

#: Output names of the bundled multi-output sets.
_OUTPUT_NAMES = {"linnerud": ("chins", "situps", "jumps")}


def _load_targets(
    data: str, *, target: str | None, features: Sequence[str] | None, test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, tuple[str, ...]]:  # fmt: skip
    """A regression set split into training and test parts:
    :func:`~ppl_dgp.datasets.load_regression`'s (one output), the bundled multi-output
    ``linnerud``, or a CSV with several ``target`` columns (``"a,b,c"``: ``y [N, P]``). The
    last item names the ``P > 1`` outputs (``()`` for one)."""
    targets = _targets(target)
    if data in MULTI_OUTPUT_DATA:
        X, Y = load_linnerud()
        pct = round(100 * test_fraction)
        what = (f"`{data}` (Tenenhaus 1998; {Y.shape[1]} outputs; {100 - pct}/{pct} split, "
                f"seed {seed})")  # fmt: skip
        return (*split(X, Y.astype(np.float64), test_fraction=test_fraction, seed=seed), what,
                _OUTPUT_NAMES[data])  # fmt: skip
    several = len(targets) > 1 and Path(data).is_file()  # a CSV's columns, read at once
    X_tr, y_tr, X_te, y_te, what = load_regression(
        data, target=targets if several else target, features=features,
        test_fraction=test_fraction, seed=seed,
    )  # fmt: skip
    return X_tr, y_tr, X_te, y_te, what, tuple(targets) if several else ()


def _units(sy: Standardizer) -> tuple[Any, Any]:
    """``(loc, scale)`` back to original units: floats for one output, ``[P]`` arrays for
    ``P``."""
    if np.ndim(sy.mean) == 0:
        return float(sy.mean), float(sy.std)
    return np.asarray(sy.mean), np.asarray(sy.std)


def _flat_outputs(pred: MixturePredictive) -> MixturePredictive:
    """A ``P``-output predictive (``means [S, N, P]``) as ``N * P`` one-output marginals (the
    agreement is then per input and output); a one-output predictive unchanged."""
    if pred.means.ndim == 2:
        return pred
    S = pred.means.shape[0]
    return MixturePredictive(*(jnp.reshape(a, (S, -1)) for a in
                               (pred.means, pred.variances, pred.f_variances)))  # fmt: skip


def _input_labels(
    X_te: np.ndarray, idx: np.ndarray, outputs: Sequence[str] = ()
) -> list[str]:  # fmt: skip
    """``E[y | x = 12.5]`` per test input ``idx`` (``E[y | x_test[i]]`` for ``D > 1``); with
    ``P > 1`` named outputs, ``E[chins | x_test[i]]`` per input and output (input-major, the
    order of ``means[:, idx].reshape(S, -1)``)."""
    if outputs:
        return [f"E[{o} | x_test[{i}]]" for i in idx for o in outputs]
    if X_te.shape[1] == 1:
        return [f"E[y | x = {X_te[i, 0]:.3g}]" for i in idx]
    return [f"E[y | x_test[{i}]]" for i in idx]


def _per_output_section(res: dict, outputs: Sequence[str]) -> str:
    """The test metrics of each output (:func:`ppl_dgp.predict.regression_metrics`)."""
    s = [
        "\nPer output (`ppl_dgp.predict.regression_metrics`: RMSE, MLPD of the output's "
        f"marginal mixture, and the coverage of its central 50%, {CI_PROB:.0%} and 95% "
        "intervals; original units):\n\n"
    ]
    s.append(_table(
        ["method", "output", "RMSE", "MLPD", "50% coverage", f"{CI_PROB:.0%} coverage",
         "95% coverage"],
        [[k, f"`{o}`", _f(m["rmse"][j]), _f(m["mlpd"][j]),
          *(_f(m[f"coverage_{p:g}"][j], ".2f") for p in (0.5, CI_PROB, 0.95))]
         for k, r in res.items() for m in [r["test"]["per_output"]]
         for j, o in enumerate(outputs)],
    ))  # fmt: skip
    return "".join(s)
