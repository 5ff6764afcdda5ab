# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reading posterior diagnostics: R-hat, ESS, divergences, LOO, and agreement with NUTS
#
# Every inference method in `ppl_dgp` returns the same `Posterior`, and
# `ppl_dgp.diagnostics.to_datatree` turns any of them into an ArviZ `DataTree` with the groups
# `posterior`, `log_likelihood`, `posterior_predictive`, `observed_data` and `sample_stats`.
# This notebook fits one deep GP and one Bayesian neural network (BNN) with NUTS, SVI and the
# Laplace approximation and asks three questions:
#
# 1. **Did the sampler work?** R-hat, effective sample size (ESS) and divergences (MCMC only).
# 2. **How well does each fit predict, and where is it fragile?** PSIS-LOO and its Pareto $\hat k$
#    per observation (every method).
# 3. **How close is each approximation to the exact posterior?** Marginal and predictive
#    discrepancies from a NUTS reference (`ppl_dgp.agreement`), and calibration
#    (`ppl_dgp.calibration`).
#
# `PPL_DGP_SMOKE=1` shrinks every fit to a few seconds (the tests run it that way); the numbers
# are then only indicative.

# %%
import functools
import os

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ppl_dgp import agreement, calibration, diagnostics, plotting
from ppl_dgp.datasets import Standardizer, load_bench, load_motorcycle
from ppl_dgp.infer import NUTS, SVI, fit
from ppl_dgp.laplace import Laplace
from ppl_dgp.models import bnn
from ppl_dgp.models.dgp import dgp_regression, init_dgp
from ppl_dgp.predictive import predict, predict_proba

SMOKE = os.environ.get("PPL_DGP_SMOKE") == "1"
size = (lambda full, smoke: smoke if SMOKE else full)  # fmt: skip

# %% [markdown]
# ## 1. A 2-layer deep GP on the motorcycle data
#
# We fit the same NumPyro program three ways. NUTS samples the exact joint (inducing values
# `u`, non-centred layer noise `eps`, kernel hyperparameters, noise). SVI fits the
# inducing-point guide (mean-field over the hyperparameters). Laplace fits a Gaussian at the
# MAP.

# %%
X_raw, y_raw = load_motorcycle()
X = Standardizer.fit(X_raw).transform(X_raw)
y = Standardizer.fit(y_raw).transform(y_raw)
dgp = functools.partial(dgp_regression, **init_dgp(X, num_layers=2, num_inducing=10))

methods = {
    "nuts": NUTS(num_warmup=size(300, 30), num_samples=size(300, 50), num_chains=2,
                 max_tree_depth=size(7, 4)),
    "svi": SVI(num_steps=size(3000, 100), hyper="normal", num_samples=size(400, 100)),
    "laplace": Laplace(num_steps=size(1000, 100), num_samples=size(400, 100)),
}  # fmt: skip
posts, trees = {}, {}
for i, (name, method) in enumerate(methods.items()):
    posts[name] = fit(method, jax.random.key(i), dgp, X, y)
    trees[name] = diagnostics.to_datatree(posts[name], dgp, X, y, rng_key=jax.random.key(10))
    print(f"{name:8s} {posts[name].timings['run_seconds']:6.1f} s")
trees["nuts"]

# %% [markdown]
# ### Did NUTS work? R-hat, ESS, divergences
#
# * **R-hat** compares the spread between chains with the spread within them; above about
#   1.01 the chains have not mixed (for a DGP this is often *several modes*: the two layers can
#   share the work in different ways, and each chain settles in one).
# * **Bulk / tail ESS** is the number of independent draws the chain is worth for the centre /
#   the 5% and 95% quantiles; aim for at least 100 per chain. **MCSE** is the Monte Carlo error
#   of the reported mean.
# * **Divergences** mark trajectories where the integrator blew up: the sampler could not
#   explore a region of high curvature, and the draws are biased there.

# %%
hyper = [k for k in posts["nuts"].draws if not k.endswith(".u")]
diagnostics.summary(trees["nuts"], hyper)

# %%
for line in diagnostics.diagnostic_warnings(trees["nuts"]) or ["no warnings"]:
    print("-", line)
diagnostics.plot_rank(trees["nuts"], hyper)

# %% [markdown]
# Rank plots show, per chain, how the ranks of its draws among all draws deviate from uniform;
# a chain whose curve leaves the envelope sits in a different part of the posterior.
#
# ### LOO and Pareto $\hat k$
#
# PSIS-LOO estimates the expected log predictive density of a new point, $\mathrm{elpd}$, by
# reweighting the draws as if each observation had been left out. The Pareto $\hat k$ of each
# observation says whether that reweighting is reliable: $\hat k < 0.7$ is fine; larger means
# the observation is so influential that the leave-one-out posterior is far from the full one.
# For SVI and Laplace the draws only approximate the posterior, so a large $\hat k$ also flags
# observations where the approximation cannot be trusted. The log-likelihood per draw
# integrates the DGP's inner-layer noise by Monte Carlo
# (`diagnostics.pointwise_log_likelihood`).

# %%
loos = {k: diagnostics.loo(dt) for k, dt in trees.items()}
for k, e in loos.items():
    khat = np.asarray(e.pareto_k)
    print(
        f"{k:8s} elpd_loo {e.elpd:8.1f} ± {e.se:5.1f}   k > 0.7: {np.sum(khat > 0.7)}/{khat.size}"
    )
diagnostics.plot_khat(loos)

# %%
diagnostics.compare(trees)

# %% [markdown]
# `compare` ranks the fits by elpd; `elpd_diff` is each one's distance from the best, `dse` its
# standard error, and `weight` the stacking weight. A difference smaller than a couple of
# `dse` is not a difference.
#
# ### How far are SVI and Laplace from NUTS?
#
# Per parameter: the standardised mean difference (SMD, in NUTS sd units), the sd ratio (below 1
# means over-confident) and the 1-D Wasserstein distance (in NUTS sd units). If NUTS itself
# failed its diagnostics above, read these as "distance from one NUTS run", not "error".

# %%
for name in ("svi", "laplace"):
    rows = agreement.marginal_discrepancies(posts["nuts"].draws, posts[name].draws)
    print(name)
    for site, v in agreement.site_agreement(rows).items():
        smd, ratio, w1 = v["max_abs_smd"], v["median_sd_ratio"], v["mean_w1"]
        print(f"  {site:22s} |SMD| max {smd:6.2f}  sd ratio {ratio:6.2f}  W1 {w1:5.2f}")

# %%
diagnostics.plot_forest(trees, hyper)

# %% [markdown]
# And the predictive: the MLPD gap and how much of NUTS's predictive mass each method's 90%
# interval holds (0.9 if they agree), on a held-out grid of the data itself (here the training
# inputs, for brevity).

# %%
S = size(200, 100)  # smoke: every fit has 100 draws (2 x 50 NUTS), so one shape per program
preds = {k: predict(jax.random.key(3), dgp, p, X, num_samples=S) for k, p in posts.items()}
for name in ("svi", "laplace"):
    d = agreement.predictive_discrepancies(preds[name], preds["nuts"], y, prob=0.9)
    print(name, {k: round(v, 3) for k, v in d.items()})
for k, pr in preds.items():
    print(k, "coverage of central intervals:", calibration.coverage_table(pr, y))

# %% [markdown]
# ## 2. A Bayesian neural network
#
# The same diagnostics for a one-hidden-layer BNN (`models.bnn`), first for regression on the
# motorcycle data, then for classification on the two moons, where calibration is measured by
# the expected calibration error (ECE) and the reliability diagram.

# %%
net = functools.partial(bnn.mlp_regression, hidden=(size(16, 8),), noise_scale=0.5)
bnn_methods = {
    "nuts": NUTS(num_warmup=size(300, 30), num_samples=size(300, 50), num_chains=2,
                 max_tree_depth=size(8, 4)),
    "svi": SVI(num_steps=size(3000, 100), num_samples=size(400, 100)),
    "laplace": Laplace(num_steps=size(2000, 100), num_samples=size(400, 100)),
}  # fmt: skip
bnn_posts = {k: fit(m, jax.random.key(20 + i), net, X, y) for i, (k, m) in
             enumerate(bnn_methods.items())}  # fmt: skip
bnn_trees = {k: diagnostics.to_datatree(p, net, X, y) for k, p in bnn_posts.items()}
print(diagnostics.diagnostic_warnings(bnn_trees["nuts"], diagnostics.loo(bnn_trees["nuts"])))
diagnostics.compare(bnn_trees)

# %%
for name in ("svi", "laplace"):
    rows = agreement.marginal_discrepancies(bnn_posts["nuts"].draws, bnn_posts[name].draws)
    s = agreement.site_agreement(rows)
    print(name, {site: round(v["median_sd_ratio"], 2) for site, v in s.items()})

# %% [markdown]
# BNN weights are not identifiable (hidden units can be permuted and their signs flipped), so
# marginal discrepancies of individual weights mix "different mode" with "wrong shape"; the
# predictive comparisons are the meaningful ones for a BNN.
#
# ### Classification and calibration

# %%
moons = load_bench("moons")
n_train = size(200, 80)
Xc, yc = moons["X_train"][:n_train], moons["y_train"][:n_train]
Xt, yt = moons["X_test"], moons["y_test"]
clf = functools.partial(bnn.mlp_binary, hidden=(size(16, 8),))
curves = {}
for i, (name, method) in enumerate(
    {"nuts": bnn_methods["nuts"], "laplace": Laplace(num_steps=size(2000, 100))}.items()
):
    post = fit(method, jax.random.key(40 + i), clf, Xc, yc)
    p1 = np.asarray(predict_proba(clf, post, Xt))
    ece = calibration.expected_calibration_error(p1, yt)
    acc = np.mean((p1 > 0.5) == yt)
    print(f"{name:8s} accuracy {acc:.3f}  ECE {ece:.3f}")
    curves[name] = calibration.reliability_curve(p1, yt)
plotting.plot_reliability(curves)

# %% [markdown]
# A curve under the diagonal is over-confident (it claims more than it delivers); one above is
# under-confident. For the whole comparison as a report (tables, figures and netCDF files of
# every DataTree) run `ppl-dgp compare --model dgp --data motorcycle --out out/compare`.
