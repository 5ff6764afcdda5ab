"""Shared test set-up: float64, strict rank promotion for the math, headless matplotlib, and
JAX's persistent compilation cache.

The cache (:mod:`ppl_dgp.compile_cache`: ``$PPL_DGP_CACHE_DIR``, else the user's cache folder;
``PPL_DGP_CACHE_DIR=off`` turns it off) is shared by the test process, pytest-xdist's workers
and the notebooks' subprocesses (through JAX's own environment variables), so a program
compiled once is read back wherever it is traced again.
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

from ppl_dgp.compile_cache import MIN_COMPILE_SECONDS, enable_compile_cache  # noqa: E402

_CACHE = enable_compile_cache()
if _CACHE is not None:  # the notebooks' subprocesses read JAX's environment variables
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(MIN_COMPILE_SECONDS))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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


#: The longest work first, so that pytest-xdist's workers (``--dist loadgroup
#: --no-loadscope-reorder``, see the Makefile) finish together: the notebooks, then the files
#: that share module-scoped fits, then the contract matrix, then the rest.
_FIRST = ("test_notebooks.py",)
_LAST_BEFORE_REST = ("test_contract.py",)


def _shares_module_fixtures(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(d.scope in ("module", "package", "session") for ds in defs for d in ds
               if d.baseid)  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A file whose tests share a module-scoped fixture runs whole on one worker (its fits are
    built once); every other test is its own unit of work."""
    shared = {item.path for item in items if _shares_module_fixtures(item)}
    for item in items:
        if item.path in shared:
            item.add_marker(pytest.mark.xdist_group(item.path.name))

    def rank(item: pytest.Item) -> int:
        if item.path.name in _FIRST:
            return 0
        if item.path in shared:
            return 1
        return 2 if item.path.name in _LAST_BEFORE_REST else 3

    items.sort(key=rank)  # stable: the order within a file is kept
