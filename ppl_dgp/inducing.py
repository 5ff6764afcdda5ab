"""Inducing-input initialisation: k-means centres (SciPy) or a data subset (NumPy), run once.

Example:
    Two well-separated clusters get one centre each:

    >>> import numpy as np
    >>> X = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    >>> np.round(np.sort(kmeans(X, 2), axis=0), 3).tolist()
    [[0.1], [10.1]]
    >>> subset(X, 3).shape
    (3, 1)
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.spatial.distance import pdist

__all__ = ["kmeans", "median_distance", "subset"]


def subset(X: np.ndarray, M: int, *, seed: int = 0) -> np.ndarray:  # [M, D]
    """``M`` distinct rows of ``X [N, D]`` chosen uniformly without replacement."""
    X = np.asarray(X)
    if not 1 <= M <= X.shape[0]:
        raise ValueError(f"subset: M must be in [1, N={X.shape[0]}]; received {M}")
    idx = np.random.default_rng(seed).choice(X.shape[0], size=M, replace=False)
    return X[np.sort(idx)].copy()


def kmeans(
    X: np.ndarray,  # [N, D]
    M: int,
    *,
    seed: int = 0,
    iters: int = 50,
    max_points: int | None = None,
) -> np.ndarray:  # [M, D]
    """k-means centres of ``X`` (SciPy's ``kmeans2``); they initialise ``Z``.

    Lloyd's iterations run in SciPy (``scipy.cluster.vq.kmeans2``, which GPflux also uses for
    its inducing inputs) from k-means++ seeding (``minit="++"``): each new starting centre is a
    row of ``X`` drawn with probability proportional to its squared distance to the nearest
    centre so far, so well-separated clusters each get a centre and no two start on equal
    rows. An empty cluster keeps its previous centre, so the ``M`` centres stay distinct
    (duplicate inducing inputs make ``Kmm`` singular). Deterministic for a given ``seed``.

    Beyond ``max_points`` rows (default ``max(20000, 50 M)``) the centres are fitted to a
    uniform subsample of that many rows drawn with ``seed``: Lloyd's iterations cost
    ``O(N M D)`` each, and at least 50 rows per centre place the centres well enough to
    initialise ``Z`` (which the fit then moves). N = 10^6, D = 8, M = 100 takes seconds and a
    few MB instead of minutes.

    Args:
        X: inputs, ``[N, D]``.
        M: number of centres, ``1 <= M <=`` the number of distinct rows of ``X``.
        seed: seed of the k-means++ draws.
        iters: number of Lloyd iterations.
        max_points: largest number of rows used (a seeded subsample beyond it); ``None``:
            ``max(20000, 50 M)``.

    Returns:
        The centres, ``[M, D]``.

    References:
        Arthur & Vassilvitskii (2007), "k-means++: the advantages of careful seeding".
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"kmeans: X must have shape [N, D]; received {X.shape}")
    N = X.shape[0]
    if not 1 <= M <= N:
        raise ValueError(
            f"kmeans: M (number of inducing points) must be in [1, N={N}]; received {M}"
        )
    max_points = max(20_000, 50 * M) if max_points is None else max_points
    if not isinstance(max_points, int) or max_points < M:
        raise ValueError(f"kmeans: max_points must be an int >= M={M}; received {max_points!r}")
    if N > max_points:
        rows = np.random.default_rng([seed, N]).choice(N, size=max_points, replace=False)
        X = X[np.sort(rows)]
    n_distinct = np.unique(X, axis=0).shape[0]
    if M > n_distinct:
        raise ValueError(f"kmeans: X has {n_distinct} distinct rows, fewer than M={M} centres")
    with warnings.catch_warnings():
        # An empty cluster keeps its previous centre; SciPy warns about it, we rely on it.
        warnings.filterwarnings("ignore", message="One of the clusters is empty")
        C, _ = kmeans2(
            X, M, iter=iters, minit="++", missing="warn", rng=np.random.default_rng(seed)
        )
    return C  # [M, D]


def median_distance(H: np.ndarray, max_rows: int = 500) -> float:  # [N, D]
    """The median Euclidean distance between distinct rows of ``H`` (its first ``max_rows``).

    .. math:: \\ell_0 = \\operatorname{median}\\{\\lVert h_i - h_j \\rVert : i < j,
        h_i \\ne h_j\\}

    The "median heuristic" for an SE kernel's lengthscale (Schölkopf & Smola 2002; Garreau,
    Jitkrittum & Kanagawa 2017): at it a typical pair of inputs has kernel value
    ``exp(-1/2)``, where at a fixed ``ell = 1`` on wide inputs (64 pixels, 32 features) every
    pair would be ``~exp(-D)`` and the GP would start blind.

    Args:
        H: inputs ``[N, D]``.
        max_rows: rows used (the distances are ``O(max_rows^2 D)``).

    Returns:
        ``ell_0 > 0``.

    Raises:
        ValueError: ``H`` is not ``[N, D]`` or has fewer than two distinct rows.

    References:
        Garreau, Jitkrittum & Kanagawa (2017), "Large sample analysis of the median
        heuristic", arXiv:1707.07269.
    """
    H = np.asarray(H, dtype=float)
    if H.ndim != 2:
        raise ValueError(f"median_distance: H must have shape [N, D]; received {H.shape}")
    d = pdist(H[:max_rows])
    d = d[d > 0]
    if d.size == 0:
        raise ValueError("median_distance: H must have at least two distinct rows")
    return float(np.median(d))
