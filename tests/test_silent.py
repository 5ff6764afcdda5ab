"""No silent wrong answers (issue 13): each case here once returned a plausible but wrong
result, or an error that named nothing; each test fails on the code before its fix."""

from __future__ import annotations

import json
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from ppl_dgp.datasets import Standardizer, load_csv
from ppl_dgp.infer import NUTS
from ppl_dgp.posterior import Posterior
from ppl_dgp.predict import MixturePredictive

# -- 6: small inputs that used to give numbers ---------------------------------------------------


def test_quantile_outside_0_1_raises_naming_p():
    pred = MixturePredictive(jnp.zeros((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)))
    for p in (1.2, -0.1, 0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="p must be in \\(0, 1\\)"):
            pred.quantile(p)


def test_standardizer_refuses_another_width():
    s = Standardizer.fit(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(ValueError, match="3 columns.*received shape \\(2, 1\\)"):
        s.transform(np.ones((2, 1)))
    with pytest.raises(ValueError, match="3 columns.*received shape \\(2, 4\\)"):
        s.inverse_transform(np.ones((2, 4)))
    assert s.transform(np.ones((2, 3))).shape == (2, 3)
    s1 = Standardizer.fit(np.arange(4.0))  # fitted on [N]: a scalar mean, any shape works
    assert s1.transform(np.ones((2, 1))).shape == (2, 1)


def test_load_csv_refuses_duplicate_column_names(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a,y\n1,2,3,4\n5,6,7,8\n")
    with pytest.raises(ValueError, match="duplicate column name.*'a'"):
        load_csv(path, "y")


# -- 7: saving and loading -------------------------------------------------------------------------


def _post(**changes) -> Posterior:
    fields = dict(
        draws={"w": np.arange(6.0).reshape(1, 6)},
        method=NUTS(num_chains=1, num_samples=np.int64(6), target_accept_prob=np.float32(0.9)),
        timings={"compile_seconds": float("nan"), "run_seconds": np.float64(1.5)},
    )
    return Posterior(**{**fields, **changes})


def test_save_writes_strict_json_with_numbers(tmp_path):
    post = _post()
    npz, sidecar = post.save(tmp_path / "p")
    text = sidecar.read_text()
    meta = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    fields = meta["posterior"]["method"]["fields"]
    assert fields["num_samples"] == 6 and isinstance(fields["num_samples"], int)
    assert isinstance(fields["target_accept_prob"], float)
    assert meta["posterior"]["timings"]["__dict__"]["run_seconds"] == 1.5
    loaded = Posterior.load(npz)
    assert loaded == post and loaded.method.num_samples == 6
    assert np.isnan(loaded.timings["compile_seconds"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.npz"]  # no temp files


def test_a_mismatched_pair_is_refused(tmp_path):
    """A save that died between its two renames left the new npz beside the old JSON."""
    _post().save(tmp_path / "a")
    _post(draws={"w": np.ones((1, 6))}).save(tmp_path / "b")
    (tmp_path / "b.npz").replace(tmp_path / "a.npz")
    with pytest.raises(ValueError, match="a.npz does not belong to .*a.json"):
        Posterior.load(tmp_path / "a")


def test_load_names_the_path_of_a_missing_truncated_or_tampered_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz and .*nothere.json not found"):
        Posterior.load(tmp_path / "nothere")
    npz, sidecar = _post().save(tmp_path / "p")
    good_json = sidecar.read_text()
    sidecar.write_text(good_json[: len(good_json) // 2])
    with pytest.raises(ValueError, match="p.json is not valid JSON"):
        Posterior.load(tmp_path / "p")
    meta = json.loads(good_json)
    del meta["posterior"]["approx"]
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="p.json has no entry for \\['approx'\\]"):
        Posterior.load(tmp_path / "p")
    meta = json.loads(good_json)
    meta["posterior"]["draws"]["__dict__"]["w"]["__array__"] = "draws/v"
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no entry 'draws/v'"):
        Posterior.load(tmp_path / "p")
    sidecar.write_text(good_json)
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="p.npz does not belong to"):
        Posterior.load(tmp_path / "p")
    meta = json.loads(good_json)
    meta["format"], _ = "ppl_dgp.posterior/2", meta.pop("npz_sha256")
    sidecar.write_text(json.dumps(meta))  # the older format has no digest: the npz is read
    with pytest.raises(ValueError, match="p.npz is not a readable npz archive"):
        Posterior.load(tmp_path / "p")
    assert not zipfile.is_zipfile(npz)
