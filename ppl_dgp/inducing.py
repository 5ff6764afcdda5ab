"""Inducing-input initialisation: k-means centres or a data subset (NumPy, run once)."""

from __future__ import annotations

import numpy as np

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
    """Lloyd's k-means with k-means++ seeding; the centres initialise ``Z``.

    Empty clusters are re-seeded at the point farthest from its centre, so the ``M`` centres
    stay distinct (duplicate inducing inputs make ``Kmm`` singular).

    References:
        Arthur & Vassilvitskii (2007), "k-means++: the advantages of careful seeding".
    """
    X = np.asarray(X, dtype=float)
    N = X.shape[0]
    if not 1 <= M <= N:
        raise ValueError(
            f"kmeans: M (number of inducing points) must be in [1, N={N}]; received {M}"
        )
    rng = np.random.default_rng(seed)
    C = np.empty((M, X.shape[1]))
    C[0] = X[rng.integers(N)]
    d2 = np.sum((X - C[0]) ** 2, axis=1)
    for m in range(1, M):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(N, 1.0 / N)
        C[m] = X[rng.choice(N, p=p)]
        d2 = np.minimum(d2, np.sum((X - C[m]) ** 2, axis=1))
    for _ in range(iters):
        D2 = np.sum((X[:, None, :] - C[None]) ** 2, axis=-1)  # [N, M]
        assign = np.argmin(D2, axis=1)
        newC = C.copy()
        for m in range(M):
            members = X[assign == m]
            if len(members):
                newC[m] = members.mean(axis=0)
            else:
                far = np.argmax(D2[np.arange(N), assign])
                newC[m] = X[far]
                assign[far] = m
        if np.allclose(newC, C):
            C = newC
            break
        C = newC
    return C
