"""Floor of one synth10k DGP-2 SVI step (float64, one thread): only the unavoidable GEMMs,
Choleskys and triangular inverses of forward + backward, no elementwise work, no optimiser.

Run: ``taskset -c 1 .venv/bin/python .bench/dgp_floor.py`` (README "Results").
"""

import os

os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

M, B, Q = 100, 256, 8
rng = np.random.default_rng(0)


def R(*s):
    return jnp.asarray(rng.standard_normal(s))


K0 = R(M, M)
K0 = K0 @ K0.T / M + jnp.eye(M)
tri = lambda L: jax.lax.linalg.triangular_solve(L, jnp.eye(M), left_side=True, lower=True)
h = M // 2


def layer(K, Kmn, Lt1, Lt2, G1, G2, Gq):
    """Lt1: [q*h, M], Lt2: [q*h, M-h] (2-block triangular q_sqrt^T); G*: cotangents."""
    L = jnp.linalg.cholesky(K)
    Li = tri(L)  # fwd: chol + inverse
    A = Li @ Kmn  # [M, B]
    T1 = Lt1 @ A
    T2 = Lt2 @ A[h:]  # q_sqrt^T A (2 blocks)
    dA = Lt1.T @ G1 + jnp.pad(Lt2.T @ G2, ((h, 0), (0, 0)))  # bwd through T
    dL1 = A @ G1.T
    dL2 = A[h:] @ G2.T  # d q_sqrt
    dKmn = Li.T @ dA
    dLi = dA @ Kmn.T  # bwd through A
    Lb = -(Li.T @ dLi @ Li.T)  # bwd through inverse
    P = L.T @ Lb  # Cholesky adjoint (GEMM form)
    dK = Li.T @ P @ Li
    sq = lambda x: jnp.sum(x * x)
    return sq(T1) + sq(T2) + sq(dL1) + sq(dL2) + sq(dKmn) + sq(dK) + Gq.sum()


def flops_layer(q):
    return (
        2
        * (
            M * M * B
            + q * h * M * B
            + q * h * h * B
            + 2 * (q * h * M * B + q * h * h * B)
            + 2 * M * M * B
            + 5 * M**3
        )
        + M**3 / 3
        + M**3 / 3
    )


args = {}
for name, q in (("hidden", Q), ("output", 1)):
    args[name] = (K0, R(M, B), R(q * h, M), R(q * h, M - h), R(q * h, B), R(q * h, B), R(1))


def step(c, _):
    s = 0.0
    for name in args:
        a = args[name]
        s = s + layer(a[0] + c * 1e-30 * jnp.eye(M), a[1] + c * 1e-30, *a[2:])
    return s, None


@jax.jit
def run(c0):
    return jax.lax.scan(step, c0, None, length=100)[0]


run(0.0).block_until_ready()
ts = []
for _ in range(7):
    t = time.perf_counter()
    run(0.0).block_until_ready()
    ts.append((time.perf_counter() - t) / 100)
fl = flops_layer(Q) + flops_layer(1)
print(
    f"floor (GEMMs + Cholesky + tri-inverse, fwd+bwd, 2 layers): min {min(ts) * 1e3:.2f} ms, "
    f"median {sorted(ts)[3] * 1e3:.2f} ms per step; {fl / 1e6:.0f} MFLOP -> "
    f"{fl / min(ts) / 1e9:.1f} GFLOP/s"
)
