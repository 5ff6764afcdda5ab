"""Data parallelism across devices (:mod:`ppl_dgp.sharding`), on two forced host CPU devices.

JAX reads ``--xla_force_host_platform_device_count`` when it starts, so the two-device runs
happen in one fresh process (``XLA_FLAGS`` extended), which prints what it measured; the
assertions are made here. One device against two: the same minibatch SVI fit (each minibatch
split over the devices, the data and state replicated) and NUTS chains one per device
(NumPyro's ``chain_method="parallel"``) against the vectorised chains, equal up to
floating-point reassociation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ppl_dgp.infer import SVI
from ppl_dgp.sharding import batch_mesh

_TWO_DEVICES = textwrap.dedent(
    """
    import json

    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from ppl_dgp.infer import NUTS, SVI, fit
    from ppl_dgp.infer import loop
    from ppl_dgp.models import MODELS

    # the compiled SVI chunk, as XLA partitioned it: a split batch sums across devices
    compiled = []
    run_chunk = loop.Loop._run_chunk

    def spy(self, state, key, start, n_valid, args):
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
    loop.Loop._run_chunk = run_chunk
    for method in ("vectorized", "parallel"):
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


def test_nuts_chains_one_per_device_equal_the_vectorised_chains(two_devices):
    vec, par = two_devices["nuts_vectorized"], two_devices["nuts_parallel"]
    assert set(vec) == set(par) and vec
    for name in vec:
        assert np.shape(vec[name])[:2] == (2, 10), name
        np.testing.assert_allclose(par[name], vec[name], rtol=1e-8, atol=1e-10, err_msg=name)


def test_devices_needs_a_batch_that_splits_evenly():
    with pytest.raises(ValueError, match=r"SVI.batch_size=7 must be divisible by SVI.devices=2"):
        SVI(batch_size=7, devices=2)
    with pytest.raises(ValueError, match=r"SVI.devices=2 .* give SVI.batch_size"):
        SVI(devices=2)
    with pytest.raises(ValueError, match=r"SVI.devices must be a positive int; received 0"):
        SVI(batch_size=4, devices=0)


def test_more_devices_than_present_is_refused_with_the_flag_to_use():
    with pytest.raises(ValueError, match=r"SVI.devices=64 but only \d+ device"):
        batch_mesh(64, "SVI.devices")
