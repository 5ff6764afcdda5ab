"""Pathwise function samples (``ppl_dgp.sampling``, ``ppl_dgp.pathwise``) against the analytic
conditionals, within Monte Carlo error.

Tolerances are Monte Carlo standard errors computed from the samples themselves, never fitted
to the output: an estimate is a mean of ``n`` i.i.d. terms ``t``, its standard error is
``std(t) / sqrt(n)``, and every entry must lie within ``Z_TOL = 5`` standard errors of its
reference (a two-sided normal tail of 6e-7 per entry; a few hundred entries per test keep the
chance of a false failure below 1e-3, and the seeds are fixed). Each test also asserts that its
standard errors are small against the quantities compared, so a loose bound cannot pass a
wrong answer silently.

- RFF covariance: ``phi(x)^T phi(x') = (1/L) sum_l t_l`` with ``t_l = 2 s^2 cos(a_l) cos(b_l)``,
  unbiased for ``k(x, x')`` (Bochner), so ``|phi^T phi - K| <= Z_TOL se`` with
  ``se = std_l(t_l) / sqrt(L)``.
- Pathwise draws: each draw has its own features, so with the jitter term the draws' mean and
  covariance equal the analytic conditional's for any ``L`` (see ``ppl_dgp.sampling``): the
  sample mean is within ``Z_TOL sqrt(var / S)`` and each sample covariance entry within
  ``Z_TOL std_s((f_i - m_i)(f_j - m_j)) / sqrt(S)``.
"""

import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ppl_dgp.conditionals import conditional  # noqa: E402
from ppl_dgp.infer import MAP, NUTS, SVI, fit  # noqa: E402
from ppl_dgp.infer.svi import InducingApprox  # noqa: E402
from ppl_dgp.kernels import (  # noqa: E402
    Matern12,
    Matern32,
    Matern52,
    Periodic,
    SquaredExponential,
)
from ppl_dgp.layers import Hyper, LayerSpec  # noqa: E402
from ppl_dgp.linalg import cholesky  # noqa: E402
from ppl_dgp.mean_functions import Identity, Linear, Zero  # noqa: E402
from ppl_dgp.pathwise import evaluate, function_samples  # noqa: E402
from ppl_dgp.posterior import Posterior  # noqa: E402
from ppl_dgp.sampling import (  # noqa: E402
    FunctionSample,
    evaluate_draws,
    feature_map,
    rff_features,
    sample_layer_function,
    sample_variational_function,
)
from ppl_dgp.sampling import evaluate as evaluate_one  # noqa: E402

#: Thousands of draws through every layer: these tests run more than they compile, so they
#: compile with XLA's passes on (tests/conftest.py).
pytestmark = pytest.mark.xla_optimised
Z_TOL = 5.0
KERNELS = {
    "se": SquaredExponential,
    "matern12": Matern12,
    "matern32": Matern32,
    "matern52": Matern52,
}


def _random_q(rs, M, Q, scale=0.3):
    q_mu = rs.randn(M, Q)
    q_sqrt = np.tril(scale * rs.randn(Q, M, M))
    q_sqrt[:, np.arange(M), np.arange(M)] = np.abs(q_sqrt[:, np.arange(M), np.arange(M)]) + 0.05
    return q_mu, q_sqrt


def _assert_moments(F, mean, cov, *, max_se):
    """``F [S, N, Q]`` draws against ``mean [N, Q]``, ``cov [Q, N, N]`` within ``Z_TOL`` s.e."""
    F, mean, cov = np.asarray(F), np.asarray(mean), np.asarray(cov)
    S = F.shape[0]
    m_hat = F.mean(axis=0)  # [N, Q]
    se_mean = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1).T / S)  # [N, Q]
    assert np.all(np.abs(m_hat - mean) <= Z_TOL * se_mean), np.max(np.abs(m_hat - mean) / se_mean)
    R = F - m_hat  # [S, N, Q]
    terms = np.einsum("sia,sja->asij", R, R)  # [Q, S, N, N]
    cov_hat = terms.mean(axis=1) * S / (S - 1)
    se_cov = terms.std(axis=1) / np.sqrt(S)
    z = np.abs(cov_hat - cov) / se_cov
    assert np.all(z <= Z_TOL), f"max |z| = {z.max():.2f}"
    assert se_cov.max() <= max_se, se_cov.max()  # the bound is tight enough to mean something
    # and the reference is far from trivial: a draw's covariance is not a multiple of se
    assert np.max(np.abs(cov)) > 20 * se_cov.max()
    return z.max()


# -- (1) RFF covariance converges to the kernel -------------------------------------------------


@pytest.mark.strict_rank
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_rff_covariance_converges_to_the_kernel(name):
    """Many features (L = 50,000), ARD in D = 2: ``phi phi^T`` within 5 s.e. of ``K``.

    The 2-D check tells the multivariate Student-t (one Gamma per frequency) from a product of
    1-D ones (independent per coordinate): that would give a product kernel, off by up to
    0.1 here against a standard error of about 0.006.
    """
    L = 50_000
    rs = np.random.RandomState(1)
    X = jnp.asarray(rs.uniform(-1.5, 1.5, size=(8, 2)))
    kernel = KERNELS[name](variance=1.3, lengthscales=jnp.array([0.7, 1.6]))
    feats = rff_features(kernel, jax.random.key(2), L, 2)
    assert feats.omega.shape == (L, 2) and feats.phase.shape == (L,)
    Phi = np.asarray(feature_map(kernel, feats, X))  # [N, L]
    terms = L * Phi[:, None, :] * Phi[None, :, :]  # [N, N, L]: mean over l is phi^T phi
    est = terms.mean(axis=-1)
    se = terms.std(axis=-1) / np.sqrt(L)
    K = np.asarray(kernel.K(X))
    np.testing.assert_allclose(est, Phi @ Phi.T, rtol=1e-10)
    assert np.all(np.abs(est - K) <= Z_TOL * se), np.max(np.abs(est - K) / se)
    assert se.max() < 0.01


def test_rff_refuses_a_kernel_without_a_spectral_density():
    with pytest.raises(TypeError, match="spectral density"):
        rff_features(Periodic(), jax.random.key(0), 10, 1)


# -- (2) SVGP: pathwise draws match the analytic posterior -------------------------------------


def _draws_at(key, X, S, draw_fn, batch_size=500):
    """``S`` draws ``draw_fn(key) -> FunctionSample`` evaluated at ``X``, ``batch_size`` at a
    time (the draws are never all in memory)."""
    return jax.lax.map(
        lambda k: evaluate_one(draw_fn(k), X), jax.random.split(key, S), batch_size=batch_size
    )


@pytest.mark.strict_rank
@pytest.mark.parametrize("whiten", [True, False])
@pytest.mark.parametrize("diag", [False, True])
def test_svgp_draws_match_the_analytic_posterior(whiten, diag):
    """S = 4000 draws, L = 2000 features: mean and full covariance within 5 s.e. of
    ``conditional(..., full_cov=True)``, at inputs near ``Z`` (the update dominates) and far
    from it (the prior part dominates)."""
    rs = np.random.RandomState(3)
    M, Q = 6, 1
    Z = jnp.asarray(np.linspace(-2.0, 2.0, M)[:, None])
    X = jnp.asarray(np.concatenate([np.linspace(-2.5, 2.5, 6), [4.0, 6.0]])[:, None])
    kernel = SquaredExponential(variance=1.5, lengthscales=0.8)
    q_mu, q_sqrt = _random_q(rs, M, Q)
    if diag:
        q_sqrt = np.abs(rs.randn(M, Q)) * 0.3 + 0.05  # [M, Q] standard deviations
    q_mu, q_sqrt = jnp.asarray(q_mu), jnp.asarray(q_sqrt)
    draw = functools.partial(
        sample_variational_function, kernel=kernel, Z=Z, q_mu=q_mu, q_sqrt=q_sqrt,
        num_features=2000, whiten=whiten, Lmm=cholesky(kernel.K(Z)),
    )  # fmt: skip
    F = _draws_at(jax.random.key(4), X, 4000, lambda k: draw(k))
    mean, cov = conditional(kernel, X, Z, q_mu, q_sqrt, whiten=whiten, full_cov=True)
    _assert_moments(F, mean, cov, max_se=0.05)


@pytest.mark.strict_rank
def test_svgp_draws_of_u_from_a_sampler_match_the_analytic_posterior():
    """A sampler's posterior (NUTS-shaped draws of ``layer0.u`` and the hyperparameters):
    ``function_samples`` pairs each stored ``u`` with fresh features; over draws of ``u`` from
    ``N(q_mu, S)`` the functions' moments are the analytic ``q(f)`` (whitened, as the zoo)."""
    rs = np.random.RandomState(5)
    M, Q, S = 5, 1, 4000
    Z = np.linspace(-2.0, 2.0, M)[:, None]
    q_mu, q_sqrt = _random_q(rs, M, Q)
    v = q_mu.T[None] + np.einsum("qmk,skq->sqm", q_sqrt, rs.randn(S, M, Q))  # [S, Q, M]
    spec = LayerSpec(
        num_outputs=1,
        Z=Z + 0.3,
        kernel="matern32",
        variance=Hyper(1.0, prior=None),
        lengthscales=Hyper(np.array([1.0])),
    )
    post = Posterior(
        draws={
            "layer0.u": v[None],
            "layer0.lengthscales": np.full((1, S, 1), 0.9),
            "noise_variance": np.full((1, S), 0.1),
        },
        params={"layer0.Z": Z, "layer0.variance": np.array(1.7)},  # a param, not a draw
        method=NUTS(num_chains=1),
    )
    X = jnp.asarray(np.linspace(-3.0, 3.0, 7)[:, None])
    parts = []  # four chunks of 1000 stored draws each (bounded memory), each draw used once
    for c, k in enumerate(jax.random.split(jax.random.key(6), 4)):
        chunk = post.replace(
            draws={n: d[:, c * 1000 : (c + 1) * 1000] for n, d in post.draws.items()}
        )
        draws = function_samples(k, (spec,), chunk, num_samples=1000, num_features=2000)
        parts.append(evaluate(draws, X))
    F = np.concatenate(parts)
    kernel = Matern32(variance=1.7, lengthscales=jnp.array([0.9]))
    mean, cov = conditional(kernel, X, jnp.asarray(Z), jnp.asarray(q_mu), jnp.asarray(q_sqrt),
                            whiten=True, full_cov=True)  # fmt: skip
    _assert_moments(F, mean, cov, max_se=0.05)


# -- (3) a DGP layer given its inputs -----------------------------------------------------------


def _dgp_posterior(rs, specs, method):
    """A two-layer DGP's SVI posterior by hand: ``q(u)`` per layer, medians, fitted ``Z``."""
    q0, q1 = _random_q(rs, 5, 3), _random_q(rs, 4, 1)
    Z0, Z1 = rs.uniform(-2, 2, size=(5, 2)), rs.uniform(-2, 2, size=(4, 3))
    approx = InducingApprox(
        q_mu={"layer0": q0[0], "layer1": q1[0]},
        q_sqrt={"layer0": q0[1], "layer1": q1[1]},
        medians={
            "layer0.variance": np.array(1.2),
            "layer0.lengthscales": np.array([0.8, 1.5]),
            "layer1.variance": np.array(0.9),
            "layer1.lengthscales": np.array([1.1, 0.7, 2.0]),
            "noise_variance": np.array(0.05),
        },
        guide_params={},
    )
    return Posterior(draws={}, method=method, params={"layer0.Z": Z0, "layer1.Z": Z1},
                     approx=approx)  # fmt: skip


def _dgp_specs():
    """Two layer specs; ``Z`` comes from ``posterior.params`` (the spec's gives its shape)."""
    A = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]])  # [D=2, Q=3]: a linear mean (PCA-like)
    return (
        LayerSpec(num_outputs=3, Z=np.zeros((5, 2)), kernel="matern52",
                  mean_function=Linear(A=A, b=np.zeros(3)),
                  variance=Hyper(1.0, prior=None), lengthscales=Hyper(np.ones(2))),
        LayerSpec(num_outputs=1, Z=np.zeros((4, 3)), kernel="se", mean_function=Zero(),
                  variance=Hyper(1.0), lengthscales=Hyper(np.ones(3))),
    )  # fmt: skip


@pytest.mark.strict_rank
def test_dgp_layers_given_their_inputs_match_the_analytic_conditional():
    """SVI posterior of a 2-layer DGP (3 outputs, Matérn-5/2 ARD, linear mean; then SE ARD):
    each layer's draws at given inputs match ``conditional`` + mean function (full covariance
    per output), and the three outputs of the inner layer are uncorrelated (5 s.e.)."""
    rs = np.random.RandomState(7)
    specs = _dgp_specs()
    post = _dgp_posterior(rs, specs, SVI())
    X = jnp.asarray(rs.uniform(-2.5, 2.5, size=(6, 2)))
    H = jnp.asarray(rs.uniform(-2.5, 2.5, size=(6, 3)))  # given inputs of the second layer
    F0, F1 = [], []
    for k in jax.random.split(jax.random.key(8), 4):
        draws = function_samples(k, specs, post, num_samples=1000, num_features=1500)
        F0.append(evaluate_draws(draws[0], X))
        F1.append(evaluate_draws(draws[1], H))
    F0, F1 = np.concatenate(F0), np.concatenate(F1)
    a = post.approx
    k0 = Matern52(variance=1.2, lengthscales=jnp.array([0.8, 1.5]))
    mean0, cov0 = conditional(k0, X, jnp.asarray(post.params["layer0.Z"]),
                              jnp.asarray(a.q_mu["layer0"]), jnp.asarray(a.q_sqrt["layer0"]),
                              whiten=True, full_cov=True)  # fmt: skip
    mean0 = mean0 + specs[0].mean_function(X)
    _assert_moments(F0, mean0, cov0, max_se=0.06)
    k1 = SquaredExponential(variance=0.9, lengthscales=jnp.array([1.1, 0.7, 2.0]))
    mean1, cov1 = conditional(k1, H, jnp.asarray(post.params["layer1.Z"]),
                              jnp.asarray(a.q_mu["layer1"]), jnp.asarray(a.q_sqrt["layer1"]),
                              whiten=True, full_cov=True)  # fmt: skip
    _assert_moments(F1, mean1, cov1, max_se=0.06)
    # outputs are independent given the layer's input: cross-covariances vanish
    R = F0 - F0.mean(axis=0)
    for a_, b_ in ((0, 1), (0, 2), (1, 2)):
        t = R[:, :, a_][:, :, None] * R[:, :, b_][:, None, :]  # [S, N, N]
        z = np.abs(t.mean(axis=0)) / (t.std(axis=0) / np.sqrt(t.shape[0]))
        assert np.all(z <= Z_TOL), z.max()


@pytest.mark.strict_rank
def test_deep_draw_is_the_composition_of_its_layers():
    rs = np.random.RandomState(9)
    specs = _dgp_specs()
    post = _dgp_posterior(rs, specs, SVI())
    draws = function_samples(jax.random.key(10), specs, post, num_samples=16, num_features=64)
    X = jnp.asarray(rs.uniform(-2, 2, size=(11, 2)))
    H = evaluate_draws(draws[0], X)  # [S, N, 3]
    by_hand = jax.vmap(evaluate_one)(draws[1], H)
    np.testing.assert_allclose(evaluate(draws, X), by_hand, rtol=1e-12, atol=1e-12)
    assert evaluate(draws, X).shape == (16, 11, 1)


# -- (4) consistency ----------------------------------------------------------------------------


@pytest.mark.strict_rank
def test_a_draw_gives_the_same_values_at_the_same_inputs():
    """Evaluate at X twice (bit for bit), at a superset in another order, and in batches."""
    rs = np.random.RandomState(11)
    specs = _dgp_specs()
    post = _dgp_posterior(rs, specs, SVI())
    draws = function_samples(jax.random.key(12), specs, post, num_samples=32, num_features=256)
    X = jnp.asarray(rs.uniform(-3, 3, size=(20, 2)))
    X_more = jnp.asarray(rs.uniform(-3, 3, size=(37, 2)))
    F = evaluate(draws, X)
    np.testing.assert_array_equal(F, evaluate(draws, X))
    sup = evaluate(draws, jnp.concatenate([X_more, X[::-1]]))  # X reversed, after others
    np.testing.assert_allclose(sup[:, 37:][:, ::-1], F, rtol=0, atol=1e-10)
    np.testing.assert_allclose(evaluate(draws, X, batch_size=5), F, rtol=0, atol=1e-10)
    one = jax.tree.map(lambda a: a[:1], draws)  # the first draw alone, point by point
    pts = np.concatenate([evaluate(one, X[i : i + 1]) for i in range(3)], axis=1)
    np.testing.assert_allclose(pts, F[:1, :3], rtol=0, atol=1e-10)
    # different draws are different functions; the same key gives the same draws
    assert np.min(np.std(np.asarray(F), axis=0)) > 1e-3
    again = function_samples(jax.random.key(12), specs, post, num_samples=32, num_features=256)
    np.testing.assert_array_equal(evaluate(again, X), F)


@pytest.mark.strict_rank
def test_a_layer_draw_interpolates_u_at_z_up_to_the_jitter():
    """At ``Z`` a draw is ``u`` observed with the jitter as noise: at a large jitter (1e-2) the
    draws have mean ``K (K + eps I)^{-1} u`` and covariance ``K - K (K + eps I)^{-1} K``
    (5 s.e.); with the default jitter ``f(Z) = u`` to about ``sqrt(1e-6)``."""
    kernel = Matern12(variance=1.0, lengthscales=0.7)
    Z = jnp.linspace(-1.0, 1.0, 4)[:, None]
    u = jnp.array([[0.3], [-1.0], [0.5], [2.0]])
    eps = 1e-2
    Lmm = cholesky(kernel.K(Z), eps)
    F = _draws_at(jax.random.key(13), Z, 4000, lambda k: sample_layer_function(
        k, kernel, Z, u, num_features=200, jitter=eps, Lmm=Lmm))[..., 0]  # fmt: skip
    # the factor of Kmm + eps I: the update is K (K + eps I)^-1 (u - prior(Z) - sqrt(eps) e)
    K = np.asarray(kernel.K(Z))
    A = K @ np.linalg.inv(K + eps * np.eye(4))
    mean = A @ np.asarray(u)[:, 0]
    cov = K - A @ K  # the posterior of f(Z) given u observed with noise eps
    _assert_moments(F[..., None], mean[:, None], cov[None], max_se=1e-3)


def test_function_samples_need_the_layer_specs_and_the_draws():
    post = Posterior(draws={"w": np.zeros((1, 3))}, method=NUTS(num_chains=1))
    with pytest.raises(ValueError, match="layer specs"):
        function_samples(jax.random.key(0), lambda X: X, post)
    spec = LayerSpec(num_outputs=1, Z=np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"no draws of \['layer0.u'\]"):
        function_samples(jax.random.key(0), (spec,), post)


# -- the real fits: site names as the methods store them ---------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        SVI(num_steps=20, num_samples=4),
        pytest.param(  # 20 steps: a smoke fit, not a converged MAP
            MAP(num_steps=20),
            marks=pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning"),
        ),
    ],
    ids=["svi", "map"],
)
def test_function_samples_of_a_fitted_dgp(method):
    """A zoo DGP (2 layers) fitted by SVI (``q(u)``) and MAP (a draw of ``u``): the site and
    param names the methods store are found, and the draws are finite and consistent."""
    from ppl_dgp.models import MODELS

    X = np.linspace(-2.0, 2.0, 16)[:, None]
    y = np.sin(2.0 * X[:, 0])
    model = MODELS["dgp"].make(X, smoke=True)
    post = fit(method, jax.random.key(0), model, X, y)
    draws = function_samples(jax.random.key(1), model, post, num_samples=6, num_features=64)
    assert [d.update.shape for d in draws] == [(6, 5, 1), (6, 5, 1)]
    assert isinstance(draws[0], FunctionSample)
    assert isinstance(draws[0].mean_function, Identity)
    assert isinstance(draws[1].mean_function, Zero)
    F = evaluate(draws, X)
    assert F.shape == (6, 16, 1) and np.all(np.isfinite(F))
    np.testing.assert_allclose(evaluate(draws, X[::3]), F[:, ::3], rtol=0, atol=1e-10)
