"""Layer passes over many test points go in chunks (``ppl_dgp.predict.MAX_PASS_POINTS``).

Exact where the pass is deterministic (an SVGP's predictive: no layer noise), unchanged for a
call that fits in one chunk, and with fresh noise in every chunk (a DGP's inner layer at the
same input in two chunks draws two different values).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ppl_dgp import predict as predict_module
from ppl_dgp.infer import SVI, fit
from ppl_dgp.models import MODELS
from ppl_dgp.predictive import predict, predict_distribution

S = 4
#: With MAX_PASS_POINTS = 40 and S = 4, chunks of 10 points: 25 points make three chunks.
SMALL = 40


@pytest.fixture(scope="module")
def fitted() -> dict:
    rng = np.random.default_rng(0)
    X = rng.uniform(-2.0, 2.0, (12, 1))
    y = np.sin(2.0 * X[:, 0]) + 0.1 * rng.standard_normal(12)
    out = {}
    for name in ("svgp", "dgp"):
        model = MODELS[name].make(X, smoke=True)
        out[name] = model, fit(SVI(num_steps=20, num_samples=5), jax.random.key(0), model, X, y)
    return out


def _predict(model, post, X_new):
    pred = predict(jax.random.key(3), model, post, X_new, num_samples=S)
    return np.asarray(pred.means), np.asarray(pred.variances)


def test_a_deterministic_pass_is_the_same_in_chunks(fitted, monkeypatch):
    model, post = fitted["svgp"]
    X_new = np.linspace(-3.0, 3.0, 25)[:, None]
    whole = _predict(model, post, X_new)
    monkeypatch.setattr(predict_module, "MAX_PASS_POINTS", SMALL)
    chunked = _predict(model, post, X_new)
    for a, b in zip(whole, chunked, strict=True):
        assert a.shape == b.shape == (S, 25)
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)
    dist_whole = predict_distribution(jax.random.key(3), model, post, X_new, num_samples=S)
    monkeypatch.setattr(predict_module, "MAX_PASS_POINTS", 10**9)
    dist_chunked = predict_distribution(jax.random.key(3), model, post, X_new, num_samples=S)
    np.testing.assert_allclose(dist_chunked.mean, dist_whole.mean, rtol=1e-12, atol=1e-14)


def test_the_first_chunk_is_the_unchunked_call_and_every_chunk_draws_its_own_noise(
    fitted, monkeypatch
):
    model, post = fitted["dgp"]
    X_new = np.full((25, 1), 0.3)  # one input, 25 times: only the inner layer's noise differs
    whole_means, _ = _predict(model, post, X_new[:10])
    monkeypatch.setattr(predict_module, "MAX_PASS_POINTS", SMALL)
    means, variances = _predict(model, post, X_new)
    assert means.shape == variances.shape == (S, 25)
    assert np.all(np.isfinite(means)) and np.all(variances > 0)
    np.testing.assert_array_equal(means[:, :10], whole_means)  # chunk 0: the same keys
    # chunks 1 and 2 draw other noise at the same input (keys folded with the chunk index)
    assert not np.allclose(means[:, 10:20], means[:, :10])
    assert not np.allclose(means[:, 20:], means[:, :5])


def test_chunks_inside_a_traced_program_equal_the_eager_call(fitted, monkeypatch):
    """Outside a program the chunks are cut and joined on the host; inside one (``jax.jit``
    of the passes, traced parameters) by its ops: the same values."""
    from ppl_dgp.predict import propagate_layers

    model, post = fitted["dgp"]
    params = dict(post.params)
    medians = {k: jax.numpy.asarray(v) for k, v in post.approx.medians.items()}
    X_new = np.linspace(-3.0, 3.0, 25)[:, None]
    monkeypatch.setattr(predict_module, "MAX_PASS_POINTS", SMALL)

    def passes(params, medians):
        return propagate_layers(jax.random.key(5), model, medians, params, X_new, num_samples=S,
                                values_per_pass=False)  # fmt: skip

    eager = passes(params, medians)
    traced = jax.jit(passes)(params, medians)
    assert set(traced) == set(eager)
    for name, v in eager.items():
        assert v.shape == traced[name].shape and v.shape[0] == S
        np.testing.assert_allclose(traced[name], v, rtol=1e-12, atol=1e-14, err_msg=name)
    assert eager["y.f_mean"].shape == (S, 25)
