"""Data parallelism across devices (:mod:`ppl_dgp.sharding`), on two forced host CPU devices.

JAX reads ``--xla_force_host_platform_device_count`` when it starts, so the two-device runs
happen in one fresh process (``XLA_FLAGS`` extended), which prints what it measured; the
assertions are made here. One device against two: the same minibatch SVI and SGHMC fits (each
minibatch split over the devices, the data and state replicated) and NUTS chains one per
device (NumPyro's ``chain_method="parallel"``) against the vectorised chains, equal up to
floating-point reassociation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from ppl_dgp.infer import NUTS, SGHMC, SVI, fit
from ppl_dgp.sharding import batch_mesh

_TWO_DEVICES = textwrap.dedent(
    """
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    jax.config.update("jax_enable_x64", True)
    from ppl_dgp.collapse import ROLE
    from ppl_dgp.infer import NUTS, SGHMC, SVI, fit
    from ppl_dgp.infer import loop
    from ppl_dgp.models import MODELS

    # the compiled chunks, as XLA partitioned them: a split batch sums across devices
    compiled = []
    run_chunk = loop.Loop._run_chunk

    def spy(self, state, key, start, n_valid, args):  # the first chunk's program only
        if not compiled:
            lowered = self._compiled.lower(state, key, start, n_valid, *args)
            compiled.append(lowered.compile().as_text().count("all-reduce"))
        return run_chunk(self, state, key, start, n_valid, args)

    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    X = rng.uniform(-2.0, 2.0, (40, 1))
    y = np.sin(2.0 * X[:, 0]) + 0.1 * rng.standard_normal(40)
    model = MODELS["svgp"].make(X, smoke=True)
    key = jax.random.key(0)
    out = {}
    for devices in (None, 2):
        loop.Loop._run_chunk = spy if devices else run_chunk
        post = fit(SVI(num_steps=60, batch_size=8, num_samples=5, devices=devices), key,
                   model, X, y)
        out[f"svi_{devices}"] = {"loss": post.traces["loss"].tolist(),
                                 "q_mu": np.asarray(post.approx.q_mu["layer0"]).tolist()}
    out["all_reduce"] = compiled[0]
    # SGHMC with everything that draws a minibatch: the warm start, MW-MCEM's M-step (pooled
    # over two vectorised chains, a param fitted) and the sampler's step, on a small model
    # (regression weights sampled like inducing values, a noise hyperparameter, an offset
    # param): SGHMC's compiled programs, not the model, are the cost
    def toy(X, y=None, batch_size=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1),
                           infer={ROLE: "dense"})
        s2 = numpyro.sample("s2", dist.LogNormal(0.0, 1.0))
        b = numpyro.param("b", 0.0)
        with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as idx:
            numpyro.sample("y", dist.Normal(X[idx] @ w + b, jnp.sqrt(s2)),
                           obs=None if y is None else y[idx])

    Xt = rng.normal(size=(40, 2))
    yt = Xt @ np.array([1.0, -0.5]) + 0.3 + 0.2 * rng.standard_normal(40)
    compiled.clear()
    for devices in (None, 2):
        loop.Loop._run_chunk = spy if devices else run_chunk
        method = SGHMC(batch_size=8, devices=devices, num_burnin=20, num_samples=10,
                       thinning=2, num_chains=2, hyper="mcem", mcem_params=True, window=5,
                       init_steps=10, step_size=0.05)
        post = fit(method, key, toy, Xt, yt)
        loop.Loop._run_chunk = run_chunk
        out[f"sghmc_{devices}"] = {
            "log_density": np.asarray(post.sample_stats["log_density"]).tolist(),
            "draws": {k: np.asarray(v).tolist() for k, v in post.draws.items()},
            "b": float(post.params["b"]),
        }
    out["sghmc_all_reduce"] = list(compiled)
    for method in ("vectorized", "parallel", "sequential"):
        post = fit(NUTS(num_warmup=20, num_samples=10, num_chains=2, chain_method=method,
                        max_tree_depth=4), key, model, X[:12], y[:12])
        out[f"nuts_{method}"] = {k: np.asarray(v).tolist() for k, v in post.draws.items()}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def two_devices() -> dict:
    """What the two-device process measured (its last stdout line, JSON)."""
    # XLA_FLAGS of its own (not the worker's: another test there, the benchmark CLI's, may
    # have left thread flags in the environment), and JAX's own setting for host devices
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_NUM_CPU_DEVICES": "2", "CI": "1"}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", _TWO_DEVICES], env=env, capture_output=True,
                         text=True, timeout=600, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_minibatch_svi_split_over_two_devices_equals_one_device(two_devices):
    one, two = two_devices["svi_None"], two_devices["svi_2"]
    assert len(one["loss"]) == 60
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(two["q_mu"], one["q_mu"], rtol=1e-8, atol=1e-10)
    # and it was split: the two-device step reduces its sums across the devices
    assert two_devices["all_reduce"] > 0


def test_minibatch_sghmc_split_over_two_devices_equals_one_device(two_devices):
    """Warm start, MW-MCEM (a param fitted) and SGHMC steps on minibatches split over two
    devices: the same draws, log densities and fitted param as on one device, up to
    reassociation."""
    one, two = two_devices["sghmc_None"], two_devices["sghmc_2"]
    assert np.shape(one["log_density"]) == (2, 10)
    np.testing.assert_allclose(two["log_density"], one["log_density"], rtol=1e-9)
    assert set(two["draws"]) == set(one["draws"]) == {"w", "s2"}
    for name, value in one["draws"].items():
        np.testing.assert_allclose(two["draws"][name], value, rtol=1e-8, atol=1e-10,
                                   err_msg=name)  # fmt: skip
    np.testing.assert_allclose(two["b"], one["b"], rtol=1e-8)
    # the chains and the M-step moved (a fit that stood still would agree trivially)
    assert np.ptp(np.asarray(one["draws"]["w"]), axis=1).min() > 0 and one["b"] != 0.0
    # and it was split: the burn-in chunk compiled for two devices reduces its sums across
    # them (sampling's chunk runs the same step)
    assert two_devices["sghmc_all_reduce"][0] > 0


def test_nuts_chains_one_per_device_equal_the_vectorised_chains(two_devices):
    vec, par = two_devices["nuts_vectorized"], two_devices["nuts_parallel"]
    assert set(vec) == set(par) and vec
    for name in vec:
        assert np.shape(vec[name])[:2] == (2, 10), name
        np.testing.assert_allclose(par[name], vec[name], rtol=1e-8, atol=1e-10, err_msg=name)


def test_nuts_chains_one_after_another_equal_the_vectorised_chains(two_devices):
    """``chain_method="sequential"`` (the chains mapped in one program, the CPU's default):
    each chain the same as in the batched run, up to reassociation."""
    vec, seq = two_devices["nuts_vectorized"], two_devices["nuts_sequential"]
    assert set(vec) == set(seq) and vec
    for name in vec:
        assert np.shape(seq[name])[:2] == (2, 10), name
        np.testing.assert_allclose(seq[name], vec[name], rtol=1e-8, atol=1e-10, err_msg=name)
    # the chains differ (two copies of one chain would agree trivially)
    first = np.asarray(next(iter(vec.values())))
    assert not np.allclose(first[0], first[1])


def test_auto_chain_method_is_sequential_on_a_cpu_and_vectorised_elsewhere():
    from ppl_dgp.infer.mcmc import resolve_chain_method

    assert NUTS().chain_method == "auto"
    assert resolve_chain_method("auto", "cpu") == "sequential"
    assert (
        resolve_chain_method("auto", "gpu") == resolve_chain_method("auto", "tpu") == "vectorized"
    )
    assert resolve_chain_method("parallel", "cpu") == "parallel"
    with pytest.raises(ValueError, match=r"NUTS.chain_method must be one of .*'auto'.*; "
                                         r"received 'lax'"):  # fmt: skip
        NUTS(chain_method="lax")


def test_devices_needs_a_batch_that_splits_evenly():
    with pytest.raises(ValueError, match=r"SGHMC.batch_size=7 must be divisible by "
                                         r"SGHMC.devices=2"):  # fmt: skip
        SGHMC(batch_size=7, devices=2)
    with pytest.raises(ValueError, match=r"SGHMC.devices=2 .* give SGHMC.batch_size"):
        SGHMC(devices=2)
    with pytest.raises(ValueError, match=r"SGHMC.devices must be a positive int; received 0"):
        SGHMC(batch_size=4, devices=0)
    with pytest.raises(ValueError, match=r"SVI.batch_size=7 must be divisible by SVI.devices=2"):
        SVI(batch_size=7, devices=2)
    with pytest.raises(ValueError, match=r"SVI.devices=2 .* give SVI.batch_size"):
        SVI(devices=2)
    with pytest.raises(ValueError, match=r"SVI.devices must be a positive int; received 0"):
        SVI(batch_size=4, devices=0)


def test_more_devices_than_present_is_refused_with_the_flag_to_use():
    with pytest.raises(ValueError, match=r"SVI.devices=64 but only \d+ device"):
        batch_mesh(64, "SVI.devices")


def _line(X, y=None, batch_size=None):
    import numpyro
    import numpyro.distributions as dist

    w = numpyro.sample("w", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as idx:
        numpyro.sample("y", dist.Normal(w * X[idx, 0], 1.0), obs=None if y is None else y[idx])


def test_sghmc_devices_are_checked_when_it_fits():
    """More devices than present, and devices with the full batch (nothing to split), are
    refused before anything compiles, naming SGHMC's fields."""
    X, y = np.ones((20, 1)), 2.0 * np.ones(20)
    with pytest.raises(ValueError, match=r"SGHMC.devices=5 but only \d+ device"):
        fit(SGHMC(batch_size=10, devices=5), jax.random.key(0), _line, X, y)
    with pytest.raises(ValueError, match=r"SGHMC.devices=1 .* SGHMC.batch_size=20 is the full "
                                         r"batch \(N=20\)"):  # fmt: skip
        fit(SGHMC(batch_size=20, devices=1), jax.random.key(0), _line, X, y)
