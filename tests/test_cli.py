"""Smoke tests of the command line: the main job and the benchmark print what they promise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ppl_dgp.cli import main


def test_run_prints_fit_and_writes_the_figure(tmp_path, capsys):
    assert main(["run", "--steps", "40", "--num-inducing", "8", "--out", str(tmp_path)]) == 0
    with pytest.raises(SystemExit, match="SVI.learning_rate must be > 0; received -1") as exc:
        main(["run", "--lr", "-1", "--out", str(tmp_path)])
    assert exc.value.code == 2
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") : out.index("}\n") + 1])
    assert np.isfinite(summary["final_loss"]) and summary["noise_std_original_units"] > 0
    assert summary["train_rmse"] > 0
    assert "t =  20.0" in out  # the predictive table
    assert (tmp_path / "motorcycle_dgp.png").stat().st_size > 10_000


def test_run_resumes_from_its_checkpoint_and_refuses_another_fits(tmp_path, capsys):
    ckpt = str(tmp_path / "ckpt")
    argv = ["run", "--steps", "30", "--num-inducing", "8", "--out", str(tmp_path),
            "--checkpoint-dir", ckpt, "--checkpoint-every", "10"]  # fmt: skip
    losses = []
    for _ in range(2):  # the second run finds the finished fit and does no step
        assert main(argv) == 0
        out = capsys.readouterr().out
        losses.append(json.loads(out[out.index("{") : out.index("}\n") + 1])["final_loss"])
    assert losses[0] == losses[1]
    assert any(p.name == "checkpoint.json" for p in (tmp_path / "ckpt").iterdir())
    with pytest.raises(SystemExit) as exc:  # another learning rate: another fit
        main([*argv, "--lr", "0.02"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learning_rate" in err[0], err
    with pytest.raises(SystemExit) as exc:
        main([*argv[:-1], "0"])  # --checkpoint-every 0
    assert exc.value.code == 2


def test_bench_prints_the_peer_fields(capsys):
    assert main(["bench", "--datasets", "step1d", "--models", "svgp", "--steps", "3"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    fields = {"dataset", "N", "D", "steps", "first_step_seconds", "seconds_per_step",
              "final_elbo", "kl_per_layer", "test_rmse", "test_mlpd"}  # fmt: skip
    assert fields <= set(row)
    assert row["dataset"] == "step1d" and row["N"] == 450 and row["steps"] == 3


def test_bench_rejects_unknown_names():
    with pytest.raises(SystemExit, match="unknown dataset 'boston'"):
        main(["bench", "--datasets", "boston"])


def test_bench_laplace_runs_the_laplace_suite(monkeypatch):
    from ppl_dgp.benchmarks import dgp, laplace

    calls = []
    monkeypatch.setattr(laplace, "main", lambda *args: calls.append(args))
    monkeypatch.setattr(dgp, "main", lambda *args: pytest.fail("the DGP suite ran"))
    argv = ["bench", "laplace", "--lambda", "1", "0.1", "--repeats", "2", "--nuts"]
    assert main(argv) == 0
    assert calls == [([1.0, 0.1], 2, True, 500)]


def test_bench_rejects_an_unknown_suite(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "gpytorch"])
    assert "invalid choice: 'gpytorch'" in capsys.readouterr().err
