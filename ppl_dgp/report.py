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
from ppl_dgp.datasets import Standardizer, load_regression
from ppl_dgp.infer import METHODS, fit, make_method
from ppl_dgp.infer.core import progress_enabled
from ppl_dgp.models import MODELS
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import MixturePredictive
from ppl_dgp.predictive import predict, spread
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
from ppl_dgp.zoo import Program

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


class UnreliableReferenceWarning(UserWarning):
    """The reference posterior fails its own checks: no agreement is computed against it."""


class UnverifiedReferenceWarning(UserWarning):
    """A loaded reference has no provenance file: its data and split cannot be checked."""


def regression_models() -> list[str]:
    """Zoo models the report can compare (a Gaussian likelihood and the mixture predictive)."""
    return [k for k, m in MODELS.items() if m.task == "regression" and "mixture" in m.predictives]


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
        model_name: a regression model of the zoo (:func:`regression_models`).
        data: a bundled data set's name or a CSV path.
        methods: registered method names; :data:`REFERENCE` (``"nuts"``) among them is the
            reference.
        out: the report's folder.
        target: a CSV's target column.
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
        :class:`~ppl_dgp.diagnostics.ChainView` and the stacking of its chains).

    Raises:
        ValueError: unknown model or method, bad data, or a reference that does not match
            the model.

    Warns:
        UnreliableReferenceWarning: the reference fails its checks (agreement not computed).
    """
    if model_name not in regression_models():
        raise ValueError(
            f"compare: unknown or unsupported model {model_name!r}; the report compares the "
            f"regression models of the zoo: {', '.join(regression_models())}"
        )
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
        dt = diagnostics.to_datatree(post, model, X, y, rng_key=jax.random.fold_in(key, 100 + i))
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
        m = pred.rescale(float(sy.mean), float(sy.std)).metrics(jnp.asarray(y_te))
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
        if (c := _per_chain(r, hyper, few, _input_labels(X_te, few), y_te, sy)) is not None
    }
    agree, gate = {}, None
    if ref_name in res:
        ref = res[ref_name]
        idx = spread(len(X_te), REFERENCE_PREDICTIVE_INPUTS)
        labels = _input_labels(X_te, idx)
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
                        r["pred"], ref["pred"], yt, prob=CI_PROB
                    ),
                }
        else:
            warnings.warn(
                f"compare: no agreement with {ref_name} computed: the reference fails its own "
                f"checks ({'; '.join(check.reasons)}). {' '.join(gate['advice'])}",
                UnreliableReferenceWarning,
                stacklevel=2,
            )
    figures = _figures(res, hyper, out, X_tr, y_tr, sx, sy, model, key) if figures else []
    report = out / "report.md"
    report.write_text(
        _markdown(model_name, what, X_tr, X_te, configs, res, table, agree, gate, hyper, figures,
                  chains)
    )  # fmt: skip
    log(f"Wrote {report}")
    return {"methods": res, "compare": table, "agreement": agree, "report": report,
            "reference_check": None if gate is None else gate["check"], "figures": figures,
            "summarised_sites": hyper, "chains": chains}  # fmt: skip


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
    y: Any  # [N]
    Xt: Any  # [N_test, D]
    yt: np.ndarray  # [N_test]
    model: Callable
    provenance: Provenance


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
    """Split and standardise ``data`` and build the zoo model, as ``compare`` fits it."""
    X_tr, y_tr, X_te, y_te, what = load_regression(
        data, target=target, features=features, test_fraction=test_fraction, seed=seed
    )
    sx, sy = Standardizer.fit(X_tr), Standardizer.fit(y_tr)
    X, y = jnp.asarray(sx.transform(X_tr)), jnp.asarray(sy.transform(y_tr))
    Xt, yt = jnp.asarray(sx.transform(X_te)), sy.transform(y_te)
    model = MODELS[model_name].make(np.asarray(X), num_inducing=num_inducing, layers=layers)
    prov = Provenance(
        model=model_name, data=str(data) if Path(str(data)).suffix == "" else Path(data).name,
        target=target, features=None if features is None else tuple(features),
        test_fraction=float(test_fraction), seed=int(seed), num_inducing=int(num_inducing),
        layers=int(layers), data_sha256=data_digest(X, y), command=command,
    )  # fmt: skip
    return _Prepared(X_tr, y_tr, X_te, y_te, what, sx, sy, X, y, Xt, yt, model, prov)


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
        predictive_labels=_input_labels(d.X_te, idx),
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


def _input_labels(X_te: np.ndarray, idx: np.ndarray) -> list[str]:
    """``E[y | x = 12.5]`` per test input ``idx`` (``E[y | x_test[i]]`` for ``D > 1``)."""
    if X_te.shape[1] == 1:
        return [f"E[y | x = {X_te[i, 0]:.3g}]" for i in idx]
    return [f"E[y | x_test[{i}]]" for i in idx]


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
    comps = r["components"].rescale(float(sy.mean), float(sy.std))
    means = np.asarray(comps.means)[:, idx]  # [S, P]
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


def _advice(check: Any, post: Posterior, model_name: str, data: str, view: Any = None) -> list[str]:
    """What to run when the reference fails: longer chains, or a reference run once; with the
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
    out.append(
        f"Run a long reference once, `ppl-dgp reference --model {model_name} --data {data} "
        f"--out {long}` (NUTS {REFERENCE_NUTS['num_chains']} x "
        f"({REFERENCE_NUTS['num_warmup']} + {REFERENCE_NUTS['num_samples']}), with the "
        f"same data, seed and model options as here), then pass `--reference "
        f"{long}/{stem}.npz` to compare the other methods with it (its provenance is checked)."
    )
    out.append(
        f"Or choose the chains yourself: `ppl-dgp compare --model {model_name} --data {data} "
        f"--methods nuts --num-warmup {warm} --num-samples {D} --num-chains {C} --out {long}`, "
        f"then `--reference {long}/nuts.npz`."
    )
    return out


def _figures(res, hyper, out, X_tr, y_tr, sx, sy, model, key) -> list[str]:
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
    if X_tr.shape[1] == 1:
        lo, hi = X_tr.min(), X_tr.max()
        pad = 0.05 * (hi - lo)
        grid_raw = np.linspace(lo - pad, hi + pad, 200)[:, None]
        grid = jnp.asarray(sx.transform(grid_raw))
        preds = {
            k: predict(
                jax.random.fold_in(key, 300), model, r["posterior"], grid, num_samples=200
            ).rescale(float(sy.mean), float(sy.std))
            for k, r in res.items()
        }
        plotting.plot_predictive_bands(X_tr, y_tr, grid_raw, preds, out / "predictive.png")
        files.append("predictive.png")
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
    name, check = gate["name"], gate["check"]
    label = "NUTS" if name == "nuts" else name
    s = [f"\n## Agreement with {label}\n\n"]
    src = f" (loaded from {gate['source']})" if gate["source"] else ""
    rule = (
        f"R-hat <= {diagnostics.RHAT_MAX} and bulk ESS >= {diagnostics.ESS_BULK_MIN:g} for "
        f"every hyperparameter and for the predictive mean at {diagnostics.MIN_PREDICTIVE_INPUTS}"
        f" or more test inputs, and no divergences"
    )
    if not check.ok:
        s.append(
            f"**Not computed.** The {label} reference{src} ({check.num_chains} chains x "
            f"{check.num_draws} draws) fails its own checks ({rule}), so agreement with it "
            "would score the methods against a posterior that is itself wrong:\n\n"
        )
        s += [f"- {r}\n" for r in check.reasons]
        s.append("\nWhat to run:\n\n" + "".join(f"- {a}\n" for a in gate["advice"]))
        return "".join(s)
    worst_r = max(check.rhat.values(), default=float("nan"))
    min_e = min(check.ess_bulk.values(), default=float("nan"))
    s.append(
        f"The {label} reference{src} passes its checks ({rule}): max R-hat {worst_r:.3f}, "
        f"min bulk ESS {min_e:.0f}, {check.num_chains} chains x {check.num_draws} draws.\n"
    )
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
              figures, chains) -> str:  # fmt: skip
    s = [f"# Inference comparison: `{model_name}` on {what}\n\n"]
    s.append(
        f"N = {len(X_tr)} training and {len(X_te)} test points, D = {X_tr.shape[1]}; data "
        "standardised with the training split; test metrics in original units.\n\n"
    )
    s.append("## Methods and timings\n\n")
    s.append(_table(
        ["method", "configuration", "compile (s)", "run (s)", "wall (s)"],
        [[k, f"`{_settings(configs[k])}`" + (f" from {r['source']}" if r["source"] else ""),
          _f(r["posterior"].timings.get("compile_seconds"), ".1f"),
          _f(r["posterior"].timings.get("run_seconds"), ".1f"), _f(r["wall_seconds"], ".1f")]
         for k, r in res.items()],
    ))  # fmt: skip
    s.append("\n## Test metrics\n\n")
    s.append(_table(
        ["method", "RMSE", "MLPD", "50% coverage", f"{CI_PROB:.0%} coverage", "95% coverage"],
        [[k, _f(r["test"]["rmse"]), _f(r["test"]["mlpd"]),
          *(_f(r["test"]["coverage"][p], ".2f") for p in (0.5, CI_PROB, 0.95))]
         for k, r in res.items()],
    ))  # fmt: skip
    s.append(
        "\n## PSIS-LOO\n\nPointwise log-likelihood per draw at the training inputs (inner-layer "
        "noise integrated out by Monte Carlo; see `ppl_dgp.diagnostics.pointwise_log_likelihood`)."
        " For SVI and Laplace the draws stand in for the posterior (a GP program's Laplace "
        "scores its linearised model: the likelihood of the GLM at each draw of `u`, as its "
        "predictive does), and Pareto k per "
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
    if gate is not None:
        s.append(_agreement_section(model_name, agree, gate, res))
    for k, c in chains.items():
        s.append(_chains_section(k, c))
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
