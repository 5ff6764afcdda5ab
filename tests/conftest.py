"""Shared test set-up: float64, strict rank promotion for the math, headless matplotlib, and
JAX's persistent compilation cache, and XLA's cheap compile for the tests.

The cache (:mod:`ppl_dgp.compile_cache`: ``$PPL_DGP_CACHE_DIR``, else the user's cache folder;
``PPL_DGP_CACHE_DIR=off`` turns it off) is shared by the test process, pytest-xdist's workers
and the notebooks' subprocesses (through JAX's own environment variables), so a program
compiled once is read back wherever it is traced again.

Most of the suite's time is XLA compiling small programs that then run for milliseconds, so the
tests compile with LLVM's cheap code generation (``JAX_DISABLE_MOST_OPTIMIZATIONS=1``: XLA's
backend optimisation level 0 and no expensive LLVM passes; the HLO passes, fusion included,
still run), which the subprocesses inherit: on four contract rows, 96 s -> 67 s with an empty
cache. Run the suite as users compile with ``JAX_DISABLE_MOST_OPTIMIZATIONS=0 make test``;
``make run``, the benchmarks and the notebooks outside the tests compile with every pass.

"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # read by JAX at import

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


@pytest.fixture(autouse=True)
def _xla_optimised(request: pytest.FixtureRequest):
    """A test marked ``xla_optimised`` (long-running compiled work: thousands of draws) compiles
    with every optimisation pass, as users do; the rest of the suite compiles cheaply (above)."""
    if request.node.get_closest_marker("xla_optimised") is None:
        yield
        return
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture
def rng_key() -> jax.Array:
    """A fixed PRNG key; split it inside the test for independent streams."""
    return jax.random.key(0)


#: The longest files first, so that pytest-xdist's workers (see the Makefile) finish together
#: instead of one running a long file alone at the end.
_LONGEST_FIRST = ("test_contract.py", "test_notebooks.py", "test_report.py", "test_diagnostics.py")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the tests (longest files first) and give each its pytest-xdist group
    (``--dist loadgroup``): its file, so that a file's module-scoped fits and compiled
    programs are built once on one worker, unless the module splits itself with an
    ``xdist_group_of(item)`` function (the contract's shards). Splitting every file into
    single tests measured slower (1005 s against 961 s), as both workers then compile a
    file's programs."""
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept
    for item in items:
        group_of = getattr(getattr(item, "module", None), "xdist_group_of", None)
        group = group_of(item) if group_of is not None else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))
