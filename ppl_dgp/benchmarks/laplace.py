"""Two-moons Laplace benchmark (laplace-torch's workload): ``ppl-dgp bench laplace``.

Settings (those of the shared benchmark README's laplace-torch runs): ``moons.npz`` (200 train,
1000 test, 100 OOD points on the circle of radius 10), MLP 2-32-1 with tanh units and a
Bernoulli likelihood on one logit, MAP by Adam (lr 1e-2, full batch, 3000 steps on
``potential / N`` = mean BCE + ``lambda / (2N) |theta|^2``), then Laplace (GGN) for subset in
{last_layer, all} x structure in {full, diag, kron} with the scalar prior precision tuned by
the Laplace evidence (Adam on its log, lr 0.1, 100 steps, as laplace-torch's
``optimize_prior_precision``) and the probit GLM predictive. Optional (``--nuts``): NUTS on the
same program as the Bayesian reference. A 5-member deep ensemble
(:class:`~ppl_dgp.infer.DeepEnsemble`: five MAPs by Adam, lr 1e-2, 3000 steps, from the
model's initial point perturbed in unconstrained space) predicts with the mean of its
members' probabilities (:func:`~ppl_dgp.predictive.predict_proba`).

One JSON object per row: ``predictive, lambda, nll, acc, ece`` (15 equal-width bins on
``max(p, 1 - p)``, :func:`~ppl_dgp.calibration.expected_calibration_error`), ``ood_entropy``
(mean predictive entropy on the OOD points, nats), ``fit_seconds`` / ``predict_seconds``
(warm: the median of ``--repeats`` calls after the first, the result on the host),
``fit_first_seconds`` / ``predict_first_seconds`` (the first call, compilation included),
``log_marglik``, ``prior_precision``. The Laplace fits start from the shared MAP
(``Laplace(num_steps=0)`` on the program warm-started at the MAP weights), so ``fit_seconds``
times the Laplace step alone, like laplace-torch's ``la.fit`` + prior optimisation; the refits
go through one :class:`~ppl_dgp.laplace.LaplaceFitter` (the compiled pieces held by the
caller). The MAP and ensemble rows are fitted once: ``fit_seconds`` is that fit's run time
without compilation, ``fit_first_seconds`` its wall time.
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import numpy as np

from ppl_dgp.calibration import expected_calibration_error
from ppl_dgp.datasets import load_bench
from ppl_dgp.infer import NUTS, DeepEnsemble, fit
from ppl_dgp.laplace import Laplace, LaplaceFitter
from ppl_dgp.models import bnn
from ppl_dgp.predictive import predict_proba

VARIANTS = (
    ("last_layer", "full"),
    ("last_layer", "kron"),
    ("all", "full"),
    ("all", "diag"),
    ("all", "kron"),
)


def metrics(p: np.ndarray, y: np.ndarray, p_ood: np.ndarray, bins: int = 15) -> dict:
    """Test NLL, accuracy, ECE (``bins`` equal-width bins on the confidence), OOD entropy."""
    p = np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-12)
    nll = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    acc = np.mean((p > 0.5).astype(int) == y)
    ece = expected_calibration_error(p, y, num_bins=bins)
    q = np.clip(np.asarray(p_ood, dtype=float), 1e-12, 1 - 1e-12)
    ent = -(q * np.log(q) + (1 - q) * np.log1p(-q))
    return {"nll": nll, "acc": acc, "ece": ece, "ood_entropy": ent.mean()}


def _timed(fn, repeats: int) -> tuple[object, float, float]:
    """``(output, first call s, median of the warm calls s)``; results reach the host."""
    t = time.perf_counter()
    out = jax.device_get(fn())
    first = time.perf_counter() - t
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.device_get(fn())
        warm.append(time.perf_counter() - t)
    return out, first, float(np.median(warm)) if warm else first


def run(lam: float, repeats: int, nuts: bool, nuts_samples: int) -> list[dict]:
    d = load_bench("moons")
    X, y = d["X_train"], d["y_train"]
    Xe = np.vstack([d["X_test"], d["X_ood"]])
    n_test = len(d["X_test"])
    model = functools.partial(bnn.mlp_binary, hidden=(32,), activation="tanh",
                              prior_precision=lam)  # fmt: skip
    key = jax.random.key(0)
    # The shared MAP (a Laplace fit whose draws are not used; its timing is the MAP's).
    t = time.perf_counter()
    post_map = fit(Laplace("last_layer", num_steps=3000, learning_rate=1e-2, num_samples=1),
                   key, model, X, y)  # fmt: skip
    map_first = time.perf_counter() - t
    weights = dict(post_map.approx.map)
    at_map = functools.partial(model, init_values=weights)
    rows = []

    def row(name: str, p: np.ndarray, **extra: object) -> dict:
        m = metrics(p[:n_test], d["y_test"], p[n_test:])
        r = {"predictive": name, "lambda": lam, **m, **extra}
        r = {k: (round(float(v), 6) if isinstance(v, float | np.floating) else v)
             for k, v in r.items()}  # fmt: skip
        print(json.dumps(r), flush=True)
        return r

    p, pf, pw = _timed(lambda: predict_proba(at_map, post_map, Xe, link="plugin"), repeats)
    rows.append(row("MAP plug-in", np.asarray(p), fit_seconds=post_map.timings["map_seconds"],
                    fit_first_seconds=map_first, predict_seconds=pw,
                    predict_first_seconds=pf))  # fmt: skip
    laplace = LaplaceFitter(at_map)
    for subset, structure in VARIANTS:
        method = Laplace(subset, structure, num_steps=0, tune="marglik", tune_steps=100,
                         num_samples=100)  # fmt: skip
        post, ff, fw = _timed(lambda m=method: laplace.fit(m, key, X, y), repeats)
        p, pf, pw = _timed(lambda q=post: predict_proba(at_map, q, Xe, link="probit"), repeats)
        name = f"{subset.replace('_', '-')} {structure}"
        rows.append(row(name, np.asarray(p), fit_seconds=fw, fit_first_seconds=ff,
                        predict_seconds=pw, predict_first_seconds=pf,
                        log_marglik=float(post.approx.log_marglik),
                        prior_precision=float(post.approx.prior_precision[0]),
                        ))  # fmt: skip
    t = time.perf_counter()
    post = fit(DeepEnsemble(num_members=5, num_steps=3000, learning_rate=1e-2), key, model, X, y)
    ens_first = time.perf_counter() - t
    p, pf, pw = _timed(lambda: predict_proba(model, post, Xe, num_samples=5), repeats)
    rows.append(row("DeepEnsemble (5)", np.asarray(p), fit_seconds=post.timings["run_seconds"],
                    fit_first_seconds=ens_first, predict_seconds=pw,
                    predict_first_seconds=pf))  # fmt: skip
    if nuts:
        method = NUTS(num_warmup=nuts_samples, num_samples=nuts_samples, num_chains=2)
        t = time.perf_counter()
        post = fit(method, key, model, X, y)
        fit_s = time.perf_counter() - t
        p, pf, pw = _timed(
            lambda: predict_proba(model, post, Xe, num_samples=2 * nuts_samples), repeats
        )
        div = int(np.sum(post.sample_stats["diverging"]))
        rows.append(row("NUTS", np.asarray(p), fit_seconds=fit_s, predict_seconds=pw,
                        predict_first_seconds=pf, divergences=div))  # fmt: skip
    return rows


def main(lams: list[float], repeats: int, nuts: bool, nuts_samples: int) -> list[dict]:
    """Run :func:`run` for each prior precision in ``lams``; prints one JSON line per row."""
    os.environ.setdefault("CI", "1")  # no progress bars in the printed rows
    return [r for lam in lams for r in run(lam, repeats, nuts, nuts_samples)]
