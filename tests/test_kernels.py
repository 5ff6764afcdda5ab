"""Kernels and mean functions against NumPy formulas, PSD-ness, pytree behaviour, validation."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ppl_dgp import kernels as kern  # noqa: E402
from ppl_dgp import mean_functions as mf  # noqa: E402

pytestmark = pytest.mark.strict_rank
D = 2
LS = np.array([0.7, 1.6])


@pytest.fixture
def X():
    return np.random.RandomState(0).uniform(-2, 2, size=(12, D))


@pytest.fixture
def X2():
    return np.random.RandomState(1).uniform(-2, 2, size=(7, D))


def all_kernels():
    ls = jnp.asarray(LS)
    return {
        "SE": kern.SquaredExponential(variance=1.3, lengthscales=ls),
        "SE_scalar_ls": kern.SquaredExponential(variance=0.7, lengthscales=0.9),
        "Matern12": kern.Matern12(variance=1.3, lengthscales=ls),
        "Matern32": kern.Matern32(variance=1.3, lengthscales=ls),
        "Matern52": kern.Matern52(variance=1.3, lengthscales=ls),
        "Linear": kern.Linear(variance=0.5),
        "Linear_ARD": kern.Linear(variance=jnp.array([0.5, 2.0])),
        "Periodic": kern.Periodic(variance=1.1, lengthscales=ls, period=jnp.array([1.5, 2.5])),
        "White": kern.White(variance=0.3),
        "Sum": kern.SquaredExponential(1.0, ls) + kern.Linear(0.2),
        "Product": kern.Matern32(1.0, ls) * kern.Periodic(1.0, 1.0, 2.0),
    }


KERNEL_NAMES = list(all_kernels())


# --------------------------------------------------------------------------------------------
# NumPy references (pairwise differences, not the |a|^2 + |b|^2 - 2ab expansion)
# --------------------------------------------------------------------------------------------


def r_np(X1, X2, ls):
    diff = (X1[:, None, :] - X2[None, :, :]) / ls
    return np.sqrt(np.sum(diff**2, axis=-1))


def stationary_np(name, var, X1, X2, ls):
    r = r_np(X1, X2, ls)
    if name == "SE":
        return var * np.exp(-0.5 * r**2)
    if name == "Matern12":
        return var * np.exp(-r)
    if name == "Matern32":
        return var * (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r)
    if name == "Matern52":
        return var * (1 + np.sqrt(5) * r + 5 / 3 * r**2) * np.exp(-np.sqrt(5) * r)
    raise KeyError(name)


# The kernels compute r^2 as |a|^2 + |b|^2 - 2 a.b: absolute error ~1e-15 |x / l|^2 ~ 1e-14 for
# these inputs, i.e. < 1e-12 relative on every off-diagonal entry (distinct points here have
# r >= 0.1). On the diagonal (X1 == X2) r must be exactly 0: a cancellation residue of 1e-16 in
# r^2 becomes r ~ 1e-8 under the square root, which Matern12 (not smooth at r = 0) shows as a
# 1e-8 relative error - far outside the 1e-9 budget of the reference tests.
RTOL = 1e-10


@pytest.mark.parametrize("name", ["SE", "Matern12", "Matern32", "Matern52"])
def test_stationary_kernels_match_distance_formula(name, X, X2):
    cls = {
        "SE": kern.SquaredExponential,
        "Matern12": kern.Matern12,
        "Matern32": kern.Matern32,
        "Matern52": kern.Matern52,
    }[name]
    k = cls(variance=1.3, lengthscales=jnp.asarray(LS))
    np.testing.assert_allclose(k.K(X, X2), stationary_np(name, 1.3, X, X2, LS), rtol=RTOL)
    np.testing.assert_allclose(k.K(X), stationary_np(name, 1.3, X, X, LS), rtol=RTOL)
    # a scalar lengthscale is the same as a repeated ARD one
    k_iso = cls(variance=1.3, lengthscales=0.8)
    np.testing.assert_allclose(
        k_iso.K(X, X2), stationary_np(name, 1.3, X, X2, np.array([0.8, 0.8])), rtol=RTOL
    )


def test_ard_lengthscales_act_per_dimension(X):
    """Swapping the lengthscales must matter (catches a lengthscale reduced to a scalar)."""
    a = kern.SquaredExponential(1.0, jnp.array([0.5, 3.0])).K(X)
    b = kern.SquaredExponential(1.0, jnp.array([3.0, 0.5])).K(X)
    assert np.max(np.abs(np.asarray(a) - np.asarray(b))) > 1e-2


def test_linear_kernel(X, X2):
    np.testing.assert_allclose(kern.Linear(0.5).K(X, X2), 0.5 * X @ X2.T, rtol=1e-12)
    v = np.array([0.5, 2.0])
    k = kern.Linear(jnp.asarray(v))
    np.testing.assert_allclose(k.K(X, X2), (X * v) @ X2.T, rtol=1e-12)
    np.testing.assert_allclose(k.K(X), (X * v) @ X.T, rtol=1e-12)


def test_periodic_matches_docstring_formula(X, X2):
    p = np.array([1.5, 2.5])
    k = kern.Periodic(variance=1.1, lengthscales=jnp.asarray(LS), period=jnp.asarray(p))
    diff = X[:, None, :] - X2[None, :, :]
    s = np.sin(np.pi * diff / p) / LS
    ref = 1.1 * np.exp(-0.5 * np.sum(s**2, axis=-1))
    np.testing.assert_allclose(k.K(X, X2), ref, rtol=1e-12)
    # periodicity: shifting X by one period along dimension 0 leaves K unchanged
    shift = np.array([p[0], 0.0])
    np.testing.assert_allclose(k.K(X + shift, X2), ref, rtol=1e-10)


def test_white_kernel(X, X2):
    k = kern.White(0.3)
    np.testing.assert_array_equal(k.K(X), 0.3 * np.eye(X.shape[0]))
    np.testing.assert_array_equal(k.K(X, X2), np.zeros((X.shape[0], X2.shape[0])))
    np.testing.assert_array_equal(k.K_diag(X), np.full(X.shape[0], 0.3))


def test_sum_and_product(X, X2):
    a = kern.SquaredExponential(1.0, jnp.asarray(LS))
    b = kern.Linear(0.2)
    np.testing.assert_allclose((a + b).K(X, X2), a.K(X, X2) + b.K(X, X2), rtol=1e-14)
    np.testing.assert_allclose((a * b).K(X, X2), a.K(X, X2) * b.K(X, X2), rtol=1e-14)
    np.testing.assert_allclose((a * b).K_diag(X), a.K_diag(X) * b.K_diag(X), rtol=1e-14)
    np.testing.assert_allclose((a + b)(X, X2), (a + b).K(X, X2), rtol=0)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_symmetric_psd_with_matching_diag(name, X):
    k = all_kernels()[name]
    K = np.asarray(k.K(X))
    assert K.shape == (X.shape[0], X.shape[0])
    np.testing.assert_allclose(K, K.T, rtol=1e-14, atol=0)
    eig = np.linalg.eigvalsh(K)
    assert eig.min() >= -1e-10 * eig.max()
    np.testing.assert_allclose(k.K_diag(X), np.diag(K), rtol=1e-12, atol=0)
    assert k.K_diag(X).shape == (X.shape[0],)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_cross_covariance_shape_and_transpose(name, X, X2):
    k = all_kernels()[name]
    K12 = np.asarray(k.K(X, X2))
    assert K12.shape == (X.shape[0], X2.shape[0])
    np.testing.assert_allclose(K12, np.asarray(k.K(X2, X)).T, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Pytrees
# --------------------------------------------------------------------------------------------


def test_tree_leaves_are_the_hyperparameters():
    ls = jnp.asarray(LS)
    leaves = jax.tree_util.tree_leaves(kern.SquaredExponential(variance=1.5, lengthscales=ls))
    assert len(leaves) == 2
    assert float(leaves[0]) == 1.5
    np.testing.assert_array_equal(leaves[1], LS)
    per = kern.Periodic(variance=1.1, lengthscales=0.4, period=2.5)
    assert [float(v) for v in jax.tree_util.tree_leaves(per)] == [1.1, 0.4, 2.5]
    s = kern.White(0.3) + kern.Linear(0.2) * kern.Matern12(0.9, 0.8)
    assert [float(v) for v in jax.tree_util.tree_leaves(s)] == [0.3, 0.2, 0.9, 0.8]


def test_tree_unflatten_round_trip():
    k = all_kernels()["Sum"]
    leaves, treedef = jax.tree_util.tree_flatten(k)
    k2 = jax.tree_util.tree_unflatten(treedef, [2.0 * leaf for leaf in leaves])
    assert type(k2) is type(k)
    assert float(k2.k1.variance) == 2.0 * float(k.k1.variance)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_jit_with_kernel_argument(name, X, X2):
    k = all_kernels()[name]
    f = jax.jit(lambda k, A, B: (k.K(A, B), k.K_diag(A)))
    K12, Kd = f(k, X, X2)
    np.testing.assert_allclose(K12, k.K(X, X2), rtol=1e-14)
    np.testing.assert_allclose(Kd, k.K_diag(X), rtol=1e-14)


def test_jit_does_not_retrace_for_new_hyperparameter_values(X):
    traces = []

    @jax.jit
    def f(k, A):
        traces.append(None)
        return k.K(A)

    a = f(kern.SquaredExponential(1.0, jnp.asarray(LS)), X)
    b = f(kern.SquaredExponential(2.0, jnp.asarray(2 * LS)), X)
    assert len(traces) == 1
    np.testing.assert_allclose(b, stationary_np("SE", 2.0, X, X, 2 * LS), rtol=RTOL)
    assert not np.allclose(a, b)


def test_matern12_lengthscale_gradient_is_finite_and_correct(X):
    """d/dl_d sum_ij k(x_i, x_j), Matern12, including the r = 0 diagonal (X1 == X2)."""
    var = 1.3

    def loss(ls, explicit_x2):
        k = kern.Matern12(variance=var, lengthscales=ls)
        return jnp.sum(k.K(X, X) if explicit_x2 else k.K(X))

    # analytic: dk/dl_d = var exp(-r) (x_d - x'_d)^2 / (l_d^3 r), and 0 on the diagonal
    diff = X[:, None, :] - X[None, :, :]
    r = r_np(X, X, LS)
    off = ~np.eye(X.shape[0], dtype=bool)
    dk = var * np.exp(-r)[..., None] * diff**2 / LS**3
    ref = np.sum(dk[off] / r[off][:, None], axis=0)

    g = np.asarray(jax.grad(loss)(jnp.asarray(LS), False))
    np.testing.assert_allclose(g, ref, rtol=1e-9)
    # K(X, X) with X2 given explicitly: the sqrt floor must keep the gradient finite (its
    # accuracy on the diagonal is that of |a|^2 + |b|^2 - 2ab, see the note above RTOL)
    g2 = np.asarray(jax.grad(loss)(jnp.asarray(LS), True))
    assert np.all(np.isfinite(g2))

    # a single repeated point: K is the constant variance, so the gradient is exactly zero
    x = X[:1]
    g0 = jax.grad(lambda ls: jnp.sum(kern.Matern12(var, ls).K(x, x)))(jnp.asarray(LS))
    assert np.all(np.isfinite(g0))
    np.testing.assert_array_equal(np.abs(np.asarray(g0)), 0.0)


def test_grad_with_respect_to_a_kernel_pytree(X):
    k = kern.SquaredExponential(variance=1.3, lengthscales=jnp.asarray(LS))
    g = jax.grad(lambda k: -jnp.sum(k.K(X)))(k)  # d/dvariance = -sum(K)/variance < 0
    np.testing.assert_allclose(g.variance, -np.sum(np.asarray(k.K(X))) / 1.3, rtol=1e-12)
    z = jax.tree_util.tree_map(jnp.zeros_like, k)  # what optax does to build its state
    assert float(z.variance) == 0.0


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

BAD_VALUES = [0.0, -1.0, float("nan"), float("inf")]


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize(
    "cls", [kern.SquaredExponential, kern.Matern12, kern.Matern32, kern.Matern52, kern.Periodic]
)
@pytest.mark.parametrize("field", ["variance", "lengthscales"])
def test_nonpositive_hyperparameters_raise(cls, field, bad):
    with pytest.raises(ValueError, match=field):
        cls(**{field: bad})
    with pytest.raises(ValueError, match=field):
        cls(**{field: jnp.array([1.0, bad])})


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_nonpositive_period_and_variances_raise(bad):
    with pytest.raises(ValueError, match="period"):
        kern.Periodic(period=bad)
    with pytest.raises(ValueError, match="variance"):
        kern.Linear(variance=bad)
    with pytest.raises(ValueError, match="variance"):
        kern.Linear(variance=np.array([1.0, bad]))
    with pytest.raises(ValueError, match="variance"):
        kern.White(variance=bad)


@pytest.mark.parametrize(
    "cls", [kern.SquaredExponential, kern.Matern12, kern.Matern32, kern.Matern52]
)
def test_wrong_lengthscale_length_raises(cls, X):
    k = cls(variance=1.0, lengthscales=jnp.array([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="lengthscales"):
        k.K(X)
    with pytest.raises(ValueError, match="lengthscales"):
        k.K(X, X)


def test_periodic_wrong_lengthscale_length_raises(X):
    with pytest.raises(ValueError, match="lengthscales"):
        kern.Periodic(lengthscales=jnp.array([1.0, 1.0, 1.0])).K(X)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_rank_one_inputs_raise(name, X):
    k = all_kernels()[name]
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        k.K(X[:, 0])
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        k.K_diag(X[:, 0])
    with pytest.raises(ValueError, match="X2"):
        k.K(X, X[:, 0])


# --------------------------------------------------------------------------------------------
# Mean functions
# --------------------------------------------------------------------------------------------


def test_zero_mean(X):
    m = mf.Zero(output_dim=3)(X)
    assert m.shape == (X.shape[0], 3)
    np.testing.assert_array_equal(m, 0.0)
    assert mf.Zero()(X).shape == (X.shape[0], 1)


def test_identity_mean(X):
    np.testing.assert_array_equal(mf.Identity()(jnp.asarray(X)), X)


def test_constant_mean(X):
    m = mf.Constant(2.5)(X)
    assert m.shape == (X.shape[0], 1)
    np.testing.assert_array_equal(m, 2.5)
    c = np.array([1.0, -2.0, 3.0])
    m = mf.Constant(jnp.asarray(c))(X)
    assert m.shape == (X.shape[0], 3)
    np.testing.assert_array_equal(m, np.broadcast_to(c, (X.shape[0], 3)))


def test_linear_mean(X):
    rs = np.random.RandomState(3)
    A, b = rs.randn(D, 3), rs.randn(3)
    np.testing.assert_allclose(mf.Linear(A=A, b=b)(X), X @ A + b, rtol=1e-12)
    np.testing.assert_allclose(mf.Linear(A=A)(X), X @ A, rtol=1e-12)
    with pytest.raises(ValueError, match="A must have shape"):
        mf.Linear(A=rs.randn(D + 1, 3))(X)


def _data(N=40, D_=4):
    rs = np.random.RandomState(4)
    # anisotropic, shifted data with distinct singular values
    return rs.randn(N, D_) * np.array([3.0, 2.0, 1.0, 0.5])[:D_] @ np.linalg.qr(rs.randn(D_, D_))[
        0
    ] + np.arange(D_)


def test_pca_projection_fewer_outputs():
    X = _data()
    m = mf.pca_projection(jnp.asarray(X), 2)
    A = np.asarray(m.A)
    assert A.shape == (4, 2)
    np.testing.assert_allclose(A.T @ A, np.eye(2), atol=1e-12)
    _, _, Vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
    # the columns are the top-2 principal directions, up to sign
    np.testing.assert_allclose(np.abs(A.T @ Vt[:2].T), np.eye(2), atol=1e-10)
    np.testing.assert_allclose(m(jnp.asarray(X)), X @ A, rtol=1e-12)


def test_pca_projection_more_outputs_pads_with_zeros():
    X = _data(D_=3)
    m = mf.pca_projection(jnp.asarray(X), 5)
    A = np.asarray(m.A)
    assert A.shape == (3, 5)
    np.testing.assert_allclose(A[:, :3].T @ A[:, :3], np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(A[:, 3:], 0.0)
    out = np.asarray(m(jnp.asarray(X)))
    assert out.shape == (X.shape[0], 5)
    np.testing.assert_array_equal(out[:, 3:], 0.0)


def test_pca_projection_same_width_is_identity():
    X = _data()
    m = mf.pca_projection(jnp.asarray(X), 4)
    np.testing.assert_array_equal(m.A, np.eye(4))
    np.testing.assert_array_equal(m(jnp.asarray(X)), X)


def test_pca_projection_errors():
    with pytest.raises(ValueError, match="Q must be"):
        mf.pca_projection(jnp.asarray(_data()), 0)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        mf.pca_projection(jnp.ones(5), 1)
