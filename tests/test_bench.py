"""The DGP benchmark (``ppl-dgp bench``): its set-up is NumPyro's, compiled as one program."""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpyro.infer import SVI

from ppl_dgp.benchmarks.dgp import bench_layers, run_benchmark
from ppl_dgp.datasets import load_bench
from ppl_dgp.elbo import DoublyStochasticELBO
from ppl_dgp.guides import InducingPointGuide, compiled_init
from ppl_dgp.infer.minibatch import with_batch
from ppl_dgp.layers import Hyper
from ppl_dgp.models.dgp import dgp_regression

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _svi(X: np.ndarray) -> tuple[SVI, InducingPointGuide]:
    d = load_bench("step1d")
    model = functools.partial(
        dgp_regression, layers=bench_layers(d["Z_init"][:8], 1), noise_variance=Hyper(0.01),
        batch_size=16,
    )  # fmt: skip
    guide = InducingPointGuide(model)
    svi = SVI(with_batch(model, "data"), with_batch(guide, "data"), optax.adam(0.01),
              DoublyStochasticELBO(loss_scale=1.0 / len(X)))  # fmt: skip
    return svi, guide


def test_compiled_init_equals_numpyros_eager_init():
    d = load_bench("step1d")
    X = jnp.asarray(d["X_train"][:40])
    y = jnp.asarray(d["Y_train"][:40, 0])
    idx = jnp.arange(16)
    eager_svi, _ = _svi(X)
    compiled_svi, guide = _svi(X)
    eager = eager_svi.init(jax.random.key(3), idx, X, y)
    state = compiled_init(compiled_svi, guide, jax.random.key(3), idx, X, y)
    a, b = eager_svi.get_params(eager), compiled_svi.get_params(state)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-14, err_msg=k)
    # and the first update from either state is the same
    _, loss_a = eager_svi.update(eager, idx, X, y)
    _, loss_b = compiled_svi.update(state, idx, X, y)
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-12)


def _net(X, y=None):
    """A small network with a deterministic site (NumPyro's AutoNormal then replays the model
    to map draws back, a closure over the data)."""
    import numpyro
    import numpyro.distributions as dist

    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1], 3]).to_event(2))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    f = numpyro.deterministic("f", jnp.tanh(X @ w).sum(-1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(f, s), obs=y)


def _bounded(X, y=None):
    """A support that depends on the data: the set-up is not compiled, but eager."""
    import numpyro
    import numpyro.distributions as dist

    m = numpyro.sample("m", dist.Uniform(X.min(), X.max()))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(m, 1.0), obs=y)


@pytest.mark.parametrize("model", [_net, _bounded], ids=["net", "data_dependent_support"])
def test_compiled_autonormal_equals_numpyros_eager_autonormal(model):
    """CompiledAutoNormal under compiled_init: NumPyro's AutoNormal's initial state, first
    update and posterior draws, and concrete closures (no tracer leaks out of the trace)."""
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from ppl_dgp.guides import CompiledAutoNormal, init_to_model_init

    X = jnp.linspace(-1.0, 1.0, 10)[:, None] * jnp.ones((1, 2))
    y = jnp.sin(X[:, 0])
    eager_guide = AutoNormal(model, init_loc_fn=init_to_model_init)
    guide = CompiledAutoNormal(model, init_loc_fn=init_to_model_init)
    eager_svi = SVI(model, eager_guide, optax.adam(0.01), Trace_ELBO())
    svi = SVI(model, guide, optax.adam(0.01), Trace_ELBO())
    eager = eager_svi.init(jax.random.key(3), X, y)
    state = compiled_init(svi, guide, jax.random.key(3), X, y)
    a, b = eager_svi.get_params(eager), svi.get_params(state)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-14, err_msg=k)
    _, loss_a = eager_svi.update(eager, X, y)
    _, loss_b = svi.update(state, X, y)
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-12)
    # the closures work outside the trace, eagerly and in a new compiled program
    da = eager_guide.sample_posterior(jax.random.key(4), a, sample_shape=(5,))
    db = guide.sample_posterior(jax.random.key(4), b, sample_shape=(5,))
    dc = jax.jit(lambda k: guide.sample_posterior(k, b, sample_shape=(5,)))(jax.random.key(4))
    assert da.keys() == db.keys() == dc.keys()
    for k in da:
        np.testing.assert_allclose(db[k], da[k], rtol=1e-12, atol=1e-14, err_msg=k)
        np.testing.assert_allclose(dc[k], da[k], rtol=1e-12, atol=1e-14, err_msg=k)
    assert all(isinstance(v, jax.Array) for v in guide._init_locs.values())


def test_run_benchmark_prints_the_peer_fields():
    r = run_benchmark("step1d", steps=4, chunk_size=2, num_predict_samples=3)
    for k in ("first_step_seconds", "seconds_per_step", "final_elbo", "test_rmse", "test_mlpd"):
        assert math.isfinite(r[k]), k
    assert r["steps"] == 4 and r["chunk_size"] == 2 and len(r["kl_per_layer"]) == 2


def test_time_to_accuracy_scores_every_chunk_and_stops():
    from ppl_dgp.benchmarks.tta import run_time_to_accuracy

    t0 = time.time()
    r = run_time_to_accuracy("step1d", -1e9, t0=t0, budget_seconds=1e9, eval_every=2,
                             max_steps=4, num_predict_samples=3)  # fmt: skip
    assert [t[1] for t in r["trace"]] == [2, 4]  # scored after each chunk, stopped at max_steps
    assert r["step_at_target"] == 2 and 0 < r["seconds_to_target"] <= time.time() - t0
    assert all(math.isfinite(t[2]) for t in r["trace"]) and r["final_mlpd"] == r["trace"][-1][2]
