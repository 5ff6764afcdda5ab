"""MC dropout zoo programs (``ppl_dgp.models.dropout``): the averaged-pass logits against a
NumPy reference, the T passes against the same masks drawn by hand, MAP's and the ensemble's
fits trained with a fresh mask per step (against MCDropout's loop), errors naming the
argument."""

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


def test_the_potential_is_seeded_only_where_the_program_draws_masks():
    """seeded_potential: None for the plain MLP (its log density draws nothing); for the
    dropout program the potential of seed(model, key), by hand, differing between keys."""
    from numpyro.infer.util import potential_energy

    from ppl_dgp.infer.core import initialize
    from ppl_dgp.infer.map import seeded_potential

    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    plain = functools.partial(bnn.mlp_binary, hidden=(8,))
    info, _ = initialize(jax.random.key(0), plain, Xj, Yj)
    assert seeded_potential(info) is None
    model = build_bnn_binary_dropout(X, width=8, dropout=0.3, num_passes=4)
    info, _ = initialize(jax.random.key(0), model, Xj, Yj)
    U = seeded_potential(info)
    z = info.param_info.z
    k1, k2 = jax.random.key(1), jax.random.key(2)
    hand = potential_energy(seed(model, k1), (Xj, Yj), {}, z)
    np.testing.assert_allclose(U(z, k1), hand, rtol=1e-12)
    assert abs(float(U(z, k1)) - float(U(z, k2))) > 1e-6  # other masks
    unmasked = float(info.potential_fn(z))
    assert abs(float(U(z, k1)) - unmasked) > 1e-6


@pytest.mark.slow  # four compiled fits: ~20-60 s on the shared machine
@pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning")  # 30 steps
def test_map_and_ensemble_train_with_a_fresh_mask_per_step():
    """fit(MAP) on the dropout program is Gal's training, a fresh mask per step: the same
    steps as MCDropout's loop (its own loss, seeded by the same step keys), not the plain
    network's; predict_proba runs T passes. A DeepEnsemble with unperturbed starts
    (init_scale 0) ends with distinct members: each member draws its own masks (the plain
    network's members stay equal)."""
    from ppl_dgp.infer import MAP, DeepEnsemble, fit
    from ppl_dgp.predictive import predict_proba

    model = build_bnn_binary_dropout(X, width=8, dropout=0.3, num_passes=20)
    plain = functools.partial(bnn.mlp_binary, hidden=(8,))
    post = fit(MAP(num_steps=30), jax.random.key(0), model, X, Y)
    mc = bnn.MCDropout(num_steps=30, num_passes=1).run(jax.random.key(0), model, X, Y)
    np.testing.assert_allclose(post.traces["map_loss"], mc.traces["map_loss"], rtol=1e-12)
    for k in post.draws:
        np.testing.assert_allclose(post.draws[k], mc.draws[k], rtol=1e-10, atol=1e-12)
    post_plain = fit(MAP(num_steps=30), jax.random.key(0), plain, X, Y)
    assert not np.allclose(post.traces["map_loss"], post_plain.traces["map_loss"])
    p = np.asarray(predict_proba(model, post, X, rng_key=jax.random.key(1)))
    p_plain = np.asarray(predict_proba(plain, post_plain, X, link="nn"))
    assert p.shape == (15,) and np.all((p > 0) & (p < 1))
    assert np.max(np.abs(p - p_plain)) > 1e-3
    again = np.asarray(predict_proba(model, post, X, rng_key=jax.random.key(1)))
    np.testing.assert_array_equal(p, again)  # seeded: reproducible

    ens = DeepEnsemble(num_members=3, num_steps=30, init_scale=0.0)
    members = fit(ens, jax.random.key(0), model, X, Y).draws["layer0.W"][0]
    assert np.min(np.abs(members[0] - members[1])) > 0 and np.unique(members[:, 0, 0]).size == 3
    same = fit(ens, jax.random.key(0), plain, X, Y).draws["layer0.W"][0]
    np.testing.assert_array_equal(same[0], same[1])


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
