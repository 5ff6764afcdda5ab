"""``ppl-dgp compare``: fit one model with several methods and write a comparison report.

For each method (a name registered in :data:`ppl_dgp.infer.METHODS`) the command fits the
model to the training split (standardised), converts the Posterior to an ArviZ DataTree
(:mod:`ppl_dgp.diagnostics`) and saves it as ``DIR/{method}.nc``, predicts the held-out
split, and computes PSIS-LOO. ``DIR/report.md`` collects timings, test metrics, LOO and
``compare``, agreement with the NUTS reference, the MCMC summary and diagnostics warnings; the
figures are PNGs beside it.

**The reference.** With ``nuts`` among the methods, its fit is the reference, saved as
``DIR/nuts.npz`` + ``DIR/nuts.json`` (:meth:`~ppl_dgp.posterior.Posterior.save`); with
``reference=PATH`` a saved MCMC posterior (a long run, once) is loaded instead of fitting NUTS,
after checking that its sites and shapes are the model's. Every other method is scored against
it (:mod:`ppl_dgp.agreement`: per site, and on the predictive distribution at the test inputs)
only when the reference passes its own checks (:func:`ppl_dgp.diagnostics.reference_check`:
R-hat and bulk ESS of every hyperparameter and of the predictive at the test inputs, no
divergences); otherwise the report and an :class:`UnreliableReferenceWarning` say which check
failed and what to run.

**Chains side by side.** For every method of several chains (NUTS, HMC, SGHMC) the report
has a "Chains of ..." section (:func:`ppl_dgp.diagnostics.chain_view`): when the chains
disagree, each chain's means of the hyperparameters and of the predictive mean at a few test
inputs, R-hat across chains and each chain's own split-R-hat, which tells chains stuck in
separate modes (each stationary) from chains still drifting (warm-up unfinished); and the
stacking of the chains (:mod:`ppl_dgp.stacking`, Yao, Vehtari & Gelman 2022): weights
maximising the PSIS-LOO log score of the chain mixture, and the stacked predictive's test MLPD.

**Beyond one Gaussian output.** A classifier of the zoo (:func:`classification_models`, on
``breast_cancer``, ``digits``, ``moons`` or a CSV of labels ``0, ..., K-1``) is scored by the
accuracy, NLL, ECE and Brier score of its predictive class probabilities, with a reliability
diagram, and against the NUTS reference (behind the same gate) by ``|p - p_NUTS|``; a
multi-output regression (:func:`multi_output_models`, on ``linnerud`` or a CSV with
``target="a,b,c"``) gets RMSE, MLPD and coverage per output and a panel of bands per output.
A model the data do not suit is refused by name (:func:`check_model_data`).

Methods come from the method registry (their ``"compare"`` and ``"smoke"`` presets), models
from the zoo registry (:data:`ppl_dgp.models.MODELS`: its builder and per-method overrides): a
method or model registered there is in the report with no edit here. The computation
(:func:`run_compare`) returns the results; :func:`_markdown` and :func:`_figures` render them.

Example (the CLI's ``ppl-dgp compare``; a smoke-size run of one method here):

    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> result = run_compare("svgp", "motorcycle", ["map"], out, smoke=True, log=lambda _: None,
    ...                      overrides={"map": {"num_steps": 3000, "learning_rate": 0.05}})
    >>> result["report"].name, sorted(result["methods"])
    ('report.md', ['map'])
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl_dgp import agreement, calibration, diagnostics, stacking
from ppl_dgp.datasets import (
    BENCH_NAMES,
    CLASSIFICATION_NAMES,
    Standardizer,
    load_classification,
    load_csv,
    load_linnerud,
    load_regression,
    split,
)
from ppl_dgp.infer import METHODS, fit, make_method
from ppl_dgp.infer.core import progress_enabled
from ppl_dgp.models import MODELS
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import MixturePredictive, regression_metrics
from ppl_dgp.predictive import predict, predict_distribution, predict_proba, spread
from ppl_dgp.reference import (
    PACKAGED,
    REFERENCE_NUTS,
    Provenance,
    check_provenance,
    data_digest,
    read_provenance,
    reference_stem,
    write_provenance,
)
from ppl_dgp.zoo import Program, classification_models, compare_models

__all__ = [
    "AUTO",
    "DEFAULT_METHODS",
    "REFERENCE",
    "UnreliableReferenceWarning",
    "build_reference",
    "load_reference",
    "regression_models",
    "run_compare",
]

#: The default ``--methods``.
DEFAULT_METHODS = ("svi", "nuts", "sghmc", "laplace", "map", "ensemble")
CI_PROB = 0.9
#: PSIS-LOO fits a Pareto tail to the largest importance ratios: with fewer draws (a MAP, a
#: small ensemble) there is no tail to fit, and the report says so instead.
MIN_LOO_DRAWS = 50
#: Fewest draws a method needs for a density in the marginals plot (else a line per draw).
MIN_PLOT_DRAWS = 10
#: Fewest draws per chain for the trace and rank figures of a method of several chains.
MIN_CHAIN_PLOT_DRAWS = 20
#: Components of each method's mixture predictive at the test inputs.
PREDICTIVE_COMPONENTS = 200
#: The method whose fit is the reference the others are scored against.
REFERENCE = "nuts"
#: ``build_reference``'s fit key: ``fold_in(key(seed), _REFERENCE_KEY)`` (the shipped file's).
_REFERENCE_KEY = 1
#: ``reference=AUTO``: the reference shipped in the package when it was fitted on exactly this
#: run's model and data (its provenance and model configuration, :mod:`ppl_dgp.reference`),
#: else NUTS is fitted.
AUTO = "auto"
#: Test inputs (evenly spread over the test split) at which the reference's predictive must
#: pass R-hat and ESS (at least :data:`ppl_dgp.diagnostics.MIN_PREDICTIVE_INPUTS`). The
#: quantity checked is the predictive mean of ``y`` given each draw: a component of
#: :func:`~ppl_dgp.predictive.predict` with every draw (chain-major; a DGP's inner layers are
#: one sample per draw).
REFERENCE_PREDICTIVE_INPUTS = 10
#: Test inputs (evenly spread) whose predictive mean the per-chain view shows chain by chain.
CHAIN_VIEW_INPUTS = 5
#: Equal-width confidence bins of a classifier's ECE and reliability diagram
#: (:func:`ppl_dgp.calibration.reliability_curve`; the calibration module's default).
ECE_BINS = 10
#: Bundled data sets by task (a CSV suits any model: its ``target`` decides).
REGRESSION_DATA = ("motorcycle", *(n for n in BENCH_NAMES if n != "moons"))
MULTI_OUTPUT_DATA = ("linnerud",)
CLASSIFICATION_DATA = CLASSIFICATION_NAMES
#: Classes of the bundled classification sets, outputs of the bundled multi-output ones.
_BUNDLED_CLASSES = {"breast_cancer": 2, "digits": 10, "moons": 2}
_BUNDLED_OUTPUTS = {"linnerud": 3}


class UnreliableReferenceWarning(UserWarning):
    """The reference posterior fails its own checks: no agreement is computed against it."""


class UnverifiedReferenceWarning(UserWarning):
    """A loaded reference has no provenance file: its data and split cannot be checked."""


def regression_models() -> list[str]:
    """Zoo models the report can compare (a Gaussian likelihood and the mixture predictive)."""
    return [k for k, m in MODELS.items() if m.task == "regression" and "mixture" in m.predictives]


def _build_default(model_name: str, option: str) -> Any:
    """The default of a builder option of a zoo model (``inspect.Parameter.empty``: none, and
    ``None`` when the builder does not take the option)."""
    p = inspect.signature(MODELS[model_name].build).parameters.get(option)
    return None if p is None else p.default


def multi_output_models() -> list[str]:
    """Regression models of ``y [N, P]`` (their builder takes ``num_outputs``)."""
    return [k for k in regression_models() if _build_default(k, "num_outputs") is not None]


def _multi_output_only(model_name: str) -> bool:
    """A model built for ``P >= 2`` outputs by default (``dgp_multioutput``), not for one."""
    default = _build_default(model_name, "num_outputs")
    return isinstance(default, int) and default > 1


def _binary_only(model_name: str) -> bool:
    """A classifier of two classes only (one logit: its builder takes no ``num_classes``)."""
    return "num_classes" not in inspect.signature(MODELS[model_name].build).parameters


def models_for_data(data: str, num_classes: int | None = None) -> list[str]:
    """The zoo models ``compare`` can fit to a bundled set (every one for a CSV, whose
    ``--target`` decides), for the CLI's listing and the mismatch messages."""
    if data in CLASSIFICATION_DATA:
        K = num_classes if num_classes is not None else _BUNDLED_CLASSES.get(data, 2)
        return [k for k in classification_models() if K == 2 or not _binary_only(k)]
    if data in MULTI_OUTPUT_DATA:
        return multi_output_models()
    if data in REGRESSION_DATA:
        return [k for k in regression_models() if not _multi_output_only(k)]
    return compare_models()


def check_model_data(model_name: str, data: str, target: str | None = None) -> None:
    """Refuse a model and data that do not go together, naming ``--model``, ``--data`` and
    ``--target`` and what each expects (a classifier on a regression set, a multi-output model
    on one output, a binary classifier on more classes). Labels of a CSV are checked when
    read (:func:`_load_labels`).

    Raises:
        ValueError: unknown model, or a model the data does not suit.
    """
    if model_name not in compare_models():
        raise ValueError(
            f"--model {model_name!r} is not a model compare takes; regression: "
            f"{', '.join(regression_models())}; classification: "
            f"{', '.join(classification_models())}"
        )
    task = MODELS[model_name].task
    if data in CLASSIFICATION_DATA and task != "classification":
        raise ValueError(
            f"--model {model_name!r} is a {task} model, but --data {data!r} is a "
            f"classification set (integer labels); its models: "
            f"{', '.join(models_for_data(data))}"
        )
    if data in (*REGRESSION_DATA, *MULTI_OUTPUT_DATA) and task == "classification":
        raise ValueError(
            f"--model {model_name!r} is a classifier, but --data {data!r} is a regression set "
            f"(real-valued targets); its models: {', '.join(models_for_data(data))}; "
            f"classification sets: {', '.join(CLASSIFICATION_DATA)} or a CSV whose --target "
            "holds labels 0, ..., K-1"
        )
    if data in CLASSIFICATION_DATA and _binary_only(model_name):
        K = _BUNDLED_CLASSES.get(data, 2)
        if K > 2:
            raise ValueError(
                f"--model {model_name!r} is a binary classifier (one logit), but --data "
                f"{data!r} has {K} classes; its models: {', '.join(models_for_data(data))}"
            )
    targets = _targets(target)
    P = _BUNDLED_OUTPUTS.get(data, len(targets) if targets else 1)
    if task == "regression" and P > 1 and model_name not in multi_output_models():
        raise ValueError(
            f"--model {model_name!r} has one output, but --data {data!r}"
            + (f" --target {target!r}" if targets else "")
            + f" has P = {P} outputs; multi-output models: {', '.join(multi_output_models())}"
        )
    if task == "regression" and P == 1 and _multi_output_only(model_name):
        raise ValueError(
            f"--model {model_name!r} needs y [N, P] with P >= 2 outputs, but --data {data!r}"
            + (f" --target {target!r}" if targets else "")
            + " has one; multi-output data: "
            + ", ".join(MULTI_OUTPUT_DATA)
            + ", or a CSV with several --target columns (--target a,b,c)"
        )
    if task == "classification" and len(targets) > 1:
        raise ValueError(
            f"--target {target!r}: a classifier takes one label column; received {len(targets)}"
        )


def _targets(target: str | None) -> list[str]:
    """``--target a,b,c`` as column names (several: a multi-output regression)."""
    return [] if target is None else [t.strip() for t in str(target).split(",") if t.strip()]


def _progress(iterable: Any, desc: str) -> Any:
    if not progress_enabled(None):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="method")


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
            :func:`models_for_data` says which suit a bundled set).
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
            of an earlier run, or a :func:`build_reference` file) used as the reference instead
            of fitting NUTS; it must have this model's sites and shapes, configuration, data
            and split (:func:`load_reference`). :data:`AUTO` (the default): the reference
            shipped in the package for this model and data when it matches exactly and NUTS
            is among ``methods`` with its ``"compare"`` preset (not ``smoke``, no NUTS
            overrides); ``None``: fit NUTS.
        figures: draw the PNGs (``False``: the tables only).
        log: progress lines.

    Returns:
        ``{"methods": {name: {...metrics...}}, "compare": DataFrame, "agreement": {...},
        "reference_check": ReferenceCheck or None, "chains": {name: {...}}, "report": Path,
        ...}``; ``chains`` has an entry per method of several chains (:func:`_per_chain`: the
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
    X_tr, y_tr, X_te, y_te, what = d.X_tr, d.y_tr, d.X_te, d.y_te, d.what
    sx, sy, X, y, Xt, yt, model = d.sx, d.sy, d.X, d.y, d.Xt, d.yt, d.model
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
    if entry.task == "classification":
        return _compare_classification(
            model_name, data, d, configs, methods, sources,
            loaded if reference is not None else None, ref_name, out, key, figures, log,
        )  # fmt: skip
    loc, scale = _units(sy)
    res: dict[str, dict[str, Any]] = {}
    ref_means = None  # [chain * draw, N_test]: the reference's predictive mean per draw
    for name in _progress(list(configs), "compare"):
        i = list(methods).index(name) if name in methods else len(methods)  # stable keys
        t0 = time.perf_counter()
        if name in sources:
            log(f"[{name}] reference loaded from {sources[name]}")
            post = loaded
        else:
            log(f"[{name}] fitting {type(configs[name]).__name__} ...")
            post = fit(configs[name], jax.random.fold_in(key, i), model, X, y)
            if name == ref_name:
                npz, _ = post.save(out / name)
                write_provenance(npz, d.provenance)
                log(f"[{name}] saved to {npz} (reuse it with reference={str(npz)!r})")
        wall = time.perf_counter() - t0
        dt = diagnostics.to_datatree(
            _with_site_log_likelihood(post) if d.outputs else post,
            model,
            X,
            y,
            rng_key=jax.random.fold_in(key, 100 + i),
        )
        diagnostics.save_datatree(dt, out / f"{name}.nc")
        k_pred = jax.random.fold_in(key, 200 + i)
        if name == ref_name or post.num_chains > 1:
            # every draw: the reference's checks and the per-chain view need the chains
            per_draw = predict(
                k_pred, model, post, Xt, num_samples=post.num_chains * post.num_draws
            )
            pred = _subset(per_draw, spread(per_draw.means.shape[0], PREDICTIVE_COMPONENTS))
            if name == ref_name:
                ref_means = np.asarray(per_draw.means)
            components, drawn = per_draw, np.arange(post.num_chains * post.num_draws)
        else:
            pred = predict(k_pred, model, post, Xt, num_samples=PREDICTIVE_COMPONENTS)
            components = pred
            drawn = spread(post.num_chains * post.num_draws, PREDICTIVE_COMPONENTS)
        # the chain of each component (draws are taken chain-major); none when the
        # components are not one per draw (a predictive that integrates u out)
        comp_chain = (drawn // post.num_draws if len(drawn) == components.means.shape[0]
                      else None)  # fmt: skip
        enough = post.num_chains * post.num_draws >= MIN_LOO_DRAWS
        elpd = diagnostics.loo(dt) if enough else None
        m = pred.rescale(loc, scale).metrics(jnp.asarray(y_te))
        res[name] = {
            "posterior": post,
            "source": sources.get(name),
            "datatree": dt,
            "pred": pred,
            "components": components,
            "component_chain": comp_chain,
            "loo": elpd,
            "wall_seconds": wall,
            "test": {
                "rmse": m["rmse"],
                "mlpd": m["mlpd"],
                "coverage": calibration.coverage_table(pred, yt, (0.5, CI_PROB, 0.95)),
                **(
                    {
                        "per_output": regression_metrics(
                            pred.rescale(loc, scale), y_te, (0.5, CI_PROB, 0.95)
                        )
                    }
                    if d.outputs
                    else {}
                ),
            },
            "warnings": diagnostics.diagnostic_warnings(
                dt, elpd, **({} if elpd is None else {"khat_max": float(elpd.good_k)})
            ),
        }
        log(f"[{name}] {wall:.1f} s, test RMSE {res[name]['test']['rmse']:.3g}")
    dts = {k: r["datatree"] for k, r in res.items() if r["loo"] is not None}
    table = diagnostics.compare(dts) if len(dts) > 1 else None
    hyper = _hyper_sites(res[next(iter(res))]["posterior"])
    few = spread(len(X_te), CHAIN_VIEW_INPUTS)
    chains = {
        k: c
        for k, r in res.items()
        if (c := _per_chain(r, hyper, few, _input_labels(X_te, few, d.outputs), y_te, sy))
        is not None
    }
    agree, gate = {}, None
    if ref_name in res:
        ref = res[ref_name]
        idx = spread(len(X_te), REFERENCE_PREDICTIVE_INPUTS)
        labels = _input_labels(X_te, idx, d.outputs)
        C, D = ref["posterior"].num_chains, ref["posterior"].num_draws
        check = diagnostics.reference_check(
            ref["datatree"], hyper, predictive=ref_means[:, idx].reshape(C, D, -1),
            predictive_labels=labels,
        )  # fmt: skip
        gate = {"name": ref_name, "check": check, "source": ref["source"],
                "advice": _advice(check, ref["posterior"], model_name, data,
                                  chains.get(ref_name, {}).get("view"))}  # fmt: skip
        if check.ok:
            for name, r in res.items():
                if name == ref_name:
                    continue
                rows = agreement.marginal_discrepancies(
                    ref["posterior"].draws, r["posterior"].draws
                )
                agree[name] = {
                    "sites": agreement.site_agreement(rows),
                    "predictive": agreement.predictive_discrepancies(
                        _flat_outputs(r["pred"]),
                        _flat_outputs(ref["pred"]),
                        np.ravel(yt),
                        prob=CI_PROB,
                    ),  # fmt: skip
                }
        else:
            warnings.warn(
                f"compare: no agreement with {ref_name} computed: the reference fails its own "
                f"checks ({'; '.join(check.reasons)}). {' '.join(gate['advice'])}",
                UnreliableReferenceWarning,
                stacklevel=2,
            )
    figures = _figures(res, hyper, out, X_tr, y_tr, sx, sy, model, key, d) if figures else []
    report = out / "report.md"
    report.write_text(
        _markdown(model_name, what, X_tr, X_te, configs, res, table, agree, gate, hyper, figures,
                  chains, d.outputs)
    )  # fmt: skip
    log(f"Wrote {report}")
    return {"methods": res, "compare": table, "agreement": agree, "report": report,
            "reference_check": None if gate is None else gate["check"], "figures": figures,
            "summarised_sites": hyper, "chains": chains}  # fmt: skip


# -- classifiers ------------------------------------------------------------------------------


def _compare_classification(
    model_name: str, data: str, d: _Prepared, configs: dict, methods: Sequence[str],
    sources: dict, loaded: Posterior | None, ref_name: str, out: Path, key: Any,
    figures: bool, log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """:func:`run_compare` for a classifier: per method the test accuracy, NLL, ECE and Brier
    score of its predictive class probabilities (:func:`ppl_dgp.predictive.predict_proba`;
    :func:`ppl_dgp.calibration.classification_metrics`, :data:`ECE_BINS` bins), its
    reliability curve, PSIS-LOO where it has draws, and, when the NUTS reference passes its
    checks (R-hat and ESS of the hyperparameters and of the class probability at
    :data:`REFERENCE_PREDICTIVE_INPUTS` test inputs, no divergences), the mean and largest
    ``|p_method - p_NUTS|`` over the test points and classes."""
    X, y, Xt, yt, model, K = d.X, d.y, d.Xt, d.yt, d.model, d.num_classes
    res: dict[str, dict[str, Any]] = {}
    ref_probs = None  # [chain * draw, N_test, K]: the reference's class probabilities per draw
    for name in _progress(list(configs), "compare"):
        i = list(methods).index(name) if name in methods else len(methods)  # stable keys
        t0 = time.perf_counter()
        if name in sources:
            log(f"[{name}] reference loaded from {sources[name]}")
            post = loaded
        else:
            log(f"[{name}] fitting {type(configs[name]).__name__} ...")
            post = fit(configs[name], jax.random.fold_in(key, i), model, X, y)
            if name == ref_name:
                npz, _ = post.save(out / name)
                write_provenance(npz, d.provenance)
                log(f"[{name}] saved to {npz} (reuse it with reference={str(npz)!r})")
        wall = time.perf_counter() - t0
        dt = diagnostics.to_datatree(_with_site_log_likelihood(post), model, X, y,
                                     rng_key=jax.random.fold_in(key, 100 + i))  # fmt: skip
        diagnostics.save_datatree(dt, out / f"{name}.nc")
        k_pred = jax.random.fold_in(key, 200 + i)
        S = post.num_chains * post.num_draws
        if name == ref_name:  # every draw: the reference's checks need the chains
            ref_probs = _class_probs_per_draw(k_pred, model, post, Xt, K)
            probs = ref_probs.mean(axis=0)
        else:
            probs = _as_classes(
                predict_proba(model, post, Xt, rng_key=k_pred, num_samples=PREDICTIVE_COMPONENTS),
                K,
            )  # fmt: skip
        elpd = diagnostics.loo(dt) if S >= MIN_LOO_DRAWS else None
        res[name] = {
            "posterior": post,
            "source": sources.get(name),
            "datatree": dt,
            "probs": probs,
            "loo": elpd,
            "wall_seconds": wall,
            "test": calibration.classification_metrics(probs, yt, num_bins=ECE_BINS),
            "reliability": calibration.reliability_curve(probs, yt, ECE_BINS),
            "warnings": diagnostics.diagnostic_warnings(
                dt, elpd, **({} if elpd is None else {"khat_max": float(elpd.good_k)})
            ),
        }
        log(f"[{name}] {wall:.1f} s, test accuracy {res[name]['test']['accuracy']:.3f}")
    dts = {k: r["datatree"] for k, r in res.items() if r["loo"] is not None}
    table = diagnostics.compare(dts) if len(dts) > 1 else None
    hyper = _hyper_sites(res[next(iter(res))]["posterior"])
    agree, gate = {}, None
    if ref_name in res:
        ref = res[ref_name]
        idx = spread(len(d.X_te), REFERENCE_PREDICTIVE_INPUTS)
        C, D = ref["posterior"].num_chains, ref["posterior"].num_draws
        top = ref["probs"][idx].argmax(axis=1)  # the class the reference predicts there
        check = diagnostics.reference_check(
            ref["datatree"], hyper,
            predictive=ref_probs[:, idx, top].reshape(C, D, -1),  # [C, D, inputs]
            predictive_labels=[f"p(y = {k} | x_test[{j}])" for j, k in zip(idx, top,
                                                                             strict=True)],
        )  # fmt: skip
        gate = {"name": ref_name, "check": check, "source": ref["source"],
                "advice": _advice(check, ref["posterior"], model_name, data,
                                  reference_command=False)}  # fmt: skip
        if check.ok:
            for name, r in res.items():
                if name != ref_name:
                    gap = np.abs(r["probs"] - ref["probs"])  # [N_test, K]
                    agree[name] = {
                        "mean_abs": float(gap.mean()), "max_abs": float(gap.max()),
                        "same_class": float(np.mean(
                            r["probs"].argmax(1) == ref["probs"].argmax(1))),
                    }  # fmt: skip
        else:
            warnings.warn(
                f"compare: no agreement with {ref_name} computed: the reference fails its own "
                f"checks ({'; '.join(check.reasons)}). {' '.join(gate['advice'])}",
                UnreliableReferenceWarning,
                stacklevel=3,
            )
    files = []
    if figures:
        from ppl_dgp import plotting

        files = _posterior_figures(res, hyper, out)
        plotting.plot_reliability({k: r["reliability"] for k, r in res.items()},
                                  out / "reliability.png")  # fmt: skip
        files += ["reliability.png", *_fit_figures(res, out)]
    report = out / "report.md"
    report.write_text(_markdown_classification(model_name, d, configs, res, table, agree, gate,
                                               hyper, files))  # fmt: skip
    log(f"Wrote {report}")
    return {"methods": res, "compare": table, "agreement": agree, "report": report,
            "reference_check": None if gate is None else gate["check"], "figures": files,
            "summarised_sites": hyper, "chains": {}}  # fmt: skip


def _as_classes(p: Any, K: int) -> np.ndarray:
    """Class probabilities ``[N, K]`` from ``p(y = 1) [N]`` (``K = 2``) or ``[N, K]``."""
    p = np.asarray(p, dtype=np.float64)
    return np.stack([1.0 - p, p], axis=-1) if p.ndim == 1 or p.shape[-1] != K else p


def _class_probs_per_draw(key: Any, model: Callable, post: Posterior, Xt: Any, K: int):
    """``p(y = k | x, theta_s)`` per draw ``s`` (all draws, chain-major), ``[S, N, K]``: the
    components of :func:`~ppl_dgp.predictive.predict_distribution` (for a marginalised last
    layer the exact marginal given the draw)."""
    S = post.num_chains * post.num_draws
    mix = predict_distribution(key, model, post, Xt, num_samples=S)
    base = mix.components
    base = getattr(base, "base_dist", base)
    return _as_classes(np.asarray(base.probs), K)


class _SiteLogLikelihood:
    """Stands in for the approximation of a GP classifier's or a multi-output GP's posterior
    while :func:`~ppl_dgp.diagnostics.to_datatree` computes its pointwise log-likelihood by
    :func:`_site_log_likelihood`: ``diagnostics.pointwise_log_likelihood``'s GP-layer
    estimator and the Laplace GLM's are for one Gaussian output. A Laplace posterior is then
    scored by the program's likelihood at its draws of ``u`` (not linearised)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def pointwise_log_likelihood(self, key, model, posterior, X, y, *, likelihood_site="y",
                                 **model_kwargs):  # fmt: skip
        del model_kwargs  # batch_size=None: the whole training set
        return _site_log_likelihood(key, model, posterior, X, y, site=likelihood_site)


def _with_site_log_likelihood(post: Posterior) -> Posterior:
    """``post`` for :func:`~ppl_dgp.diagnostics.to_datatree` of a classifier or multi-output
    model with GP layers (its draws have ``{layer}.u``); other posteriors unchanged (the
    DataTree's other groups read the draws, statistics and traces only)."""
    if not any(k.endswith(".u") for k in post.draws):
        return post
    return dataclasses.replace(post, approx=_SiteLogLikelihood(post.approx))


def _site_log_likelihood(
    key: Any, model: Callable, post: Posterior, X: Any, y: Any, *, site: str = "y",
    num_eps: int = 8, block: int = 256,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``log p(y_n | theta_s)`` ``(chain, draw, N)`` and a replicate ``y_rep`` ``(chain,
    draw, N, ...)`` per draw ``s`` and datum ``n`` for any likelihood of a GP-layer program
    (a multi-output ``y_n [P]`` is one datum).

    .. math:: \\log p(y_n \\mid \\theta_s) \\approx \\log \\frac1K \\sum_{k=1}^K
        p(y_n \\mid \\theta_s, \\epsilon_{nk})

    The draw's global sites (``u`` included: SVI's draws of ``q(u)`` are treated as MCMC's)
    are substituted and the site's distribution taken from
    :func:`~ppl_dgp.predict.propagate_site` (for a marginalised last layer the exact
    marginal, e.g. ``Phi(m / sqrt(1 + v))``); the inner layers' per-datum noise ``eps`` is a
    local latent integrated out by ``K = num_eps`` passes (``K = 1`` for one GP layer), as
    :func:`ppl_dgp.diagnostics.pointwise_log_likelihood` does for a Gaussian site.
    """
    from jax.scipy.special import logsumexp

    from ppl_dgp.predict import propagate_site

    flat = {k: jnp.asarray(v) for k, v in post.flat().items()}
    params = {k: jnp.asarray(v) for k, v in post.params.items()}
    C, D, N = post.num_chains, post.num_draws, X.shape[0]
    layers = {k for k in post.draws if k.endswith(".u")}
    K = num_eps if len(layers) > 1 else 1
    k_ll, k_rep = jax.random.split(key)
    ll, rep = [], []
    for b, start in enumerate(range(0, C * D, block)):
        idx = np.arange(start, min(start + block, C * D))
        vals = {k: jnp.repeat(v[idx], K, axis=0) for k, v in flat.items()}
        comps, _ = propagate_site(jax.random.fold_in(k_ll, b), model, vals, params, X,
                                  num_samples=len(idx) * K, site=site)  # fmt: skip
        lp = comps.log_prob(jnp.asarray(y)).reshape(len(idx), K, N)
        ll.append(np.asarray(logsumexp(lp, axis=1) - np.log(K)))
        draw = np.asarray(comps.sample(jax.random.fold_in(k_rep, b)))
        rep.append(draw.reshape(len(idx), K, *draw.shape[1:])[:, 0])
    rep = np.concatenate(rep)
    return np.concatenate(ll).reshape(C, D, N), rep.reshape(C, D, *rep.shape[1:])


def _markdown_classification(model_name, d, configs, res, table, agree, gate, hyper,
                             figures) -> str:  # fmt: skip
    K = d.num_classes
    s = [f"# Inference comparison: `{model_name}` on {d.what}\n\n"]
    s.append(
        f"N = {len(d.X_tr)} training and {len(d.X_te)} test points, D = {d.X_tr.shape[1]}, "
        f"K = {K} classes; inputs standardised with the training split"
        + ("; the GP layers' lengthscales started at the median pairwise distance of their "
           "inputs" if _median_lengthscales(d.model, np.asarray(d.X)) is not d.model
           else "")
        + ".\n\n"
    )  # fmt: skip
    s.append(_timings_section(configs, res))
    s.append(
        "\n## Test metrics\n\nFrom each method's predictive class probabilities "
        "(`ppl_dgp.predictive.predict_proba`: averaged over draws; SVI integrates `u` out "
        "against q(u); Laplace's linearised probit predictive): accuracy of the most probable "
        "class, NLL = -(1/N) sum_n log p(y_n), the expected calibration error over "
        f"{ECE_BINS} equal-width confidence bins (Guo et al. 2017; "
        "`ppl_dgp.calibration`), and the Brier score sum_k (p_k - [y = k])^2 averaged over "
        "the test points (in [0, 2]).\n\n"
    )
    s.append(_table(
        ["method", "accuracy", "NLL", "ECE", "Brier"],
        [[k, _f(r["test"]["accuracy"], ".4f"), _f(r["test"]["nll"], ".4f"),
          _f(r["test"]["ece"], ".4f"), _f(r["test"]["brier"], ".4f")] for k, r in res.items()],
    ))  # fmt: skip
    s.append(_loo_section(res, table, linearised=False))
    if gate is not None:
        s.append(_class_agreement_section(agree, gate, res))
    s.append(_closing_sections(res, hyper, figures))
    return "".join(s)


def _gate_text(gate: dict, quantity: str) -> tuple[list[str], str, bool]:
    """The agreement section's opening, shared by regression and classification: the heading,
    then either why the reference fails its checks and what to run (``ok`` False: the section
    ends there) or that it passes; ``quantity`` is the predictive quantity the check reads.

    Returns:
        ``(parts, label, ok)``.
    """
    name, check = gate["name"], gate["check"]
    label = "NUTS" if name == "nuts" else name
    s = [f"\n## Agreement with {label}\n\n"]
    src = f" (loaded from {gate['source']})" if gate["source"] else ""
    rule = (
        f"R-hat <= {diagnostics.RHAT_MAX} and bulk ESS >= {diagnostics.ESS_BULK_MIN:g} for "
        f"every hyperparameter and for {quantity} at {diagnostics.MIN_PREDICTIVE_INPUTS} or "
        "more test inputs, and no divergences"
    )
    if not check.ok:
        s.append(
            f"**Not computed.** The {label} reference{src} ({check.num_chains} chains x "
            f"{check.num_draws} draws) fails its own checks ({rule}), so agreement with it "
            "would score the methods against a posterior that is itself wrong:\n\n"
        )
        s += [f"- {r}\n" for r in check.reasons]
        s.append("\nWhat to run:\n\n" + "".join(f"- {a}\n" for a in gate["advice"]))
        return s, label, False
    worst_r = max(check.rhat.values(), default=float("nan"))
    min_e = min(check.ess_bulk.values(), default=float("nan"))
    s.append(
        f"The {label} reference{src} passes its checks ({rule}): max R-hat {worst_r:.3f}, "
        f"min bulk ESS {min_e:.0f}, {check.num_chains} chains x {check.num_draws} draws.\n"
    )
    return s, label, True


def _class_agreement_section(agree: dict, gate: dict, res: dict) -> str:
    s, label, ok = _gate_text(gate, "the probability of the predicted class")
    if not ok:
        return "".join(s)
    name = gate["name"]
    s.append(
        "\n"
        f"Per method on the test split: |p_method - p_{label}| of the class probabilities, "
        "mean and largest over the test points and classes (0 = the same predictive); the "
        f"share of test points where the method predicts {label}'s class; the PSIS-LOO elpd "
        "(se) and its Pareto k counts (n/a: too few draws for LOO).\n\n"
    )
    s.append(_table(
        ["method", f"mean abs(p - p_{label})", "max", f"same class as {label}",
         "elpd_loo (se)", "k > 0.7", "k > good_k"],
        [[k, _f(a["mean_abs"], ".4f"), _f(a["max_abs"], ".4f"), _f(a["same_class"], ".3f"),
          *_loo_counts(res[k]["loo"])] for k, a in agree.items()]
        + [[f"{name} (reference)", "0", "0", "1", *_loo_counts(res[name]["loo"])]],
    ))  # fmt: skip
    return "".join(s)


def _sampled(post: Posterior, hyper: list[str]) -> list[str]:
    """The hyperparameters ``post`` samples: in its draws and not constant there (SGHMC's
    MCEM records its point estimates as constant draws; R-hat and ESS are undefined for
    them)."""
    out = []
    for h in hyper:
        if h not in post.draws:
            continue
        v = np.asarray(post.draws[h], dtype=float)
        if np.ptp(v) > 1e-9 * max(1.0, float(np.max(np.abs(v)))):
            out.append(h)
    return out


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
    prov = Provenance(
        model=model_name, data=str(data) if Path(str(data)).suffix == "" else Path(data).name,
        target=target, features=None if features is None else tuple(features),
        test_fraction=float(test_fraction), seed=int(seed), num_inducing=int(num_inducing),
        layers=int(layers), data_sha256=data_digest(X, y), command=command,
    )  # fmt: skip
    return _Prepared(X_tr, y_tr, X_te, y_te, what, sx, sy, X, y, Xt, yt, model, prov, outputs)


#: Output names of the bundled multi-output sets.
_OUTPUT_NAMES = {"linnerud": ("chins", "situps", "jumps")}


def _load_targets(
    data: str, *, target: str | None, features: Sequence[str] | None, test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, tuple[str, ...]]:  # fmt: skip
    """A regression set split into training and test parts: :func:`load_regression`'s (one
    output), the bundled multi-output ``linnerud``, or a CSV with several ``target`` columns
    (``"a,b,c"``: ``y [N, P]``). The last item names the ``P > 1`` outputs (``()`` for one)."""
    targets = _targets(target)
    if data in MULTI_OUTPUT_DATA:
        X, Y = load_linnerud()
        pct = round(100 * test_fraction)
        what = (f"`{data}` (Tenenhaus 1998; {Y.shape[1]} outputs; {100 - pct}/{pct} split, "
                f"seed {seed})")  # fmt: skip
        return (*split(X, Y.astype(np.float64), test_fraction=test_fraction, seed=seed), what,
                _OUTPUT_NAMES[data])  # fmt: skip
    if len(targets) > 1 and Path(data).is_file():
        import csv

        with open(data, newline="") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
        feats = list(features) if features is not None else [
            h for h in header if h not in targets]  # fmt: skip
        cols = [load_csv(data, t, feats) for t in targets]  # each column checked, named
        X, Y = cols[0][0], np.stack([c[1] for c in cols], axis=1)
        pct = round(100 * test_fraction)
        what = f"`{data}` (targets {', '.join(f'`{t}`' for t in targets)}; {100 - pct}/{pct} split)"
        return (*split(X, Y, test_fraction=test_fraction, seed=seed), what, tuple(targets))
    X_tr, y_tr, X_te, y_te, what = load_regression(
        data, target=target, features=features, test_fraction=test_fraction, seed=seed
    )
    return X_tr, y_tr, X_te, y_te, what, ()


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
    prov = Provenance(
        model=model_name, data=str(data) if Path(str(data)).suffix == "" else Path(data).name,
        target=target, features=None if features is None else tuple(features),
        test_fraction=float(test_fraction), seed=int(seed), num_inducing=int(num_inducing),
        layers=int(layers), data_sha256=data_digest(X, y), command=command,
    )  # fmt: skip
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


def _packaged(d: _Prepared) -> tuple[Path | None, str]:
    """The shipped reference for ``d`` (provenance and model configuration equal), else
    ``None`` and why not (``""``: none is shipped for this model and data)."""
    npz = PACKAGED / f"{reference_stem(d.provenance.model, d.provenance.data)}.npz"
    if not npz.is_file():
        return None, ""
    diff = check_provenance(npz, d.provenance)
    if diff:
        return None, "; ".join(diff)
    stored = Posterior.load(npz).model
    if isinstance(stored, Program) and stored != d.model:
        return None, "the zoo model's configuration changed since it was written"
    return npz, ""


def _source_label(path: str | Path) -> str:
    """A reference's path for the report (a shipped one relative to the package), with the
    command that wrote it when its provenance says."""
    p = Path(path)
    try:
        rel = p.resolve().relative_to(PACKAGED.parent.parent.resolve()).as_posix()
        label = f"`ppl_dgp/{rel}`"
    except ValueError:
        label = f"`{path}`"
    prov = read_provenance(p)
    return f"{label}, written by `{prov.command}`" if prov and prov.command else label


def build_reference(
    model_name: str,
    data: str,
    out: str | Path,
    *,
    target: str | None = None,
    features: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    num_inducing: int = 20,
    layers: int = 2,
    settings: dict[str, Any] | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
) -> tuple[Path, diagnostics.ReferenceCheck]:
    """Fit ``compare``'s reference once, long: NUTS with :data:`ppl_dgp.reference.REFERENCE_NUTS`
    (``settings`` override fields) on exactly the data and model :func:`run_compare` builds
    with the same arguments, and write ``out/{model}-{data}.npz`` / ``.json`` /
    ``.provenance.json``; ``run_compare(..., reference=PATH)`` (or, for a file shipped in
    :data:`ppl_dgp.reference.PACKAGED`, ``reference="auto"``) uses it.

    Returns:
        The npz path and the reference's :func:`~ppl_dgp.diagnostics.reference_check` (the
        same checks as the report's, on the hyperparameters and the predictive mean at
        :data:`REFERENCE_PREDICTIVE_INPUTS` test inputs).
    """
    if model_name not in regression_models():
        raise ValueError(
            f"reference: unknown or unsupported model {model_name!r}; choose from "
            f"{', '.join(regression_models())}"
        )
    d = _prepare(model_name, data, target=target, features=features,
                 test_fraction=test_fraction, seed=seed, num_inducing=num_inducing,
                 layers=layers, command=command)  # fmt: skip
    method = make_method(REFERENCE, preset=None, **{**REFERENCE_NUTS, **(settings or {})})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(seed)
    log(f"[reference] fitting {method} on {d.what} ...")
    t0 = time.perf_counter()
    post = fit(method, jax.random.fold_in(key, _REFERENCE_KEY), d.model, d.X, d.y)
    log(f"[reference] {time.perf_counter() - t0:.0f} s")
    npz, _ = post.save(out / reference_stem(model_name, d.provenance.data))
    write_provenance(npz, d.provenance)
    check = _reference_check(post, d)
    log(
        f"[reference] wrote {npz}; "
        + ("passes its checks" if check.ok else "FAILS its checks: " + "; ".join(check.reasons))
    )
    return npz, check


def _hyper_sites(post: Posterior) -> list[str]:
    """The summarised sites: hyperparameters, not inducing values or network weights."""
    return [k for k in post.draws if not k.endswith((".u", ".W", ".b"))]


def _reference_check(post: Posterior, d: _Prepared) -> diagnostics.ReferenceCheck:
    """:func:`~ppl_dgp.diagnostics.reference_check` of ``post`` as the report runs it."""
    C, D = post.num_chains, post.num_draws
    idx = spread(len(d.X_te), REFERENCE_PREDICTIVE_INPUTS)
    per_draw = predict(jax.random.key(0), d.model, post, d.Xt[idx], num_samples=C * D)
    dt = diagnostics.to_datatree(post, d.model, d.X, d.y, rng_key=jax.random.key(1))
    return diagnostics.reference_check(
        dt, _hyper_sites(post), predictive=np.asarray(per_draw.means).reshape(C, D, -1),
        predictive_labels=_input_labels(d.X_te, idx, d.outputs),
    )  # fmt: skip


def load_reference(
    path: str | Path,
    model: Callable,
    X: Any,
    y: Any,
    *,
    model_name: str = "the model",
    provenance: Provenance | None = None,
) -> Posterior:
    """A saved reference posterior, checked against ``model``'s global latent sites.

    Args:
        path: ``PATH.npz`` (or ``PATH`` / ``PATH.json``) written by
            :meth:`~ppl_dgp.posterior.Posterior.save`, e.g. ``DIR/nuts.npz`` of a compare run.
        model: the program the report fits.
        X: training inputs ``[N, D]`` (standardised, as the report fits them).
        y: training targets ``[N]``.
        model_name: the model's name for the messages.
        provenance: this run's model and data (:class:`~ppl_dgp.reference.Provenance`): a
            reference whose provenance file differs is refused (the fields named); one with no
            provenance file is used with a :class:`UnverifiedReferenceWarning`.

    Returns:
        The loaded :class:`~ppl_dgp.posterior.Posterior`.

    Raises:
        ValueError: no such file; a site missing, extra or of another shape (named); a
            provenance or a stored model configuration that differs from this run's.
    """
    from numpyro.handlers import block, seed, trace

    npz = Path(path)
    npz = npz.with_suffix(".npz") if npz.suffix in (".npz", ".json") else Path(f"{npz}.npz")
    if not (npz.exists() and npz.with_suffix(".json").exists()):
        raise ValueError(
            f"compare: no reference posterior at {path} (expected {npz} and "
            f"{npz.with_suffix('.json')}, as a compare run with nuts writes to OUT/nuts.npz)"
        )
    post = Posterior.load(npz)
    with block():
        tr = trace(seed(model, jax.random.key(0))).get_trace(X, y)
    want = {
        k: tuple(np.shape(v["value"]))
        for k, v in tr.items()
        if v["type"] == "sample" and not v["is_observed"] and not v["cond_indep_stack"]
    }
    params = {k: tuple(np.shape(v["value"])) for k, v in tr.items() if v["type"] == "param"}
    have = {k: tuple(np.shape(v)[2:]) for k, v in post.draws.items()}
    problems = [f"site {k!r} is missing" for k in want if k not in have]
    problems += [f"site {k!r} is not in the model" for k in have if k not in want]
    problems += [f"site {k!r} has shape {have[k]} per draw, the model's {want[k]}"
                 for k in want if k in have and have[k] != want[k]]  # fmt: skip
    problems += [f"param {k!r} is missing" for k in params if k not in post.params]
    problems += [
        f"param {k!r} has shape {np.shape(v)}, the model's {params[k]}"
        for k, v in post.params.items()
        if k in params and np.shape(v) != params[k]
    ]
    stored = None if provenance is None else read_provenance(npz)
    if stored is not None and (diff := stored.differences(provenance)):
        problems.append(f"it was fitted on other data or settings ({'; '.join(diff)})")
    if isinstance(post.model, Program) and isinstance(model, Program) and post.model != model:
        problems.append("its stored model configuration differs from this run's")
    if problems:
        raise ValueError(
            f"compare: the reference {npz} ({post.name}) does not match {model_name} as "
            f"configured here: {'; '.join(problems)} (same --model, --layers, --num-inducing "
            "and data as the reference run?)"
        )
    if provenance is not None and stored is None:
        warnings.warn(
            f"compare: the reference {npz} has no provenance file: it cannot be checked to be "
            "fitted on this data and split (only its sites and shapes are)",
            UnverifiedReferenceWarning,
            stacklevel=3,
        )
    return post


def _subset(pred: MixturePredictive, idx: np.ndarray) -> MixturePredictive:
    """The mixture of components ``idx`` only."""
    return MixturePredictive(pred.means[idx], pred.variances[idx], pred.f_variances[idx])


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


def _per_chain(
    r: dict[str, Any], hyper: list[str], idx: np.ndarray, labels: list[str], y_te: np.ndarray,
    sy: Standardizer,
) -> dict[str, Any] | None:  # fmt: skip
    """The chains of one method side by side, and their stacking (Yao et al. 2022).

    For a method of ``C >= 2`` chains (each with at least 4 draws and 4 predictive
    components): the :class:`~ppl_dgp.diagnostics.ChainView` of its hyperparameters and of
    the predictive mean at the test inputs ``idx`` (original units), and the stacking weights
    of its chains (:func:`ppl_dgp.stacking.stacking_weights` on each chain's PSIS-LOO,
    :func:`ppl_dgp.diagnostics.loo_per_chain`) with the test MLPD (original units) of the
    stacked predictive ``sum_k w_k p_k``, of the chains pooled by their draws, and of each
    chain. ``None`` for other methods.
    """
    post = r["posterior"]
    C, D = post.num_chains, post.num_draws
    if C < 2 or D < 4 or r["component_chain"] is None:
        return None
    chain = np.asarray(r["component_chain"])
    counts = np.bincount(chain, minlength=C)
    if counts.min() < 4:
        return None
    comps = r["components"].rescale(*_units(sy))
    means = np.asarray(comps.means)[:, idx].reshape(len(chain), -1)  # [S, P] (inputs x outputs)
    n = int(counts.min())
    per_chain = np.stack([means[chain == c][:n] for c in range(C)])  # [C, n, P]
    sites = _sampled(post, hyper)  # a method may hold some as params or point estimates
    view = diagnostics.chain_view(r["datatree"], sites, predictive=per_chain,
                                  predictive_labels=labels)  # fmt: skip
    out: dict[str, Any] = {"view": view}
    if "log_likelihood" not in r["datatree"].children:
        return out
    elpd_i, k = diagnostics.loo_per_chain(r["datatree"])  # [C, N]
    w = stacking.stacking_weights(elpd_i.T)
    y = jnp.asarray(y_te)
    lpd = np.stack([np.asarray(_subset(comps, np.flatnonzero(chain == c)).log_density(y))
                    for c in range(C)], axis=1)  # [T, C]  # fmt: skip
    if lpd.ndim == 3:  # [T, C, P]: each output's marginal, averaged as the test table's MLPD
        lpd = lpd.mean(axis=2)
    pooled = counts / counts.sum()
    out |= {
        "weights": w,
        "loo_chain": elpd_i.sum(axis=1),
        "k_bad_chain": (k > 0.7).sum(axis=1),
        "loo_stacked": float(stacking.stacked_log_density(elpd_i.T, w).sum()),
        "loo_equal": float(stacking.stacked_log_density(elpd_i.T, np.full(C, 1 / C)).sum()),
        "test_chain": lpd.mean(axis=0),
        "test_stacked": stacking.stacked_log_score(lpd, w),
        "test_pooled": stacking.stacked_log_score(lpd, pooled),
    }
    return out


def _advice(
    check: Any, post: Posterior, model_name: str, data: str, view: Any = None, *,
    reference_command: bool = True,
) -> list[str]:  # fmt: skip
    """What to run when the reference fails: longer chains, or a reference run once (with
    ``reference_command``: ``ppl-dgp reference`` takes regression models only); with the
    reference's :class:`~ppl_dgp.diagnostics.ChainView`, whether its chains sit in separate
    modes or drift."""
    if check.ok:
        return []
    cfg = post.method
    C, D = post.num_chains, post.num_draws
    warm = getattr(cfg, "num_warmup", D)
    worst_r = max(check.rhat.values(), default=math.nan)
    min_e = min(check.ess_bulk.values(), default=math.nan)
    out = []
    if C < 2 or not worst_r <= diagnostics.RHAT_MAX:
        verdict = None if view is None else view.verdict
        if worst_r > 1.1 and verdict == "separate modes":
            out.append(
                f"R-hat up to {worst_r:.2f}: each chain is stationary but they sit in separate "
                f"modes (see 'Chains of {post.name}'): more draws do not cure that; a better "
                "parameterisation or initialisation may, and meanwhile the stacking of the "
                "chains there is the principled predictive."
            )
        elif worst_r > 1.1 and verdict == "not converged":
            out.append(
                f"R-hat up to {worst_r:.2f}: chain(s) "
                f"{', '.join(map(str, view.drifting))} still drift (see 'Chains of "
                f"{post.name}' and the rank figure): warm-up has not finished; run a longer one."
            )
        elif worst_r > 1.1:
            out.append(
                f"R-hat up to {worst_r:.2f}: the chains sit in different places (modes or "
                "unfinished warm-up; compare the chains in the trace figure): more draws do "
                "not cure that, a longer warm-up, more chains and a better "
                "parameterisation or initialisation may."
            )
        warm, C = max(4 * warm, 1000), max(C, 4)
        D = max(D, 1000)
    elif min_e < diagnostics.ESS_BULK_MIN:
        D = max(D, math.ceil(1.25 * D * diagnostics.ESS_BULK_MIN / max(min_e, 1.0)))
    if check.divergences:
        out.append(
            f"{check.divergences} divergences: raise NUTS(target_accept_prob=0.95) or "
            "reparameterise; a sampler that diverges misses part of the posterior."
        )
    long = f"{model_name}_reference"
    stem = reference_stem(model_name, data)
    if reference_command:
        out.append(
            f"Run a long reference once, `ppl-dgp reference --model {model_name} --data "
            f"{data} --out {long}` (NUTS {REFERENCE_NUTS['num_chains']} x "
            f"({REFERENCE_NUTS['num_warmup']} + {REFERENCE_NUTS['num_samples']}), with the "
            f"same data, seed and model options as here), then pass `--reference "
            f"{long}/{stem}.npz` to compare the other methods with it (its provenance is "
            "checked)."
        )
    out.append(
        f"{'Or c' if reference_command else 'C'}hoose the chains yourself: `ppl-dgp compare "
        f"--model {model_name} --data {data} "
        f"--methods nuts --num-warmup {warm} --num-samples {D} --num-chains {C} --out {long}`, "
        f"then `--reference {long}/nuts.npz`."
    )
    return out


def _figures(res, hyper, out, X_tr, y_tr, sx, sy, model, key, d=None) -> list[str]:
    from ppl_dgp import plotting

    files = _posterior_figures(res, hyper, out)
    outputs = () if d is None else d.outputs
    if X_tr.shape[1] == 1:
        lo, hi = X_tr.min(), X_tr.max()
        pad = 0.05 * (hi - lo)
        grid_raw = np.linspace(lo - pad, hi + pad, 200)[:, None]
        grid = jnp.asarray(sx.transform(grid_raw))
        preds = {
            k: predict(
                jax.random.fold_in(key, 300), model, r["posterior"], grid, num_samples=200
            ).rescale(*_units(sy))
            for k, r in res.items()
        }
        if outputs:
            plotting.plot_output_bands(X_tr, y_tr, grid_raw, preds, out / "predictive.png",
                                       outputs=outputs)  # fmt: skip
        else:
            plotting.plot_predictive_bands(X_tr, y_tr, grid_raw, preds, out / "predictive.png")
        files.append("predictive.png")
    elif outputs:  # D > 1: the test points' intervals against their values, per output
        preds = {k: r["pred"].rescale(*_units(sy)) for k, r in res.items()}
        plotting.plot_output_intervals(d.y_te, preds, out / "predictive.png", outputs=outputs,
                                       prob=CI_PROB)  # fmt: skip
        files.append("predictive.png")
    return files + _fit_figures(res, out)


def _posterior_figures(res: dict, hyper: list[str], out: Path) -> list[str]:
    """The hyperparameters' forest and marginals, and each MCMC run's rank and trace plots."""
    from ppl_dgp import plotting

    files = []
    # a panel per hyperparameter; a method of fewer than MIN_PLOT_DRAWS draws (a MAP, a small
    # ensemble) is a line per draw in the densities
    samples = {k: r["posterior"].draws for k, r in res.items()}
    if hyper:
        plotting.plot_forest(samples, hyper, out / "forest.png", prob=CI_PROB)
        plotting.plot_marginals(
            samples, hyper, out / "marginals.png", min_density_draws=MIN_PLOT_DRAWS
        )
        files += ["forest.png", "marginals.png"]
    for name, r in res.items():
        if r["posterior"].num_chains > 1 and r["posterior"].num_draws >= MIN_CHAIN_PLOT_DRAWS:
            sites = _sampled(r["posterior"], hyper)
            if not sites:
                continue
            diagnostics.plot_rank(r["datatree"], sites, out / f"rank_{name}.png")
            diagnostics.plot_trace(r["datatree"], sites, out / f"trace_{name}.png")
            files += [f"rank_{name}.png", f"trace_{name}.png"]
    return files


def _fit_figures(res: dict, out: Path) -> list[str]:
    """The optimisers' loss traces and the PSIS-LOO Pareto k of every method with LOO."""
    from ppl_dgp import plotting

    files = []
    losses = {k: r["posterior"].traces["loss"] for k, r in res.items()
              if "loss" in r["posterior"].traces}  # fmt: skip
    if losses:
        plotting.plot_loss_traces(losses, out / "elbo.png")
        files.append("elbo.png")
    elpds = {k: r["loo"] for k, r in res.items() if r["loo"] is not None}
    if elpds:
        diagnostics.plot_khat(elpds, out / "khat.png")
        files.append("khat.png")
    return files


# -- markdown ----------------------------------------------------------------------------------


def _loo_counts(elpd: Any) -> tuple[str, str, str]:
    """``elpd_loo (se)`` and the counts of Pareto k above 0.7 and above good_k, as text."""
    if elpd is None:
        return "n/a", "", ""
    k = np.asarray(elpd.pareto_k).ravel()
    return (f"{elpd.elpd:.1f} ({elpd.se:.1f})", f"{int(np.sum(k > 0.7))} / {k.size}",
            f"{int(np.sum(k > elpd.good_k))} / {k.size}")  # fmt: skip


def _agreement_section(model_name: str, agree: dict, gate: dict, res: dict) -> str:
    s, label, ok = _gate_text(gate, "the predictive mean")
    if not ok:
        return "".join(s)
    name = gate["name"]
    s.append(
        f"\n### The predictive against {label}\n\nOn the test split; the predictive is "
        "identifiable where the per-site rows below are not (inner layers can be permuted and "
        "their signs flipped without changing y). Columns: W1, the 1-D Wasserstein-1 distance "
        f"between the method's and {label}'s predictive distributions of y at each test input "
        "(exact mixture CDFs on a grid, `ppl_dgp.agreement.mixture_wasserstein`) in units of "
        f"{label}'s predictive sd there, mean and worst input (0 = the same predictive); the "
        f"{label} predictive mass inside the method's {CI_PROB:.0%} interval, mean and worst "
        f"input ({CI_PROB:.2f} when they agree; less: the method's intervals are too narrow or "
        f"misplaced); the MLPD gap (method - {label}: mean test log predictive density, the "
        f"same in any units); test coverage of the method's {CI_PROB:.0%} interval ({label}'s "
        "in brackets); the method's PSIS-LOO elpd (se) on the training split and its counts "
        "of Pareto k above 0.7 and above good_k (n/a: too few draws for LOO).\n\n"
    )
    s.append(_table(
        ["method", "W1 / sd (mean)", "W1 / sd (max)", f"{label} mass in {CI_PROB:.0%} "
         "interval (mean)", "(min)", "MLPD gap", "coverage (ref)", "elpd_loo (se)", "k > 0.7",
         "k > good_k"],
        [[k, _f(p["w1"], ".3f"), _f(p["w1_max"], ".3f"), _f(p["ref_mass"], ".2f"),
          _f(p["ref_mass_min"], ".2f"), _f(p["mlpd_gap"], ".3f"),
          f"{p['coverage']:.2f} ({p['ref_coverage']:.2f})", *_loo_counts(res[k]["loo"])]
         for k, a in agree.items() for p in [a["predictive"]]]
        + [[f"{name} (reference)", "0", "0", f"{CI_PROB:.2f}", f"{CI_PROB:.2f}", "0",
            f"{res[name]['test']['coverage'][CI_PROB]:.2f}", *_loo_counts(res[name]["loo"])]],
    ))  # fmt: skip
    s.append(
        "\n### Per site\n\nLargest |standardised mean difference|, median sd ratio (< 1: "
        "over-confident) and mean 1-D Wasserstein distance in reference sd units, over the "
        "site's components (0, 1, 0 = perfect agreement).\n\n"
    )
    if MODELS[model_name].output_site is not None:  # a network
        s.append(
            "A network's weights are not identifiable (hidden units can be permuted and "
            "their signs flipped), so two correct posteriors can disagree per weight: read "
            "the predictive table above.\n\n"
        )
    rows = []
    for k, a in agree.items():
        for site, v in a["sites"].items():
            rows.append([k, f"`{site}`", v["components"], _f(v["max_abs_smd"], ".2f"),
                         _f(v["median_sd_ratio"], ".2f"), _f(v["mean_w1"], ".2f")])  # fmt: skip
    s.append(_table(["method", "site", "components", "max abs SMD", "median sd ratio",
                     "mean W1"], rows))  # fmt: skip
    return "".join(s)


def _chains_section(name: str, c: dict[str, Any]) -> str:
    """The per-chain view and the stacking of one method's chains (:func:`_per_chain`)."""
    v = c["view"]
    C = v.num_chains
    s = [f"\n## Chains of {name}\n\n"]
    rule = (
        f"R-hat across chains <= {v.rhat_max} for every hyperparameter and for the predictive "
        f"mean at {CHAIN_VIEW_INPUTS} test inputs"
    )
    if v.verdict == "mixing":
        worst = np.nanmax(v.rhat)
        s.append(f"The {C} chains agree ({rule}; max {worst:.3f}): their draws are pooled.\n")
        return "".join(s)
    worst = int(np.nanargmax(np.where(np.isnan(v.rhat), np.inf, v.rhat)))
    s.append(
        f"**The {C} chains disagree** (R-hat up to {v.rhat[worst]:.2f}, at "
        f"`{v.quantities[worst]}`). "
    )
    if v.verdict == "separate modes":
        s.append(
            f"Each chain is stationary on its own (its split-R-hat, its two halves as "
            f"chains, <= {v.within_max} everywhere): the chains sit in **separate modes**. "
            "More draws will not mix them; the pooled draws weight each mode by how many "
            "chains landed there, the stacking below by how well it predicts.\n"
        )
    elif v.verdict == "few draws":
        s.append(
            f"No chain drifts (its own split-R-hat <= {v.within_max}) and the chains overlap "
            f"(R-hat <= {diagnostics.SEPARATE_RHAT_MIN} everywhere), but they hold **too few "
            f"effective draws** to show that they agree to R-hat <= {v.rhat_max}: more draws "
            "are the cure (see the bulk ESS in the summary).\n"
        )
    else:
        drift = ", ".join(str(k) for k in v.drifting)
        s.append(
            f"Chain(s) {drift} are **not converged**: they drift within themselves (a "
            f"split-R-hat of the chain alone above {v.within_max}; their rank plots are "
            "not flat). A longer warm-up is the cure; stacking does not make a drifting "
            "chain a sample of anything.\n"
        )
    s.append(
        "\nPer chain: mean (sd) of each hyperparameter and of the predictive mean of y at "
        "test inputs (original units); R-hat across the chains; the largest split-R-hat of a "
        "chain on its own (its halves as two chains).\n\n"
    )
    heads = [f"chain {k}" + (" (drifting)" if k in v.drifting else "") for k in range(C)]
    s.append(_table(
        ["quantity", *heads, "R-hat", "within-chain R-hat (max)"],
        [[f"`{q}`", *(f"{_f(v.means[i, k])} ({_f(v.sds[i, k], '.2g')})" for k in range(C)),
          _f(v.rhat[i], ".3f"), _within(v.within_rhat[i])]
         for i, q in enumerate(v.quantities)],
    ))  # fmt: skip
    if "weights" not in c:
        return "".join(s)
    s.append(
        "\n**Stacking of chains** (Yao, Vehtari & Gelman 2022): weights on the chains "
        "maximising the PSIS-LOO log score of the chain mixture, sum_i log sum_k w_k "
        "p_k(y_i | y_-i), with p_k the predictive of chain k alone "
        "(`ppl_dgp.stacking.stacking_weights`). Per chain: its weight, its own PSIS-LOO elpd "
        "and Pareto k > 0.7 count, its test MLPD.\n\n"
    )
    s.append(_table(
        ["chain", "weight", "elpd_loo (chain alone)", "k > 0.7", "test MLPD (chain alone)"],
        [[k, _f(c["weights"][k], ".3f"), _f(c["loo_chain"][k], ".1f"),
          int(c["k_bad_chain"][k]), _f(c["test_chain"][k], ".3f")] for k in range(C)],
    ))  # fmt: skip
    s.append(
        f"\nTest MLPD of the stacked predictive {c['test_stacked']:.3f}, of the chains pooled "
        f"by their draws {c['test_pooled']:.3f}; LOO log score (sum over training points) of "
        f"the stacking {c['loo_stacked']:.1f}, of equal weights {c['loo_equal']:.1f}.\n"
    )
    if c["loo_stacked"] - c["loo_equal"] < 1.0:
        s.append(
            "\nThe stacking gains less than one nat of LOO over equal weights: the chains "
            "predict alike, and the weights (which then follow Monte Carlo noise) mean "
            "little.\n"
        )
    return "".join(s)


def _within(r: np.ndarray) -> str:
    """The largest within-chain split-R-hat of a quantity; ``stuck`` when a chain never moves."""
    return "stuck" if np.isnan(r).any() else f"{np.max(r):.3f}"


def _f(x: Any, spec: str = ".3g") -> str:
    try:
        return format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _settings(config: Any) -> str:
    """The configuration's non-default fields, e.g. ``NUTS(num_warmup=300, num_chains=2)``."""
    changed = [
        f"{f.name}={getattr(config, f.name)!r}"
        for f in dataclasses.fields(config)
        if f.default is dataclasses.MISSING or getattr(config, f.name) != f.default
    ]
    return f"{type(config).__name__}({', '.join(changed)})"


def _markdown(model_name, what, X_tr, X_te, configs, res, table, agree, gate, hyper,
              figures, chains, outputs=()) -> str:  # fmt: skip
    s = [f"# Inference comparison: `{model_name}` on {what}\n\n"]
    s.append(
        f"N = {len(X_tr)} training and {len(X_te)} test points, D = {X_tr.shape[1]}; data "
        "standardised with the training split; test metrics in original units.\n\n"
    )
    s.append(_timings_section(configs, res))
    s.append("\n## Test metrics\n\n")
    if outputs:
        s.append(
            f"Over all {len(outputs)} outputs ({', '.join(f'`{o}`' for o in outputs)}): RMSE "
            "and MLPD of each output's marginal predictive, averaged over the entries of "
            "y [N, P]; coverage of the central intervals over all entries.\n\n"
        )
    s.append(_table(
        ["method", "RMSE", "MLPD", "50% coverage", f"{CI_PROB:.0%} coverage", "95% coverage"],
        [[k, _f(r["test"]["rmse"]), _f(r["test"]["mlpd"]),
          *(_f(r["test"]["coverage"][p], ".2f") for p in (0.5, CI_PROB, 0.95))]
         for k, r in res.items()],
    ))  # fmt: skip
    if outputs:
        s.append(
            "\nPer output (`ppl_dgp.predict.regression_metrics`: RMSE, MLPD of the output's "
            f"marginal mixture, and the coverage of its central 50%, {CI_PROB:.0%} and 95% "
            "intervals; original units):\n\n"
        )
        s.append(_table(
            ["method", "output", "RMSE", "MLPD", "50% coverage", f"{CI_PROB:.0%} coverage",
             "95% coverage"],
            [[k, f"`{o}`", _f(m["rmse"][j]), _f(m["mlpd"][j]),
              *(_f(m[f"coverage_{p:g}"][j], ".2f") for p in (0.5, CI_PROB, 0.95))]
             for k, r in res.items() for m in [r["test"]["per_output"]]
             for j, o in enumerate(outputs)],
        ))  # fmt: skip
    s.append(_loo_section(res, table, linearised=not outputs))
    if gate is not None:
        s.append(_agreement_section(model_name, agree, gate, res))
    for k, c in chains.items():
        s.append(_chains_section(k, c))
    s.append(_closing_sections(res, hyper, figures))
    return "".join(s)


def _timings_section(configs: dict, res: dict) -> str:
    s = ["## Methods and timings\n\n"]
    s.append(_table(
        ["method", "configuration", "compile (s)", "run (s)", "wall (s)"],
        [[k, f"`{_settings(configs[k])}`" + (f" from {r['source']}" if r["source"] else ""),
          _f(r["posterior"].timings.get("compile_seconds"), ".1f"),
          _f(r["posterior"].timings.get("run_seconds"), ".1f"), _f(r["wall_seconds"], ".1f")]
         for k, r in res.items()],
    ))  # fmt: skip
    return "".join(s)


def _loo_section(res: dict, table: Any, *, linearised: bool = True) -> str:
    laplace = ("a GP program's Laplace is scored here by the program's likelihood at each "
               "draw of `u`, not linearised" if not linearised else
               "a GP program's Laplace scores its linearised model: the likelihood of the GLM "
               "at each draw of `u`, as its predictive does")  # fmt: skip
    s = []
    s.append(
        "\n## PSIS-LOO\n\nPointwise log-likelihood per draw at the training inputs (inner-layer "
        "noise integrated out by Monte Carlo; see `ppl_dgp.diagnostics.pointwise_log_likelihood`)."
        f" For SVI and Laplace the draws stand in for the posterior ({laplace}), and Pareto k per "
        "observation says where that approximation's LOO cannot be trusted (k above ArviZ's "
        "threshold good_k = min(1 - 1/log10(S), 0.7) for S draws; the k-hat figure draws the "
        f"same line). Point estimates and posteriors of fewer than {MIN_LOO_DRAWS} draws have "
        "no LOO.\n\n"
    )
    s.append(_table(
        ["method", "elpd_loo", "se", "p_loo", "k > good_k", "good_k", "max k"],
        [[k, _f(r["loo"].elpd, ".1f"), _f(r["loo"].se, ".1f"), _f(r["loo"].p, ".1f"),
          f"{int(np.sum(np.asarray(r['loo'].pareto_k) > r['loo'].good_k))} / "
          f"{np.size(r['loo'].pareto_k)}", _f(r["loo"].good_k, ".2f"),
          _f(np.max(np.asarray(r["loo"].pareto_k)), ".2f")]
         if r["loo"] is not None else
         [k, f"n/a ({r['posterior'].num_chains * r['posterior'].num_draws} draws < "
             f"{MIN_LOO_DRAWS})", "", "", "", "", ""]
         for k, r in res.items()],
    ))  # fmt: skip
    if table is not None:
        s.append("\n`compare` (best first; elpd_diff = elpd - best elpd, stacking weights):\n\n")
        s.append(_table(
            ["method", "rank", "elpd", "elpd_diff", "dse", "weight"],
            [[k, int(row["rank"]), _f(row["elpd"], ".1f"), _f(row["elpd_diff"], ".1f"),
              _f(row["dse"], ".1f"), _f(row["weight"], ".2f")] for k, row in table.iterrows()],
        ))  # fmt: skip
    return "".join(s)


def _closing_sections(res: dict, hyper: list[str], figures: list[str]) -> str:
    """The MCMC runs' posterior summaries, the diagnostics warnings, the figures."""
    s = []
    mcmc = [k for k, r in res.items() if r["posterior"].num_chains > 1]
    for k in mcmc:
        sampled = _sampled(res[k]["posterior"], hyper)
        s.append(f"\n## Posterior summary: {k} (94% HDI)\n\n")
        held = [h for h in hyper if h in res[k]["posterior"].draws and h not in sampled]
        if held:  # e.g. SGHMC's MCEM: one value per chain, shared, recorded as constant draws
            values = ", ".join(
                f"`{h}` = {_f(float(np.ravel(res[k]['posterior'].draws[h])[0]))}" for h in held
            )
            s.append(f"Point estimates, not sampled (no R-hat or ESS): {values}.\n\n")
        cols = ["mean", "sd", "hdi94_lb", "hdi94_ub", "r_hat", "ess_bulk", "ess_tail",
                "mcse_mean"]  # fmt: skip
        if sampled:
            summ = diagnostics.summary(res[k]["datatree"], sampled)
            s.append(
                _table(
                    ["parameter", *cols],
                    [[f"`{i}`", *(_f(row[c]) for c in cols)] for i, row in summ.iterrows()],
                )
            )
        stats = res[k]["posterior"].sample_stats
        if "diverging" in stats:
            s.append(
                f"\nDivergences: {int(np.sum(stats['diverging']))}; mean tree depth / leapfrog "
                f"steps: {_f(np.mean(stats.get('tree_depth', np.nan)), '.1f')} / "
                f"{_f(np.mean(stats.get('num_steps', np.nan)), '.0f')}; mean step size "
                f"{_f(np.mean(stats.get('step_size', np.nan)))}.\n"
            )
    s.append("\n## Diagnostics warnings\n\n")
    for k, r in res.items():
        w = r["warnings"]
        s.append(f"- **{k}**: " + ("none" if not w else "; ".join(w)) + "\n")
    s.append("\n## Figures\n\n" + "".join(f"![{f}]({f})\n" for f in figures))
    s.append("\nEach method's DataTree: " + ", ".join(f"`{k}.nc`" for k in res) + ".\n")
    return "".join(s)
