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

__all__ = ["kmeans", "subset"]


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
) -> np.ndarray:  # [M, D]
    """k-means centres of ``X`` (SciPy's ``kmeans2``); they initialise ``Z``.

    Lloyd's iterations run in SciPy (``scipy.cluster.vq.kmeans2``, which GPflux also uses for
    its inducing inputs) from k-means++ seeding (``minit="++"``): each new starting centre is a
    row of ``X`` drawn with probability proportional to its squared distance to the nearest
    centre so far, so well-separated clusters each get a centre and no two start on equal
    rows. An empty cluster keeps its previous centre, so the ``M`` centres stay distinct
    (duplicate inducing inputs make ``Kmm`` singular). Deterministic for a given ``seed``.

    Args:
        X: inputs, ``[N, D]``.
        M: number of centres, ``1 <= M <=`` the number of distinct rows of ``X``.
        seed: seed of the k-means++ draws.
        iters: number of Lloyd iterations.

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
