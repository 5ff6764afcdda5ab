"""Benchmark: 2-layer DGP and SVGP on the peers' workloads (diabetes, step1d, synth10k).

Same arrays, settings and printed fields as the GPflux / GPyTorch / GPflow runs of the shared
benchmark README: standardised data, ``Z_init`` (100 inducing inputs) for every layer, SE ARD
kernels (lengthscales 2; hidden variance 1e-6, output variance 1), identity mean on the hidden
layer, whitened, hidden ``q_sqrt = 1e-5 I``, noise 0.01, everything trained by Adam (lr 0.01) on
``-ELBO_batch / N``, batch 256, 2000 steps, one sample per datum. One JSON object per run.

Run ``ppl-dgp bench`` (one thread, float64 by default). The updates run as users' fits run
them (:func:`~ppl_dgp.infer.svi.run_svi`): a jitted ``lax.scan`` over chunks of
``chunk_size`` updates (100), here without ``run_svi``'s non-finite fallback and with the
minibatch indices passed in.
Timing: ``first_step_seconds`` is the trace + compile of that chunk plus one step (the first
chunk's time per step); ``seconds_per_step`` is the mean over the remaining chunks. (A Python
loop over a jitted single update paid ~3-4 ms per call on top on this machine's CPU backend,
measured on synth10k.) Minibatches are drawn as GPflux's ``tf.data`` pipeline
does: one permutation per epoch, sliced into batches.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from numpyro.infer import SVI

from ppl_dgp.compile_effort import AdaptiveJit
from ppl_dgp.datasets import load_bench
from ppl_dgp.elbo import DoublyStochasticELBO, elbo_terms
from ppl_dgp.guides import InducingPointGuide, compiled_init
from ppl_dgp.infer.minibatch import with_batch
from ppl_dgp.layers import Hyper, LayerSpec
from ppl_dgp.linalg import full_precision_matmuls
from ppl_dgp.mean_functions import Identity, Zero
from ppl_dgp.models.dgp import dgp_regression
from ppl_dgp.predict import mixture_metrics, predict_svi, to_original_units

__all__ = ["bench_layers", "run_benchmark"]

DATASETS = ("diabetes", "step1d", "synth10k")


def bench_layers(Z_init: np.ndarray, num_layers: int) -> tuple[LayerSpec, ...]:
    """The benchmark README's layer settings (GPflux ``build_constant_input_dim_deep_gp``)."""
    D = Z_init.shape[1]
    out = LayerSpec(
        1,
        Z_init,
        variance=Hyper(1.0),
        lengthscales=Hyper(np.full(D, 2.0)),
        mean_function=Zero(),
        q_sqrt_init=1.0,
    )
    if num_layers == 1:
        return (out,)
    hidden = LayerSpec(
        D,
        Z_init,
        variance=Hyper(1e-6),
        lengthscales=Hyper(np.full(D, 2.0)),
        mean_function=Identity(),
        q_sqrt_init=1e-5,
    )
    return (hidden,) * (num_layers - 1) + (out,)


def _epoch_batches(rng: np.random.Generator, N: int, B: int, steps: int) -> np.ndarray:
    """``[steps, B]`` indices: one permutation per epoch, sliced into batches of ``B``."""
    per_epoch = N // B
    perms = [
        rng.permutation(N)[: per_epoch * B].reshape(per_epoch, B)
        for _ in range(-(-steps // per_epoch))
    ]
    return np.concatenate(perms)[:steps].astype(np.int32)  # host array: no device op per slice


def _chunk_length(steps: int, chunk_size: int) -> int:
    """Largest divisor of ``steps`` that is ``<= chunk_size`` and leaves at least two chunks
    (the first one, which compiles, is not timed as steady state); every chunk has one length."""
    top = max(1, min(chunk_size, steps // 2))
    return max(c for c in range(1, top + 1) if steps % c == 0)


@full_precision_matmuls()  # float32 on a GPU: no TF32 in the GP algebra
def run_benchmark(
    dataset: str,
    *,
    num_layers: int = 2,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 0.01,
    num_predict_samples: int = 100,
    seed: int = 0,
    dtype: str = "float64",
    q_sqrt_transform: str = "triangular",
    chunk_size: int = 100,
) -> dict[str, Any]:
    """Train and evaluate one model on one workload; returns the README's JSON fields.

    ``steps`` updates run as a jitted ``lax.scan`` over chunks of (at most) ``chunk_size``
    updates; the chunk length is the largest divisor of ``steps`` not above ``chunk_size`` that
    leaves at least two chunks.
    """
    d = load_bench(dataset)
    f = np.float64 if dtype == "float64" else np.float32
    x_mean, x_std, y_mean, y_std = (
        np.asarray(d[k], dtype=f) for k in ("x_mean", "x_std", "y_mean", "y_std")
    )
    X = jnp.asarray((d["X_train"] - x_mean) / x_std, dtype=f)
    y = jnp.asarray(((d["Y_train"] - y_mean) / y_std)[:, 0], dtype=f)
    Xt = jnp.asarray((d["X_test"] - x_mean) / x_std, dtype=f)
    N, D = X.shape
    layers = bench_layers(np.asarray(d["Z_init"], dtype=f), num_layers)
    B = min(batch_size, N)
    model = functools.partial(
        dgp_regression, layers=layers, noise_variance=Hyper(0.01), batch_size=B
    )
    guide = InducingPointGuide(model, q_sqrt_transform=q_sqrt_transform)
    # Minibatches as GPflux draws them (tf.data shuffle + batch): a permutation per epoch.
    svi = SVI(
        with_batch(model, "data"),
        with_batch(guide, "data"),
        optax.adam(lr),
        DoublyStochasticELBO(loss_scale=1.0 / N),
    )
    key = jax.random.key(seed)
    batches = _epoch_batches(np.random.default_rng(seed), N, B, steps)
    state = compiled_init(svi, guide, key, jnp.asarray(batches[0]), X, y)  # one program
    chunk = _chunk_length(steps, chunk_size)

    def run_chunk(state: Any, idx: Array, X: Array, y: Array) -> tuple[Any, Array]:
        # idx: [chunk, B]; one update per row, as run_svi's compiled chunk
        return jax.lax.scan(lambda st, i: svi.update(st, i, X, y), state, idx)

    idx = batches.reshape(steps // chunk, chunk, B)  # [chunks, chunk, B], on the host
    t0 = time.perf_counter()
    compiled = jax.jit(run_chunk).lower(state, idx[0], X, y).compile()
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, losses = compiled(state, idx[0], X, y)
    jax.block_until_ready(losses)
    first = t_compile + (time.perf_counter() - t0) / chunk
    t0 = time.perf_counter()
    for c in range(1, steps // chunk):
        state, losses = compiled(state, idx[c], X, y)
    jax.block_until_ready(losses)
    per_step = (time.perf_counter() - t0) / max(steps - chunk, 1)
    loss = float(np.asarray(losses)[-1])

    full = functools.partial(dgp_regression, layers=layers, noise_variance=Hyper(0.01))
    full_guide = InducingPointGuide(full, q_sqrt_transform=q_sqrt_transform)

    yt = np.asarray((d["Y_test"][:, 0] - y_mean[0]) / y_std[0], dtype=f)  # standardised, host

    def evaluate(state: Any, key_elbo: Array, key_pred: Array, X: Array, y: Array, Xt: Array,
                 yt: Array) -> tuple:  # fmt: skip
        # the constrained parameters, the full-batch ELBO of 10 draws and the test predictive
        # (predict_svi's passes traced into it) with its RMSE and MLPD: one program
        params = svi.get_params(state)
        keys = jax.random.split(key_elbo, 10)
        terms = jax.vmap(lambda k: elbo_terms(k, params, full, full_guide, X, y))(keys)
        pred = predict_svi(key_pred, full, full_guide, params, Xt, num_samples=num_predict_samples)
        return terms, *mixture_metrics(pred, yt)  # (rmse, mlpd), as pred.metrics

    # one run: compiled quick when that is little work (compile_effort)
    keys = jax.random.key(seed + 1), jax.random.key(seed + 2)
    terms, rmse, mlpd = AdaptiveJit(evaluate)(state, *keys, X, y, Xt, yt)
    terms = jax.tree.map(np.asarray, terms)
    m = to_original_units(rmse, mlpd, float(y_std[0]))
    return {
        "dataset": dataset,
        "model": f"dgp{num_layers}" if num_layers > 1 else "svgp",
        "N": int(N),
        "D": int(D),
        "steps": steps,
        "seed": seed,
        "dtype": dtype,
        "q_sqrt_transform": q_sqrt_transform,
        "first_step_seconds": round(first, 4),
        "seconds_per_step": round(per_step, 6),
        "chunk_size": chunk,
        "final_elbo": float(np.mean(terms["elbo"])),
        "kl_per_layer": [float(np.mean(v)) for v in terms["kl"].values()],
        "test_rmse": m["rmse"],
        "test_mlpd": m["mlpd"],
        "final_loss": loss,
    }


def main(
    datasets: list[str],
    models: list[str],
    steps: int,
    dtype: str,
    seeds: list[int] = (0,),
    q_sqrt_transform: str = "triangular",
) -> list[dict[str, Any]]:
    """Run every (dataset, model, seed) and print one JSON line each."""
    results = []
    for ds in datasets:
        for m in models:
            for seed in seeds:
                r = run_benchmark(
                    ds,
                    num_layers=2 if m == "dgp2" else 1,
                    steps=steps,
                    dtype=dtype,
                    seed=seed,
                    q_sqrt_transform=q_sqrt_transform,
                )
                print(json.dumps(r), flush=True)
                results.append(r)
    return results
