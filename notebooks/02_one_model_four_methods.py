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
# # One model, four methods: SVI, NUTS, SGHMC and Laplace on the same deep GP
#
# A deep GP in `ppl_dgp` is one NumPyro program. Its random quantities are named sample
# sites: the kernel hyperparameters, the whitened inducing values `layer{l}.u` of each layer,
# the per-datum layer noise `layer{l}.eps` (so that $f = m + \sqrt{v}\,\varepsilon$) and the
# likelihood's `noise_variance`. The program is a *proper joint density*, so every inference
# method can target it, and swapping one for another changes **one argument** of
# `fit(method, key, model, X, y)`:
#
# | method | what it computes | cost |
# |---|---|---|
# | `SVI` | best Gaussian $q(u)$ per layer (doubly-stochastic bound), MAP hyperparameters | cheap |
# | `NUTS` | exact MCMC on the joint (hyperparameters, $u$, $\varepsilon$) | expensive |
# | `SGHMC` | stochastic-gradient HMC on minibatches, layer outputs sampled | cheap per step |
# | `Laplace` | a Gaussian at the MAP of the joint, Hessian as precision | one MAP + one Hessian |
#
# Each returns the same `Posterior` (draws shaped `(chain, draw, ...)` keyed by site name) and
# `predict(key, model, posterior, X_new)` gives the Gaussian-mixture predictive for every one
# of them. Here we fit the motorcycle data (head acceleration after a simulated impact, 94
# points) and look at what each method *believes*.
#
# Set `PPL_DGP_SMOKE=1` to run everything at a tiny size (the test suite does); the figures are
# then rough, but every cell runs.

# %%
import functools
import os

import jax
import matplotlib.pyplot as plt
import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

jax.config.update("jax_enable_x64", True)

from ppl_dgp import datasets, plotting
from ppl_dgp.infer import NUTS, SGHMC, SVI, Laplace, fit
from ppl_dgp.models import dgp
from ppl_dgp.predictive import predict

SMOKE = os.environ.get("PPL_DGP_SMOKE", "0") == "1"
M = 5 if SMOKE else 20  # inducing points per layer
CHAINS = 1 if SMOKE else 4  # smoke: one chain (split R-hat still compares its halves)
WARMUP, SAMPLES = (30, 30) if SMOKE else (500, 500)
TREE_DEPTH = 4 if SMOKE else 10  # NUTS: at most 2**depth - 1 leapfrog steps per draw
SVI_STEPS = 100 if SMOKE else 5000
SGHMC_BURNIN = 200 if SMOKE else 5000
S = 20 if SMOKE else 200  # mixture components for the predictive plots
print(f"smoke={SMOKE}: M={M}, {CHAINS} chains x {SAMPLES} draws, {SVI_STEPS} SVI steps")

# %% [markdown]
# ## The data and the model
#
# We standardise both axes (the priors and the initial values assume unit scale) and build a
# 2-layer DGP with Salimbeni's recipe: $M$ inducing inputs per layer from k-means, an identity
# mean function on the inner layer and a zero mean on the last, squared-exponential kernels.

# %%
X_raw, y_raw = datasets.load_motorcycle()
sx, sy = datasets.Standardizer.fit(X_raw), datasets.Standardizer.fit(y_raw)
X, y = sx.transform(X_raw), sy.transform(y_raw)
X_grid = np.linspace(X.min() - 0.3, X.max() + 0.3, 200)[:, None]

config = dgp.init_dgp(X, num_layers=2, num_inducing=M)
model = functools.partial(dgp.dgp_regression, **config)
print(
    "N =",
    X.shape[0],
    "| layers:",
    [f"D={s.Z.shape[1]} -> Q={s.num_outputs}" for s in config["layers"]],
)

# %% [markdown]
# ## Four fits, one call each
#
# The only line that changes is the method. Each configuration is a small frozen value; it
# keeps no results (they are all in the returned `Posterior`).

# %%
methods = {
    "SVI": SVI(num_steps=SVI_STEPS, num_samples=SAMPLES),
    "NUTS": NUTS(num_warmup=WARMUP, num_samples=SAMPLES, num_chains=CHAINS,
                 max_tree_depth=TREE_DEPTH),
    "SGHMC": SGHMC(batch_size=32, num_burnin=SGHMC_BURNIN, num_samples=SAMPLES, thinning=10,
                   num_chains=CHAINS),
    "Laplace": Laplace(num_samples=SAMPLES),
}  # fmt: skip
posteriors = {}
for name, method in methods.items():
    posteriors[name] = fit(method, jax.random.key(0), model, X, y)
    t = posteriors[name].timings
    print(f"{name:8s} compile {t['compile_seconds']:6.1f} s   run {t['run_seconds']:6.1f} s")

# %% [markdown]
# Every posterior has the same site names and the same `(chain, draw, ...)` layout; SVI and
# Laplace draw i.i.d. from their approximation and report one chain.

# %%
for name, post in posteriors.items():
    shapes = {k: v.shape for k, v in post.draws.items() if not k.endswith(".u")}
    print(f"{name:8s} chains={post.num_chains} draws={post.num_draws}  {shapes}")

# %% [markdown]
# ## Predictive bands side by side
#
# `predict` is written once for all methods: for each of $S$ draws (or, for SVI, samples of
# the inner layer with $u$ integrated out against $q(u)$) the last layer gives a Gaussian, and
# the predictive is their mixture. The bands are its exact 50% and 95% quantiles, in the
# original units (ms, g).

# %%
preds = {name: predict(jax.random.key(1), model, post, X_grid, num_samples=S)
         for name, post in posteriors.items()}  # fmt: skip


def to_original(pred):
    """The mixture in original units: means shift and scale, variances scale squared."""
    return type(pred)(
        pred.means * sy.std + sy.mean, pred.variances * sy.std**2, pred.f_variances * sy.std**2
    )


fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
for ax, (name, pred), color in zip(axes, preds.items(), ["C0", "C1", "C2", "C3"], strict=True):
    plotting.plot_predictive_1d(ax, X_raw, y_raw, sx.inverse_transform(X_grid), to_original(pred),
                                title=name, color=color, num_component_lines=10)  # fmt: skip
    ax.set_xlabel("time after impact (ms)")
axes[0].set_ylabel("acceleration (g)")
fig.tight_layout()
plt.show()

# %% [markdown]
# What to look for: all four agree on the mean curve where the data are dense (15–35 ms).
# They differ in the *spread* of the component means (thin lines): NUTS and SGHMC sample the
# inducing values and hyperparameters and so show a family of curves; SVI's $q(u)$ is a
# Gaussian that is known to be too narrow in deep GPs; Laplace's Gaussian is centred on a single
# mode and its width comes from the local curvature only. A single noise variance makes every
# band homoscedastic: none of them can narrow in the calm first 15 ms.

# %% [markdown]
# ## What each method believes about the hyperparameters
#
# The marginal posteriors of the kernel and noise hyperparameters (standardised units), one
# histogram per method. For SVI the hyperparameters are point estimates (a delta guide), so
# its histogram is a spike.

# %%
hyper_names = [k for k in posteriors["NUTS"].draws if not k.endswith(".u")]
fig, axes = plt.subplots(1, len(hyper_names), figsize=(3.2 * len(hyper_names), 2.8))
for ax, site in zip(np.atleast_1d(axes), hyper_names, strict=True):
    for (name, post), color in zip(posteriors.items(), ["C0", "C1", "C2", "C3"], strict=True):
        v = post.flat()[site].reshape(post.num_chains * post.num_draws, -1)[:, 0]
        ax.hist(v, bins=30, density=True, alpha=0.45, color=color, label=name)
    ax.set_title(site)
np.atleast_1d(axes)[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Can we trust the chains?
#
# NUTS records divergences (a trajectory whose energy blew up: the sampler failed to explore
# a region of high curvature) and tree depth. Split $\hat R$ compares the chains: values above
# ~1.01 say the chains disagree. Deep GPs are *multimodal* (the inner layer can warp the input
# in several ways that fit equally well), so $\hat R$ well above 1 is common and honest: it says
# the chains found different modes. Notebook 04 reads these diagnostics with ArviZ.

# %%
nuts = posteriors["NUTS"]
print("divergences:", int(nuts.sample_stats["diverging"].sum()),
      "| mean tree depth:", float(nuts.sample_stats["tree_depth"].mean()))  # fmt: skip
for name in ("NUTS", "SGHMC"):
    post = posteriors[name]
    for site in hyper_names:
        x = post.draws[site].reshape(post.num_chains, post.num_draws, -1)
        rhat = np.asarray(split_gelman_rubin(x))
        ess = np.asarray(effective_sample_size(x))
        print(f"{name:6s} {site:22s} R-hat {np.max(rhat):6.3f}  bulk ESS {np.min(ess):7.1f}")

# %% [markdown]
# ## Summary
#
# - The same program ran under four inference methods with one changed argument, and one
#   `predict` gave all four predictives.
# - Compile time is a real part of the cost on small data: each method compiles its loop once.
# - On this data NUTS is the reference; SGHMC comes close at a fraction of the gradient
#   evaluations per draw; SVI and Laplace are fast Gaussian summaries whose width should be
#   checked against it (notebook 04 does this quantitatively with ArviZ: LOO, Pareto $\hat k$
#   and agreement with NUTS).
