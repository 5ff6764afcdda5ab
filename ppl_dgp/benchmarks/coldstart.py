"""What a user waits for: a whole fresh process, fit + predict, empty and warm compile cache.

``python -m ppl_dgp.benchmarks.coldstart`` (or :func:`main`) runs each case twice in a fresh
Python process sharing one new compilation-cache folder (:mod:`ppl_dgp.compile_cache`): first
with the folder empty (``cache="empty"``), then with what that run left (``cache="warm"``).

Cases:

- ``svi_motorcycle``: the motorcycle data standardised, the zoo's 2-layer DGP (``dgp``),
  ``fit(SVI(num_steps=1000))`` then ``predict`` at the training inputs (100 components).
- ``laplace_moons``: the two moons (``moons.npz``), the MLP 2-32-1 (tanh) of the Laplace
  benchmark: the MAP (``fit(MAP(num_steps=3000))``, timed as ``map_seconds``), then what
  laplace-torch's first call does from a trained net: ``fit(Laplace("last_layer", "kron",
  num_steps=0, tune="marglik"))`` on the program started at the MAP weights (the curvature and
  the evidence-tuned prior precision) and ``predict_proba`` (probit) at the test inputs.
  ``--laplace all:kron,all:full,...`` runs other ``subset:structure`` variants (the row's
  ``variant``); ``.bench/laplace_torch_peer.py`` is laplace-torch's side.

One JSON object per run: ``case``, ``cache``, ``process_seconds`` (the parent's wall clock
around the whole child process: interpreter start, imports, fit, predict, exit),
``import_seconds``, ``fit_seconds`` and ``predict_seconds`` (first calls, compilation
included), ``compile_seconds`` (JAX's own compile events in the fit, as every method reports
them), and a result figure (``final_loss`` or ``test_accuracy``) to show the runs did the same
work.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

CASES = ("svi_motorcycle", "laplace_moons")


def _child(case: str) -> dict:
    """One run, in this (fresh) process; returns the row without the parent's figures."""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from ppl_dgp.compile_cache import enable_compile_cache
    from ppl_dgp.datasets import Standardizer, load_bench, load_motorcycle
    from ppl_dgp.infer import MAP, SVI, fit
    from ppl_dgp.laplace import Laplace
    from ppl_dgp.models import MODELS, bnn
    from ppl_dgp.predictive import predict, predict_proba

    enable_compile_cache()
    # from the parent's launch (interpreter start and every import)
    row: dict = {"case": case, "import_seconds": time.time() - float(os.environ["COLDSTART_T0"])}
    if case == "svi_motorcycle":
        X, y = load_motorcycle()
        X, y = Standardizer.fit(X).transform(X), Standardizer.fit(y).transform(y)
        model = MODELS["dgp"].make(X)
        t = time.perf_counter()
        post = fit(SVI(num_steps=1000), jax.random.key(0), model, X, y)
        row["fit_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        pred = predict(jax.random.key(1), model, post, X)
        jax.block_until_ready(pred.means)
        row["predict_seconds"] = time.perf_counter() - t
        row["final_loss"] = float(post.traces["loss"][-1])
    elif case == "laplace_moons":
        d = load_bench("moons")
        model = functools.partial(bnn.mlp_binary, hidden=(32,), activation="tanh")
        # the MAP first (timed on its own: laplace-torch's first call starts from a trained net)
        t = time.perf_counter()
        post_map = fit(MAP(num_steps=3000, learning_rate=1e-2), jax.random.key(0), model,
                       d["X_train"], d["y_train"])  # fmt: skip
        row["map_seconds"] = time.perf_counter() - t
        weights = {k: v[0, 0] for k, v in post_map.draws.items()}  # (chain, draw, ...)
        at_map = functools.partial(model, init_values=weights)
        subset, structure = os.environ.get("COLDSTART_LAPLACE", "last_layer:kron").split(":")
        method = Laplace(subset, structure, num_steps=0, tune="marglik", tune_steps=100,
                         num_samples=100)  # fmt: skip
        row["variant"] = f"{subset}:{structure}"
        t = time.perf_counter()
        post = fit(method, jax.random.key(0), at_map, d["X_train"], d["y_train"])
        row["fit_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        p = np.asarray(predict_proba(at_map, post, d["X_test"], link="probit"))
        row["predict_seconds"] = time.perf_counter() - t
        row["test_accuracy"] = float(np.mean((p > 0.5) == d["y_test"]))
    else:
        raise ValueError(f"coldstart: unknown case {case!r}; choose from {CASES}")
    row["compile_seconds"] = post.timings.get("compile_seconds")
    return row


def run(case: str, cache_dir: str, label: str, laplace: str = "last_layer:kron") -> dict:
    """``case`` in a fresh process with ``cache_dir`` as its compilation cache (``laplace``:
    the Laplace case's ``subset:structure``)."""
    env = {**os.environ, "PPL_DGP_CACHE_DIR": cache_dir, "CI": "1", "PYTHONHASHSEED": "0",
           "COLDSTART_T0": repr(time.time()), "COLDSTART_LAPLACE": laplace}  # fmt: skip
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "ppl_dgp.benchmarks.coldstart", "--child", case],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"coldstart: case {case!r} failed:\n{out.stderr[-2000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row = {"case": case, "cache": label, "process_seconds": wall, **row}
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def main(cases: tuple[str, ...] = CASES, laplace: tuple[str, ...] = ("last_layer:kron",)
         ) -> list[dict]:  # fmt: skip
    """Each case (the Laplace one per ``subset:structure`` of ``laplace``) with an empty, then a
    warm cache; prints one JSON line per run."""
    rows = []
    for case in cases:
        for variant in laplace if case == "laplace_moons" else ("",):
            with tempfile.TemporaryDirectory(prefix="ppl_dgp_cache_") as cache:
                for label in ("empty", "warm"):
                    rows.append(run(case, cache, label, variant or "last_layer:kron"))
                    print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--laplace", default="last_layer:kron",
                        help="the Laplace case's subset:structure, comma-separated")  # fmt: skip
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child)), flush=True)
    else:
        variants = tuple(v for v in args.laplace.split(",") if v)
        bad = [v for v in variants if v.count(":") != 1]
        if bad:
            parser.error(f"--laplace: each variant is subset:structure (e.g. all:kron); "
                         f"received {bad}")  # fmt: skip
        main(tuple(c for c in args.cases.split(",") if c), variants)
