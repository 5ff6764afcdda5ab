"""The BNN zoo (``ppl_dgp.models.bnn``) and the dense layer: sites, shapes, priors, errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.handlers import seed, substitute, trace

from ppl_dgp.dense import DENSE, dense
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
