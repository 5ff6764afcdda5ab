"""Posterior precision structures as values: full, diagonal and Kronecker-factored (KFAC).

Two kinds of value per structure, as laplace-torch separates its curvature backends from its
``FullLaplace`` / ``DiagLaplace`` / ``KronLaplace`` posteriors:

- a **curvature** (:class:`FullCurvature`, :class:`DiagCurvature`, :class:`KronCurvature`):
  the likelihood curvature ``H`` at the MAP, unnormalised; ``posterior(s, delta)`` turns it
  into the posterior precision ``P = s H + diag(delta)`` (``s`` the curvature scale, ``1 /
  sigma^2`` for a Gaussian likelihood's GGN, ``delta [P]`` the prior precision), and
  ``logdet(s, delta)`` is ``log det P`` as a function of both (what the evidence tuning
  differentiates);
- a **precision** (:class:`FullPrecision`, :class:`DiagPrecision`, :class:`KronPrecision`):
  ``P`` itself, stored in the Posterior file, with ``logdet()``, ``marginal_variance()``
  (``diag P^-1``), ``sample(key, S)`` (draws of ``theta - theta_MAP ~ N(0, P^-1)``),
  ``glm_cov(jac)`` (``J P^-1 J^T``, the linearised predictive's covariance) and ``matrix()``
  (the dense ``[P, P]`` it represents, for tests).

All are JAX pytrees (the structure is the type; nothing branches on a name string). The
formulas are in :mod:`ppl_dgp.curvature`.

KFAC layout: the parameters of each dense layer ``z = a W + b`` are ``W`` (row-major,
``W[i, o]`` at ``D_out i + o``) then ``b``, layer after layer in ``layers`` order; per layer
``P_W = s (A ⊗ B) + delta_W I`` and ``P_b = s B + delta_b I``.

Example:
    >>> import jax.numpy as jnp
    >>> q = DiagCurvature(jnp.array([1.0, 3.0])).posterior(2.0, jnp.array([1.0, 1.0]))
    >>> q.marginal_variance().tolist(), round(float(q.logdet()), 6)
    ([0.3333333333333333, 0.14285714285714285], 3.044522)

References:
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS
    (laplace-torch: ``laplace/baselaplace.py``).
    Martens & Grosse (2015), "Optimizing Neural Networks with Kronecker-factored Approximate
    Curvature", ICML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ppl_dgp import curvature as C
from ppl_dgp.posterior import approx_type

__all__ = [
    "STRUCTURES",
    "DiagCurvature",
    "DiagPrecision",
    "FullCurvature",
    "FullPrecision",
    "KronCurvature",
    "KronPrecision",
    "OutputJacobian",
]


# -- the Jacobian a structure reads ------------------------------------------------------------


def check_memory(what: str, shape: tuple[int, ...], limit_gb: float) -> None:
    """Raise if a float64 array of ``shape`` needs more than ``limit_gb`` gigabytes."""
    gb = float(np.prod(shape)) * 8 / 1e9
    if gb > limit_gb:
        raise ValueError(
            f"Laplace: {what} of shape {list(shape)} needs {gb:.2f} GB > memory_limit_gb="
            f"{limit_gb}; use hessian_structure='kron' or 'diag', "
            "subset_of_weights='last_layer', or raise memory_limit_gb"
        )


@dataclasses.dataclass(frozen=True)
class OutputJacobian:
    """``J = d f / d theta`` ``[N, K, P]`` at some inputs, built in the form a structure reads.

    Full and diagonal structures call :meth:`full`; KFAC calls :meth:`layer` (the layer
    input ``a`` ``[N, D_in]`` and ``J_z = d f / d z`` ``[N, K, D_out]``, from which
    ``d f / d W[i, o] = a_i J_z[:, o]``). Inside ``jit`` only the form that is read is traced.

    Attributes:
        shape: ``(N, K, P)``.
        full_fn: ``() -> J`` ``[N, K, P]``.
        layers_fn: ``() -> {layer: (a, J_z)}`` of the dense layers, or ``None``.
        memory_limit_gb: the most a dense ``[N, K, P]`` or ``[P, P]`` may take.
    """

    shape: tuple[int, int, int]
    full_fn: Callable[[], Array]
    layers_fn: Callable[[], dict[str, tuple[Array, Array]]] | None = None
    memory_limit_gb: float = float("inf")

    @classmethod
    def of(cls, J: Array) -> OutputJacobian:
        """A dense Jacobian ``J`` ``[N, K, P]`` as it is."""
        return cls(tuple(J.shape), lambda: J)

    def check_memory(self, what: str, shape: tuple[int, ...]) -> None:
        check_memory(what, shape, self.memory_limit_gb)

    def full(self) -> Array:
        self.check_memory("the Jacobian d f / d theta", self.shape)
        return self.full_fn()

    def layers(self) -> dict[str, tuple[Array, Array]]:
        if self.layers_fn is None:
            raise ValueError("hessian_structure='kron' needs the Jacobians of dense layers")
        return self.layers_fn()


# -- precisions (what a fit stores) ------------------------------------------------------------


@approx_type
@dataclasses.dataclass(frozen=True)
class FullPrecision:
    """``P = L L^T`` with ``chol = L`` ``[P, P]`` lower triangular.

    ``logdet P = 2 sum_i log L_ii``; ``diag P^-1 = sum_i (L^-1)_ij^2``; draws
    ``L^-T eps``, ``eps ~ N(0, I)``; ``J P^-1 J^T = (L^-1 J^T)^T (L^-1 J^T)``.
    """

    chol: Any

    def logdet(self) -> Array:
        return 2.0 * jnp.sum(jnp.log(jnp.diagonal(self.chol)))

    def marginal_variance(self) -> Array:  # [P]
        Linv = jax.scipy.linalg.solve_triangular(self.chol, jnp.eye(self.chol.shape[0]), lower=True)
        return jnp.sum(Linv**2, axis=0)

    def sample(self, key: Array, num_samples: int) -> Array:  # [S, P]
        eps = jax.random.normal(key, (num_samples, self.chol.shape[0]))
        return jax.scipy.linalg.solve_triangular(self.chol.T, eps.T, lower=False).T

    def glm_cov(self, jac: OutputJacobian) -> Array:  # [N, K, K]
        return C.glm_f_cov_full(jac.full(), self.chol)

    def matrix(self) -> Array:  # [P, P]
        return self.chol @ self.chol.T


@approx_type
@dataclasses.dataclass(frozen=True)
class DiagPrecision:
    """A diagonal ``P``, held as the posterior variances ``variance = diag(P)^-1`` ``[P]``.

    ``logdet P = -sum log variance``; draws ``sqrt(variance) eps``;
    ``J P^-1 J^T = J diag(variance) J^T``.
    """

    variance: Any

    def logdet(self) -> Array:
        return -jnp.sum(jnp.log(self.variance))

    def marginal_variance(self) -> Array:  # [P]
        return self.variance

    def sample(self, key: Array, num_samples: int) -> Array:  # [S, P]
        eps = jax.random.normal(key, (num_samples, self.variance.shape[0]))
        return eps * jnp.sqrt(self.variance)

    def glm_cov(self, jac: OutputJacobian) -> Array:  # [N, K, K]
        return C.glm_f_var_diag(jac.full(), self.variance)

    def matrix(self) -> Array:  # [P, P]
        return jnp.diag(1.0 / self.variance)


def _kron_blocks(blocks: dict, layers: tuple[str, ...]) -> list[C.KronBlock]:
    return [C.KronBlock(*(blocks[layer][k] for k in C.KronBlock._fields)) for layer in layers]


@approx_type(static=("layers",))
@dataclasses.dataclass(frozen=True)
class KronPrecision:
    """KFAC ``P``: per dense layer ``s (A ⊗ B) + delta_W I`` for ``W``, ``s B + delta_b I`` for
    ``b``, with ``A = Q_A diag(l_A) Q_A^T`` and ``B = Q_B diag(l_B) Q_B^T`` eigendecomposed.

    In the eigenbasis ``Q_A ⊗ Q_B`` the ``W`` block is diagonal, ``s l_A,i l_B,o + delta_W``:
    ``logdet``, ``P^-1/2`` (draws ``(Q_A ⊗ Q_B) (s l_A ⊗ l_B + delta_W)^-1/2 eps``) and the
    GLM covariance (:func:`~ppl_dgp.curvature.glm_f_cov_kron`) are elementwise there.

    Attributes:
        blocks: ``{layer: {A_eigvals [D_in], A_eigvecs [D_in, D_in], B_eigvals [D_out],
            B_eigvecs [D_out, D_out]}}``.
        scale: ``s``.
        delta_W: the prior precision of each layer's ``W`` ``[L]``.
        delta_b: the prior precision of each layer's ``b`` ``[L]``.
        layers: the layers in parameter order.
    """

    blocks: dict[str, dict[str, Any]]
    scale: Any
    delta_W: Any
    delta_b: Any
    layers: tuple[str, ...]

    def _eig(self) -> list[tuple[C.KronBlock, Array, Array]]:
        """Per layer ``(block, eigenvalues of P_W [D_in, D_out], of P_b [D_out])``."""
        out = []
        for i, blk in enumerate(_kron_blocks(self.blocks, self.layers)):
            lw = self.scale * jnp.outer(blk.A_eigvals, blk.B_eigvals) + self.delta_W[i]
            out.append((blk, lw, self.scale * blk.B_eigvals + self.delta_b[i]))
        return out

    def logdet(self) -> Array:
        return sum(jnp.sum(jnp.log(lw)) + jnp.sum(jnp.log(lb)) for _, lw, lb in self._eig())

    def marginal_variance(self) -> Array:  # [P]
        out = []
        for blk, lw, lb in self._eig():
            out.append(((blk.A_eigvecs**2) @ (1.0 / lw) @ (blk.B_eigvecs**2).T).reshape(-1))
            out.append((blk.B_eigvecs**2) @ (1.0 / lb))
        return jnp.concatenate(out)

    def sample(self, key: Array, num_samples: int) -> Array:  # [S, P]
        eig = self._eig()
        P = sum(lw.size + lb.size for _, lw, lb in eig)
        eps = jax.random.normal(key, (num_samples, P))
        out, o = [], 0
        for blk, lw, lb in eig:
            d_in, d_out = lw.shape
            e = eps[:, o : o + lw.size].reshape(num_samples, d_in, d_out) / jnp.sqrt(lw)
            dW = jnp.einsum("ij,sjp,op->sio", blk.A_eigvecs, e, blk.B_eigvecs)
            o += lw.size
            db = (eps[:, o : o + d_out] / jnp.sqrt(lb)) @ blk.B_eigvecs.T
            out += [dW.reshape(num_samples, -1), db]
            o += d_out
        return jnp.concatenate(out, axis=1)

    def glm_cov(self, jac: OutputJacobian) -> Array:  # [N, K, K]
        per_layer = jac.layers()
        blocks = _kron_blocks(self.blocks, self.layers)
        cov = 0.0
        for i, (layer, blk) in enumerate(zip(self.layers, blocks, strict=True)):
            a, Jz = per_layer[layer]
            cov = cov + C.glm_f_cov_kron(a, Jz, blk, self.scale, self.delta_W[i], self.delta_b[i])
        return cov

    def matrix(self) -> Array:  # [P, P]
        mats = []
        for blk, lw, lb in self._eig():
            Q = jnp.kron(blk.A_eigvecs, blk.B_eigvecs)
            mats += [(Q * lw.reshape(-1)) @ Q.T, (blk.B_eigvecs * lb) @ blk.B_eigvecs.T]
        return jax.scipy.linalg.block_diag(*mats)


# -- curvatures (unnormalised; posterior(scale, delta) -> precision) --------------------------


def _pytree(cls: type, static: tuple[str, ...] = ()) -> type:
    names = [f.name for f in dataclasses.fields(cls)]
    jax.tree_util.register_dataclass(
        cls, data_fields=[n for n in names if n not in static], meta_fields=list(static)
    )
    return cls


@dataclasses.dataclass(frozen=True)
class FullCurvature:
    """The curvature ``H`` ``[P, P]``; ``eig`` its eigenvalues, held only for a uniform prior.

    ``P = s H + diag(delta)``; with ``eig`` (``delta`` uniform) ``logdet P = sum log(s lam +
    delta_0)``, one eigendecomposition for every evidence step instead of one Cholesky each.
    """

    H: Array
    eig: Array | None = None

    @classmethod
    def from_outer(cls, jac: OutputJacobian, Lam: Array) -> FullCurvature:
        """``sum_n J_n^T Lam_n J_n`` (GGN; EF with ``Lam_n = g_n g_n^T``)."""
        P = jac.shape[2]
        jac.check_memory("the full curvature", (P, P))
        return cls(C.ggn_full(jac.full(), Lam))

    @classmethod
    def from_hessian(cls, H: Array) -> tuple[FullCurvature, Array]:
        """A Hessian made positive definite (eigenvalues ``<= 0`` -> ``max(|lam|, 1)``)."""
        H, n_bad = C.make_positive_definite(H, floor=1.0)
        return cls(H), n_bad

    def with_eigvals(self) -> FullCurvature:
        """For a uniform prior precision: ``logdet`` by the eigenvalues of ``H``."""
        return dataclasses.replace(self, eig=jnp.maximum(jnp.linalg.eigvalsh(self.H), 0.0))

    def posterior(self, scale: Array, delta: Array) -> FullPrecision:
        return FullPrecision(jnp.linalg.cholesky(scale * self.H + jnp.diag(delta)))

    def logdet(self, scale: Array, delta: Array) -> Array:
        if self.eig is not None:
            return jnp.sum(jnp.log(scale * self.eig + delta[0]))
        return self.posterior(scale, delta).logdet()


@dataclasses.dataclass(frozen=True)
class DiagCurvature:
    """The diagonal ``H`` ``[P]``; ``P = s H + delta``."""

    H: Array

    @classmethod
    def from_outer(cls, jac: OutputJacobian, Lam: Array) -> DiagCurvature:
        """``diag(sum_n J_n^T Lam_n J_n)``."""
        return cls(C.ggn_diag(jac.full(), Lam))

    @classmethod
    def from_hessian(cls, H: Array) -> tuple[DiagCurvature, Array]:
        """The Hessian's diagonal, entries ``<= 0`` replaced by ``max(|h|, 1)``."""
        h = jnp.diagonal(H)
        return cls(jnp.where(h > 0, h, jnp.maximum(jnp.abs(h), 1.0))), jnp.sum(h <= 0)

    def with_eigvals(self) -> DiagCurvature:
        return self

    def posterior(self, scale: Array, delta: Array) -> DiagPrecision:
        return DiagPrecision(1.0 / (scale * self.H + delta))

    def logdet(self, scale: Array, delta: Array) -> Array:
        return jnp.sum(jnp.log(scale * self.H + delta))


@dataclasses.dataclass(frozen=True)
class KronCurvature:
    """KFAC factors per dense layer (:class:`~ppl_dgp.curvature.KronBlock`, in ``layers``
    order); ``P_W = s (A ⊗ B) + delta_W``, ``P_b = s B + delta_b``, ``delta`` read at each
    block's first parameter."""

    blocks: tuple[C.KronBlock, ...]
    layers: tuple[str, ...]

    @classmethod
    def from_outer(cls, jac: OutputJacobian, Lam: Array) -> KronCurvature:
        """``A = (1/N) sum_n a_n a_n^T``, ``B = sum_n J_z,n^T Lam_n J_z,n`` per layer."""
        per_layer = jac.layers()
        layers = tuple(per_layer)
        return cls(tuple(C.kron_block(*per_layer[layer], Lam) for layer in layers), layers)

    @classmethod
    def from_hessian(cls, H: Array) -> tuple[KronCurvature, Array]:
        raise ValueError("hessian_structure='kron' needs curvature 'ggn' or 'ef'")

    def with_eigvals(self) -> KronCurvature:
        return self

    def posterior(self, scale: Array, delta: Array) -> KronPrecision:
        dW, db, o = [], [], 0
        for blk in self.blocks:
            d_in, d_out = blk.A_eigvals.shape[0], blk.B_eigvals.shape[0]
            dW.append(delta[o])
            db.append(delta[o + d_in * d_out])
            o += d_in * d_out + d_out
        blocks = {layer: blk._asdict() for layer, blk in zip(self.layers, self.blocks, strict=True)}
        return KronPrecision(blocks, jnp.asarray(scale), jnp.stack(dW), jnp.stack(db), self.layers)

    def logdet(self, scale: Array, delta: Array) -> Array:
        return self.posterior(scale, delta).logdet()


_pytree(FullCurvature)
_pytree(DiagCurvature)
_pytree(KronCurvature, static=("layers",))

#: ``Laplace.hessian_structure`` -> its curvature type.
STRUCTURES: dict[str, type] = {
    "full": FullCurvature,
    "diag": DiagCurvature,
    "kron": KronCurvature,
}
