"""Where the compilation cache lives, and what happens when it cannot."""

from __future__ import annotations

import pytest

from ppl_dgp.compile_cache import ENV_VAR, cache_dir, enable_compile_cache


def test_the_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    for off in ("", "0", "off", "OFF", "false"):
        monkeypatch.setenv(ENV_VAR, off)
        assert cache_dir() is None
        assert enable_compile_cache() is None
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "ppl_dgp" / "jax"
    assert cache_dir(tmp_path / "given") == tmp_path / "given"


def test_an_unusable_folder_turns_the_cache_off_with_a_warning(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="compile cache off: cannot use"):
        assert enable_compile_cache(blocker / "jax") is None
