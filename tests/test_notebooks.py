"""Execute every teaching notebook (jupytext ``.py`` in ``notebooks/``) at smoke size.

Each notebook runs as a plain script in a fresh interpreter, from the repository root, with
``PPL_DGP_SMOKE=1`` (few steps, few samples), a headless matplotlib backend and JAX on the CPU.
Run only these with ``pytest -m notebooks``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
TIMEOUT_SECONDS = 600


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks found in {ROOT / 'notebooks'}"


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_at_smoke_size(notebook: Path):
    env = {
        **os.environ,
        "PPL_DGP_SMOKE": "1",
        "MPLBACKEND": "Agg",
        "JAX_PLATFORMS": "cpu",
        "CI": "1",  # no progress bars
    }
    try:
        proc = subprocess.run(
            [sys.executable, str(notebook)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
        pytest.fail(f"{notebook.name} did not finish within {TIMEOUT_SECONDS} s:\n{stderr[-6000:]}")
    assert proc.returncode == 0, (
        f"{notebook.name} exited with code {proc.returncode}\n"
        f"--- stdout (tail) ---\n{proc.stdout[-3000:]}\n"
        f"--- stderr (tail) ---\n{proc.stderr[-6000:]}"
    )
