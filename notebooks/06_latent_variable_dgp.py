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
# # Latent-variable deep GPs: non-Gaussian predictives by VI, IWVI and NUTS
#
# A GP layer maps each input to a Gaussian given the layer below. The *last* layer of a
# (plain) deep GP is therefore Gaussian around the function value at each input: its noise is
# one Gaussian for all inputs. On the motorcycle data the spread of the acceleration changes
# with time and, right after the impact, looks skewed: a Gaussian noise model cannot say so.
#
# A **latent-variable** layer (Dutordoir et al. 2018; Salimbeni et al. 2019) gives every datum
# its own latent input $w_n \sim N(0, 1)$ next to $x_n$:
#
# $$ y_n = f(x_n, w_n) + e_n, \qquad p(y_n \mid x_n) = \int N(y_n \mid f(x_n, w), s^2)\,
#    N(w \mid 0, 1)\, dw, $$
#
# a continuous mixture: bimodal, skewed or heteroscedastic as the data ask. In `ppl_dgp` it is
# the site `latent.w` of `latent_layer`, in the data plate like a layer's noise. Three ways to
# fit it, with one argument changed:
#
# | method | $q(w_n)$ | bound |
# |---|---|---|
# | `SVI(latent_encoder="amortised")` | an MLP from $(x_n, y_n)$ | standard ELBO |
# | `SVI(..., num_importance=10)` | the same encoder | importance-weighted (IWAE, $K = 10$) |
# | `NUTS` | none: $w$ sampled with everything else | exact MCMC |
#
# At new inputs every method draws $w$ from its prior: the predictive is the mixture.
#
# Set `PPL_DGP_SMOKE=1` to run at a tiny size (the test suite does).

# %%
import functools
import os

import jax
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)

from ppl_dgp import datasets, plotting
from ppl_dgp.infer import NUTS, SVI, fit
from ppl_dgp.models import dgp, lv_dgp
from ppl_dgp.predictive import predict

SMOKE = os.environ.get("PPL_DGP_SMOKE", "0") == "1"
M = 4 if SMOKE else 20  # inducing points per layer
STEPS = 30 if SMOKE else 4000  # SVI steps
WARMUP, SAMPLES = (5, 5) if SMOKE else (400, 400)  # NUTS, one chain
S = 10 if SMOKE else 400  # mixture components of the predictive
L_LV = 1 if SMOKE else 2  # layers of the VI/IWVI latent-variable model (smoke: one program less)
print(f"smoke={SMOKE}: M={M}, {STEPS} SVI steps, NUTS {WARMUP}+{SAMPLES}, S={S}")

# %% [markdown]
# ## Data and models
#
# Both axes standardised. The plain 2-layer DGP and the latent-variable DGP share the recipe
# of `init_dgp` (k-means inducing inputs, identity mean on the inner layer); the latter's first
# layer sees $[x_n, w_n]$, so its inducing inputs have two columns. For NUTS we take the
# one-layer latent-variable GP: the same idea with fewer sites to sample.

# %%
X_raw, y_raw = datasets.load_motorcycle()
sx, sy = datasets.Standardizer.fit(X_raw), datasets.Standardizer.fit(y_raw)
X, y = sx.transform(X_raw), sy.transform(y_raw)
# smoke: as many grid points as data, so the in-sample predictive below reuses the grid's
# compiled program (one compilation per model instead of two)
X_grid = np.linspace(X.min() - 0.2, X.max() + 0.2, len(X) if SMOKE else 150)[:, None]

plain = functools.partial(dgp.dgp_regression, **dgp.init_dgp(X, num_layers=2, num_inducing=M))
lv2 = functools.partial(
    lv_dgp.lv_dgp_regression,
    **lv_dgp.init_lv_dgp(X, latent_dim=1, num_layers=L_LV, num_inducing=M),
)
lv1 = functools.partial(
    lv_dgp.lv_dgp_regression, **lv_dgp.init_lv_dgp(X, latent_dim=1, num_layers=1, num_inducing=M)
)
print("first-layer Z:", lv2.keywords["layers"][0].Z.shape, "(x and w)")  # fmt: skip

# %% [markdown]
# ## Four fits

# %%
fits = {
    "DGP-2, SVI": (plain, SVI(num_steps=STEPS, num_samples=S)),
    f"LV-DGP-{L_LV}, VI": (lv2, SVI(num_steps=STEPS, num_samples=S,
                                    latent_encoder="amortised")),
    f"LV-DGP-{L_LV}, IWVI (K=10)": (lv2, SVI(num_steps=STEPS, num_samples=S,
                                            latent_encoder="amortised", num_importance=10)),
    "LV-GP-1, NUTS": (lv1, NUTS(num_warmup=WARMUP, num_samples=SAMPLES, num_chains=1)),
}  # fmt: skip
if SMOKE:  # two compiled programs less: the cells run, the comparison needs the full size
    del fits[f"LV-DGP-{L_LV}, VI"], fits["DGP-2, SVI"]
posteriors, preds = {}, {}
for name, (model, method) in fits.items():
    posteriors[name] = post = fit(method, jax.random.key(0), model, X, y)
    preds[name] = predict(jax.random.key(1), model, post, X_grid, num_samples=S)
    t = post.timings
    print(f"{name:24s} compile {t['compile_seconds']:5.1f} s  run {t['run_seconds']:6.1f} s")


def to_original(pred):
    """The mixture in original units (ms, g)."""
    return type(pred)(
        pred.means * sy.std + sy.mean, pred.variances * sy.std**2, pred.f_variances * sy.std**2
    )


# %% [markdown]
# ## Predictive bands
#
# The bands are the mixture's exact 50% and 95% quantiles. The plain DGP's band has the same
# width wherever its function is certain (one noise variance); the latent-variable models
# widen it where the data spread and keep it tight before the impact.

# %%
G = sx.inverse_transform(X_grid)
COLORS = ["C0", "C1", "C2", "C3"][: len(preds)]
fig, axes = plt.subplots(1, len(preds), figsize=(4.3 * len(preds), 3.8), sharey=True)
for ax, (name, pred), c in zip(axes, preds.items(), COLORS, strict=True):
    plotting.plot_predictive_1d(ax, X_raw, y_raw, G, to_original(pred), title=name, color=c)
    ax.set_xlabel("time (ms)")
axes[0].set_ylabel("acceleration (g)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The predictive density at one time
#
# Slices of $p(y \mid x)$ at three times: before the impact, at the steepest fall, and in the
# rebound. The DGP's slices are near-Gaussian; the latent-variable models' are skewed or wide
# where the data are.

# %%
times = np.array([12.0, 22.0, 32.0])
idx = [int(np.argmin(np.abs(G[:, 0] - t))) for t in times]
y_axis = np.linspace(y_raw.min() - 40, y_raw.max() + 40, 400)
fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
for ax, i, t in zip(axes, idx, times, strict=True):
    for (name, pred), c in zip(preds.items(), COLORS, strict=True):
        p = to_original(pred)
        m, v = np.asarray(p.means[:, i]), np.asarray(p.variances[:, i])
        dens = np.mean(np.exp(-0.5 * (y_axis[:, None] - m) ** 2 / v) / np.sqrt(2 * np.pi * v), 1)
        ax.plot(y_axis, dens, color=c, label=name)
    near = np.abs(X_raw[:, 0] - t) < 2.0
    ax.plot(y_raw[near], np.zeros(near.sum()), "k|", ms=12, label="data within 2 ms")
    ax.set_title(f"p(y | t = {t:.0f} ms)")
    ax.set_xlabel("acceleration (g)")
axes[0].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## In-sample fit, in numbers
#
# The average log predictive density at the training inputs (original units; in-sample, so a
# check on the fit, not a test score: `.bench/issue12_lv_iwvi.py` holds the seeded test-split
# comparison, where the latent-variable DGP with IWVI beats the plain DGP-2 on every split).

# %%
train_preds = {name: predict(jax.random.key(2), fits[name][0], post, X, num_samples=S)
               for name, post in posteriors.items()}  # fmt: skip
for name, pred in train_preds.items():
    lpd = np.asarray(to_original(pred).log_density(y_raw))
    print(f"{name:24s} mean log p(y_n | x_n) = {lpd.mean():8.3f}")

# %% [markdown]
# What to take away: the latent input costs one site and one argument (`latent_layer`, or the
# zoo's `lv_dgp_regression`), every method fits it, and the importance-weighted bound is the
# same program with `num_importance=K`; with `K = 1` it *is* the standard bound (tested to
# 1e-10 in `tests/test_iwvi.py`).
