"""The reference the report scores every method against: NUTS fitted here, or a saved
posterior loaded (the one shipped in the package for exactly this run, or a path), checked
against the model's sites and the run's provenance; its own checks, the warnings when it
fails them and what to run instead; and ``build_reference``, the long run done once."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ppl_dgp import diagnostics
from ppl_dgp.infer import fit, make_method
from ppl_dgp.infer.core import progress_enabled
from ppl_dgp.posterior import Posterior
from ppl_dgp.predictive import predict, spread
from ppl_dgp.reference import (
    PACKAGED,
    REFERENCE_NUTS,
    Provenance,
    check_provenance,
    read_provenance,
    reference_stem,
    write_provenance,
)
from ppl_dgp.report.constants import _REFERENCE_KEY, REFERENCE, REFERENCE_PREDICTIVE_INPUTS
from ppl_dgp.report.data import _prepare, _Prepared
from ppl_dgp.report.multioutput import _input_labels
from ppl_dgp.zoo import Program, regression_models

__all__ = [
    "UnreliableReferenceWarning",
    "UnverifiedReferenceWarning",
    "build_reference",
    "load_reference",
]


class UnreliableReferenceWarning(UserWarning):
    """The reference posterior fails its own checks: no agreement is computed against it."""


class UnverifiedReferenceWarning(UserWarning):
    """A loaded reference has no provenance file: its data and split cannot be checked."""


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
    (``settings`` override fields) on exactly the data and model
    :func:`~ppl_dgp.report.run_compare` builds with the same arguments, and write
    ``out/{model}-{data}.npz`` / ``.json`` / ``.provenance.json``; ``run_compare(...,
    reference=PATH)`` (or, for a file shipped in :data:`ppl_dgp.reference.PACKAGED`,
    ``reference="auto"``) uses it.

    Returns:
        The npz path and the reference's :func:`~ppl_dgp.diagnostics.reference_check` (the
        same checks as the report's, on the hyperparameters and the predictive mean at
        :data:`~ppl_dgp.report.constants.REFERENCE_PREDICTIVE_INPUTS` test inputs).
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


def _warn_unreliable(gate: dict[str, Any]) -> None:
    """The :class:`UnreliableReferenceWarning` of a reference that fails its checks, at the
    caller of :func:`~ppl_dgp.report.run_compare`."""
    check = gate["check"]
    warnings.warn(
        f"compare: no agreement with {gate['name']} computed: the reference fails its own "
        f"checks ({'; '.join(check.reasons)}). {' '.join(gate['advice'])}",
        UnreliableReferenceWarning,
        stacklevel=4,
    )


def _progress(iterable: Any, desc: str) -> Any:
    """``iterable`` with a progress bar over the methods, when progress bars are on."""
    if not progress_enabled(None):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="method")


def _fit_or_load(
    name: str, i: int, configs: dict, sources: dict, loaded: Posterior | None, ref_name: str,
    d: _Prepared, out: Path, key: Any, log: Callable[[str], None],
) -> tuple[Posterior, float]:  # fmt: skip
    """Method ``name``'s posterior and its wall time: the loaded reference, or a fit with key
    ``fold_in(key, i)`` (the reference's saved as ``out/{name}.npz`` with its provenance)."""
    t0 = time.perf_counter()
    if name in sources:
        log(f"[{name}] reference loaded from {sources[name]}")
        post = loaded
    else:
        log(f"[{name}] fitting {type(configs[name]).__name__} ...")
        post = fit(configs[name], jax.random.fold_in(key, i), d.model, d.X, d.y)
        if name == ref_name:
            npz, _ = post.save(out / name)
            write_provenance(npz, d.provenance)
            log(f"[{name}] saved to {npz} (reuse it with reference={str(npz)!r})")
    return post, time.perf_counter() - t0
