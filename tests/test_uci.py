"""The UCI harness (ppl_dgp.benchmarks.uci): the standard layout, seeded CSV splits, a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ppl_dgp.benchmarks import uci


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory):
    """A folder in the standard layout: 40 rows, columns (x0, y, x1), two splits."""
    root = tmp_path_factory.mktemp("uci") / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.0, 2.0, size=(40, 2))
    y = 10.0 + 3.0 * np.sin(2.0 * x[:, 0]) + 0.1 * rng.normal(size=40)
    np.savetxt(root / "data.txt", np.column_stack([x[:, 0], y, x[:, 1]]))
    np.savetxt(root / "index_features.txt", [0, 2], fmt="%d")
    np.savetxt(root / "index_target.txt", [1], fmt="%d")
    for i in range(2):
        perm = np.random.default_rng(i).permutation(40)
        np.savetxt(root / f"index_train_{i}.txt", perm[:36], fmt="%d")
        np.savetxt(root / f"index_test_{i}.txt", perm[36:], fmt="%d")
    return root.parent, x, y


def test_read_uci_follows_the_index_files(layout):
    folder, x, y = layout
    splits = uci.read_uci(folder)  # the parent folder: its data/ subfolder is found
    assert len(splits) == 2
    perm = np.random.default_rng(1).permutation(40)
    X_tr, y_tr, X_te, y_te = splits[1]
    np.testing.assert_array_equal(X_tr, x[perm[:36]])
    np.testing.assert_array_equal(y_te, y[perm[36:]])
    assert len(uci.read_uci(folder, num_splits=1)) == 1
    with pytest.raises(ValueError, match="has no data.txt"):
        uci.read_uci(folder / "missing")


def test_csv_splits_are_seeded_and_disjoint(tmp_path):
    path = tmp_path / "t.csv"
    rows = "\n".join(f"{i},{2 * i}" for i in range(20))
    path.write_text("a,target\n" + rows + "\n")
    splits = uci.csv_splits(path, "target", 3)
    again = uci.csv_splits(path, "target", 3)
    for (X_tr, y_tr, X_te, y_te), (_, _, _, y_te2) in zip(splits, again, strict=True):
        assert len(y_te) == 2 and len(y_tr) == 18
        assert not set(X_tr[:, 0]) & set(X_te[:, 0])
        np.testing.assert_array_equal(y_te, y_te2)
    assert not np.array_equal(splits[0][3], splits[1][3])
    with pytest.raises(ValueError, match="num_splits must be an int >= 1"):
        uci.csv_splits(path, "target", 0)


def test_a_run_scores_in_original_units(layout, capsys):
    folder, _, _ = layout
    rows = uci.main(str(folder), models=("svgp",), methods=("svi",), num_splits=1,
                    num_inducing=6, num_samples=5, num_steps=300)  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    row = json.loads(out[0])
    assert row["split"] == 0 and row["model"] == "svgp" and row["n_test"] == 4
    # y has mean ~10 and sd ~2 in original units: a fitted SVGP is far better than the mean
    y_te = uci.read_uci(folder)[0][3]
    assert rows[0]["rmse"] < 0.5 * np.std(y_te - 10.0) + 0.5
    assert rows[0]["test_loglik"] > -3.0
    assert "svgp" in out[-1] and "+-" in out[-1]


def test_the_command_line_checks_its_arguments_first(layout, tmp_path, capsys):
    from ppl_dgp.cli import main

    folder, _, _ = layout
    cases = [
        (["bench", "uci"], "--data is required"),
        (["bench", "uci", "--data", str(tmp_path / "none")], "no such file or folder"),
        (["bench", "uci", "--data", str(folder), "--splits", "0"], "--splits"),
        (["bench", "uci", "--data", str(folder), "--zoo", "nope"], "unknown regression model"),
    ]
    for argv, match in cases:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
