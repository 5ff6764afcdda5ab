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
# # Hybrid NN -> GP models, and drawing whole functions from them
#
# GPflux's listing 1 stacks neural layers under GP layers: `Sequential([Dense, ..., GPLayer])`.
# The network learns features $h = \phi(x; W)$ and the GP works on them (deep kernel learning,
# Wilson et al. 2016). In `ppl_dgp` this is `hybrid_classification` / `hybrid_regression`:
# Bayesian dense layers `net{l}` (their weights are latent sites like any other) feeding the GP
# layers `layer{l}`. The inducing inputs live in *feature space*; `init_hybrid` runs the
# network at its initial weights, reads the feature width off it and places $Z$ there by
# k-means (the shape error GPflux users hit, #27/#36, cannot happen).
#
# We fit it to the two-moons data beside a plain SVGP classifier on the raw inputs, then draw
# **function samples** (Wilson et al. 2020): each draw is a function $f^{(s)}(\cdot)$ made of
# random Fourier features plus the inducing-point update, evaluated at 40,000 grid points at
# a cost linear in the number of points (no Cholesky of the grid).
#
# Set `PPL_DGP_SMOKE=1` to run at a tiny size (the test suite does).

# %%
import functools
import os

import jax
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import norm

jax.config.update("jax_enable_x64", True)

from ppl_dgp import datasets
from ppl_dgp.calibration import classification_metrics
from ppl_dgp.infer import SVI, fit
from ppl_dgp.likelihoods import Bernoulli
from ppl_dgp.models import gp_classification, hybrid
from ppl_dgp.pathwise import evaluate, function_samples
from ppl_dgp.predictive import predict_proba

SMOKE = os.environ.get("PPL_DGP_SMOKE", "0") == "1"
M = 5 if SMOKE else 20  # inducing points
STEPS = 30 if SMOKE else 3000  # SVI steps
GRID = 20 if SMOKE else 200  # grid points per axis (GRID**2 inputs)
S_TEST, S_GRID = (20, 20) if SMOKE else (50, 20)  # smoke: one predictive program per model
S_DRAWS = 4 if SMOKE else 8  # function samples to draw
print(f"smoke={SMOKE}: M={M}, {STEPS} steps, {GRID}x{GRID} grid")

# %% [markdown]
# ## Data and the models
#
# The bundled two-moons set (200 training points, 1000 test points, raw coordinates). The
# hybrid: one dense layer $2 \to 8$ with ReLU units feeding one GP layer on the 8 features,
# probit Bernoulli likelihood. The baseline: the SVGP classifier on $(x_1, x_2)$. A third
# model, the same hybrid with tanh units, shows how a hybrid can fail (next section).

# %%
d = datasets.load_bench("moons")
X, y = d["X_train"], d["y_train"].astype(np.int64)
X_test, y_test = d["X_test"], d["y_test"].astype(np.int64)
if SMOKE:  # as many test points as grid points: the two predictives share their programs
    X_test, y_test = X_test[: GRID**2], y_test[: GRID**2]
lik = Bernoulli(link="probit")
configs = {act: hybrid.init_hybrid_classification(X, likelihood=lik, hidden=(8,), num_layers=1,
                                                  num_inducing=M, activation=act)
           for act in ("relu", "tanh")}  # fmt: skip
hyb = functools.partial(hybrid.hybrid_classification, **configs["relu"])
svgp = gp_classification.build_svgp_classification(X, num_inducing=M)
print("hybrid: Z in feature space", configs["relu"]["layers"][0].Z.shape, "| SVGP: Z",
      svgp.keywords["layers"][0].Z.shape)  # fmt: skip

# %%
models = {
    "hybrid (ReLU)": hyb,
    "SVGP": svgp,
    "hybrid (tanh)": functools.partial(hybrid.hybrid_classification, **configs["tanh"]),
}
posts = {name: fit(SVI(num_steps=STEPS, learning_rate=0.01, num_samples=50), jax.random.key(0),
                   model, X, y) for name, model in models.items()}  # fmt: skip
for name, model in models.items():
    p = np.asarray(predict_proba(model, posts[name], X_test, num_samples=S_TEST))
    m = classification_metrics(p, y_test)
    print(f"{name:14s} accuracy {m['accuracy']:.3f}  NLL {m['nll']:.3f}  ECE {m['ece']:.3f}")

# %% [markdown]
# At the full size (3000 steps) the ReLU hybrid matches the SVGP: test accuracy 1.000 against
# 0.997 (NLL 0.018 against 0.024, ECE 0.016 against 0.019). The tanh hybrid stops at 0.880
# (NLL 0.258): its boundary is a straight line (next figure).
#
# ## Why the tanh hybrid fails: its features collapse to one direction
#
# Every feature is $a(w_j^\top x + b_j)$. If the eight weight vectors $w_j$ (the columns of
# `net0.W`, $2 \times 8$) are parallel, every feature is a function of the one projection
# $w^\top x$, and so is the GP on them: every level set, the decision boundary included, is a
# straight line perpendicular to $w$, whatever the GP does. The singular values of the fitted
# `net0.W` measure it: two clearly positive values mean the features still see both input
# directions, a second value near 0 means they see one. The columns' norms show which units
# the fit uses.

# %%
for name in ("hybrid (ReLU)", "hybrid (tanh)"):
    W0 = np.asarray(posts[name].approx.medians["net0.W"])  # [2, 8]
    print(f"{name:14s} singular values of net0.W {np.linalg.svd(W0, compute_uv=False).round(3)}"
          f"  column norms {np.linalg.norm(W0, axis=0).round(2)}")  # fmt: skip

# %% [markdown]
# At the full size the tanh network's weights end rank one (singular values 0.376 and 0.000) and the
# ReLU network's keep both directions (0.836 and 0.525; three units carry the fit, the other five
# end at zero weights). The weights' prior is $N(0, 1)$ (`prior_precision=1`), a weight decay on the
# guide's point estimates: it holds the tanh network's weights small (column norms about 0.14 at the
# end), where tanh is nearly linear. A likely reading: the quickest gain in the likelihood is to
# turn every unit towards the best straight boundary (worth 0.88 here), and once the columns are
# parallel the GP cannot see the other direction and nothing pulls them apart again. A ReLU is
# piecewise linear at every scale (small weights do not make it linear), so bending the boundary
# pays from the start. With the same settings otherwise, these tanh variants also end at accuracy
# 0.88: other seeds, a learning rate of 0.003, the median-distance lengthscale start,
# `prior_precision=10`, two units (with or without the PCA start `network_init="pca"`); GELU units
# (smooth, nearly linear at small weights) collapse too (0.876). Two tanh variants work: a weak
# prior, `prior_precision=0.01` (0.997; the weights grow to norms 2.2 to 4.4 and keep rank two), and
# a second tanh layer, `hidden=(8, 8)` (0.999). The lesson for deep kernel learning: check the rank
# of what the network hands the GP.
#
# ## Predictive probability over the plane
#
# Near the data the ReLU hybrid and the SVGP follow the moons; the tanh hybrid draws its
# straight boundary. Far from the data the SVGP reverts to its prior (p -> 1/2). The tanh
# hybrid's features saturate, so points far away map to features *inside* the range the GP
# has seen, and it stays confident along the whole band: the known weakness of deep kernel
# learning with bounded features. The ReLU features are unbounded and the ReLU hybrid reverts
# to 1/2 over most of the plane, but not everywhere: in a band to the lower left it stays
# confident far from any data. A ReLU unit is zero on a half-plane, so where the live units
# are off (or one alone is on) a whole unbounded region maps onto features the GP saw at the
# data. A distance-aware network (spectral normalisation, as in SNGP) is the usual repair.

# %%
lo, hi = np.array([-6.0, -6.0]), np.array([7.0, 6.0])
g1, g2 = np.meshgrid(np.linspace(lo[0], hi[0], GRID), np.linspace(lo[1], hi[1], GRID))
X_grid = np.stack([g1.ravel(), g2.ravel()], axis=1)
fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
for ax, (name, model) in zip(axes, models.items(), strict=True):
    p = np.asarray(predict_proba(model, posts[name], X_grid, num_samples=S_GRID))
    cs = ax.contourf(g1, g2, p.reshape(g1.shape), levels=np.linspace(0, 1, 11), cmap="RdBu_r")
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", edgecolors="k", s=12)
    ax.set_title(f"{name}: p(y = 1 | x)")
fig.colorbar(cs, ax=axes)
plt.show()

# %% [markdown]
# ## Function samples through the network
#
# `function_samples` reads the GP layer's spec from the model and, for the SVI posterior, draws
# $u \sim q(u)$ per sample with the kernel hyperparameters at the guide's point estimates. The
# GP part is a function of the *features*; the network in front is deterministic here (the
# inducing guide point-estimates the weights), so a sampled classifier is
# $x \mapsto \Phi(f^{(s)}(\phi(x; \hat W)))$. Each draw is evaluated on the whole grid at once,
# and again on a coarser grid it gives the same values at the shared points: one function per
# draw, as Thompson sampling needs.

# %%
post = posts["hybrid (ReLU)"]
W, b = (np.asarray(post.approx.medians[k]) for k in ("net0.W", "net0.b"))


def features(Xq):  # the fitted network: relu(x W + b) [N, 8]
    return hybrid.hybrid_features(Xq, hidden=(8,), activation="relu", network_init=((W, b),))


draws = function_samples(jax.random.key(3), hyb, post, num_samples=S_DRAWS, num_features=512)
F = np.asarray(evaluate(draws, features(X_grid)))[..., 0]  # [S, GRID**2]
F_coarse = np.asarray(evaluate(draws, features(X_grid[::7])))[..., 0]
print("same function at shared points:", np.allclose(F[:, ::7], F_coarse, atol=1e-10))

fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
for s in range(S_DRAWS):
    axes[0].contour(g1, g2, F[s].reshape(g1.shape), levels=[0.0], colors=f"C{s % 10}",
                    linewidths=1)  # fmt: skip
axes[0].scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", edgecolors="k", s=12)
axes[0].set_title(f"decision boundaries f = 0 of {S_DRAWS} function draws")
p_mean = norm.cdf(F).mean(0)
cs = axes[1].contourf(g1, g2, p_mean.reshape(g1.shape), levels=np.linspace(0, 1, 11),
                      cmap="RdBu_r")  # fmt: skip
axes[1].set_title("mean of Phi(f) over the draws")
fig.colorbar(cs, ax=axes[1])
plt.show()

# %% [markdown]
# Each draw's boundary follows the moons where the data pin it down and wanders between them;
# the mean over draws approaches the predictive of the previous figure (the probit likelihood
# adds the last layer's own noise, which the function draws leave out). The cost of one draw
# on the grid is `GRID**2 x (features + M)` multiplications: `.bench/issue12_pathwise.py` times
# it against the Cholesky route.
