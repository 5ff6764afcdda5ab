"""Natural gradients on ``q(u)`` (ppl_dgp.natgrad) against dense references.

The must-show of issue 14: for an SVGP with a Gaussian likelihood (full batch, hyperparameters
fixed) one natural-gradient step with ``gamma = 1`` from any ``q(u)`` reaches the optimal
``q(u)`` of the collapsed bound (Titsias 2009), written here in dense NumPy in whitened form,
and the ELBO after it equals the collapsed bound. Then the mixed step (natural gradients on
``q(u)``, Adam on the rest) inside the compiled loop on a small DGP.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pytest
from numpyro.infer import SVI

from ppl_dgp.elbo import DoublyStochasticELBO
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.infer.loop import run_loop
from ppl_dgp.models import dgp, svgp
from ppl_dgp.natgrad import (
    expectation_to_meanvarsqrt,
    meanvarsqrt_to_expectation,
    meanvarsqrt_to_natural,
    natgrad_layers,
    natgrad_svi_step,
    natural_to_meanvarsqrt,
)

N, M = 30, 8
TOL = 1e-8


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.default_rng(seed)
    X = np.sort(rs.uniform(-2.0, 2.0, (N, 1)), axis=0)
    y = np.sin(2.0 * X[:, 0]) + 0.5 + 0.2 * rs.standard_normal(N)
    return X, y


def _random_q(rs: np.random.Generator, Q: int) -> tuple[np.ndarray, np.ndarray]:
    """A random ``q(u)``: any mean, a ``q_sqrt`` with garbage above the diagonal (ignored) and
    diagonal entries of either sign."""
    q_mu = 2.0 * rs.standard_normal((M, Q))
    q_sqrt = 0.3 * rs.standard_normal((Q, M, M))
    diag = rs.choice([-1.0, 1.0], (Q, M)) * rs.uniform(0.3, 1.5, (Q, M))
    q_sqrt[:, np.arange(M), np.arange(M)] = diag
    return q_mu, q_sqrt


# -- the parameterisations, against dense inverses -------------------------------------------


def test_parameterisations_against_dense_formulas():
    rs = np.random.default_rng(1)
    q_mu, q_sqrt = _random_q(rs, Q=2)
    L = np.tril(q_sqrt)
    S = L @ np.swapaxes(L, -1, -2)
    eta_1, eta_2 = meanvarsqrt_to_expectation(jnp.asarray(q_mu), jnp.asarray(q_sqrt))
    theta_1, theta_2 = meanvarsqrt_to_natural(jnp.asarray(q_mu), jnp.asarray(q_sqrt))
    for q in range(2):
        m, S_inv = q_mu[:, q], np.linalg.inv(S[q])
        np.testing.assert_allclose(eta_1[:, q], m, rtol=0, atol=1e-12)
        np.testing.assert_allclose(eta_2[q], S[q] + np.outer(m, m), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(theta_1[:, q], S_inv @ m, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(theta_2[q], -0.5 * S_inv, rtol=1e-10, atol=1e-10)
    # back from either: the same Gaussian, as the Cholesky factor (positive diagonal) of S
    L_pos = np.linalg.cholesky(S)
    for m, Lb in (expectation_to_meanvarsqrt(eta_1, eta_2),
                  natural_to_meanvarsqrt(theta_1, theta_2)):  # fmt: skip
        np.testing.assert_allclose(m, q_mu, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(Lb, L_pos, rtol=1e-10, atol=1e-10)


# -- the SVGP: one step with gamma = 1 is the collapsed optimum ----------------------------------


def _se(A: np.ndarray, B: np.ndarray, variance: float, lengthscale: float) -> np.ndarray:
    d = (A[:, None, :] - B[None, :, :]) / lengthscale
    return variance * np.exp(-0.5 * np.sum(d * d, axis=-1))


def _collapsed(X, y, Z, variance, lengthscale, s2, jitter, mean):
    """Titsias (2009) in whitened form (``u = Lmm v``, ``Lmm = chol(Kmm + jitter I)``): the
    optimal ``q(v) = N(m, Sigma)`` and the collapsed bound, dense NumPy."""
    Kmm = _se(Z, Z, variance, lengthscale) + jitter * np.eye(len(Z))
    Kmn = _se(Z, X, variance, lengthscale)
    A = np.linalg.solve(np.linalg.cholesky(Kmm), Kmn)  # [M, N] = Lmm^-1 Kmn
    r = y - mean
    Sigma = np.linalg.inv(np.eye(len(Z)) + A @ A.T / s2)
    m = Sigma @ A @ r / s2
    C = A.T @ A + s2 * np.eye(len(X))  # Qnn + s2 I
    _, logdet = np.linalg.slogdet(C)
    log_marg = -0.5 * (r @ np.linalg.solve(C, r) + logdet + len(X) * np.log(2 * np.pi))
    bound = log_marg - (len(X) * variance - np.trace(A.T @ A)) / (2 * s2)
    return m, Sigma, bound


VARIANCE, LENGTHSCALE, S2 = 0.7, 0.6, 0.1


@functools.cache
def _fixed_svgp(q_sqrt_transform: str) -> dict:
    """The zoo SVGP with its hyperparameters and Z held fixed: only q(u) is a parameter."""
    X, y = _data()
    config = svgp.init_svgp(X, num_inducing=M)
    (spec,) = config["layers"]
    spec = dataclasses.replace(spec, variance=VARIANCE, lengthscales=LENGTHSCALE, learn_Z=False)
    model = functools.partial(svgp.svgp_regression, layers=(spec,), noise_variance=S2)
    guide = InducingPointGuide(model, q_sqrt_transform=q_sqrt_transform)
    svi = SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
    state = svi.init(jax.random.key(0), X, y)
    assert set(svi.get_params(state)) == {"layer0.q_mu", "layer0.q_sqrt"}
    step = jax.jit(natgrad_svi_step(svi, natgrad_layers(guide), gamma=1.0))
    mean = np.asarray(spec.mean_function(jnp.asarray(X)))[:, 0]
    m, Sigma, bound = _collapsed(X, y, np.asarray(spec.Z), VARIANCE, LENGTHSCALE, S2,
                                 spec.jitter, mean)  # fmt: skip
    return {"X": X, "y": y, "svi": svi, "state": state, "step": step,
            "m": m, "Sigma": Sigma, "bound": bound}  # fmt: skip


@pytest.mark.parametrize(
    ("q_sqrt_transform", "seed"), [("triangular", 3), ("triangular", 4), ("softplus", None)]
)
def test_one_natgrad_step_reaches_the_collapsed_optimum(q_sqrt_transform, seed):
    """From two random starts (the unconstrained triangle: garbage above the diagonal, either
    sign on it), and from the guide's own start with the softplus-Cholesky ``q_sqrt``."""
    f = _fixed_svgp(q_sqrt_transform)
    svi, X, y = f["svi"], f["X"], f["y"]
    start = f["state"]
    if seed is not None:
        q_mu, q_sqrt = _random_q(np.random.default_rng(seed), Q=1)
        q = {"layer0.q_mu": jnp.asarray(q_mu), "layer0.q_sqrt": jnp.asarray(q_sqrt)}
        start = numpyro.infer.svi.SVIState(svi.optim.init(q), None, jax.random.key(seed))
    loss_before = svi.evaluate(start, X, y)
    assert -loss_before < f["bound"] - 1.0  # a start far from the optimum
    state, loss = f["step"](start, X, y)
    np.testing.assert_allclose(loss, loss_before, rtol=0, atol=1e-10)  # the given state's loss
    params = svi.get_params(state)
    L = np.tril(np.asarray(params["layer0.q_sqrt"][0]))
    np.testing.assert_allclose(params["layer0.q_mu"][:, 0], f["m"], rtol=0, atol=TOL)
    np.testing.assert_allclose(L @ L.T, f["Sigma"], rtol=0, atol=TOL)
    np.testing.assert_allclose(L, np.linalg.cholesky(f["Sigma"]), rtol=0, atol=TOL)
    np.testing.assert_allclose(-svi.evaluate(state, X, y), f["bound"], rtol=0, atol=TOL)


def test_mixed_step_moves_q_by_natgrad_only_and_the_hyperparameters_by_adam():
    """Learnable hyperparameters and Z: q(u) after one mixed step is the collapsed optimum at
    the hyperparameters it started from (the step's one gradient evaluation), never moved by
    Adam; the hyperparameters did take Adam's step."""
    X, y = map(jnp.asarray, _data(seed=1))
    config = svgp.init_svgp(X, num_inducing=M)
    model = functools.partial(svgp.svgp_regression, **config)
    guide = InducingPointGuide(model)
    svi = SVI(model, guide, optax.adam(0.05), DoublyStochasticELBO(loss_scale=1.0 / N))
    q_mu, q_sqrt = _random_q(np.random.default_rng(5), Q=1)  # not the prior: Z matters
    init = {"layer0.q_mu": jnp.asarray(q_mu), "layer0.q_sqrt": jnp.asarray(q_sqrt)}
    state = svi.init(jax.random.key(1), X, y, init_params=init)
    old, old_u = svi.get_params(state), svi.optim.get_params(state.optim_state)
    state, _ = jax.jit(natgrad_svi_step(svi, ["layer0"], gamma=1.0))(state, X, y)
    new, new_u = svi.get_params(state), svi.optim.get_params(state.optim_state)
    variance, lengthscale = float(old["layer0.variance.loc"]), old["layer0.lengthscales.loc"]
    assert np.shape(lengthscale) == (1,)
    m, Sigma, _ = _collapsed(X, y, np.asarray(old["layer0.Z"]), variance,
                             float(lengthscale[0]), float(old["noise_variance.loc"]),
                             config["layers"][0].jitter, 0.0)  # fmt: skip
    L = np.tril(np.asarray(new["layer0.q_sqrt"][0]))
    np.testing.assert_allclose(new["layer0.q_mu"][:, 0], m, rtol=0, atol=TOL)
    np.testing.assert_allclose(L @ L.T, Sigma, rtol=0, atol=TOL)
    others = {"layer0.variance.loc", "layer0.lengthscales.loc", "noise_variance.loc", "layer0.Z"}
    assert set(new_u) == others | {"layer0.q_mu", "layer0.q_sqrt"}

    def loss(u: dict) -> jax.Array:  # the bound (deterministic here) at the starting q(u)
        p = svi.constrain_fn({**old_u, **u})
        return svi.loss.loss(jax.random.key(0), p, model, guide, X, y)

    g = jax.jit(jax.grad(loss))({k: old_u[k] for k in others})
    for k in others:  # Adam's first step from zero moments: -lr g / (|g| + 1e-8)
        want = old_u[k] - 0.05 * g[k] / (np.abs(g[k]) + 1e-8)
        np.testing.assert_allclose(new_u[k], want, rtol=1e-10, atol=1e-12, err_msg=k)
        assert np.all(np.abs(g[k]) > 1e-6), k  # every coordinate had a gradient to follow


# -- the mixed step in the compiled loop on a DGP --------------------------------------------------


@pytest.fixture(scope="module")
def small_dgp():
    X, y = _data(seed=2)
    model = functools.partial(dgp.dgp_regression, **dgp.init_dgp(X, num_layers=2, num_inducing=M))
    guide = InducingPointGuide(model)
    svi = SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
    state = svi.init(jax.random.key(2), X, y)
    return X, y, svi, guide, state


@pytest.mark.parametrize(
    ("which", "gamma"), [("last", 1.0), ("all", {"layer0": 0.05, "layer1": 0.5})]
)
def test_mixed_step_decreases_the_dgp_loss_in_the_compiled_loop(small_dgp, which, gamma):
    X, y, svi, guide, state = small_dgp
    natstep = natgrad_svi_step(svi, natgrad_layers(guide, which), gamma=gamma)

    def step(s, key, *args):
        del key  # NumPyro's SVIState carries its own key
        return (*natstep(s, *args), None)

    res = run_loop(step, state, 20, jax.random.key(3), args=(X, y), chunk_size=20, progress=False)
    losses = np.asarray(res.losses)  # losses[t]: the one-sample loss of the state before step t
    assert losses.shape == (20,) and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) < losses[0]
    for name in natgrad_layers(guide, which):  # a valid q(u): lower triangular, positive diag
        L = np.asarray(svi.get_params(res.state)[f"{name}.q_sqrt"])
        assert np.all(np.isfinite(L)) and np.all(np.diagonal(L, axis1=-2, axis2=-1) > 0)


# -- bad input ----------------------------------------------------------------------------------


def test_bad_layers_and_gamma_are_named(small_dgp):
    X, y, svi, guide, state = small_dgp
    with pytest.raises(ValueError, match="which must name GP layers"):
        natgrad_layers(guide, ["layer7"])
    with pytest.raises(ValueError, match="layers must be a non-empty sequence"):
        natgrad_svi_step(svi, [])
    with pytest.raises(ValueError, match="gamma must be > 0"):
        natgrad_svi_step(svi, ["layer1"], gamma=0.0)
    with pytest.raises(ValueError, match="one entry per layer"):
        natgrad_svi_step(svi, ["layer0", "layer1"], gamma={"layer1": 0.1})
    with pytest.raises(ValueError, match="received -1.0 for 'layer0'"):
        natgrad_svi_step(svi, ["layer0", "layer1"], gamma={"layer0": -1.0, "layer1": 0.1})
    with pytest.raises(ValueError, match=r"layer9\.q_mu"):
        natgrad_svi_step(svi, ["layer9"])(state, X, y)


def test_svi_takes_natural_gradients_through_fit():
    """``SVI(natgrad="last")`` runs the mixed step inside ``fit``; its options are checked."""
    from ppl_dgp.infer import SVI as SVIMethod
    from ppl_dgp.infer import fit
    from ppl_dgp.models.svgp import init_svgp, svgp_regression

    rng = np.random.default_rng(0)
    X = np.linspace(-2.0, 2.0, 30)[:, None]
    y = np.sin(2.0 * X[:, 0]) + 0.1 * rng.normal(size=30)
    model = functools.partial(svgp_regression, **init_svgp(X, num_inducing=8))
    key = jax.random.key(0)
    nat = fit(SVIMethod(num_steps=20, num_samples=2, natgrad="last"), key, model, X, y)
    adam = fit(SVIMethod(num_steps=20, num_samples=2), key, model, X, y)
    loss_nat, loss_adam = nat.traces["loss"], adam.traces["loss"]
    assert np.all(np.isfinite(loss_nat))
    # the first step already puts q(u) at its optimum given the hyperparameters
    assert loss_nat[1] < loss_adam[1] and loss_nat[-1] < loss_adam[-1]
    with pytest.raises(ValueError, match="SVI.natgrad must be None, 'last' or 'all'"):
        SVIMethod(natgrad="first")
    with pytest.raises(ValueError, match="SVI.natgrad_gamma must be > 0"):
        SVIMethod(natgrad="last", natgrad_gamma=0.0)
