"""``run_compare``: check the model, methods and data, build each method's configuration,
resolve the reference (fitted, shipped or a saved file) and hand the run to the regression or
the classification report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from ppl_dgp.infer import METHODS, make_method
from ppl_dgp.models import MODELS
from ppl_dgp.report.classification import _compare_classification
from ppl_dgp.report.constants import AUTO, REFERENCE
from ppl_dgp.report.data import _prepare
from ppl_dgp.report.reference import _packaged, _source_label, load_reference
from ppl_dgp.report.regression import _compare_regression
from ppl_dgp.report.tasks import check_model_data
from ppl_dgp.zoo import classification_models, compare_models, regression_models

__all__ = ["run_compare"]


def run_compare(
    model_name: str,
    data: str,
    methods: Sequence[str],
    out: str | Path,
    *,
    target: str | None = None,
    features: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    num_inducing: int = 20,
    layers: int = 2,
    smoke: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    reference: str | Path | None = AUTO,
    figures: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fit ``model_name`` on ``data`` with each of ``methods``; write ``out/report.md``.

    Args:
        model_name: a regression model or classifier of the zoo (:func:`compare_models`;
            :func:`~ppl_dgp.report.tasks.models_for_data` says which suit a bundled set).
        data: a bundled data set's name or a CSV path.
        methods: registered method names; :data:`REFERENCE` (``"nuts"``) among them is the
            reference.
        out: the report's folder.
        target: a CSV's target column (a classifier's: labels ``0, ..., K-1``; several,
            ``"a,b,c"``: ``y [N, P]`` for a multi-output model).
        features: a CSV's input columns (default: all others).
        test_fraction: held-out share of the data.
        seed: data split, initialisation and sampling seed.
        num_inducing: inducing points per GP layer.
        layers: GP layers (a network: ``layers - 1`` hidden).
        smoke: the methods' ``"smoke"`` presets (else ``"compare"``).
        overrides: per-method configuration fields over the presets.
        reference: a saved MCMC posterior (``PATH.npz`` + ``PATH.json``, e.g. ``DIR/nuts.npz``
            of an earlier run, or a :func:`~ppl_dgp.report.reference.build_reference` file)
            used as the reference instead of fitting NUTS; it must have this model's sites and
            shapes, configuration, data and split (:func:`load_reference`). :data:`AUTO` (the
            default): the reference shipped in the package for this model and data when it
            matches exactly and NUTS is among ``methods`` with its ``"compare"`` preset (not
            ``smoke``, no NUTS overrides); ``None``: fit NUTS.
        figures: draw the PNGs (``False``: the tables only).
        log: progress lines.

    Returns:
        ``{"methods": {name: {...metrics...}}, "compare": DataFrame, "agreement": {...},
        "reference_check": ReferenceCheck or None, "chains": {name: {...}}, "report": Path,
        ...}``; ``chains`` has an entry per method of several chains
        (:func:`~ppl_dgp.report.chains._per_chain`: the
        :class:`~ppl_dgp.diagnostics.ChainView` and the stacking of its chains; regression
        only). A classifier's methods hold ``probs [N_test, K]``, ``test`` (accuracy, nll,
        ece, brier) and ``reliability``; a multi-output model's ``test`` adds
        ``per_output`` (:func:`ppl_dgp.predict.regression_metrics`).

    Raises:
        ValueError: unknown model or method, bad data, a model the data do not suit
            (:func:`check_model_data`; a CSV's labels outside ``0, ..., K-1``), or a reference
            that does not match the model.

    Warns:
        UnreliableReferenceWarning: the reference fails its checks (agreement not computed).
    """
    if model_name not in compare_models():
        raise ValueError(
            f"compare: unknown or unsupported model {model_name!r}; the report compares the "
            f"regression models of the zoo ({', '.join(regression_models())}) and its "
            f"classifiers ({', '.join(classification_models())})"
        )
    try:
        check_model_data(model_name, data, target)
    except ValueError as err:
        raise ValueError(f"compare: {err}") from None
    entry = MODELS[model_name]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"compare: unknown method(s) {unknown}; registered: {', '.join(METHODS)}")
    unsupported = [m for m in methods if m not in entry.methods]
    if unsupported:
        raise ValueError(f"compare: model {model_name!r} does not support {unsupported}")
    preset = "smoke" if smoke else "compare"
    configs = {
        m: make_method(m, preset=preset, **{**entry.method_overrides.get(m, {}),
                                            **(overrides or {}).get(m, {})})
        for m in methods
    }  # fmt: skip
    if not configs and reference is None:
        raise ValueError("compare: no methods given")
    d = _prepare(model_name, data, target=target, features=features,
                 test_fraction=test_fraction, seed=seed, num_inducing=num_inducing,
                 layers=layers)  # fmt: skip
    X, y, model = d.X, d.y, d.model
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ref_name, sources = REFERENCE, {}
    if isinstance(reference, str) and reference == AUTO:
        reference = None
        nuts_overrides = [v for v in (overrides or {}).get(REFERENCE, {}).values() if v is not None]
        if REFERENCE in configs and not smoke and not nuts_overrides:
            reference, why = _packaged(d)
            if reference is None and why:
                log(f"[{REFERENCE}] the packaged reference is not for this run ({why}): fitting")
    if reference is not None:
        loaded = load_reference(reference, model, X, y, model_name=model_name,
                                provenance=d.provenance)  # fmt: skip
        ref_name = loaded.name
        sources[ref_name] = _source_label(reference)
        configs = {ref_name: loaded.method, **{k: v for k, v in configs.items() if k != ref_name}}

    key = jax.random.key(seed)
    run = _compare_classification if entry.task == "classification" else _compare_regression
    return run(
        model_name, data, d, configs, methods, sources,
        loaded if reference is not None else None, ref_name, out, key, figures, log,
    )  # fmt: skip
