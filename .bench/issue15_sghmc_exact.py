"""Issue 15: is SGHMC's stationary distribution right? A one-layer GP where ``p(u | y)`` is exact.

One GP layer (SE kernel, variance and lengthscale fixed), ``M`` inducing inputs, the noise
variance fixed, the output integrated out: the only chain coordinate is the whitened ``u``
and its posterior is Gaussian in closed form,

    P = I + A diag(1 / (k_nn - |a_n|^2 + s2)) A^T,  mean = P^-1 A diag(...) y,

``A = L^-1 K(Z, X)``, ``L L^T = K_zz + jitter I`` (the model's jitter). SGHMC (``hyper="sample"``,
Havasi et al.'s scale-adapted integrator) runs on it, full batch or minibatch, and its draws
are compared with the dense posterior: the largest standardised error of the mean
(``|mean_hat - mean| / sd`` per coordinate), and the sample variance along each eigenvector of
the exact covariance divided by its eigenvalue (1 = right; > 1 over-dispersed), with the bulk
ESS of each coordinate (ArviZ) to tell Monte Carlo error from bias.

Usage::

    .venv/bin/python .bench/issue15_sghmc_exact.py --N 200 --M 20 [--batch 50]
        [--step-size 0.01] [--friction 0.05] [--burnin 3000] [--samples 2000]
        [--thinning 5] [--chains 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ppl_dgp.infer import SGHMC, fit  # noqa: E402
from ppl_dgp.layers import Hyper  # noqa: E402
from ppl_dgp.models.dgp import dgp_regression, init_dgp  # noqa: E402


def exact_model(X, Z, s2, variance=1.0, lengthscale=0.8):
    config = init_dgp(X, num_layers=1, Z_init=Z, noise_variance=s2)
    spec = dataclasses.replace(config["layers"][0], variance=Hyper(variance, fixed=True),
                               lengthscales=Hyper(np.full(X.shape[1], lengthscale),
                                                  fixed=True))  # fmt: skip
    config = {**config, "layers": (spec,), "noise_variance": Hyper(s2, fixed=True)}
    return functools.partial(dgp_regression, **config), spec


def dense_posterior(X, y, spec, s2):
    var = float(spec.variance.init)
    ell = np.asarray(spec.lengthscales.init, float)
    Z = np.asarray(spec.Z)

    def k(a, b):
        d = (a[:, None, :] - b[None, :, :]) / ell
        return var * np.exp(-0.5 * np.sum(d**2, -1))

    L = np.linalg.cholesky(k(Z, Z) + spec.jitter * np.eye(len(Z)))
    A = np.linalg.solve(L, k(Z, X))  # [M, N]
    w = 1.0 / (var - np.sum(A**2, axis=0) + s2)
    P = np.eye(len(Z)) + (A * w) @ A.T
    cov = np.linalg.inv(P)
    return cov @ (A * w) @ y, cov


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=200)
    ap.add_argument("--M", type=int, default=20)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--step-size", type=float, default=0.01)
    ap.add_argument("--friction", type=float, default=0.05)
    ap.add_argument("--burnin", type=int, default=3000)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--thinning", type=int, default=5)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    X = np.sort(rng.uniform(-3.0, 3.0, args.N))[:, None]
    y = np.sin(1.5 * X[:, 0]) + np.sqrt(args.noise) * rng.normal(size=args.N)
    Z = np.linspace(-3.0, 3.0, args.M)[:, None]
    model, spec = exact_model(X, Z, args.noise)
    mean, cov = dense_posterior(X, y, spec, args.noise)

    method = SGHMC(step_size=args.step_size, friction=args.friction, num_burnin=args.burnin,
                   num_samples=args.samples, thinning=args.thinning, num_chains=args.chains,
                   batch_size=args.batch)  # fmt: skip
    t = time.perf_counter()
    post = fit(method, jax.random.key(args.seed), model, X, y)
    fit_s = time.perf_counter() - t
    u = np.asarray(post.draws["layer0.u"]).reshape(args.chains, args.samples, -1)  # [C, S, M]
    flat = u.reshape(-1, u.shape[-1])
    sd = np.sqrt(np.diag(cov))
    z_mean = np.abs(flat.mean(0) - mean) / sd
    evals, evecs = np.linalg.eigh(cov)
    proj = (flat - mean) @ evecs  # [CS, M]: coordinates along the exact eigenvectors
    ratio = proj.var(0) / evals  # ascending eigenvalue: the data-determined directions first
    import arviz as az

    ess = np.asarray(az.ess(az.convert_to_dataset({"u": u}), method="bulk")["u"])
    row = {
        "cfg": vars(args),
        "fit_s": round(fit_s, 1),
        "mean_err_over_sd_max": round(float(z_mean.max()), 3),
        "mean_err_over_sd_median": round(float(np.median(z_mean)), 3),
        "var_ratio_by_eigen_ascending": [round(float(r), 3) for r in ratio],
        "var_ratio_median": round(float(np.median(ratio)), 3),
        "marginal_var_ratio": [round(float(r), 3) for r in flat.var(0) / np.diag(cov)],
        "eigenvalues": [float(f"{e:.3g}") for e in evals],
        "ess_bulk_min": round(float(ess.min()), 1),
        "ess_bulk_median": round(float(np.median(ess)), 1),
    }
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
