"""Checkpoints and exact resume: a fit cut at a checkpoint (a shorter run, or Ctrl-C inside the
loop) and run again equals the uninterrupted fit bit for bit; damaged or foreign checkpoints
are refused naming the path; ``run_svi(init_state=...)`` continues a run.

One tiny model throughout: ``y = X w + b + noise`` (3 parameters, N = 30), its likelihood in a
data plate that subsamples ``batch_size`` points (the minibatch stream is part of what resumes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from ppl_dgp.checkpoint import Checkpoint, CheckpointError
from ppl_dgp.infer import SGHMC, SVI, Laplace, NonFiniteLossError, fit, run_svi
from ppl_dgp.infer.loop import Loop

N = 30
KEY = jax.random.key(3)


def model(X, y=None, batch_size=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as idx:
        mean = X[idx] @ w + b
        numpyro.sample("y", dist.Normal(mean, 0.3), obs=None if y is None else y[idx])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 2))
    y = X @ np.array([1.0, -0.5]) + 0.3 + 0.3 * rng.normal(size=N)
    return X, y


def _equal(a, b):
    """Two Posteriors agree bit for bit in draws, traces, sample stats and approximation."""
    for field in ("draws", "traces", "sample_stats", "params"):
        x, z = getattr(a, field), getattr(b, field)
        assert set(x) == set(z), field
        for k in x:
            np.testing.assert_array_equal(x[k], z[k], err_msg=f"{field}[{k}]")
    jax.tree.map(np.testing.assert_array_equal, a.approx, b.approx)


def _interrupt_at_call(monkeypatch, n):
    """Ctrl-C in the loop: the n-th compiled chunk raises KeyboardInterrupt instead of running."""
    calls = {"n": 0}
    run_chunk = Loop._run_chunk

    def patched(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return run_chunk(self, *args, **kwargs)

    monkeypatch.setattr(Loop, "_run_chunk", patched)
    return calls


# -- (a) minibatch SVI ---------------------------------------------------------------------------

SVI_CFG = dict(num_steps=60, learning_rate=0.05, batch_size=6, num_samples=20)


@pytest.fixture(scope="module")
def svi_whole(data):
    return fit(SVI(**SVI_CFG), KEY, model, *data)


@pytest.fixture(scope="module")
def svi_checkpoint(data, tmp_path_factory):
    """A minibatch SVI cut at 25 of 60 steps (its checkpoint directory)."""
    folder = tmp_path_factory.mktemp("svi")
    cfg = {**SVI_CFG, "num_steps": 25}
    fit(SVI(**cfg, checkpoint_dir=str(folder), checkpoint_every=10), KEY, model, *data)
    return folder


def test_svi_minibatch_resumed_equals_uninterrupted(data, svi_whole, svi_checkpoint, tmp_path):
    folder = tmp_path / "svi"
    shutil.copytree(svi_checkpoint, folder)
    assert Checkpoint(folder).saved.step == 25  # the end of the short run
    resumed = fit(SVI(**SVI_CFG, checkpoint_dir=folder), KEY, model, *data)
    _equal(resumed, svi_whole)
    assert Checkpoint(folder).saved.step == 60
    # a third call finds the fit finished: no step runs, the same posterior comes back
    again = fit(SVI(**SVI_CFG, checkpoint_dir=folder, checkpoint_every=7), KEY, model, *data)
    _equal(again, svi_whole)


def test_svi_ctrl_c_writes_a_checkpoint_and_resumes(data, svi_whole, tmp_path, monkeypatch):
    method = SVI(**SVI_CFG, checkpoint_dir=tmp_path, checkpoint_every=10)
    _interrupt_at_call(monkeypatch, 3)  # chunks end at multiples of 10: two done, 20 steps
    with pytest.raises(KeyboardInterrupt) as err:
        fit(method, KEY, model, *data)
    assert any(str(tmp_path) in note and "20 of 60 steps" in note for note in err.value.__notes__)
    saved = Checkpoint(tmp_path).saved
    assert (saved.step, saved.losses.shape) == (20, (20,))
    monkeypatch.undo()
    _equal(fit(method, KEY, model, *data), svi_whole)


# -- (b) SGHMC -----------------------------------------------------------------------------------

SGHMC_CFG = dict(step_size=0.05, batch_size=6, num_burnin=20, num_samples=12, thinning=2,
                 num_chains=2)  # fmt: skip


@pytest.fixture(scope="module")
def sghmc_whole(data):
    return fit(SGHMC(**SGHMC_CFG), KEY, model, *data)


def test_sghmc_resumed_in_burnin_and_in_sampling_equals_uninterrupted(
    data, sghmc_whole, tmp_path, monkeypatch
):
    # 10 thinned burn-in steps, then 12 kept: with checkpoints every 4 the compiled chunks are
    # burn-in 4, 4, 2 (calls 1-3) and sampling 4, 4, 4 (calls 4-6); Ctrl-C in burn-in, and at
    # the start of sampling (no draw kept yet)
    for call, stage, step in ((3, "burnin", 8), (4, "sample", 0)):
        folder = tmp_path / stage
        method = SGHMC(**SGHMC_CFG, checkpoint_dir=folder, checkpoint_every=4)
        _interrupt_at_call(monkeypatch, call)
        with pytest.raises(KeyboardInterrupt):
            fit(method, KEY, model, *data)
        saved = Checkpoint(folder).saved
        assert (saved.stage, saved.step) == (stage, step)
        monkeypatch.undo()
        _equal(fit(method, KEY, model, *data), sghmc_whole)
    # the finished chain continues into more draws; a different burn-in cannot continue it
    more = fit(dataclasses.replace(method, num_samples=15), KEY, model, *data)
    for k, v in sghmc_whole.draws.items():
        np.testing.assert_array_equal(more.draws[k][:, :12], v)
    assert more.draws["w"].shape == (2, 15, 2)
    longer = dataclasses.replace(method, num_burnin=40)
    with pytest.raises(
        CheckpointError, match=r"samples after 10 thinned burn-in steps.*asks for 20"
    ):
        fit(longer, KEY, model, *data)


# -- (c) Laplace from its MAP checkpoint ---------------------------------------------------------

LAPLACE_CFG = dict(num_steps=80, learning_rate=0.05, num_samples=50)


def test_laplace_resumed_from_its_map_checkpoint_equals_uninterrupted(data, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    X, y = data
    whole = fit(Laplace(**LAPLACE_CFG), KEY, model, X, y)
    cut = Laplace(**{**LAPLACE_CFG, "num_steps": 30}, checkpoint_dir=tmp_path, checkpoint_every=20)
    fit(cut, KEY, model, X, y)
    assert Checkpoint(tmp_path).saved.step == 30
    resumed = fit(dataclasses.replace(cut, num_steps=80), KEY, model, X, y)
    _equal(resumed, whole)
    # the MAP checkpoint serves another Gaussian of the same MAP without one step of Adam
    calls = _interrupt_at_call(monkeypatch, 10**9)
    diag = dataclasses.replace(cut, num_steps=80, hessian_structure="diag")
    post = fit(diag, KEY, model, X, y)
    assert calls["n"] == 0
    jax.tree.map(np.testing.assert_array_equal, post.approx.map, whole.approx.map)


# -- (d) run_svi's init_state ----------------------------------------------------------------------


def test_run_svi_continues_from_a_non_finite_error_and_from_a_result(data, tmp_path):
    def climb():
        a = numpyro.param("a", 0.1)
        numpyro.factor("f", jnp.log(a) + jnp.log1p(-a))  # maximum at a = 1/2, NaN past a = 1

    def nothing():
        pass

    kw = dict(elbo=Trace_ELBO(), progress=False, chunk_size=10)  # one compiled chunk per model
    with pytest.raises(NonFiniteLossError) as err:  # one step of 0.3 jumps past a = 1
        run_svi(KEY, climb, nothing, optimizer=optax.sgd(0.3), num_steps=50, **kw)
    cont = run_svi(KEY, climb, nothing, optimizer=optax.sgd(0.01), num_steps=400,
                   init_state=err.value.state, **kw)  # fmt: skip
    np.testing.assert_allclose(float(cont.params["a"]), 0.5, atol=1e-6)
    # the last finite state was the initial one: the continuation is the fresh small-step run
    fresh = run_svi(KEY, climb, nothing, optimizer=optax.sgd(0.01), num_steps=400, **kw)
    np.testing.assert_array_equal(cont.losses, fresh.losses)

    X, y = data
    guide = AutoNormal(model)
    first = run_svi(KEY, model, guide, X, y, num_steps=30, **kw)
    more = run_svi(KEY, model, guide, X, y, num_steps=30, init_state=first.state, **kw)
    whole = run_svi(KEY, model, guide, X, y, num_steps=60, **kw)
    np.testing.assert_array_equal(np.r_[first.losses, more.losses], whole.losses)
    jax.tree.map(np.testing.assert_array_equal, more.params, whole.params)
    with pytest.raises(ValueError, match="init_state does not fit this model"):
        run_svi(KEY, climb, nothing, num_steps=5, init_state=first.state, **kw)
    with pytest.raises(ValueError, match="give init_state or checkpoint, not both"):
        run_svi(KEY, climb, nothing, num_steps=5, init_state=first.state,
                checkpoint=Checkpoint(tmp_path), **kw)  # fmt: skip


# -- (e) damaged, tampered and foreign checkpoints ------------------------------------------------


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _same_fit(folder):
    """A Checkpoint that expects exactly the saved fit (its fingerprint read back)."""
    fingerprint = json.loads((folder / "checkpoint.json").read_text())["fingerprint"]
    return Checkpoint(folder, fingerprint=fingerprint)


def test_damaged_or_tampered_checkpoints_are_refused_naming_the_path(svi_checkpoint, tmp_path):
    assert _same_fit(_copy(svi_checkpoint, tmp_path / "ok")).saved.step == 25
    # the fingerprint names the model and its arrays without memory addresses (another
    # process recognises the same fit)
    manifest = json.loads((svi_checkpoint / "checkpoint.json").read_text())
    assert manifest["fingerprint"]["model"] == f"{__name__}.model"
    assert "0x" not in json.dumps(manifest["fingerprint"])

    folder = _copy(svi_checkpoint, tmp_path / "flipped")
    (data_file,) = folder.glob("data-*.npz")
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=rf"{data_file}.*SHA-256 differs"):
        _same_fit(folder).saved

    folder = _copy(svi_checkpoint, tmp_path / "missing")
    (data_file,) = folder.glob("data-*.npz")
    data_file.unlink()
    with pytest.raises(CheckpointError, match=rf"names {data_file}, which is missing"):
        _same_fit(folder).saved

    folder = _copy(svi_checkpoint, tmp_path / "truncated")
    manifest = folder / "checkpoint.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=rf"{manifest} is not valid JSON"):
        Checkpoint(folder).saved

    folder = _copy(svi_checkpoint, tmp_path / "edited")
    manifest = folder / "checkpoint.json"
    meta = json.loads(manifest.read_text())
    meta["step"] = 60  # claims more steps than its data hold
    manifest.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=rf"{manifest} does not agree with .*\['step'\]"):
        Checkpoint(folder).saved


def test_another_fits_checkpoint_is_refused_naming_what_differs(data, svi_checkpoint, tmp_path):
    X, y = data
    folder = _copy(svi_checkpoint, tmp_path / "foreign")
    other_lr = SVI(**{**SVI_CFG, "learning_rate": 0.01}, checkpoint_dir=folder)
    with pytest.raises(CheckpointError, match=rf"in {folder} belongs to another fit.*"
                       r"method.learning_rate: 0.05 in the checkpoint, 0.01 here"):  # fmt: skip
        fit(other_lr, KEY, model, X, y)
    with pytest.raises(CheckpointError, match=r"differs in: y: array\(30,\) float64 sha256"):
        fit(SVI(**SVI_CFG, checkpoint_dir=folder), KEY, model, X, y + 1.0)
    with pytest.raises(CheckpointError, match=r"differs in: rng_key"):
        fit(SVI(**SVI_CFG, checkpoint_dir=folder), jax.random.key(4), model, X, y)
    with pytest.raises(CheckpointError, match=r"at step 25 of its loop 'loop', past this fit's 20"):
        fit(SVI(**{**SVI_CFG, "num_steps": 20}, checkpoint_dir=folder), KEY, model, X, y)
    # a checkpoint whose state layout is not this fit's (same fingerprint, other guide)
    ckpt = _same_fit(folder)
    with pytest.raises(CheckpointError, match=rf"{folder}.*does not have this fit's layout"):
        ckpt.restore("loop", {"w": jnp.zeros(2)})
    (tmp_path / "a_file").write_text("")
    with pytest.raises(CheckpointError, match="checkpoint_dir .*a_file is a file"):
        fit(SVI(**SVI_CFG, checkpoint_dir=tmp_path / "a_file"), KEY, model, X, y)
    with pytest.raises(ValueError, match=r"SVI.checkpoint_every must be an int >= 1; received 0"):
        SVI(checkpoint_dir=str(tmp_path), checkpoint_every=0)
    with pytest.raises(ValueError, match=r"SGHMC.checkpoint_dir must be a directory path"):
        SGHMC(checkpoint_dir=3)


# -- a deep GP (slow: run with -m slow) --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [
        SVI(num_steps=90, batch_size=8, num_samples=10, checkpoint_every=20),
        SGHMC(
            step_size=0.02,
            batch_size=8,
            num_burnin=30,
            num_samples=20,
            thinning=3,
            checkpoint_every=5,
        ),  # fmt: skip
    ],
    ids=["svi", "sghmc"],
)
def test_two_layer_dgp_resumed_after_ctrl_c_equals_uninterrupted(method, tmp_path, monkeypatch):
    """The inducing-point guide, the per-datum layer noise and the minibatch stream resume."""
    from ppl_dgp.models.dgp import dgp_regression, init_dgp

    rng = np.random.default_rng(1)
    X = np.linspace(-2.0, 2.0, 40)[:, None]
    y = np.sin(2.0 * X[:, 0]) + 0.1 * rng.normal(size=40)
    dgp = functools.partial(dgp_regression, **init_dgp(X, num_layers=2, num_inducing=5))
    whole = fit(method, KEY, dgp, X, y)
    cut = dataclasses.replace(method, checkpoint_dir=str(tmp_path))
    _interrupt_at_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        fit(cut, KEY, dgp, X, y)
    # SVI: 40 of 90 steps; SGHMC: burn-in done (10 thinned steps), sampling at its step 0
    saved = Checkpoint(tmp_path).saved
    assert (saved.stage, saved.step) in (("loop", 40), ("sample", 0))
    monkeypatch.undo()
    _equal(fit(cut, KEY, dgp, X, y), whole)
