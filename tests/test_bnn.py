"""The BNN zoo (``ppl_dgp.models.bnn``), the dense and dropout layers and MC dropout: sites,
shapes, priors, errors; MC dropout at rate 0 is the MAP BNN."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.handlers import seed, substitute, trace

from ppl_dgp.dense import DENSE, dense, dropout
from ppl_dgp.layers import ROLE, Hyper
from ppl_dgp.models import bnn

X = np.random.default_rng(0).normal(size=(7, 3))


def _trace(model, *args, **kwargs):
    return trace(seed(model, jax.random.key(0))).get_trace(*args, **kwargs)


def test_mlp_sites_shapes_and_priors():
    tr = _trace(bnn.mlp_multiclass, X, np.arange(7) % 4, num_classes=4, hidden=(5, 6),
                prior_precision=[1.0, 4.0, 16.0])  # fmt: skip
    shapes = {
        k: v["value"].shape for k, v in tr.items() if v["type"] in ("sample", "deterministic")
    }
    assert shapes["layer0.W"] == (3, 5) and shapes["layer0.b"] == (5,)
    assert shapes["layer1.W"] == (5, 6) and shapes["layer2.W"] == (6, 4)
    assert shapes["f"] == (7, 4) and shapes["layer2.input"] == (7, 6)
    assert tr["layer2.W"]["infer"][ROLE] == DENSE
    # per-layer prior precision: the prior scale is 1/sqrt(delta)
    for l, delta in enumerate([1.0, 4.0, 16.0]):
        lp = tr[f"layer{l}.b"]["fn"].log_prob(jnp.zeros(tr[f"layer{l}.b"]["value"].shape))
        k = tr[f"layer{l}.b"]["value"].size
        np.testing.assert_allclose(lp, k * 0.5 * np.log(delta / (2 * np.pi)))
    # the output is the likelihood's logits
    np.testing.assert_allclose(tr["y"]["fn"].logits, tr["f"]["value"])


def test_network_output_matches_a_hand_written_mlp():
    tr = _trace(bnn.mlp_regression, X, None, hidden=(4,), activation="tanh")
    W0, b0, W1, b1 = (tr[k]["value"] for k in ("layer0.W", "layer0.b", "layer1.W", "layer1.b"))
    f = np.tanh(X @ np.asarray(W0) + np.asarray(b0)) @ np.asarray(W1) + np.asarray(b1)
    np.testing.assert_allclose(tr["f"]["value"], f, rtol=1e-12)
    assert isinstance(tr["y"]["fn"], dist.Normal)


def test_regression_noise_fixed_or_learnable():
    fixed = _trace(bnn.mlp_regression, X, np.zeros(7), hidden=(2,), noise_scale=0.3)
    assert "noise_scale" not in fixed and np.all(np.asarray(fixed["y"]["fn"].scale) == 0.3)
    hyp = Hyper(0.3, prior=dist.LogNormal(0.0, 1.0))
    learn = _trace(bnn.mlp_regression, X, np.zeros(7), hidden=(2,), noise_scale=hyp)
    assert learn["noise_scale"]["type"] == "sample"


@pytest.mark.parametrize(
    ("model", "y", "match"),
    [
        (bnn.mlp_binary, np.array([0, 1, 2, 0, 1, 0, 1]), r"labels in \{0, \.\.\., 1\}.*\[2\]"),
        (bnn.mlp_binary, np.array([0, 1, 0.5, 0, 1, 0, 1]), r"received values \[0.5\]"),
        (functools.partial(bnn.mlp_multiclass, num_classes=3), np.array([0, 1, 2, 3, 1, 0, -1]),
         r"labels in \{0, \.\.\., 2\}.*\[-1, 3\]"),
    ],
)  # fmt: skip
def test_labels_are_validated(model, y, match):
    with pytest.raises(ValueError, match=match):
        _trace(model, X, y, hidden=(2,))


@pytest.mark.parametrize("bad", [0.0, -1.0, [1.0, -2.0]])
def test_prior_precision_must_be_positive(bad):
    with pytest.raises(ValueError, match="prior_precision must be .*> 0; received"):
        _trace(bnn.mlp_binary, X, None, hidden=(2,), prior_precision=bad)


def test_other_argument_errors():
    with pytest.raises(ValueError, match=r"one value per layer \(2\); received \[1.0, 2.0, 3.0\]"):
        _trace(bnn.mlp_binary, X, None, hidden=(2,), prior_precision=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="activation must be one of .* received 'swish'"):
        _trace(bnn.mlp_binary, X, None, activation="swish")
    with pytest.raises(ValueError, match="num_classes must be an int >= 2; received 1"):
        _trace(bnn.mlp_multiclass, X, None, num_classes=1)
    with pytest.raises(ValueError, match=r"init_values must have exactly the keys"):
        _trace(bnn.mlp_binary, X, None, hidden=(2,), init_values={"layer0.W": np.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"dense\('d'\): prior_precision must be > 0"):
        _trace(lambda: dense("d", jnp.zeros((2, 3)), 2, prior_precision=0.0))


def test_dense_in_front_of_a_substituted_value_is_affine():
    W, b = np.arange(6.0).reshape(3, 2), np.array([1.0, -1.0])
    out = substitute(lambda: dense("d", jnp.asarray(X), 2), data={"d.W": W, "d.b": b})
    np.testing.assert_allclose(seed(out, 0)(), X @ W + b)


# -- dropout and MC dropout ----------------------------------------------------------------------


def test_dropout_masks_are_bernoulli_and_inverted():
    """Seeded: entries dropped with probability p (within 5 binomial standard errors) and the
    kept ones scaled by 1 / (1 - p); unseeded: the identity; rate 0: the identity."""
    p, shape = 0.3, (200, 50)
    H = seed(lambda: dropout(jnp.ones(shape), p), 0)()
    frac = float(jnp.mean(H == 0.0))
    se = np.sqrt(p * (1 - p) / H.size)
    assert abs(frac - p) <= 5 * se
    np.testing.assert_allclose(H[H != 0.0], 1.0 / (1.0 - p), rtol=1e-15)
    H2 = seed(lambda: dropout(jnp.ones(shape), p), 1)()
    assert not np.array_equal(H, H2)  # a fresh mask per seeded run
    X0 = jnp.arange(6.0).reshape(2, 3)
    assert dropout(X0, 0.0) is X0
    # a log density evaluation (handlers, no seed) gets the expectation: the identity
    tr = trace(lambda: dropout(X0, 0.5)).get_trace()
    assert tr == {} and np.array_equal(trace(lambda: dropout(X0, 0.5))(), X0)
    for bad in (-0.1, 1.0, True, "0.1"):
        with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\)"):
            dropout(X0, bad)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\); received 1.5"):
        _trace(bnn.mlp_regression, X, None, hidden=(), dropout=1.5)


@pytest.fixture(scope="module")
def moons_like():
    rng = np.random.default_rng(0)
    Xr = np.linspace(-2.0, 2.0, 30)[:, None]
    return Xr, np.sin(2.0 * Xr[:, 0]) + 0.1 * rng.normal(size=30)


@pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning")  # 20 steps
def test_mc_dropout_at_rate_zero_is_the_map_bnn(moons_like):
    """Same key, rate 0: MC dropout's fit is MAP's, bit for bit, and its predictive (T
    identical passes) is MAP's plug-in Gaussian."""
    from ppl_dgp.infer import MAP, fit
    from ppl_dgp.predictive import predict

    Xr, yr = moons_like
    plain = functools.partial(bnn.mlp_regression, hidden=(8,), noise_scale=0.2)
    zero = functools.partial(bnn.mlp_regression, hidden=(8,), noise_scale=0.2, dropout=0.0)
    post_map = fit(MAP(num_steps=20), jax.random.key(0), plain, Xr, yr)
    post_mc = bnn.MCDropout(num_steps=20, num_passes=4).run(jax.random.key(0), zero, Xr, yr)
    assert post_mc.name == "mc_dropout" and (post_mc.num_chains, post_mc.num_draws) == (1, 4)
    np.testing.assert_array_equal(post_mc.traces["map_loss"], post_map.traces["map_loss"])
    for k, v in post_map.draws.items():
        for t in range(4):
            np.testing.assert_array_equal(post_mc.draws[k][0, t], v[0, 0])
    a = predict(jax.random.key(1), plain, post_map, Xr[:5])
    b = predict(jax.random.key(1), zero, post_mc, Xr[:5], num_samples=4)
    for t in range(4):
        np.testing.assert_array_equal(b.means[t], a.means[0])
        np.testing.assert_array_equal(b.variances[t], a.variances[0])


def test_mc_dropout_trains_and_predicts_with_masks(moons_like):
    """Rate 0.3: the loss trace is not MAP's (the masks act in training), and the T passes of
    the predictive differ from each other (they act at prediction)."""
    from ppl_dgp.predictive import predict

    Xr, yr = moons_like
    model = functools.partial(bnn.mlp_regression, hidden=(8,), noise_scale=0.2, dropout=0.3)
    zero = functools.partial(bnn.mlp_regression, hidden=(8,), noise_scale=0.2)
    post = bnn.MCDropout(num_steps=20, num_passes=6).run(jax.random.key(0), model, Xr, yr)
    post0 = bnn.MCDropout(num_steps=20, num_passes=6).run(jax.random.key(0), zero, Xr, yr)
    assert not np.array_equal(post.traces["map_loss"], post0.traces["map_loss"])
    pred = predict(jax.random.key(1), model, post, Xr[:5], num_samples=6)
    assert pred.means.shape == (6, 5)
    assert np.unique(np.asarray(pred.means[:, 0])).size == 6
    with pytest.raises(ValueError, match=r"MCDropout.num_passes must be an int >= 1"):
        bnn.MCDropout(num_passes=0)
