"""Shared test set-up: float64, strict rank promotion for the math, headless matplotlib."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

# The math strata (no NumPyro inside) must never rely on implicit rank promotion: there a
# `[N]` vs `[N, 1]` mistake raises. NumPyro's own distributions and transforms broadcast
# implicitly, so program-level tests run with JAX's default.
STRICT_MODULES = {
    "test_conditionals",
    "test_kernels",
    "test_kl",
    "test_linalg",
    "test_reference_svgp",
}


@pytest.fixture(autouse=True)
def _rank_promotion(request: pytest.FixtureRequest):
    mode = "raise" if request.module.__name__.rsplit(".", 1)[-1] in STRICT_MODULES else "allow"
    with jax.numpy_rank_promotion(mode):
        yield


@pytest.fixture
def rng_key() -> jax.Array:
    """A fixed PRNG key; split it inside the test for independent streams."""
    return jax.random.key(0)
