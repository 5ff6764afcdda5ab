"""Tests for ppl_dgp.datasets (bundled files, Standardizer, user CSV) and k-means for Z."""

import csv
import hashlib
import re

import numpy as np
import pytest

from ppl_dgp.datasets import (
    BENCH_NAMES,
    Standardizer,
    load_bench,
    load_csv,
    load_motorcycle,
    load_regression,
    make_synth10k,
)
from ppl_dgp.inducing import kmeans

REGRESSION = ("diabetes", "step1d", "synth10k")
REGRESSION_SIZES = {"diabetes": (398, 44, 10), "step1d": (450, 50, 1), "synth10k": (9000, 1000, 8)}


# --- motorcycle ----------------------------------------------------------------------------


def test_motorcycle_shapes_and_dtypes():
    X, y = load_motorcycle()
    assert X.shape == (94, 1)
    assert y.shape == (94,)
    assert X.dtype == np.float64
    assert y.dtype == np.float64


def test_motorcycle_matches_the_published_table():
    X, y = load_motorcycle()
    # First and last rows of boot::motor (Silverman 1985), read off the original table.
    assert (X[0, 0], y[0]) == (2.4, 0.0)
    assert (X[-1, 0], y[-1]) == (57.6, 10.7)
    assert np.all(np.diff(X[:, 0]) >= 0.0)  # times are sorted
    assert y.min() == pytest.approx(-134.0)
    assert y.max() == pytest.approx(75.0)


# --- benchmark workloads -------------------------------------------------------------------


@pytest.mark.parametrize("name", REGRESSION)
def test_bench_regression_shapes(name):
    d = load_bench(name)
    n_train, n_test, D = REGRESSION_SIZES[name]
    assert set(d) == {
        "X_train", "Y_train", "X_test", "Y_test", "x_mean", "x_std", "y_mean", "y_std", "Z_init"
    }  # fmt: skip
    assert d["X_train"].shape == (n_train, D)
    assert d["Y_train"].shape == (n_train, 1)
    assert d["X_test"].shape == (n_test, D)
    assert d["Y_test"].shape == (n_test, 1)
    assert d["x_mean"].shape == d["x_std"].shape == (D,)
    assert d["y_mean"].shape == d["y_std"].shape == (1,)
    assert d["Z_init"].shape == (100, D)


@pytest.mark.parametrize("name", REGRESSION)
def test_bench_standardisation_is_the_train_split_one(name):
    # The peers standardised with the population std of the training split; Standardizer
    # must reproduce their stored statistics so the runs see the same numbers.
    d = load_bench(name)
    sx = Standardizer.fit(d["X_train"])
    sy = Standardizer.fit(d["Y_train"])
    np.testing.assert_allclose(sx.mean, d["x_mean"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sx.std, d["x_std"], rtol=1e-12)
    np.testing.assert_allclose(sy.mean, d["y_mean"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sy.std, d["y_std"], rtol=1e-12)
    # Z_init: 100 distinct standardised training inputs.
    Xs = sx.transform(d["X_train"])
    Z = d["Z_init"]
    assert len(np.unique(Z, axis=0)) == 100
    hits = np.isclose(Z[:, None, :], Xs[None, :, :], rtol=0, atol=1e-10).all(axis=-1)  # [M, N]
    assert hits.any(axis=1).all()


# SHA-256 of each array's bytes in the shared benchmark's synth10k.npz (../shared/bench/), the
# file the peers ran on; the generated workload must equal it bit for bit. X, the split and
# Z_init come from NumPy's seeded generators alone; Y also from np.sin / np.tanh, which NumPy
# does not promise bit-identical across CPUs: a mismatch in Y alone would be that.
SYNTH10K_SHA256 = {
    "X_train": "c41df040b208fc315a40f12f4caac3eb696000e55e414d25b62afb50b053057d",
    "Y_train": "35edc31dbe70c5622d02808164ace08700e413885243d89c2a439c694fcf0bd7",
    "X_test": "b54f1f5f36a69c4d78eb0d4885e093b8ed91efb4ff303cc5d577d5ce7a63e0a8",
    "Y_test": "81326cbf39bf8e352c655e11488fb5b21ca8cd3071692d986fb44514ed36814c",
    "x_mean": "3af0a0e319acdbd95add0f4cb1b266f7a4c29c3d609dbbf14c841abab3c2af22",
    "x_std": "b87063635dc79ce5c0de82e7fb2d159b6b5b8901a3278b82d0ed6544f23e96be",
    "y_mean": "c8c271b8874420801c5556aaa2839873669cafd51b0600ed416a1517c2de558b",
    "y_std": "43355928d0e2cc02e90efe97c6ef239fd6f770ee9a055cf03d8236cc1f3cf019",
    "Z_init": "06ec7e2e8cfd41ed7bc69f76addbffb39c463bf521873dd423263970785d3350",
}


def test_synth10k_is_generated_equal_to_the_peers_file():
    d = make_synth10k()
    assert set(d) == set(SYNTH10K_SHA256)
    for key, digest in SYNTH10K_SHA256.items():
        assert d[key].dtype == np.float64
        assert hashlib.sha256(np.ascontiguousarray(d[key]).tobytes()).hexdigest() == digest, key
    for key, a in load_bench("synth10k").items():
        np.testing.assert_array_equal(a, d[key])


def test_bench_moons():
    d = load_bench("moons")
    assert d["X_train"].shape == (200, 2)
    assert d["y_train"].shape == (200,)
    assert d["X_test"].shape == (1000, 2)
    assert d["y_test"].shape == (1000,)
    assert set(np.unique(d["y_train"])) == {0, 1}
    np.testing.assert_allclose(np.linalg.norm(d["X_ood"], axis=1), 10.0, rtol=1e-12)


def test_bench_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown benchmark") as err:
        load_bench("concrete")
    for name in BENCH_NAMES:
        assert name in str(err.value)


# --- Standardizer --------------------------------------------------------------------------


def test_standardizer_matches_numpy_and_round_trips():
    rng = np.random.default_rng(0)
    a = rng.normal(loc=[3.0, -2.0, 100.0], scale=[0.1, 5.0, 30.0], size=(50, 3))
    s = Standardizer.fit(a)
    z = s.transform(a)
    np.testing.assert_allclose(z, (a - a.mean(0)) / a.std(0), rtol=1e-12)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(s.inverse_transform(z), a, rtol=1e-12)


def test_standardizer_constant_column_gets_unit_std():
    a = np.column_stack([np.full(10, 7.0), np.arange(10.0)])
    s = Standardizer.fit(a)
    assert s.std[0] == 1.0
    z = s.transform(a)
    assert np.all(np.isfinite(z))
    np.testing.assert_array_equal(z[:, 0], 0.0)
    np.testing.assert_allclose(s.inverse_transform(z), a, rtol=1e-12)


def test_standardizer_one_dimensional_and_frozen():
    y = np.array([1.0, 2.0, 3.0, 6.0])
    s = Standardizer.fit(y)
    assert s.mean.shape == ()
    np.testing.assert_allclose(s.inverse_transform(s.transform(y)), y, rtol=1e-12)
    with pytest.raises(AttributeError):
        s.mean = np.array(0.0)


# --- user CSV ------------------------------------------------------------------------------


def _write(tmp_path, rows, name="data.csv"):
    path = tmp_path / name
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_load_csv_all_features_and_selected_features(tmp_path):
    path = _write(tmp_path, [["a", "y", "b"], [1, 10, 100], [2, 20, 200], [3, 30, 300]])
    X, y = load_csv(path, target="y")
    np.testing.assert_array_equal(X, [[1, 100], [2, 200], [3, 300]])
    np.testing.assert_array_equal(y, [10, 20, 30])
    assert X.dtype == y.dtype == np.float64
    X, _ = load_csv(path, target="y", features=["b", "a"])
    np.testing.assert_array_equal(X, [[100, 1], [200, 2], [300, 3]])


def test_load_csv_reads_the_bundled_motorcycle_file(tmp_path):
    from importlib import resources

    with resources.as_file(resources.files("ppl_dgp") / "data" / "motor.csv") as path:
        X, y = load_csv(path, target="accel", features=["times"])
    X_ref, y_ref = load_motorcycle()
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_load_csv_missing_target_column(tmp_path):
    path = _write(tmp_path, [["a", "b"], [1, 2]])
    with pytest.raises(ValueError, match=r"'y'.*not found.*'a', 'b'"):
        load_csv(path, target="y")


def test_load_csv_missing_feature_column(tmp_path):
    path = _write(tmp_path, [["a", "y"], [1, 2]])
    with pytest.raises(ValueError, match=r"'c'.*not found"):
        load_csv(path, target="y", features=["a", "c"])


def test_load_csv_non_numeric_value_names_column_and_line(tmp_path):
    path = _write(tmp_path, [["a", "y"], [1, 2], ["abc", 3]])
    expected = "line 3: non-numeric value 'abc' in column 'a'"
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_csv(path, target="y")


def test_load_csv_nan_names_column(tmp_path):
    path = _write(tmp_path, [["a", "y"], [1, "nan"]])
    with pytest.raises(ValueError, match=r"NaN in column 'y'"):
        load_csv(path, target="y")


def test_load_csv_empty_and_infinite_cells(tmp_path):
    path = _write(tmp_path, [["a", "y"], ["", 1]])
    with pytest.raises(ValueError, match=r"empty value in column 'a'"):
        load_csv(path, target="y")
    path = _write(tmp_path, [["a", "y"], ["inf", 1]], name="inf.csv")
    with pytest.raises(ValueError, match=r"infinite value 'inf' in column 'a'"):
        load_csv(path, target="y")


def test_load_csv_ragged_row_and_empty_file(tmp_path):
    path = _write(tmp_path, [["a", "y"], [1, 2, 3]])
    with pytest.raises(ValueError, match="3 fields, header has 2"):
        load_csv(path, target="y")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty file"):
        load_csv(empty, target="y")
    header_only = _write(tmp_path, [["a", "y"]], name="header.csv")
    with pytest.raises(ValueError, match="no data rows"):
        load_csv(header_only, target="y")


def test_load_csv_several_targets_read_the_file_once(tmp_path, monkeypatch):
    """``target=[...]``: ``y [N, P]`` in the order named, the features every other column, in
    one pass over the file."""
    import builtins

    rows = [["a", "y1", "b", "y2"], [1, 10, 100, -1], [2, 20, 200, -2], [3, 30, 300, -3]]
    path = _write(tmp_path, rows)
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    X, Y = load_csv(path, target=["y2", "y1"])
    monkeypatch.undo()
    assert opened == [str(path)]
    np.testing.assert_array_equal(X, [[1, 100], [2, 200], [3, 300]])
    np.testing.assert_array_equal(Y, [[-1, 10], [-2, 20], [-3, 30]])
    assert Y.dtype == np.float64
    X, Y = load_csv(path, target=["y1"], features=["b"])  # a sequence of one: [N, 1]
    assert X.shape == (3, 1) and Y.shape == (3, 1)


def test_load_csv_refuses_a_target_named_twice_or_also_a_feature(tmp_path):
    path = _write(tmp_path, [["a", "y1", "y2"], [1, 2, 3]])
    with pytest.raises(ValueError, match=r"target column\(s\) 'y1' named twice"):
        load_csv(path, target=["y1", "y2", "y1"])
    with pytest.raises(ValueError, match=r"'y2' given both as target and as feature"):
        load_csv(path, target=["y1", "y2"], features=["a", "y2"])
    with pytest.raises(ValueError, match=r"'y1' given both as target and as feature"):
        load_csv(path, target="y1", features=["y1"])
    with pytest.raises(ValueError, match=r"'y3'.*not found"):
        load_csv(path, target=["y1", "y3"])
    with pytest.raises(ValueError, match="target names no column"):
        load_csv(path, target=[])


def test_load_regression_several_targets_splits_as_each_one(tmp_path):
    """A CSV with ``target=[a, b]``: the rows of each part are those of the one-target loads,
    and ``y`` holds their columns side by side."""
    rng = np.random.default_rng(0)
    rows = [["x", "a", "b"]] + [[f"{v:.4f}" for v in rng.normal(size=3)] for _ in range(25)]
    path = str(_write(tmp_path, rows))
    X_tr, Y_tr, X_te, Y_te, what = load_regression(path, target=["a", "b"], seed=3)
    assert Y_tr.shape == (20, 2) and Y_te.shape == (5, 2)
    assert what == f"`{path}` (targets `a`, `b`; 80/20 split)"
    for j, t in enumerate("ab"):
        x_tr, y_tr, x_te, y_te, _ = load_regression(path, target=t, features=["x"], seed=3)
        np.testing.assert_array_equal(X_tr, x_tr)
        np.testing.assert_array_equal(X_te, x_te)
        np.testing.assert_array_equal(Y_tr[:, j], y_tr)
        np.testing.assert_array_equal(Y_te[:, j], y_te)


# --- inducing inputs: k-means --------------------------------------------------------------


def test_kmeans_centres_are_distinct_points_inside_the_data_box():
    X, _ = load_motorcycle()  # repeated times: 94 rows, fewer distinct values
    X = np.column_stack([X[:, 0], np.sin(X[:, 0])])
    M = 20
    Z = kmeans(X, M, seed=3)
    assert Z.shape == (M, 2)
    assert len(np.unique(Z, axis=0)) == M
    assert np.all(Z >= X.min(axis=0)) and np.all(Z <= X.max(axis=0))
    np.testing.assert_array_equal(kmeans(X, M, seed=3), Z)  # deterministic for a seed
    assert not np.array_equal(kmeans(X, M, seed=4), Z)


def test_kmeans_recovers_well_separated_clusters():
    rng = np.random.default_rng(0)
    means = np.array([[-10.0, 0.0], [0.0, 10.0], [10.0, -5.0], [0.0, -20.0]])
    labels = np.repeat(np.arange(4), [30, 50, 40, 20])
    X = means[labels] + 0.1 * rng.normal(size=(len(labels), 2))
    for seed in range(5):
        Z = kmeans(X, 4, seed=seed)
        # Each centre is the sample mean of one cluster: Lloyd's fixed point.
        nearest = np.argmin(np.sum((Z[:, None, :] - means[None]) ** 2, axis=-1), axis=1)
        assert sorted(nearest) == [0, 1, 2, 3]
        for z, k in zip(Z, nearest, strict=True):
            np.testing.assert_allclose(z, X[labels == k].mean(axis=0), rtol=1e-12)


def test_kmeans_with_repeated_rows_returns_the_distinct_rows():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [-3.0, 2.0]])
    X = np.repeat(points, 7, axis=0)
    Z = kmeans(X, 5, seed=0)
    np.testing.assert_array_equal(np.unique(Z, axis=0), np.unique(points, axis=0))


def test_kmeans_rejects_bad_M():
    X = np.repeat(np.eye(3), 2, axis=0)  # [6, 3], 3 distinct rows
    with pytest.raises(ValueError, match=r"must be in \[1, N=6\]"):
        kmeans(X, 0)
    with pytest.raises(ValueError, match=r"must be in \[1, N=6\]"):
        kmeans(X, 7)
    with pytest.raises(ValueError, match="3 distinct rows, fewer than M=4"):
        kmeans(X, 4)
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        kmeans(X[:, 0], 2)


# --- classification and count sets (issue 11) ---------------------------------------------


def test_breast_cancer_and_digits_equal_scikit_learn_bit_for_bit():
    from sklearn import datasets as sk

    from ppl_dgp.datasets import load_breast_cancer, load_digits, load_linnerud

    for ours, theirs in ((load_breast_cancer, sk.load_breast_cancer),
                         (load_digits, sk.load_digits)):  # fmt: skip
        X, y = ours()
        ref = theirs()
        assert X.dtype == np.float64 and y.dtype == np.int64
        np.testing.assert_array_equal(X, ref.data)
        np.testing.assert_array_equal(y, ref.target)
    X, Y = load_linnerud()
    ref = sk.load_linnerud()  # sklearn's data are the exercises, its target the physiology
    np.testing.assert_array_equal(X, ref.target)
    np.testing.assert_array_equal(Y, ref.data)


def test_classification_splits_are_seeded_and_disjoint():
    from ppl_dgp.datasets import CLASSIFICATION_NAMES, load_breast_cancer, load_classification

    X, y = load_breast_cancer()
    X_tr, y_tr, X_te, y_te, what = load_classification("breast_cancer", seed=3)
    assert (len(y_tr), len(y_te)) == (455, 114) and "80/20" in what
    rows = {tuple(r) for r in X_tr} | {tuple(r) for r in X_te}
    assert len(rows) == len({tuple(r) for r in X})  # every example once
    again = load_classification("breast_cancer", seed=3)
    np.testing.assert_array_equal(again[2], X_te)
    assert not np.array_equal(load_classification("breast_cancer", seed=4)[3], y_te)
    assert set(CLASSIFICATION_NAMES) == {"breast_cancer", "digits", "moons"}
    with pytest.raises(ValueError, match="name must be one of"):
        load_classification("iris")


def test_kmeans_on_many_rows_fits_a_seeded_subsample():
    rng = np.random.default_rng(1)
    means = np.array([[-10.0, 0.0], [0.0, 10.0], [10.0, -5.0]])
    labels = rng.integers(0, 3, size=5000)
    X = means[labels] + 0.1 * rng.normal(size=(len(labels), 2))
    Z = kmeans(X, 3, seed=2, max_points=500)
    # the subsample's clusters are the data's clusters: each centre near one true mean
    nearest = np.argmin(np.sum((Z[:, None, :] - means[None]) ** 2, axis=-1), axis=1)
    assert sorted(nearest) == [0, 1, 2]
    np.testing.assert_allclose(Z, means[nearest], atol=0.05)
    np.testing.assert_array_equal(kmeans(X, 3, seed=2, max_points=500), Z)
    # under the limit the whole data are used: the same centres as with a larger limit
    np.testing.assert_array_equal(
        kmeans(X[:400], 3, seed=2, max_points=500), kmeans(X[:400], 3, seed=2)
    )
    with pytest.raises(ValueError, match="max_points must be an int >= M=3"):
        kmeans(X, 3, max_points=2)
