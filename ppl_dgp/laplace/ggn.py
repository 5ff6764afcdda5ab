"""The Laplace approximation's curvature machinery: the subset layout and the compiled GGN/EF core.

Used by :mod:`ppl_dgp.laplace.fit` (the method behind ``fit``) and
:mod:`ppl_dgp.laplace.predictive`. The subset ``theta`` of latent sites is flattened by
:class:`_Layout`; :class:`_Curv` holds the likelihood curvature at the MAP in one structure
(full ``[P, P]``, diagonal ``[P]`` or KFAC blocks per :func:`~ppl_dgp.dense.dense` layer) and
:func:`_ggn_core` computes, in one traced function compiled once per model and configuration,
the GGN or empirical Fisher from the traced output site, the evidence tuning of the prior
precision (and Gaussian noise), and the posterior draws. The formulas are in
:mod:`ppl_dgp.curvature`.

References:
    Daxberger et al. (2021), "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS.
    Martens & Grosse (2015), "Optimizing Neural Networks with Kronecker-factored Approximate
    Curvature", ICML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jax import Array
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import seed, substitute, trace

from ppl_dgp import curvature as C
from ppl_dgp.dense import DENSE
from ppl_dgp.layers import ROLE

if TYPE_CHECKING:
    from ppl_dgp.laplace.fit import Laplace

__all__ = ["dense_jacobian", "dense_output_jacobians"]

# -- the subset and its flat vector ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
    """The subset ``theta``: site names in trace order, shapes, offsets into ``[P]``."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(s)) for s in self.shapes]

    @property
    def P(self) -> int:
        return sum(self.sizes)

    def offsets(self) -> dict[str, tuple[int, int]]:
        out, o = {}, 0
        for n, k in zip(self.names, self.sizes, strict=True):
            out[n] = (o, o + k)
            o += k
        return out

    def ravel(self, values: dict) -> Array:  # {site: array} -> [P]
        return jnp.concatenate([jnp.reshape(values[n], -1) for n in self.names])

    def unravel_batch(self, thetas: Array) -> dict:  # [S, P] -> {site: [S, ...]}
        S = thetas.shape[0]
        return {
            n: thetas[:, a:b].reshape((S, *s))
            for (n, (a, b)), s in zip(self.offsets().items(), self.shapes, strict=True)
        }

    def unravel(self, theta: Array) -> dict:  # [P] -> {site: array}
        return {
            n: theta[a:b].reshape(s)
            for (n, (a, b)), s in zip(self.offsets().items(), self.shapes, strict=True)
        }


def _dense_layers(model_trace: dict) -> dict[str, list[str]]:
    """``{layer: [W site, b site]}`` of the dense layers, in trace order."""
    layers: dict[str, list[str]] = {}
    for name, site in model_trace.items():
        if site["type"] == "sample" and site["infer"].get(ROLE) == DENSE:
            layers.setdefault(name.rsplit(".", 1)[0], []).append(name)
    return layers


def _normal_prior(fn: Any, site: str) -> tuple[Array, Array]:
    """``(mean, precision)`` broadcast to the site's shape, for a (wrapped) Normal prior."""
    base = _normal_base(fn, site)
    shape = fn.shape()
    return jnp.broadcast_to(base.loc, shape), jnp.broadcast_to(1.0 / base.scale**2, shape)


def _normal_base(fn: Any, site: str) -> dist.Normal:
    """The ``Normal`` under ``Independent`` / ``expand`` wrappers, or a clear error."""
    base = fn
    while isinstance(base, dist.Independent | dist.ExpandedDistribution):
        base = base.base_dist
    if not isinstance(base, dist.Normal):
        raise ValueError(
            f"Laplace(curvature='ggn'/'ef'): site {site!r} needs a Normal prior (its precision "
            f"enters the posterior); received {type(base).__name__}. Use curvature='hessian' "
            "or leave the site out of subset_of_weights"
        )
    return base


def _likelihood(fn: Any, site: str) -> tuple[str, Array, Array]:
    """``(name, natural parameter [N, K], sigma)`` of the likelihood site's distribution."""
    name = _likelihood_name(fn, site)
    if isinstance(fn, dist.Independent):
        fn = fn.base_dist
    if name == "gaussian":
        return name, fn.loc[..., None], jnp.asarray(fn.scale)
    if name == "bernoulli":
        return name, fn.logits[..., None], jnp.asarray(1.0)
    return name, fn.logits, jnp.asarray(1.0)


def _likelihood_name(fn: Any, site: str) -> str:
    """``"gaussian"``, ``"bernoulli"`` or ``"categorical"``: the likelihood site's family."""
    if isinstance(fn, dist.Independent):
        fn = fn.base_dist
    if isinstance(fn, dist.Normal):
        return "gaussian"
    if isinstance(fn, dist.BernoulliLogits):
        return "bernoulli"
    if isinstance(fn, dist.CategoricalLogits):
        return "categorical"
    raise ValueError(
        f"Laplace(curvature='ggn'/'ef'): the likelihood site {site!r} must be Normal, "
        f"Bernoulli(logits=) or Categorical(logits=); received {type(fn).__name__}"
    )


def _check_memory(method: Laplace, what: str, shape: tuple[int, ...]) -> None:
    gb = float(np.prod(shape)) * 8 / 1e9
    if gb > method.memory_limit_gb:
        raise ValueError(
            f"Laplace: {what} of shape {list(shape)} needs {gb:.2f} GB > memory_limit_gb="
            f"{method.memory_limit_gb}; use hessian_structure='kron' or 'diag', "
            "subset_of_weights='last_layer', or raise memory_limit_gb"
        )


# -- the curvature (posterior precision as a function of the prior precision and the noise) ----


@dataclasses.dataclass
class _Curv:
    """Likelihood curvature at the MAP in one structure; ``scale`` multiplies it (``1/sigma^2``
    for a Gaussian likelihood, computed at ``sigma = 1``)."""

    structure: str
    H: Array | None = None  # full [P, P] or diag [P]
    blocks: dict[str, C.KronBlock] | None = None  # kron, per dense layer
    includes_prior: bool = False  # exact Hessian of the potential
    eig: Array | None = None  # full: eigenvalues of H, for a uniform prior precision


def _logdet_post(curv: _Curv, layout: _Layout, layers: dict, scale: Array, delta: Array) -> Array:
    if curv.structure == "full":
        if curv.eig is not None:  # delta uniform: logdet(s H + d I) = sum log(s lam + d)
            return jnp.sum(jnp.log(scale * curv.eig + delta[0]))
        P = curv.H if curv.includes_prior else scale * curv.H + jnp.diag(delta)
        return 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(P))))
    if curv.structure == "diag":
        return jnp.sum(jnp.log(curv.H if curv.includes_prior else scale * curv.H + delta))
    off = layout.offsets()
    total = 0.0
    for layer, (w, b) in layers.items():
        total = total + C.kron_logdet(curv.blocks[layer], scale, delta[off[w][0]], delta[off[b][0]])
    return total


def _post_var_diag(curv: _Curv, layout: _Layout, layers: dict, scale: Array, delta: Array):
    """``diag(P^-1)`` ``[P]`` (MacKay's update)."""
    if curv.structure == "full":
        return jnp.diagonal(jnp.linalg.inv(scale * curv.H + jnp.diag(delta)))
    if curv.structure == "diag":
        return 1.0 / (scale * curv.H + delta)
    off = layout.offsets()
    out = []
    for layer, (w, b) in layers.items():
        blk = curv.blocks[layer]
        inv = 1.0 / (scale * jnp.outer(blk.A_eigvals, blk.B_eigvals) + delta[off[w][0]])
        out.append(((blk.A_eigvecs**2) @ inv @ (blk.B_eigvecs**2).T).reshape(-1))
        inv_b = 1.0 / (scale * blk.B_eigvals + delta[off[b][0]])
        out.append((blk.B_eigvecs**2) @ inv_b)
    return jnp.concatenate(out)


def _groups(method: Laplace, layout: _Layout, layers: dict) -> tuple[np.ndarray, int, list[str]]:
    """Group index per parameter for the tuned prior precision."""
    if method.prior_structure == "scalar":
        return np.zeros(layout.P, dtype=np.int32), 1, ["all"]
    site_layer = {s: layer for layer, ss in layers.items() for s in ss}
    names: list[str] = []
    idx = []
    for site, k in zip(layout.names, layout.sizes, strict=True):
        g = site_layer.get(site, site)
        if g not in names:
            names.append(g)
        idx.append(np.full(k, names.index(g), dtype=np.int32))
    return np.concatenate(idx), len(names), names


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Everything static about one GGN/EF Laplace fit (the key of the compiled core)."""

    method: Laplace
    curvature: str
    lik: str
    layout: _Layout
    layers: tuple[tuple[str, tuple[str, ...]], ...]
    groups: tuple[int, ...]
    G: int
    kwargs: tuple
    global_latent: tuple[str, ...] = ()


def _constrained(model: Callable, z: dict, params: dict, X: Array, y: Array, kw: dict) -> dict:
    """The constrained value of every sample site given unconstrained ``z`` (and ``params``)."""

    def value(site: dict) -> Array | None:
        name = site["name"]
        if site["type"] == "sample" and name in z:
            return biject_to(site["fn"].support)(z[name])
        return params.get(name)

    tr = trace(substitute(seed(model, 0), substitute_fn=value)).get_trace(X, y, **kw)
    return {k: v["value"] for k, v in tr.items() if v["type"] == "sample" and k in z}


def _ggn_core(model: Callable, spec: _Spec, z_map: dict, params: dict, X: Array, y: Array,
              key: Array) -> dict:  # fmt: skip
    """Curvature, evidence tuning and draws of a GGN/EF Laplace fit, as one traced function.

    ``z_map``: the unconstrained MAP of every latent site; ``params``: the model's param sites.
    Besides the curvature's results it returns the MAP vector ``theta_map [P]``, the prior mean
    ``mu0 [P]``, the draws ``thetas [S, P]`` and the constrained MAP ``cmap`` of the global
    latent sites, so the caller does no array work of its own (one transfer to the host).
    """
    method, layout, layers = spec.method, spec.layout, dict(spec.layers)
    kw, out = dict(spec.kwargs), method.output_site
    groups, G = np.asarray(spec.groups, dtype=np.int32), spec.G
    values = {**params, **_constrained(model, z_map, params, X, y, kw)}
    theta_map = layout.ravel(values)

    def run(theta: Array) -> dict:
        data = {**values, **layout.unravel(theta)}
        return trace(substitute(seed(model, 0), data=data)).get_trace(X, y, **kw)

    def f_of(theta: Array) -> Array:  # [P] -> [N, K]
        return run(theta)[out]["value"]

    def f_sites(over: dict) -> Array:  # sites replaced -> [N, K]
        data = {**values, **over}
        return trace(substitute(seed(model, 0), data=data)).get_trace(X, y, **kw)[out]["value"]

    tr = run(theta_map)
    cmap = {k: v["value"] for k, v in tr.items() if v["type"] in ("sample", "deterministic")}
    priors = [_normal_prior(tr[n]["fn"], n) for n in layout.names]
    mu0 = jnp.concatenate([jnp.reshape(m, -1) for m, _ in priors])
    delta0 = jnp.concatenate([jnp.reshape(p, -1) for _, p in priors])
    _, eta, sigma = _likelihood(tr[method.likelihood_site]["fn"], method.likelihood_site)
    f_map = cmap[out]  # [N, K]
    sigma = jnp.ravel(jnp.asarray(sigma))[0]
    curv = _likelihood_curvature(
        method, spec.curvature, spec.lik, sigma, layout, layers, f_of, f_sites, theta_map, cmap, y
    )
    if curv.structure == "full" and G == 1 and method.tune != "none":  # delta stays uniform
        curv = dataclasses.replace(curv, eig=jnp.maximum(jnp.linalg.eigvalsh(curv.H), 0.0))
    unit = spec.lik == "gaussian" and spec.curvature == "ggn"
    N = X.shape[0]

    def evidence(log_delta_g: Array, log_sigma: Array) -> Array:
        d = jnp.exp(log_delta_g)[groups]
        s = jnp.exp(log_sigma)
        sc = 1.0 / s**2 if unit else jnp.asarray(1.0)
        ll = C.log_likelihood(spec.lik, f_map, y, s)
        return C.log_marglik(ll, _logdet_post(curv, layout, layers, sc, d), d, theta_map, mu0)

    log_d = jnp.log(jax.ops.segment_sum(delta0, groups, G) / np.bincount(groups, minlength=G))
    log_s = jnp.log(sigma)
    if method.tune == "marglik":
        log_d, log_s = _tune_marglik(evidence, log_d, log_s, method, spec.lik == "gaussian")
    elif method.tune == "fixed_point":

        def mackay(carry: tuple, _: None) -> tuple:
            log_d, log_s = carry
            d = jnp.exp(log_d)[groups]
            sc = 1.0 / jnp.exp(log_s) ** 2 if unit else jnp.asarray(1.0)
            var = _post_var_diag(curv, layout, layers, sc, d)
            log_d = jnp.log(C.mackay_fixed_point(d, var, theta_map - mu0, groups, G))
            if method.tune_noise:
                gamma = jnp.sum(1.0 - d * var)
                sse = jnp.sum((f_map[:, 0] - y) ** 2)
                log_s = 0.5 * jnp.log(sse / jnp.maximum(N - gamma, 1e-12))
            return (log_d, log_s), None

        log_d, log_s = jax.lax.scan(mackay, (log_d, log_s), None, length=method.tune_steps)[0]
    elif method.tune == "grid":
        lg = jnp.log(jnp.asarray(method.grid))
        vals = jax.vmap(lambda g: evidence(g[None], log_s))(lg)
        log_d = lg[jnp.nanargmax(vals)][None]
    if method.tune == "none":  # the model's own prior precisions, per parameter
        delta = delta0
        curv = dataclasses.replace(curv, eig=None)
    else:
        delta = jnp.exp(log_d)[groups]
    sigma = jnp.exp(log_s)
    scale = 1.0 / sigma**2 if unit else jnp.asarray(1.0)
    lml = C.log_marglik(
        C.log_likelihood(spec.lik, f_map, y, sigma),
        _logdet_post(curv, layout, layers, scale, delta),
        delta,
        theta_map,
        mu0,
    )
    res = {
        "delta": delta,
        "sigma": sigma,
        "scale": scale,
        "lml": lml,
        "eta_f_gap": jnp.max(jnp.abs(jnp.reshape(eta, f_map.shape) - f_map)),
        "f_scale": jnp.max(jnp.abs(f_map)),
        "theta_map": theta_map,
        "mu0": mu0,
        "cmap": {n: values[n] for n in spec.global_latent},
    }
    eps = jax.random.normal(key, (method.num_samples, layout.P))
    if curv.structure == "full":
        Lc = jnp.linalg.cholesky(scale * curv.H + jnp.diag(delta))
        res["precision_chol"] = Lc
        res["dtheta"] = jax.scipy.linalg.solve_triangular(Lc.T, eps.T, lower=False).T
    elif curv.structure == "diag":
        res["posterior_variance"] = 1.0 / (scale * curv.H + delta)
        res["dtheta"] = eps * jnp.sqrt(res["posterior_variance"])
    else:
        res["dtheta"], blocks = _kron_draws(curv, layout, layers, scale, delta, eps)
        res.update(blocks)
    res["thetas"] = theta_map + res.pop("dtheta")  # [S, P]
    return res


#: The compiled core, cached per (model object, static spec) by ``jax.jit``.
_ggn_core_jit = jax.jit(_ggn_core, static_argnums=(0, 1))


def _likelihood_curvature(
    method: Laplace,
    curvature: str,
    lik: str,
    sigma: Array,
    layout: _Layout,
    layers: dict,
    f_of: Callable,
    f_sites: Callable,
    theta_map: Array,
    constrained_map: dict,
    y: Array,
) -> _Curv:
    """GGN (Gaussian: at ``sigma = 1``, scaled later) or EF in the requested structure."""
    f_map = constrained_map[method.output_site]  # [N, K]
    N, K = f_map.shape
    if curvature == "ggn":
        Lam = C.loss_hessian(lik, f_map, 1.0)  # [N, K, K]
    else:
        g = C.loss_gradient(lik, f_map, y, sigma)  # [N, K]
        Lam = g[:, :, None] * g[:, None, :]
    dense = bool(layers) and {n for v in layers.values() for n in v} == set(layout.names)
    if dense:
        Jz = dense_output_jacobians(f_sites, constrained_map, layers, N)
    if method.hessian_structure == "kron":
        blocks = {
            layer: C.kron_block(constrained_map[f"{layer}.input"], Jz[layer], Lam)
            for layer in layers
        }
        return _Curv("kron", blocks=blocks)
    if method.hessian_structure == "full":
        _check_memory(method, "the full curvature", (layout.P, layout.P))
    _check_memory(method, "the Jacobian d f / d theta", (N, K, layout.P))
    if dense:
        inputs = {layer: constrained_map[f"{layer}.input"] for layer in layers}
        J = dense_jacobian(Jz, inputs, layout, layers)
    else:
        J = (jax.jacrev if N * K < layout.P else jax.jacfwd)(f_of)(theta_map)  # [N, K, P]
    if method.hessian_structure == "full":
        return _Curv("full", H=C.ggn_full(J, Lam))
    return _Curv("diag", H=C.ggn_diag(J, Lam))


def dense_output_jacobians(
    f_sites: Callable[[dict], Array], values: dict, layers: dict, N: int
) -> dict[str, Array]:
    """``{layer: d f_n / d z_n}`` ``[N, K, D_out]`` per dense layer (``z = a W + b``).

    ``f_sites(overrides) -> f [N, K]`` evaluates the network with some sites replaced. Each
    bias is replaced by ``N`` per-datum copies ``b_n = b`` ``[N, D_out]`` (``a W + b_n`` is the
    same ``z``), so ``d f_{n,k} / d b_n = d f_{n,k} / d z_n``, and one reverse pass per output
    ``k`` of ``sum_n f_{n,k}`` gives every datum's Jacobian at once: ``K`` backward passes
    instead of one forward pass per bias entry (``jacfwd``) or one backward per ``(n, k)``.
    Assumes, like the dense Jacobian itself, that data rows do not interact.
    """
    tiles = {b: jnp.broadcast_to(values[b], (N, *jnp.shape(values[b]))) for _, b in layers.values()}
    f, vjp = jax.vjp(f_sites, tiles)
    K = f.shape[1]
    cot = jnp.broadcast_to(jnp.eye(K, dtype=f.dtype)[:, None, :], (K, N, K))  # [K, N, K]
    (grads,) = jax.vmap(vjp)(cot)  # {bias: [K, N, D_out]}
    return {layer: jnp.swapaxes(grads[b], 0, 1) for layer, (_, b) in layers.items()}


def dense_jacobian(Jz: dict, inputs: dict, layout: _Layout, layers: dict) -> Array:
    """``J = d f / d theta`` ``[N, K, P]`` of dense layers: ``d f / d W[i, o] = a_i d f / d z_o``,
    ``d f / d b = d f / d z`` (``a`` the layer input ``[N, D_in]``), in the layout's order."""
    parts = []
    for n in layout.names:
        layer = n.rsplit(".", 1)[0]
        if n == layers[layer][1]:
            parts.append(Jz[layer])
        else:
            JW = inputs[layer][:, None, :, None] * Jz[layer][:, :, None, :]
            parts.append(JW.reshape(JW.shape[0], JW.shape[1], -1))
    return jnp.concatenate(parts, axis=-1)


def _tune_marglik(
    evidence: Callable, log_d: Array, log_s: Array, method: Laplace, is_gauss: bool
) -> tuple[Array, Array]:
    """Adam (lr 0.1) on the negative evidence over log prior precision (and log noise)."""
    opt = optax.adam(0.1)
    tune_s = method.tune_noise and is_gauss

    def loss(p: tuple) -> Array:
        return -evidence(p[0], p[1] if tune_s else jax.lax.stop_gradient(p[1]))

    def step(carry: tuple, _: None) -> tuple:
        p, st = carry
        g = jax.grad(loss)(p)
        u, st = opt.update(g, st, p)
        return (optax.apply_updates(p, u), st), None

    @jax.jit
    def run(p: tuple) -> tuple:
        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=method.tune_steps)
        return p

    return run((log_d, log_s))


def _kron_draws(
    curv: _Curv, layout: _Layout, layers: dict, scale: Array, delta: Array, eps: Array
) -> tuple[Array, dict]:
    """``P^-1/2 eps`` per KFAC block (``eps [S, P]``) and the eigenfactors by name."""
    off = layout.offsets()
    out = jnp.zeros_like(eps)
    S = eps.shape[0]
    params = {}
    for layer, (w, b) in layers.items():
        blk = curv.blocks[layer]
        for k, v in blk._asdict().items():
            params[f"kron.{layer}.{k}"] = v
        (w0, w1), (b0, b1) = off[w], off[b]
        d_in, d_out = blk.A_eigvals.shape[0], blk.B_eigvals.shape[0]
        lw = scale * jnp.outer(blk.A_eigvals, blk.B_eigvals) + delta[w0]
        e = eps[:, w0:w1].reshape(S, d_in, d_out) / jnp.sqrt(lw)
        dW = jnp.einsum("ij,sjp,op->sio", blk.A_eigvecs, e, blk.B_eigvecs)
        out = out.at[:, w0:w1].set(dW.reshape(S, -1))
        lb = scale * blk.B_eigvals + delta[b0]
        out = out.at[:, b0:b1].set((eps[:, b0:b1] / jnp.sqrt(lb)) @ blk.B_eigvecs.T)
    return out, params
