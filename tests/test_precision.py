"""Float32 matmuls at full precision on accelerators (``linalg.full_precision_matmuls``).

CI has no GPU: the backend is pretended (``jax.default_backend`` patched), and what is checked
is what JAX traces: the precision of the ``dot_general`` in the lowered program, and the
precision a model sees while ``predict`` traces it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from ppl_dgp.infer import NUTS
from ppl_dgp.kernels import SquaredExponential
from ppl_dgp.linalg import full_precision_matmuls
from ppl_dgp.posterior import Posterior
from ppl_dgp.predictive import predict


def _dot_precisions(fn, *args) -> list[str]:
    text = jax.jit(fn).lower(*args).as_text()
    return [line.split("precision = ")[1].split("]")[0] + "]"
            for line in text.splitlines() if "dot_general" in line]  # fmt: skip


def _recording_model(seen: list):
    """A linear regression that records the matmul precision it is traced under."""

    def model(X, y=None):
        seen.append(jax.config.jax_default_matmul_precision)
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(w * X[:, 0], 1.0), obs=y)

    return model


@pytest.fixture
def on_gpu(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")


def test_cpu_keeps_the_default():
    with full_precision_matmuls():
        assert jax.config.jax_default_matmul_precision is None


def test_an_accelerator_traces_kernel_matrices_at_highest_precision(on_gpu):
    X = jnp.ones((3, 2), dtype=jnp.float32)
    k = SquaredExponential(variance=1.0, lengthscales=1.0)
    assert _dot_precisions(k.K, X) == ["[DEFAULT, DEFAULT]"]  # outside: JAX's default
    with full_precision_matmuls():
        assert jax.config.jax_default_matmul_precision == "highest"
        assert _dot_precisions(k.K, X) == ["[HIGHEST, HIGHEST]"]
    assert jax.config.jax_default_matmul_precision is None  # restored


def test_a_users_own_precision_is_kept(on_gpu):
    with jax.default_matmul_precision("bfloat16"), full_precision_matmuls():
        assert jax.config.jax_default_matmul_precision == "bfloat16"


def test_predict_traces_the_model_at_highest_precision(on_gpu):
    seen = []
    model = _recording_model(seen)

    post = Posterior(draws={"w": np.zeros((1, 4))}, method=NUTS())
    predict(jax.random.key(0), model, post, np.ones((3, 1)), num_samples=2)
    assert seen and set(seen) == {"highest"}


def test_fit_traces_the_model_at_highest_precision(on_gpu):
    from ppl_dgp.infer import MAP, fit

    seen = []
    model = _recording_model(seen)

    fit(MAP(num_steps=2), jax.random.key(0), model, np.ones((3, 1)), np.ones(3))
    assert seen and set(seen) == {"highest"}
