"""``compare``'s data and model: the split, its standardisation and the zoo program built for
it (a regression of one or several outputs, or a classifier of ``K`` classes whose GP layers
start at the median pairwise distance), with the provenance a reference is checked against."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from ppl_dgp.datasets import Standardizer, load_classification, load_csv, split
from ppl_dgp.models import MODELS
from ppl_dgp.reference import Provenance, data_digest
from ppl_dgp.report.multioutput import _load_targets
from ppl_dgp.report.tasks import _BUNDLED_CLASSES, CLASSIFICATION_DATA, _binary_only
from ppl_dgp.zoo import Program, classification_models


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """``compare``'s data and model: the split, its standardisation, the program."""

    X_tr: np.ndarray
    y_tr: np.ndarray
    X_te: np.ndarray
    y_te: np.ndarray
    what: str
    sx: Standardizer
    sy: Standardizer
    X: Any  # [N, D] standardised
    y: Any  # [N] ([N, P] for P outputs; class labels for a classifier)
    Xt: Any  # [N_test, D]
    yt: np.ndarray  # [N_test] ([N_test, P])
    model: Callable
    provenance: Provenance
    outputs: tuple[str, ...] = ()  # the P > 1 outputs' names
    num_classes: int = 0  # a classifier's K


def _prepare(
    model_name: str,
    data: str,
    *,
    target: str | None,
    features: Sequence[str] | None,
    test_fraction: float,
    seed: int,
    num_inducing: int,
    layers: int,
    command: str = "",
) -> _Prepared:
    """Split and standardise ``data`` and build the zoo model, as ``compare`` fits it (a
    classifier: :func:`_prepare_classification`)."""
    if MODELS[model_name].task == "classification":
        return _prepare_classification(
            model_name, data, target=target, features=features, test_fraction=test_fraction,
            seed=seed, num_inducing=num_inducing, layers=layers, command=command,
        )  # fmt: skip
    X_tr, y_tr, X_te, y_te, what, outputs = _load_targets(
        data, target=target, features=features, test_fraction=test_fraction, seed=seed
    )
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    X, y = jnp.asarray(sx.transform(X_tr)), jnp.asarray(sy.transform(y_tr))
    Xt, yt = jnp.asarray(sx.transform(X_te)), sy.transform(y_te)
    extra = {"num_outputs": len(outputs)} if outputs else {}  # one output: as it always was
    model = MODELS[model_name].make(np.asarray(X), num_inducing=num_inducing, layers=layers,
                                    **extra)  # fmt: skip
    prov = _provenance(model_name, data, target, features, test_fraction, seed, num_inducing,
                       layers, X, y, command)  # fmt: skip
    return _Prepared(X_tr, y_tr, X_te, y_te, what, sx, sy, X, y, Xt, yt, model, prov, outputs)


def _load_labels(
    data: str, *, target: str | None, features: Sequence[str] | None, test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, int]:  # fmt: skip
    """A classification set split into training and test parts, and its number of classes
    ``K``: a bundled one (:func:`~ppl_dgp.datasets.load_classification`) or a CSV whose
    ``target`` column holds the labels ``0, ..., K-1``.

    Raises:
        ValueError: a CSV label that is not an integer in ``0, ..., K-1``, a class of that
            range without any example, or fewer than two classes (naming ``--target``).
    """
    if data in CLASSIFICATION_DATA:
        X_tr, y_tr, X_te, y_te, what = load_classification(
            data, test_fraction=test_fraction, seed=seed
        )
        return X_tr, y_tr, X_te, y_te, what, _BUNDLED_CLASSES[data]
    if not Path(data).is_file():
        raise ValueError(
            f"--data {data!r} is neither a bundled classification set "
            f"({', '.join(CLASSIFICATION_DATA)}) nor an existing CSV file"
        )
    if target is None:
        raise ValueError("--target is needed with a CSV --data (the column of class labels)")
    X, y = load_csv(data, target, features)
    bad = np.flatnonzero((y != np.round(y)) | (y < 0))
    if bad.size:
        raise ValueError(
            f"--target {target!r} of {data}: a classifier needs integer class labels 0, 1, "
            f"..., K-1; received {y[bad[0]]:g} (data row {bad[0] + 1}; {bad.size} such rows)"
        )
    labels = y.astype(np.int64)
    K = int(labels.max()) + 1
    missing = sorted(set(range(K)) - set(labels.tolist()))
    if K < 2 or missing:
        raise ValueError(
            f"--target {target!r} of {data}: class labels must be 0, 1, ..., K-1 with K >= 2 "
            f"and an example of each; received the labels {sorted(set(labels.tolist()))}"
            + (f" (no example of {missing})" if missing else "")
        )
    pct = round(100 * test_fraction)
    what = f"`{data}` (labels `{target}`, {K} classes; {100 - pct}/{pct} split, seed {seed})"
    return (*split(X, labels, test_fraction=test_fraction, seed=seed), what, K)


def _prepare_classification(
    model_name: str, data: str, *, target: str | None, features: Sequence[str] | None,
    test_fraction: float, seed: int, num_inducing: int, layers: int, command: str = "",
) -> _Prepared:  # fmt: skip
    """``compare``'s classification data and model: the split of
    :func:`_load_labels`, the inputs standardised with the training split, the zoo model
    for ``K`` classes with its GP layers' lengthscales started at the median pairwise distance
    (:func:`_median_lengthscales`)."""
    X_tr, y_tr, X_te, y_te, what, K = _load_labels(
        data, target=target, features=features, test_fraction=test_fraction, seed=seed
    )
    if K > 2 and _binary_only(model_name):
        raise ValueError(
            f"--model {model_name!r} is a binary classifier (one logit), but --data {data!r} "
            f"has K = {K} classes; classifiers of K classes: "
            f"{', '.join(k for k in classification_models() if not _binary_only(k))}"
        )
    sx = Standardizer.fit(X_tr)
    X, Xt = jnp.asarray(sx.transform(X_tr)), jnp.asarray(sx.transform(X_te))
    y = jnp.asarray(y_tr)
    model = MODELS[model_name].make(np.asarray(X), num_inducing=num_inducing, layers=layers,
                                    num_classes=K)  # fmt: skip
    model = _median_lengthscales(model, np.asarray(X))
    prov = _provenance(model_name, data, target, features, test_fraction, seed, num_inducing,
                       layers, X, y, command)  # fmt: skip
    return _Prepared(X_tr, y_tr, X_te, y_te, what, sx, None, X, y, Xt, np.asarray(y_te), model,
                     prov, (), K)  # fmt: skip


#: Keywords of a GP program whose first layer reads the inputs (no dense layers before it).
_GP_PROGRAM_KEYWORDS = {"layers", "likelihood", "batch_size", "marginalise_output"}


def _median_lengthscales(model: Callable, X: np.ndarray) -> Callable:
    """``model`` with each GP layer's ARD lengthscales started at the median pairwise distance
    of that layer's inputs (:func:`ppl_dgp.inducing.median_distance`; an inner layer's
    outputs are its mean function of its inputs) under a LogNormal(log of it, 1) prior, as
    ``.bench/issue11_classification.py`` fits breast cancer and digits: the zoo's start of 1
    makes every kernel entry between two standardised points ``~exp(-D)`` on wide inputs (30
    features, 64 pixels), a GP that starts blind. Programs that are not GP layers reading
    ``X`` (networks, hybrids) are returned unchanged.
    """
    from ppl_dgp.inducing import median_distance
    from ppl_dgp.layers import Hyper, LayerSpec

    kw = getattr(model, "keywords", None)
    specs = (kw or {}).get("layers")
    if (not isinstance(model, Program) or not specs or set(kw) - _GP_PROGRAM_KEYWORDS
            or not all(isinstance(s, LayerSpec) for s in specs)
            or np.shape(specs[0].Z)[-1] != X.shape[1]):  # fmt: skip
        return model
    import numpyro.distributions as dist

    new, H = [], np.asarray(X)
    for i, spec in enumerate(specs):
        ls = median_distance(H)
        old = spec.lengthscales
        prior = None if old.prior is None else dist.LogNormal(float(np.log(ls)), 1.0)
        new.append(dataclasses.replace(
            spec, lengthscales=Hyper(np.full(np.shape(old.init), ls), prior=prior,
                                     fixed=old.fixed)))  # fmt: skip
        if i < len(specs) - 1:
            H = np.asarray(spec.mean_function(jnp.asarray(H)))
    return Program(model.func, *model.args, **{**kw, "layers": tuple(new)})


def _provenance(model_name: str, data: Any, target: Any, features: Any, test_fraction: float,
                seed: int, num_inducing: int, layers: int, X: Any, y: Any,
                command: Any) -> Provenance:  # fmt: skip
    """What a reference file records of the run that would use it (regression or classifier)."""
    return Provenance(
        model=model_name, data=str(data) if Path(str(data)).suffix == "" else Path(data).name,
        target=target, features=None if features is None else tuple(features),
        test_fraction=float(test_fraction), seed=int(seed), num_inducing=int(num_inducing),
        layers=int(layers), data_sha256=data_digest(X, y), command=command,
    )  # fmt: skip
