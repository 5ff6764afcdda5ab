"""MC dropout zoo programs (``ppl_dgp.models.dropout``): the averaged-pass logits against a
NumPy reference, the T passes against the same masks drawn by hand, MAP's fit of the program
against the plain MLP's, errors naming the argument."""

import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numpyro.handlers import seed, substitute, trace  # noqa: E402

from ppl_dgp.models import bnn  # noqa: E402
from ppl_dgp.models.dropout import (  # noqa: E402
    build_bnn_binary_dropout,
    mc_dropout_binary,
    mc_dropout_logits,
    mc_dropout_multiclass,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(15, 2))
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int32)


@pytest.mark.parametrize("K", [1, 3])
def test_averaged_logits_are_those_of_the_mean_probability(K):
    """sigmoid / softmax of the result is the mean of the passes' probabilities (NumPy)."""
    F = 4.0 * RNG.normal(size=(7, 5, K))
    f = np.asarray(mc_dropout_logits(jnp.asarray(F)))
    if K == 1:
        ref = np.mean(1.0 / (1.0 + np.exp(-F)), axis=0)
        np.testing.assert_allclose(1.0 / (1.0 + np.exp(-f)), ref, rtol=1e-12)
    else:
        e = np.exp(F - F.max(-1, keepdims=True))
        ref = np.mean(e / e.sum(-1, keepdims=True), axis=0)
        np.testing.assert_allclose(np.exp(f), ref, rtol=1e-12)
    big = mc_dropout_logits(jnp.asarray([[[800.0]], [[-800.0]]]))  # p = (1 + 0) / 2
    np.testing.assert_allclose(big, 0.0, atol=1e-12)
    with pytest.raises(ValueError, match=r"F must be \[T, N, K\]"):
        mc_dropout_logits(jnp.zeros((3, 2)))


@pytest.mark.parametrize("num_classes", [2, 3])
def test_prediction_averages_t_passes_with_their_own_masks(num_classes):
    """y=None: f is the averaged logits of the network run on the inputs tiled T times under
    the same seed (the same masks, drawn in the same order); observed: one pass, its f."""
    T, net = 6, {"hidden": (8,), "dropout": 0.4}
    if num_classes == 2:
        model = functools.partial(mc_dropout_binary, num_passes=T, **net)
        K = 1
    else:
        model = functools.partial(mc_dropout_multiclass, num_classes=3, num_passes=T, **net)
        K = 3
    weights = {k: v["value"] for k, v in trace(seed(model, 0)).get_trace(X, None).items()
               if k.startswith("layer")}  # fmt: skip
    tr = trace(seed(substitute(model, weights), 5)).get_trace(X, None)
    hand = seed(substitute(lambda: bnn.mlp(jnp.tile(X, (T, 1)), K, **net), weights), 5)()
    expect = mc_dropout_logits(hand.reshape(T, X.shape[0], K))
    np.testing.assert_allclose(tr["f"]["value"], expect, rtol=1e-12)
    passes = np.asarray(hand).reshape(T, X.shape[0], K)
    assert np.unique(passes[:, 0, 0]).size == T  # the masks differ between passes
    y = Y if num_classes == 2 else np.arange(15) % 3
    obs = trace(seed(substitute(model, weights), 5)).get_trace(X, y)
    one = seed(substitute(lambda: bnn.mlp(jnp.asarray(X), K, **net), weights), 5)()
    np.testing.assert_allclose(obs["f"]["value"], one, rtol=1e-12)
    # unseeded (a log density): no masks, every pass the plain network (for K > 1 its
    # log-softmax: the same class probabilities)
    plain = substitute(lambda: bnn.mlp(jnp.asarray(X), K, hidden=(8,)), weights)()
    fill = {**weights, "y": np.zeros(15, np.int32)}  # no key to draw y with
    unseeded = trace(substitute(model, fill)).get_trace(X, None)["f"]["value"]
    np.testing.assert_allclose(unseeded, mc_dropout_logits(plain[None]), rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # three compiled fits: ~15-45 s on the shared machine
@pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning")  # 30 steps
def test_map_fits_the_plain_network_and_predicts_by_passes():
    """fit(MAP) sees no masks (unseeded potential): the same fit as mlp_binary, bit for bit;
    predict_proba runs T passes (differs from the plain network's plug-in), and MCDropout's
    fit (a mask per step) differs from MAP's."""
    from ppl_dgp.infer import MAP, fit
    from ppl_dgp.predictive import predict_proba

    model = build_bnn_binary_dropout(X, width=8, dropout=0.3, num_passes=20)
    plain = functools.partial(bnn.mlp_binary, hidden=(8,))
    post = fit(MAP(num_steps=30), jax.random.key(0), model, X, Y)
    post_plain = fit(MAP(num_steps=30), jax.random.key(0), plain, X, Y)
    np.testing.assert_array_equal(post.traces["map_loss"], post_plain.traces["map_loss"])
    p = np.asarray(predict_proba(model, post, X, rng_key=jax.random.key(1)))
    p_plain = np.asarray(predict_proba(plain, post_plain, X, link="nn"))
    assert p.shape == (15,) and np.all((p > 0) & (p < 1))
    assert np.max(np.abs(p - p_plain)) > 1e-3
    again = np.asarray(predict_proba(model, post, X, rng_key=jax.random.key(1)))
    np.testing.assert_array_equal(p, again)  # seeded: reproducible
    mc = bnn.MCDropout(num_steps=30, num_passes=1).run(jax.random.key(0), model, X, Y)
    assert not np.array_equal(mc.traces["map_loss"], post.traces["map_loss"])


def test_errors_name_the_argument():
    for bad in (0.0, 1.0, True, -0.2):
        with pytest.raises(ValueError, match=r"dropout must be a number in \(0, 1\)"):
            trace(seed(functools.partial(mc_dropout_binary, dropout=bad), 0)).get_trace(X, Y)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="num_passes must be an int >= 1"):
            trace(seed(functools.partial(mc_dropout_binary, num_passes=bad), 0)).get_trace(X)
    with pytest.raises(ValueError, match=r"y must hold class labels in \{0, ..., 1\}"):
        trace(seed(mc_dropout_binary, 0)).get_trace(X, Y + 2)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        trace(seed(functools.partial(mc_dropout_multiclass, num_classes=1), 0)).get_trace(X)
