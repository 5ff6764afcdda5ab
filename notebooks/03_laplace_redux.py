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
# # Laplace Redux: a Gaussian around the MAP of a Bayesian neural network
#
# A neural network trained to its maximum a posteriori (MAP) weights $\hat\theta$ predicts
# with the **plug-in** probability $\sigma(f(x; \hat\theta))$, which is confidently 0 or 1 far
# away from all data. The **Laplace approximation** replaces the point by a Gaussian,
#
# $$ p(\theta \mid \mathcal D) \approx \mathcal N(\hat\theta, P^{-1}), \qquad
#    P = \underbrace{\textstyle\sum_n J_n^\top \Lambda_n J_n}_{\text{GGN}} + \delta I, $$
#
# with $J_n = \partial f(x_n)/\partial\theta$, $\Lambda_n = -\partial^2 \log p(y_n|f)/\partial f^2$
# ($= s_n(1-s_n)$ for a Bernoulli likelihood) and $\delta$ the prior precision. Linearising
# the network around $\hat\theta$ gives a Gaussian over the logit,
# $f_* \sim \mathcal N(f(x_*;\hat\theta),\, v_* = J_* P^{-1} J_*^\top)$, and the probit
# approximation $p(y_*=1) \approx \sigma\big(f_* / \sqrt{1 + \pi v_*/8}\big)$.
#
# In `ppl_dgp` the network is a NumPyro program (`ppl_dgp.models.bnn`) and the Laplace
# approximation is one more method behind the same `fit(method, key, model, X, y)` as NUTS and
# SVI (Daxberger et al. 2021, "Laplace Redux").
#
# | symbol | meaning |
# |---|---|
# | $N$, $D$ | data points, input dimension |
# | $\theta$, $P$ | the weights, their number / the posterior precision |
# | $f$ `[N, 1]` | the network output (logit), the site `f` |
# | $J$ `[N, 1, P]` | Jacobian of $f$ with respect to $\theta$ |
# | $\delta$ | prior precision, $\theta \sim \mathcal N(0, \delta^{-1} I)$ |
# | $S$ | number of posterior draws |

# %%
import functools
import os

import jax
import matplotlib.pyplot as plt
import numpy as np

from ppl_dgp.datasets import load_bench
from ppl_dgp.infer import NUTS, SVI, fit
from ppl_dgp.laplace import Laplace
from ppl_dgp.models import bnn
from ppl_dgp.predictive import predict_proba

jax.config.update("jax_enable_x64", True)
SMOKE = os.environ.get("PPL_DGP_SMOKE") == "1"
MAP_STEPS = 100 if SMOKE else 3000
GRID = 30 if SMOKE else 120
NUTS_DRAWS = 30 if SMOKE else 400
SVI_STEPS = 100 if SMOKE else 5000
TREE_DEPTH = 4 if SMOKE else 10  # NUTS: at most 2**depth - 1 leapfrog steps per draw
key = jax.random.key(0)


def grid(lim):
    g = np.linspace(-lim, lim, GRID)
    xx, yy = np.meshgrid(g, g)
    return xx, yy, np.column_stack([xx.ravel(), yy.ravel()])


def contours(panels, X, y, lim, title):
    """One filled contour of p(y=1 | x) per (name, probs) panel, data on top."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    xx, yy, _ = grid(lim)
    for ax, (name, p) in zip(axes[0], panels, strict=True):
        cs = ax.contourf(xx, yy, np.asarray(p).reshape(xx.shape), levels=np.linspace(0, 1, 11),
                         cmap="RdBu_r")  # fmt: skip
        ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", edgecolor="k", s=12)
        ax.set_title(name)
    fig.colorbar(cs, ax=axes[0].tolist(), label="p(y = 1 | x)")
    fig.suptitle(title)
    plt.show()


# %% [markdown]
# ## 1. Linearly separable data, a single-layer network
#
# With `hidden=()` the "network" is logistic regression, $f(x) = x W + b$. On separable data
# the MAP is held finite only by the prior; the plug-in predictive is almost a step function.

# %%
rng = np.random.default_rng(0)
X_lin = np.vstack([rng.normal([-1.5, -1.0], 0.6, (40, 2)), rng.normal([1.5, 1.0], 0.6, (40, 2))])
y_lin = np.repeat([0, 1], 40)
logreg = functools.partial(bnn.mlp_binary, hidden=(), prior_precision=1.0)
post_lin = fit(Laplace(hessian_structure="full", num_steps=MAP_STEPS, tune="marglik"), key,
               logreg, X_lin, y_lin)  # fmt: skip
print("tuned prior precision:", float(post_lin.approx.prior_precision[0]))
for lim in (4.0, 40.0):
    _, _, G = grid(lim)
    contours(
        [("MAP plug-in", predict_proba(logreg, post_lin, G, link="plugin")),
         ("Laplace (probit)", predict_proba(logreg, post_lin, G, link="probit"))],
        X_lin, y_lin, lim, f"logistic regression, |x| <= {lim:g}",
    )  # fmt: skip

# %% [markdown]
# Zoomed out, the plug-in probability is 0 or 1 everywhere except on a thin line, while the
# Laplace predictive stays below certainty: along the direction of $W$ both $f$ and $v$ grow
# and $f/\sqrt{1 + \pi v / 8}$ tends to a finite constant.
#
# ## 2. A non-linear problem: two moons, a 2-32-1 MLP and last-layer Laplace
#
# Laplace over the last layer only (33 weights) is the cheap, popular choice: the features of
# the hidden layer are fixed at the MAP and the output layer is Bayesian linear regression on
# them. The prior precision is tuned by maximising the Laplace evidence.

# %%
moons = load_bench("moons")
X, y = moons["X_train"], moons["y_train"]
mlp = functools.partial(bnn.mlp_binary, hidden=(32,), activation="tanh", prior_precision=1.0)
post_ll = fit(Laplace("last_layer", "full", num_steps=MAP_STEPS, tune="marglik"), key, mlp, X, y)
post_all = fit(Laplace("all", "kron", num_steps=MAP_STEPS, tune="marglik"), key, mlp, X, y)
for lim in (3.0, 15.0):
    _, _, G = grid(lim)
    contours(
        [("MAP plug-in", predict_proba(mlp, post_ll, G, link="plugin")),
         ("last-layer Laplace", predict_proba(mlp, post_ll, G, link="probit")),
         ("all-weights KFAC Laplace", predict_proba(mlp, post_all, G, link="probit"))],
        X, y, lim, f"two moons, |x| <= {lim:g}",
    )  # fmt: skip

# %% [markdown]
# ## 3. The same network under NUTS and SVI
#
# Swapping the method is one argument. NUTS samples the exact posterior of all 129 weights
# (the reference, but slow and multimodal: hidden units can swap); SVI fits a mean-field normal.
# `predict_proba` averages $\sigma(f)$ over their draws.

# %%
post_nuts = fit(NUTS(num_warmup=NUTS_DRAWS, num_samples=NUTS_DRAWS, num_chains=1,
                     max_tree_depth=TREE_DEPTH), key, mlp, X, y)  # fmt: skip
post_svi = fit(SVI(num_steps=SVI_STEPS, learning_rate=1e-2, num_samples=100), key, mlp, X, y)
for lim in (3.0, 15.0):
    _, _, G = grid(lim)
    contours(
        [("last-layer Laplace", predict_proba(mlp, post_ll, G, link="probit")),
         ("NUTS", predict_proba(mlp, post_nuts, G)),
         ("SVI (mean field)", predict_proba(mlp, post_svi, G))],
        X, y, lim, f"three posteriors of one program, |x| <= {lim:g}",
    )  # fmt: skip

# %% [markdown]
# The numbers behind these pictures (test NLL, calibration, entropy far from the data, and
# timings against laplace-torch) come from `ppl-dgp bench laplace --nuts`.
