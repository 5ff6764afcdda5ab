"""Shared test set-up: float64, strict rank promotion for the math, headless matplotlib."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


# The math strata (no NumPyro inside) must never rely on implicit rank promotion: there a
# `[N]` vs `[N, 1]` mistake raises. Their test modules say so with
# `pytestmark = pytest.mark.strict_rank`. NumPyro's own distributions and transforms broadcast
# implicitly, so program-level tests run with JAX's default.
@pytest.fixture(autouse=True)
def _rank_promotion(request: pytest.FixtureRequest):
    strict = request.node.get_closest_marker("strict_rank") is not None
    with jax.numpy_rank_promotion("raise" if strict else "allow"):
        yield


@pytest.fixture
def rng_key() -> jax.Array:
    """A fixed PRNG key; split it inside the test for independent streams."""
    return jax.random.key(0)
