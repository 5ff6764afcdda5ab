"""JAX's persistent compilation cache, set up once for the command line and the tests.

A fresh process pays XLA's compilation for every program it runs (most of a small fit's wall
time on a CPU). JAX can keep compiled executables on disk, keyed by the program's HLO, the
compile options and the backend, and reuse them in the next process, or in the same process
when an equal program is traced again from a new closure. :func:`enable_compile_cache` turns
that on, in a folder under the user's cache directory:

1. ``$PPL_DGP_CACHE_DIR`` if set (an empty value, ``0`` or ``off`` turns the cache off);
2. else ``$XDG_CACHE_HOME/ppl_dgp/jax``, else ``~/.cache/ppl_dgp/jax``.

Across processes, some NumPyro programs hash equal only under a fixed ``PYTHONHASHSEED``
(the order of a set of names reaches the program): ``make run`` and ``make test`` fix it, and
so should a script that wants every program read back.

Example:
    >>> from pathlib import Path
    >>> cache_dir("~/jax-cache") == Path.home() / "jax-cache"
    True
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

__all__ = ["cache_dir", "enable_compile_cache", "ENV_VAR"]

#: The environment variable that moves the cache (a path) or turns it off (``""``, ``0``,
#: ``off``, ``false``, ``no``).
ENV_VAR = "PPL_DGP_CACHE_DIR"
_OFF = {"", "0", "off", "false", "no", "none"}

#: Executables that compiled faster than this are not written (reading one back costs about
#: as much as compiling it).
MIN_COMPILE_SECONDS = 0.05


def cache_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The cache folder: ``path``, else ``$PPL_DGP_CACHE_DIR``, else the user's cache folder;
    ``None`` when the environment turns the cache off."""
    if path is None:
        env = os.environ.get(ENV_VAR)
        if env is not None:
            if env.strip().lower() in _OFF:
                return None
            path = env
        else:
            base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
            path = Path(base) / "ppl_dgp" / "jax"
    return Path(path).expanduser()


def enable_compile_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir` (created if missing).

    Args:
        path: the folder; default as :func:`cache_dir` resolves it.

    Returns:
        The folder in use, or ``None`` if the cache is turned off, or the folder cannot be
        created or written (a ``RuntimeWarning`` says so; JAX then simply compiles).
    """
    folder = cache_dir(path)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"{folder} is not writable")
    except OSError as err:
        warnings.warn(
            f"compile cache off: cannot use {folder} ({err}); every process compiles afresh "
            f"(set {ENV_VAR} to a writable folder, or to 'off' to silence this)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
