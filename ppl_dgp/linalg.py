"""Linear algebra with jitter: the only place that factorises a kernel matrix.

Every Cholesky factor in the library goes through :func:`cholesky`, which adds GPflow's
default jitter (``1e-6``) to the diagonal and, when the factorisation still fails, retries with
a jitter ten times larger, up to ``max_jitter``, with a warning that names the jitter used.
Past that bound it raises :class:`CholeskyError` (eagerly) or returns NaN under ``jit``, which
the callers' finiteness checks turn into a clear error.

References:
    GPflow ``gpflow.config.default_jitter`` and ``gpflow.utilities.ops``.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

DEFAULT_JITTER = 1e-6
MAX_JITTER = 1e-2


class CholeskyError(np.linalg.LinAlgError):
    """Raised when a matrix is not positive definite even with the largest jitter."""


@contextlib.contextmanager
def full_precision_matmuls() -> Iterator[None]:
    """Trace float32 matrix products at full float32 precision on an accelerator.

    On NVIDIA GPUs from Ampere on (and on TPUs) JAX's ``"default"`` precision computes a
    float32 matmul in TF32 (bf16 passes on TPUs): about three decimal digits. A kernel matrix
    built as ``|a|^2 + |b|^2 - 2 a.b`` (:func:`ppl_dgp.kernels.scaled_square_distance`) then
    loses positive definiteness, and the predictive variance ``k(x, x) - a^T a`` cancels
    catastrophically. Measured on an H200 (``.bench/issue14_gpu.py``): a float32 DGP-3 with
    M = 500 gives a NaN loss at its first update by default, and trains like float64 (the same
    loss to 0.3%, 10.2 ms per step of 10,000 points) with ``"highest"``.

    Inside this context JAX traces matmuls with ``jax.default_matmul_precision("highest")``,
    unless the user set ``jax_default_matmul_precision`` themselves (kept) or the backend is
    the CPU (where float32 matmuls are already exact float32: nothing changes). ``fit`` and
    ``predict`` enter it, so every program they compile inherits it.

    References:
        JAX ``jax.default_matmul_precision``; NVIDIA, "TensorFloat-32 in the A100 GPU" (2020).
    """
    if jax.config.jax_default_matmul_precision is not None or jax.default_backend() == "cpu":
        yield
        return
    with jax.default_matmul_precision("highest"):
        yield


def _warn_jitter(jitter: np.ndarray, base: float) -> None:
    jitter = float(jitter)
    if not np.isfinite(jitter):
        return
    if jitter > base:
        warnings.warn(
            f"cholesky: the matrix was not positive definite with jitter {base:g}; "
            f"succeeded with jitter {jitter:g}",
            RuntimeWarning,
            stacklevel=2,
        )


def _is_concrete(x: Array) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _ladder(jitter: float, max_jitter: float) -> list[float]:
    j = max(jitter, DEFAULT_JITTER) * 10.0 if jitter > 0 else DEFAULT_JITTER
    out = []
    while j <= max_jitter * (1 + 1e-12):
        out.append(j)
        j *= 10.0
    return out


def _all_finite(L: Array) -> Array:
    return jnp.all(jnp.isfinite(L))


def _retry(K: Array, eye: Array, ok0: Array, base: float, ladder: list[float]) -> Array:
    """Escalate the jitter along ``ladder`` (a ``while_loop``: one Cholesky in its body, so
    compile time does not grow with the ladder). NaN past ``max_jitter``."""
    steps = jnp.asarray(ladder, dtype=K.dtype)

    def cond(c: tuple) -> Array:
        i, ok = c
        return (~ok) & (i < len(ladder))

    def body(c: tuple) -> tuple:
        i, _ = c
        return i + 1, _all_finite(jnp.linalg.cholesky(K + steps[i] * eye))

    i, ok = jax.lax.while_loop(cond, body, (jnp.asarray(0), jnp.asarray(False)))
    used = jnp.where(ok, steps[jnp.maximum(i - 1, 0)], jnp.inf)
    # Under vmap both cond branches run: report the base jitter where it sufficed.
    used = _report_jitter(jnp.where(ok0, jnp.asarray(base, K.dtype), used), base)
    L = jnp.linalg.cholesky(K + jnp.where(ok0 | ~ok, base, used) * eye)
    return jnp.where(ok0 | ok, L, jnp.nan)


def _report_jitter(used: Array, base: float) -> Array:
    """Warn (from compiled code) when ``used > base``; returns ``used``.

    A ``jax.pure_callback`` whose result the factor then uses: it runs when the factor is
    computed, and a factor nobody uses is removed with it (an effect such as
    ``jax.debug.callback`` would keep every Cholesky of a traced model alive, e.g. in a set-up
    program that needs only the initial values; 37 instead of 91 fusions for a 2-layer DGP's
    ``compiled_init``). Under ``vmap`` the batch reports once, its largest finite jitter,
    through a custom batching rule (a callback per batch element took 4x longer to compile in
    a 100-draw predictive).
    """

    def warn(jitter: np.ndarray) -> np.ndarray:
        finite = np.asarray(jitter)[np.isfinite(jitter)]
        if finite.size:
            _warn_jitter(finite.max(), base)
        return np.asarray(jitter)

    @jax.custom_batching.custom_vmap
    def report(used: Array) -> Array:
        return jax.pure_callback(warn, jax.ShapeDtypeStruct(used.shape, used.dtype), used)

    @report.def_vmap
    def _batched(axis_size: int, in_batched: list[bool], used: Array) -> tuple[Array, bool]:
        del axis_size
        return report(used), in_batched[0]  # one callback on the whole batch

    return report(used)


def _forward(K: Array, jitter: float, max_jitter: float) -> Array:
    eye = jnp.broadcast_to(jnp.eye(K.shape[-1], dtype=K.dtype), K.shape)
    L0 = jnp.linalg.cholesky(K + jitter * eye)
    ladder = _ladder(jitter, max_jitter)
    if _is_concrete(L0):
        if bool(_all_finite(L0)):
            return L0
        for j in ladder:
            L = jnp.linalg.cholesky(K + j * eye)
            if bool(_all_finite(L)):
                _warn_jitter(np.asarray(j), jitter)
                return L
        raise CholeskyError(
            f"cholesky: matrix of shape {K.shape} is not positive definite even with jitter "
            f"{max_jitter:g}; check the kernel hyperparameters and inputs for duplicates or NaN"
        )
    if not ladder:
        return L0
    ok0 = _all_finite(L0)
    return jax.lax.cond(ok0, lambda K: L0, lambda K: _retry(K, eye, ok0, jitter, ladder), K)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _jittered_cholesky(K: Array, jitter: float, max_jitter: float) -> Array:
    return _forward(K, jitter, max_jitter)


def _jittered_cholesky_fwd(K: Array, jitter: float, max_jitter: float) -> tuple[Array, Array]:
    L = _forward(K, jitter, max_jitter)
    return L, L


def _jittered_cholesky_bwd(jitter: float, max_jitter: float, L: Array, L_bar: Array) -> tuple:
    """Cholesky adjoint at the final factor (the chosen jitter is a constant):

    ``K_bar = sym(L^{-T} Phi(L^T L_bar) L^{-1})``, ``Phi`` = lower triangle with the diagonal
    halved (Murray 2016, "Differentiation of the Cholesky decomposition", eq. 10). Failed
    attempts never enter the gradient, so an escalated factor has a finite gradient.
    """
    P = jnp.tril(jnp.swapaxes(L, -1, -2) @ L_bar)
    P = P - 0.5 * jnp.eye(L.shape[-1], dtype=L.dtype) * P
    X = jax.lax.linalg.triangular_solve(L, P, left_side=True, lower=True, transpose_a=True)
    A = jax.lax.linalg.triangular_solve(L, X, left_side=False, lower=True)
    return (0.5 * (A + jnp.swapaxes(A, -1, -2)),)


_jittered_cholesky.defvjp(_jittered_cholesky_fwd, _jittered_cholesky_bwd)


def cholesky(
    K: Array,  # [..., M, M]
    jitter: float = DEFAULT_JITTER,
    max_jitter: float = MAX_JITTER,
) -> Array:  # [..., M, M]
    """Lower Cholesky factor of ``K + jitter I`` with jitter escalation.

    .. math:: L L^\\top = K + \\epsilon I, \\qquad \\epsilon \\in \\{\\epsilon_0, 10\\epsilon_0,
        \\ldots\\} \\le \\epsilon_{\\max}

    The first attempt uses ``jitter`` (GPflow's default 1e-6, added unconditionally so results
    match GPflow bit for bit). If the factor is not finite, the jitter is multiplied by ten until
    it succeeds or exceeds ``max_jitter``; a ``RuntimeWarning`` names the jitter that worked.
    Under ``jit`` the retry sits behind ``lax.cond`` (free when the first attempt works);
    eagerly it is a plain Python loop. The gradient is the Cholesky adjoint at the returned
    factor (a ``custom_vjp``), finite also after an escalation.

    Args:
        K: symmetric matrices, shape ``[..., M, M]``; all batch members share one jitter.
        jitter: jitter added on the first attempt (``0`` allowed).
        max_jitter: largest jitter tried before giving up.

    Returns:
        Lower-triangular ``L`` with ``L @ L.T == K + jitter * I``, shape ``[..., M, M]``.
        Under ``jit``, NaN when even ``max_jitter`` fails (callers check finiteness).

    Raises:
        CholeskyError: (outside ``jit``) when even ``max_jitter`` fails.

    Example:
        >>> L = cholesky(jnp.eye(3))
    """
    if K.ndim < 2 or K.shape[-1] != K.shape[-2]:
        raise ValueError(f"cholesky: K must have shape [..., M, M]; received {K.shape}")
    return _jittered_cholesky(K, float(jitter), float(max_jitter))


def solve_triangular(L: Array, B: Array, *, lower: bool = True, trans: bool = False) -> Array:
    """Solve ``L x = B`` (or ``L^T x = B`` with ``trans=True``) for triangular ``L``.

    Args:
        L: triangular factor, ``[..., M, M]``.
        B: right-hand sides, ``[..., M, K]``.
        lower: whether ``L`` is lower-triangular.
        trans: solve with the transpose of ``L``.

    Returns:
        ``x`` with the shape of ``B``.
    """
    return jax.lax.linalg.triangular_solve(L, B, left_side=True, lower=lower, transpose_a=trans)


def logdet_from_cholesky(L: Array) -> Array:  # [...] from [..., M, M]
    """``log det(L L^T) = 2 sum_m log |L_mm|``."""
    return 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(L, axis1=-2, axis2=-1))), axis=-1)


@jax.custom_vjp
def triangular_inverse(L: Array) -> Array:  # [M, M] -> [M, M]
    """``L^{-1}`` of a lower-triangular ``L`` (``[M, M]``), with a GEMM-only gradient.

    The forward pass is one triangular solve against the identity (``M`` right-hand sides);
    products with ``L^{-1}`` are then plain matrix products, which XLA runs far faster on CPU
    than triangular solves with many right-hand sides, and so are their gradients:

    .. math:: \\bar L = -\\operatorname{tril}(L^{-T} \\bar{L^{-1}} L^{-T})
    """
    return _tri_inv(L)


def _tri_inv(L: Array) -> Array:
    eye = jnp.eye(L.shape[-1], dtype=L.dtype)
    return jax.lax.linalg.triangular_solve(L, eye, left_side=True, lower=True)


def _tri_inv_fwd(L: Array) -> tuple[Array, Array]:
    Li = _tri_inv(L)
    return Li, Li


def _tri_inv_bwd(Li: Array, g: Array) -> tuple[Array]:
    return (-jnp.tril(Li.T @ g @ Li.T),)


triangular_inverse.defvjp(_tri_inv_fwd, _tri_inv_bwd)


def _column_blocks(M: int, num_blocks: int) -> list[tuple[int, int]]:
    """``num_blocks`` contiguous ``[start, end)`` ranges covering ``0..M``, sizes within one."""
    b = [round(i * M / num_blocks) for i in range(num_blocks + 1)]
    return [(s, e) for s, e in zip(b[:-1], b[1:], strict=True) if e > s]


#: Column blocks of ``L_q`` in :func:`sum_sq_LtA`. Block ``[s, e)`` of ``L_q^T A`` only needs
#: rows ``l >= s`` of ``A``; two blocks skip 25% of the GEMM FLOPs (three: 33%) at the cost of
#: more, smaller GEMMs. Two was the fastest on the synth10k DGP step (M = 100, Q = 8, B = 256).
SUM_SQ_BLOCKS = 2


@jax.custom_vjp
def sum_sq_LtA(Lq: Array, A: Array) -> Array:  # [Q, M, M], [M, N] -> [Q, N]
    """``v[q, n] = sum_m (tril(L_q)^T A)[m, n]^2``: the ``q_sqrt`` term of the conditional variance.

    Only the lower triangle of ``L_q`` is read (GPflow's ``q_sqrt`` convention), and the FLOPs
    its zeros would cost are skipped: splitting the columns ``m`` of ``L_q`` into blocks
    ``[s, e)``, block ``T_b = L_q[s:, s:e]^T A[s:]`` only involves rows ``l >= s``. Each block
    is one flat GEMM ``[Q*(e-s), M-s] @ [M-s, N]`` forward and two flat GEMMs backward:

    .. math:: v_q = \\sum_b \\mathbf 1^T (T_{qb} \\odot T_{qb}), \\quad
        G_{qb} = 2\\, T_{qb} \\odot \\bar v_q, \\quad
        \\bar A[s:] \\mathrel{+}= \\sum_q L_q[s:, s:e] G_{qb}, \\quad
        \\bar L_q[s:, s:e] = \\operatorname{tril}(A[s:] G_{qb}^T)

    The gradient with respect to ``L_q`` is lower-triangular (zero above the diagonal).

    Args:
        Lq: ``[Q, M, M]``; entries above the diagonal are ignored.
        A: ``[M, N]``.

    Returns:
        ``[Q, N]``.

    References:
        GPflow ``base_conditional`` (the ``q_sqrt`` term ``(L_q^T A)^T (L_q^T A)``, diagonal).
    """
    return _sum_sq_fwd(Lq, A)[0]


def _sum_sq_fwd(Lq: Array, A: Array) -> tuple[Array, tuple]:
    Q, M, _ = Lq.shape
    # Layout [Q*m, N]: rows (q, m) hold column m of L_q, so each block is one flat GEMM.
    Lt = jnp.swapaxes(jnp.tril(Lq), 1, 2)  # [Q, M (m), M (l)]
    Lts, Ts = [], []
    for s, e in _column_blocks(M, SUM_SQ_BLOCKS):
        Ltb = Lt[:, s:e, s:].reshape(Q * (e - s), M - s)  # [Q*(e-s), M-s]: rows l >= s only
        Lts.append(Ltb)
        Ts.append((Ltb @ A[s:]).reshape(Q, e - s, -1))  # [Q, e-s, N]
    v = sum(jnp.sum(jnp.square(T), axis=1) for T in Ts)  # [Q, N]
    return v, (Lts, A, Ts)


def _sum_sq_bwd(res: tuple, g: Array) -> tuple[Array, Array]:  # g: [Q, N]
    Lts, A, Ts = res
    M, N = A.shape
    Q = g.shape[0]
    dA = jnp.zeros_like(A)  # [M, N]
    dL_blocks = []
    for (s, e), Ltb, T in zip(_column_blocks(M, SUM_SQ_BLOCKS), Lts, Ts, strict=True):
        G = (2.0 * T * g[:, None, :]).reshape(Q * (e - s), N)  # [Q*(e-s), N]
        dA = dA.at[s:].add(Ltb.T @ G)  # [M-s, N]
        dLb = (A[s:] @ G.T).reshape(M - s, Q, e - s)  # [l, q, m]: dL_q[l, m] for l >= s
        dL_blocks.append(jnp.pad(jnp.transpose(dLb, (1, 0, 2)), ((0, 0), (s, 0), (0, 0))))
    dL = jnp.tril(jnp.concatenate(dL_blocks, axis=2))  # [Q, M, M]
    return dL, dA


sum_sq_LtA.defvjp(_sum_sq_fwd, _sum_sq_bwd)
