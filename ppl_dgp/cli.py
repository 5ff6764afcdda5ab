"""Command line: ``ppl-dgp compare`` (the main job), ``ppl-dgp run`` and ``ppl-dgp bench``.

``ppl-dgp compare`` fits one model with several inference methods and writes ``OUT/report.md``
with the figures and each method's DataTree (:mod:`ppl_dgp.report`): a regression model
(one output or ``y [N, P]``) or a classifier of the zoo, on a bundled set or a CSV.

``ppl-dgp run`` fits a 2-layer deep GP to the bundled motorcycle data by doubly-stochastic SVI,
prints the fit and its mixture predictive, and writes ``OUT/motorcycle_dgp.png``.
``ppl-dgp bench`` runs the shared DGP/SVGP benchmark workloads, ``ppl-dgp bench laplace`` the
two-moons Laplace one (:mod:`ppl_dgp.benchmarks`); both print one JSON object per run.
Every command keeps JAX's compiled programs on disk for the next process
(:mod:`ppl_dgp.compile_cache`; ``--no-cache`` turns that off, e.g. to time a cold start).

Example:
    :func:`main` takes the command line's arguments; ``ppl-dgp compare --list-methods``:

    >>> main(["compare", "--list-methods"])
    methods: ...nuts...svi...
    models: ...dgp (L-layer deep GP regression ...), svgp (sparse variational GP regression ...
    data (bundled; a CSV suits any model, by its --target):
      motorcycle: ...dgp, ...
      linnerud: dgp, dgp_multioutput
      breast_cancer: ...svgp_classification...
      digits: svgp_classification, dgp_classification, hybrid_classification
      moons: ...
    0
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn


class _BadArgument(ValueError):
    """A command-line argument that fails its check (reported as a usage error, exit 2)."""


def _usage_error(command: str, message: str) -> NoReturn:
    """argparse's convention for a bad argument, in one line: ``prog cmd: error: msg``, exit 2.

    The ``SystemExit`` carries the line (its ``str``) and the status 2 (its ``code``).
    """
    line = f"ppl-dgp {command}: error: {message}"
    print(line, file=sys.stderr)
    err = SystemExit(line)
    err.code = 2
    raise err


def _positive(flag: str, value: Any) -> None:
    if value is not None and value < 1:
        raise _BadArgument(f"{flag} must be >= 1; received {value}")


def _writable_dir(flag: str, out: str) -> None:
    """``out`` is a folder that exists and is writable, or one that can be created."""
    path = Path(out).absolute()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        where = "is not a folder" if probe == path else f"cannot be created ({probe} is a file)"
        raise _BadArgument(f"{flag} {out!r} {where}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise _BadArgument(f"{flag} {out!r} is not writable ({probe} denies writing)")


def _configure_jax(threads: int | None, dtype: str) -> None:
    """Set XLA threading before JAX starts, and the float width."""
    if threads is not None:
        flags = os.environ.get("XLA_FLAGS", "")
        extra = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
        if threads == 1 and "intra_op_parallelism_threads" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")


def _cmd_run(args: argparse.Namespace) -> int:
    _configure_jax(None, "float64")
    import functools
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np

    from ppl_dgp.datasets import Standardizer, load_motorcycle
    from ppl_dgp.infer import fit, make_method
    from ppl_dgp.models.dgp import dgp_regression, init_dgp
    from ppl_dgp.plotting import new_figure, plot_layer_samples_1d, plot_predictive_1d
    from ppl_dgp.predict import propagate_layers
    from ppl_dgp.predictive import predict

    X_raw, y_raw = load_motorcycle()
    try:  # every argument, before any work: the configs' own checks, the data's size, --out
        _positive("--layers", args.layers)
        _positive("--num-inducing", args.num_inducing)
        _positive("--steps", args.steps)
        if args.num_inducing > X_raw.shape[0]:
            raise _BadArgument(
                f"--num-inducing must be <= N = {X_raw.shape[0]} (the motorcycle data); "
                f"received {args.num_inducing}"
            )
        if args.seed < 0:
            raise _BadArgument(f"--seed must be >= 0; received {args.seed}")
        _positive("--checkpoint-every", args.checkpoint_every)
        method = make_method("svi", preset=None, num_steps=args.steps, learning_rate=args.lr,
                             checkpoint_dir=args.checkpoint_dir,
                             checkpoint_every=args.checkpoint_every)  # fmt: skip
        _writable_dir("--out", args.out)
        if args.checkpoint_dir is not None:  # created, writable, its checkpoint readable
            from ppl_dgp.checkpoint import Checkpoint

            Checkpoint(args.checkpoint_dir, owner="--checkpoint-dir").prepare()
    except ValueError as err:
        _usage_error("run", str(err))
    sx, sy = Standardizer.fit(X_raw), Standardizer.fit(y_raw)
    X, y = jnp.asarray(sx.transform(X_raw)), jnp.asarray(sy.transform(y_raw))
    config = init_dgp(X, num_layers=args.layers, num_inducing=args.num_inducing, seed=args.seed)
    model = functools.partial(dgp_regression, **config)
    print(
        f"Fitting a {args.layers}-layer deep GP (M={args.num_inducing} per layer) to the "
        f"motorcycle data (N={X.shape[0]}) by doubly-stochastic SVI, {args.steps} Adam steps"
    )
    from ppl_dgp.checkpoint import CheckpointError

    try:
        post = fit(method, jax.random.key(args.seed), model, X, y)
    except CheckpointError as err:  # a checkpoint of another fit: one line, nothing lost
        _usage_error("run", str(err))
    q = post.approx
    pred_train = predict(jax.random.key(2), model, post, X)
    m = pred_train.rescale(float(sy.mean), float(sy.std)).metrics(jnp.asarray(y_raw))
    summary = {
        "final_loss": float(np.mean(post.traces["loss"][-100:])),
        "noise_std_original_units": float(np.sqrt(q.medians["noise_variance"]) * sy.std),
        "train_rmse": m["rmse"],
        "train_mlpd": m["mlpd"],
        "compile_seconds": round(post.timings["compile_seconds"], 2),
        "run_seconds": round(post.timings["run_seconds"], 2),
    }
    print(json.dumps(summary, indent=2))

    grid_raw = np.linspace(X_raw.min() - 2, X_raw.max() + 2, 200)[:, None]
    grid = jnp.asarray(sx.transform(grid_raw))
    pred = predict(jax.random.key(3), model, post, grid, num_samples=200)
    pred = pred.rescale(float(sy.mean), float(sy.std))
    lo, hi = pred.interval(0.95)
    print("\nPredictive of acceleration (g) at a few times (ms): mean [95% interval]")
    for t in (5.0, 15.0, 20.0, 30.0, 45.0, 55.0):
        i = int(np.argmin(np.abs(grid_raw[:, 0] - t)))
        print(
            f"  t = {t:5.1f}: {float(pred.mean[i]):8.2f}  "
            f"[{float(lo[i]):8.2f}, {float(hi[i]):8.2f}]"
        )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = {**post.params, **{f"{k}.q_mu": v for k, v in q.q_mu.items()},
              **{f"{k}.q_sqrt": v for k, v in q.q_sqrt.items()}}  # fmt: skip
    sites = propagate_layers(jax.random.key(4), model, dict(q.medians), params, grid,
                             num_samples=30, values_per_pass=False, batch_size=None)  # fmt: skip
    moments = {k: tuple(sites[f"{k}.{r}"] for r in ("f", "f_mean", "f_var")) for k in q.q_mu}
    fig, axes = new_figure(1, args.layers + 1, figsize=(5 * (args.layers + 1), 4))
    plot_layer_samples_1d(axes[:-1], grid_raw, moments)
    plot_predictive_1d(
        axes[-1],
        X_raw,
        y_raw,
        grid_raw,
        pred,
        title="mixture predictive (S=200)",
        num_component_lines=10,
    )
    axes[-1].set_xlabel("time (ms)")
    axes[-1].set_ylabel("acceleration (g)")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = out / "motorcycle_dgp.png"
    fig.savefig(path, dpi=110)
    print(f"\nWrote {path}")
    return 0


#: ``compare``'s methods without ``--methods`` (:data:`ppl_dgp.report.DEFAULT_METHODS`; kept
#: here so that the arguments are checked before the report's imports, ~10 s, are paid).
DEFAULT_METHODS = ("svi", "nuts", "sghmc", "laplace", "map", "ensemble")


def _cmd_compare(args: argparse.Namespace) -> int:
    _configure_jax(None, "float64")
    import time

    from ppl_dgp.infer import METHODS
    from ppl_dgp.models import MODELS

    if args.list_methods:
        from ppl_dgp import report

        print("methods:", ", ".join(METHODS))
        print("models:", ", ".join(f"{k} ({m.description})" for k, m in MODELS.items()
                                   if k in report.compare_models()))  # fmt: skip
        print("data (bundled; a CSV suits any model, by its --target):")
        for data in (*report.REGRESSION_DATA, *report.MULTI_OUTPUT_DATA,
                     *report.CLASSIFICATION_DATA):  # fmt: skip
            print(f"  {data}: {', '.join(report.models_for_data(data))}")
        return 0
    if args.methods is None:
        methods = list(DEFAULT_METHODS)
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    features = None if args.features is None else [c.strip() for c in args.features.split(",")]
    overrides = {
        m: {"num_warmup": args.num_warmup, "num_samples": args.num_samples,
            "num_chains": args.num_chains}
        for m in ("nuts", "hmc")
    }  # fmt: skip
    overrides["svi"] = {"num_steps": args.svi_steps}
    try:
        _check_compare(args, methods, overrides)
    except ValueError as err:
        _usage_error("compare", str(err))
    from ppl_dgp import report

    t0 = time.perf_counter()
    try:
        report.run_compare(
            args.model,
            args.data,
            methods,
            args.out,
            target=args.target,
            features=features,
            test_fraction=args.test_fraction,
            seed=args.seed,
            num_inducing=args.num_inducing,
            layers=args.layers,
            smoke=args.smoke,
            overrides=overrides,
            reference=None if args.reference == "none" else args.reference,
        )
    except ValueError as err:
        raise SystemExit(f"ppl-dgp compare: {err}") from None
    print(f"compare finished in {time.perf_counter() - t0:.0f} s")
    return 0


def _cmd_reference(args: argparse.Namespace) -> int:
    _configure_jax(None, "float64")
    import time

    import ppl_dgp.models  # noqa: F401 - fills the zoo's registry
    from ppl_dgp.zoo import regression_models

    if args.model not in regression_models():
        _usage_error(
            "reference",
            f"--model {args.model!r} is not a regression model of the zoo; choose from "
            f"{', '.join(regression_models())}",
        )
    try:
        _positive("--layers", args.layers)
        _positive("--num-inducing", args.num_inducing)
        if not 0.0 < args.test_fraction < 1.0:
            raise _BadArgument(f"--test-fraction must be in (0, 1); received {args.test_fraction}")
        _writable_dir("--out", args.out)
    except ValueError as err:
        _usage_error("reference", str(err))
    # the command as the provenance records it: what decides the posterior, not --out
    command = f"ppl-dgp reference --model {args.model} --data {args.data}"
    defaults = {"target": None, "features": None, "test_fraction": 0.2, "seed": 0,
                "num_inducing": 20, "layers": 2}  # fmt: skip
    for k, v in defaults.items():
        if getattr(args, k) != v:
            command += f" --{k.replace('_', '-')} {getattr(args, k)}"
    from ppl_dgp import report

    t0 = time.perf_counter()
    features = None if args.features is None else [c.strip() for c in args.features.split(",")]
    try:
        _, check = report.build_reference(
            args.model, args.data, args.out, target=args.target, features=features,
            test_fraction=args.test_fraction, seed=args.seed, num_inducing=args.num_inducing,
            layers=args.layers, command=command,
        )  # fmt: skip
    except ValueError as err:
        raise SystemExit(f"ppl-dgp reference: {err}") from None
    print(f"reference finished in {time.perf_counter() - t0:.0f} s")
    return 0 if check.ok else 1


def _check_compare(args: argparse.Namespace, methods: list[str], overrides: dict) -> None:
    """Every ``compare`` argument, checked before any data is read or model fitted: the method
    configurations are built as the report builds them (their own checks), then ``--out``."""
    from ppl_dgp.infer import METHODS, make_method
    from ppl_dgp.models import MODELS
    from ppl_dgp.zoo import classification_models, compare_models, regression_models

    if args.model not in compare_models():  # before the report's (slow) import
        raise _BadArgument(
            f"--model {args.model!r} is not a model compare takes; regression: "
            f"{', '.join(regression_models())}; classification: "
            f"{', '.join(classification_models())} (--list-methods lists which suit "
            "each --data)"
        )
    from ppl_dgp import report

    if not methods:
        raise _BadArgument("--methods names no method")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise _BadArgument(f"--methods: unknown {unknown}; registered: {', '.join(METHODS)}")
    entry = MODELS[args.model]
    for flag in ("--layers", "--num-inducing", "--num-warmup", "--num-samples",
                 "--num-chains", "--svi-steps"):  # fmt: skip
        _positive(flag, getattr(args, flag[2:].replace("-", "_")))
    if not 0.0 < args.test_fraction < 1.0:
        raise _BadArgument(f"--test-fraction must be in (0, 1); received {args.test_fraction}")
    if args.seed < 0:
        raise _BadArgument(f"--seed must be >= 0; received {args.seed}")
    preset = "smoke" if args.smoke else "compare"
    for m in methods:
        make_method(m, preset=preset, **{**entry.method_overrides.get(m, {}),
                                         **overrides.get(m, {})})  # fmt: skip
    bundled = (*report.REGRESSION_DATA, *report.MULTI_OUTPUT_DATA, *report.CLASSIFICATION_DATA)
    if args.data not in bundled:
        if not Path(args.data).is_file():
            raise _BadArgument(
                f"--data {args.data!r} is neither a bundled data set ({', '.join(bundled)}) "
                "nor an existing CSV file"
            )
        if args.target is None:
            raise _BadArgument("--target is needed with a CSV --data (the column to predict)")
    report.check_model_data(args.model, args.data, args.target)
    if args.reference not in ("auto", "none"):
        ref = Path(args.reference)
        if not (ref.is_file() or ref.with_suffix(".npz").is_file()):
            raise _BadArgument(f"--reference {args.reference!r}: no such file (a saved nuts.npz)")
    _writable_dir("--out", args.out)


def _check_bench(args: argparse.Namespace) -> list[int]:
    """Every ``bench`` argument, before JAX starts; returns the seeds."""
    _positive("--threads", args.threads)
    if args.suite == "laplace":
        _positive("--repeats", args.repeats)
        _positive("--nuts-samples", args.nuts_samples)
        bad = [v for v in args.lam if not v > 0]
        if bad:
            raise _BadArgument(f"--lambda (prior precisions) must be > 0; received {bad}")
        return []
    _positive("--steps", args.steps)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise _BadArgument(
            f"--seeds must be comma-separated ints >= 0; received {args.seeds!r}"
        ) from None
    if any(s < 0 for s in seeds):
        raise _BadArgument(f"--seeds must be comma-separated ints >= 0; received {args.seeds!r}")
    return seeds


def _check_uci(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The ``bench uci`` arguments, before JAX starts; returns (models, methods)."""
    if args.data is None:
        raise _BadArgument("--data is required: a folder in the UCI layout or a CSV file")
    path = Path(args.data)
    if not path.exists():
        raise _BadArgument(f"--data {args.data!r}: no such file or folder")
    if path.is_file() and args.target is None:
        raise _BadArgument("--target is required with a CSV file (the column to predict)")
    for flag in ("splits", "num_inducing", "num_samples"):
        _positive(f"--{flag.replace('_', '-')}", getattr(args, flag))
    if args.uci_steps is not None:
        _positive("--uci-steps", args.uci_steps)
    models = [m for m in args.zoo.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]
    import ppl_dgp.models  # noqa: F401  (registers the zoo; no report, no plotting)
    from ppl_dgp.zoo import regression_models

    known = regression_models()
    bad = [m for m in models if m not in known]
    if bad or not models:
        raise _BadArgument(f"--zoo: unknown regression model(s) {bad}; choose from {known}")
    return models, methods


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.suite == "coldstart":
        from ppl_dgp.benchmarks import coldstart

        coldstart.main()
        return 0
    try:
        if args.suite == "uci":
            models, methods = _check_uci(args)
            seeds = []
        else:
            seeds = _check_bench(args)
    except ValueError as err:
        _usage_error("bench", str(err))
    _configure_jax(args.threads, args.dtype)
    if args.suite == "uci":
        from ppl_dgp.benchmarks import uci
        from ppl_dgp.infer import METHODS

        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            _usage_error("bench", f"--methods: unknown {unknown}; choose from {sorted(METHODS)}")
        steps = {} if args.uci_steps is None else {"num_steps": args.uci_steps}
        try:
            uci.main(args.data, target=args.target, models=models, methods=methods,
                     num_splits=args.splits, num_inducing=args.num_inducing,
                     num_samples=args.num_samples, **steps)  # fmt: skip
        except ValueError as err:
            _usage_error("bench", str(err))
        return 0
    if args.suite == "laplace":
        from ppl_dgp.benchmarks import laplace

        laplace.main(args.lam, args.repeats, args.nuts, args.nuts_samples)
        return 0
    from ppl_dgp.benchmarks import dgp as bench

    datasets = args.datasets.split(",")
    models = args.models.split(",")
    for d in datasets:
        if d not in bench.DATASETS:
            _usage_error("bench", f"unknown dataset {d!r}; choose from {bench.DATASETS}")
    for m in models:
        if m not in ("dgp2", "svgp"):
            _usage_error("bench", f"unknown model {m!r}; choose from ('dgp2', 'svgp')")
    bench.main(datasets, models, args.steps, args.dtype, seeds, args.q_sqrt_transform)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ppl-dgp", description=__doc__.splitlines()[0])
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="do not read or write JAX's compilation cache (default: $PPL_DGP_CACHE_DIR, "
        "else ~/.cache/ppl_dgp/jax; see ppl_dgp.compile_cache)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="fit a 2-layer DGP to the motorcycle data (the main job)")
    r.add_argument("--layers", type=int, default=2)
    r.add_argument("--num-inducing", type=int, default=20)
    r.add_argument("--steps", type=int, default=3000)
    r.add_argument("--lr", type=float, default=0.01)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default="out")
    r.add_argument(
        "--checkpoint-dir",
        help="write a checkpoint there every --checkpoint-every steps and on Ctrl-C; running "
        "the same command again continues the fit exactly where it stopped",
    )
    r.add_argument("--checkpoint-every", type=int, default=100)
    r.set_defaults(func=_cmd_run)

    c = sub.add_parser(
        "compare", help="fit one model with several methods; write OUT/report.md and figures"
    )
    c.add_argument(
        "--model",
        default="dgp",
        help="a regression model or classifier of the zoo (--list-methods lists them, and "
        "which suit each bundled --data)",
    )
    c.add_argument(
        "--data",
        default="motorcycle",
        help="regression: motorcycle (default), diabetes, step1d, synth10k; multi-output "
        "regression: linnerud; classification: breast_cancer, digits, moons; or the path of "
        "a CSV file",
    )
    c.add_argument(
        "--target",
        help="CSV: the column to predict (a classifier: labels 0, ..., K-1; several, "
        "comma-separated: a multi-output regression)",
    )
    c.add_argument("--features", help="CSV: comma-separated input columns (default: all others)")
    c.add_argument(
        "--methods",
        help="comma-separated registered methods (default: svi,nuts,sghmc,laplace,map,ensemble)",
    )
    c.add_argument("--out", default="out/compare")
    c.add_argument("--layers", type=int, default=2, help="DGP layers (bnn: layers - 1 hidden)")
    c.add_argument("--num-inducing", type=int, default=20)
    c.add_argument("--test-fraction", type=float, default=0.2)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--num-warmup", type=int, help="NUTS/HMC warm-up per chain (NUTS 500, HMC 200)")
    c.add_argument("--num-samples", type=int, help="NUTS/HMC draws per chain (NUTS 1000, HMC 200)")
    c.add_argument("--num-chains", type=int, help="NUTS/HMC chains (NUTS 8, HMC 2)")
    c.add_argument("--svi-steps", type=int, help="SVI steps (default 2000)")
    c.add_argument("--smoke", action="store_true", help="tiny sizes (tests, a quick look)")
    c.add_argument(
        "--reference",
        metavar="PATH",
        default="auto",
        help="the NUTS reference: auto (default: the one shipped in the package when it was "
        "fitted on exactly this model, data and split, written by `ppl-dgp reference`; else "
        "NUTS is fitted), none (fit NUTS), or a saved posterior (OUT/nuts.npz of an earlier "
        "compare run, or a `ppl-dgp reference` file)",
    )
    c.add_argument("--list-methods", action="store_true", help="print the methods and models")
    c.set_defaults(func=_cmd_compare)

    f = sub.add_parser(
        "reference",
        help="fit compare's NUTS reference once, long (8 x 3000 iterations), with its "
        "provenance: OUT/{model}-{data}.npz",
    )
    f.add_argument("--model", default="dgp", help="a regression model of the zoo")
    f.add_argument("--data", default="motorcycle", help="a bundled data set or a CSV path")
    f.add_argument("--target", help="CSV: the column to predict")
    f.add_argument("--features", help="CSV: comma-separated input columns (default: all others)")
    f.add_argument("--out", default="out/reference")
    f.add_argument("--layers", type=int, default=2)
    f.add_argument("--num-inducing", type=int, default=20)
    f.add_argument("--test-fraction", type=float, default=0.2)
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=_cmd_reference)

    b = sub.add_parser("bench", help="benchmark workloads of the peers (JSON lines)")
    b.add_argument(
        "suite",
        nargs="?",
        choices=("dgp", "laplace", "uci", "coldstart"),
        default="dgp",
        help="dgp: DGP/SVGP regression vs GPflux/GPyTorch/GPflow (default); "
        "laplace: two-moons Laplace vs laplace-torch; uci: a UCI folder or CSV, Salimbeni & "
        "Deisenroth's protocol; coldstart: fresh processes, empty and warm compile cache",
    )
    b.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    b.add_argument(
        "--threads", type=int, default=1, help="XLA CPU threads (1 = the peers' setting)"
    )
    g = b.add_argument_group("dgp suite")
    g.add_argument("--datasets", default="diabetes,step1d,synth10k")
    g.add_argument("--models", default="dgp2,svgp")
    g.add_argument("--steps", type=int, default=2000)
    g.add_argument("--seeds", default="0", help="comma-separated seeds (init keys and batches)")
    g.add_argument("--q-sqrt-transform", choices=("triangular", "softplus"), default="triangular")
    g = b.add_argument_group("laplace suite")
    g.add_argument(
        "--lambda", dest="lam", type=float, nargs="+", default=[1.0], help="prior precisions"
    )
    g.add_argument("--repeats", type=int, default=10, help="warm calls timed after the first")
    g.add_argument("--nuts", action="store_true", help="add NUTS as the Bayesian reference")
    g.add_argument("--nuts-samples", type=int, default=500, help="warm-up = draws per chain")
    g = b.add_argument_group("uci suite")
    g.add_argument("--data", help="a folder in the standard UCI layout, or a CSV file")
    g.add_argument("--target", help="CSV: the column to predict")
    g.add_argument("--zoo", default="dgp", help="comma-separated zoo models (default dgp)")
    g.add_argument("--methods", default="svi", help="comma-separated methods (default svi)")
    g.add_argument("--splits", type=int, default=3, help="number of splits (default 3)")
    g.add_argument("--num-inducing", type=int, default=100)
    g.add_argument("--num-samples", type=int, default=100, help="mixture components S")
    g.add_argument("--uci-steps", type=int, help="SVI/MAP steps (default: the method's)")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    if not args.no_cache:  # a second process reads back what the first compiled
        from ppl_dgp.compile_cache import enable_compile_cache

        enable_compile_cache()
    try:
        return args.func(args)
    except KeyboardInterrupt as err:  # one line, the shell's status for SIGINT (128 + 2)
        notes = getattr(err, "__notes__", None)  # a checkpointed fit says where it stopped
        print(f"ppl-dgp {args.command}: {notes[-1] if notes else 'interrupted'}",
              file=sys.stderr)  # fmt: skip
        return 130


if __name__ == "__main__":
    sys.exit(main())
