"""Hybrid NN -> GP regression and classification (``ppl_dgp.models.hybrid``): an identity
network is the deep GP (log joint and doubly-stochastic bound), Z lives in the inferred feature
space, errors."""

import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from numpyro.handlers import seed, trace  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402

from ppl_dgp.elbo import DoublyStochasticELBO, elbo_terms  # noqa: E402
from ppl_dgp.guides import InducingPointGuide  # noqa: E402
from ppl_dgp.models.dgp import dgp_regression, init_dgp  # noqa: E402
from ppl_dgp.models.hybrid import (  # noqa: E402
    build_hybrid,
    build_hybrid_classification,
    hybrid_classification,
    hybrid_features,
    hybrid_regression,
    init_hybrid,
    median_distance,
    pca_network_init,
)

N = 12
X = jnp.stack([jnp.linspace(-2.0, 2.0, N), jnp.cos(jnp.linspace(0.0, 3.0, N))], axis=1)
Y = jnp.sin(2.0 * X[:, 0]) + X[:, 1]


def _params(model, guide):
    svi = numpyro.infer.SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
    return dict(svi.get_params(svi.init(jax.random.key(0), X, Y)))


def test_identity_network_is_the_dgp():
    """W = I, b = 0, identity activation: the hybrid's log joint is the DGP's plus the weights'
    log prior, and so is its doubly-stochastic bound at the same key (point-estimated
    weights), to 1e-10; with hidden=() the programs are the same."""
    config = init_dgp(X, num_layers=2, num_inducing=5)
    plain = functools.partial(dgp_regression, **config)
    hyb = functools.partial(hybrid_regression, **config, hidden=(2,), activation="identity",
                            prior_precision=2.0)  # fmt: skip
    tr = trace(seed(plain, 3)).get_trace(X, Y)
    values = {k: v["value"] for k, v in tr.items() if v["type"] in ("sample", "param")}
    net = {"net0.W": jnp.eye(2), "net0.b": jnp.zeros(2)}
    lp_plain, _ = log_density(plain, (X, Y), {}, values)
    lp_hyb, tr_h = log_density(hyb, (X, Y), {}, {**values, **net})
    # N(0, 1/2) priors: log N(I; 0, 1/2) over 4 entries and log N(0; 0, 1/2) over 2
    log_prior = 6 * 0.5 * np.log(2.0 / (2 * np.pi)) - 0.5 * 2.0 * 2  # 2 ones in W
    assert float(lp_hyb) - float(lp_plain) == pytest.approx(log_prior, abs=1e-10)

    guide_p, guide_h = InducingPointGuide(plain), InducingPointGuide(hyb)
    params = _params(plain, guide_p)
    params_h = _params(hyb, guide_h)
    assert set(params_h) - set(params) == {"net0.W.loc", "net0.b.loc"}
    params_h = {**params, "net0.W.loc": net["net0.W"], "net0.b.loc": net["net0.b"]}
    for s in range(2):
        key = jax.random.key(20 + s)
        a = elbo_terms(key, params, plain, guide_p, X, Y)["elbo"]
        b = elbo_terms(key, params_h, hyb, guide_h, X, Y)["elbo"]
        assert float(b) - float(a) == pytest.approx(log_prior, abs=1e-10)

    none = functools.partial(hybrid_regression, **config, hidden=())
    tr_n = trace(seed(none, 3)).get_trace(X, Y)
    assert list(tr_n) == list(tr)
    for k in tr:
        np.testing.assert_array_equal(tr_n[k]["value"], tr[k]["value"])


def test_inducing_points_live_in_the_inferred_feature_space():
    config = init_hybrid(X, hidden=(5, 3), num_layers=2, num_inducing=4)
    Z = config["layers"][0].Z
    assert np.shape(Z) == (4, 3)
    F = hybrid_features(X, hidden=(5, 3))
    assert F.shape == (N, 3)
    # every Z row is a k-means centre of the features: inside their bounding box
    assert np.all(Z >= F.min(0) - 1e-12) and np.all(Z <= F.max(0) + 1e-12)
    # the features are those of the program at its initial weights (dense's init values)
    model = functools.partial(hybrid_regression, **config)
    tr = trace(seed(model, 0)).get_trace(X, Y)
    H = X
    for l in range(2):
        H = jnp.tanh(H @ tr[f"net{l}.W"]["infer"]["init"] + tr[f"net{l}.b"]["infer"]["init"])
    np.testing.assert_allclose(H, F, rtol=1e-12)
    assert tr["layer0.Z"]["value"].shape == (4, 3) and tr["layer1.Z"]["value"].shape == (4, 3)


def test_errors_name_the_argument():
    config = init_dgp(X, num_layers=1, num_inducing=4)  # Z has the input width 2
    model = functools.partial(hybrid_regression, **config, hidden=(3,))
    with pytest.raises(ValueError, match=r"feature width 3 .* received Z of shape \(4, 2\)"):
        trace(seed(model, 0)).get_trace(X, Y)
    with pytest.raises(ValueError, match="activation must be one of"):
        init_hybrid(X, hidden=(3,), activation="swish")
    with pytest.raises(ValueError, match=r"hidden widths must be positive ints; received \(0,\)"):
        init_hybrid(X, hidden=(0,))
    assert build_hybrid(X, num_inducing=4, layers=1, width=2).keywords["hidden"] == (2,)


def test_median_lengthscales_are_the_median_pairwise_distance_of_each_layers_inputs():
    """median_distance against scipy's pdist (duplicates dropped); init_hybrid's "median"
    puts each layer's lengthscales there (the features, then their PCA mean to the inner
    width) with a LogNormal(log of it, 1) prior."""
    from scipy.spatial.distance import pdist

    H = np.vstack([np.asarray(X), np.asarray(X[:2])])  # two duplicate rows: distance 0
    d = pdist(H)
    assert median_distance(H) == pytest.approx(float(np.median(d[d > 0])), rel=1e-12)
    assert median_distance(H, max_rows=5) == pytest.approx(float(np.median(pdist(H[:5]))))
    config = init_hybrid(X, hidden=(4,), num_layers=2, num_inducing=4, width=3,
                         lengthscale="median")  # fmt: skip
    F = hybrid_features(X, hidden=(4,))
    first, second = config["layers"]
    inner = np.asarray(first.mean_function(jnp.asarray(F)))
    for spec, inputs in ((first, F), (second, inner)):
        ell = float(np.median(pdist(inputs)))
        np.testing.assert_allclose(spec.lengthscales.init, np.full(inputs.shape[1], ell))
        assert float(spec.lengthscales.prior.loc) == pytest.approx(np.log(ell))
        assert float(spec.lengthscales.prior.scale) == 1.0
    with pytest.raises(ValueError, match="lengthscale must be a positive number or 'median'"):
        init_hybrid(X, hidden=(4,), lengthscale="mean")
    with pytest.raises(ValueError, match="at least two distinct rows"):
        median_distance(np.ones((3, 2)))


def test_pca_network_init_starts_at_the_scaled_principal_components():
    """network_init="pca": the first layer's pre-activations are the centred inputs' principal
    component scores (eigenvectors of the covariance, up to sign) over the first one's sd; the
    program starts there and Z lies among the features it gives."""
    rng = np.random.default_rng(1)
    Xw = rng.normal(size=(30, 4)) @ np.diag([3.0, 2.0, 1.0, 0.5]) + 1.0
    (W0, b0), (W1, _) = pca_network_init(Xw, (2, 3))
    assert W0.shape == (4, 2) and W1.shape == (2, 3)
    evals, evecs = np.linalg.eigh(np.cov(Xw.T, bias=True))
    V = evecs[:, ::-1][:, :2]
    scores = (Xw - Xw.mean(0)) @ V / np.sqrt(evals[-1])
    Zpre = Xw @ W0 + b0
    np.testing.assert_allclose(np.abs(Zpre), np.abs(scores), rtol=1e-8, atol=1e-10)
    assert np.std(Zpre[:, 0]) == pytest.approx(1.0)
    config = init_hybrid(Xw, hidden=(2,), num_layers=1, num_inducing=4, network_init="pca")
    model = functools.partial(hybrid_regression, **config)
    tr = trace(seed(model, 0)).get_trace(jnp.asarray(Xw), jnp.zeros(30))
    np.testing.assert_allclose(tr["net0.W"]["infer"]["init"], pca_network_init(Xw, (2,))[0][0])
    F = hybrid_features(Xw, hidden=(2,), network_init=config["network_init"])
    np.testing.assert_allclose(F, np.tanh(Zpre), rtol=1e-12)
    Z = config["layers"][0].Z
    assert np.all(Z >= F.min(0) - 1e-12) and np.all(Z <= F.max(0) + 1e-12)
    with pytest.raises(ValueError, match=r"hidden\[0\] must be <= min\(N, D\) = 4"):
        pca_network_init(Xw, (5,))
    with pytest.raises(ValueError, match="network_init must be None or 'pca'"):
        init_hybrid(Xw, hidden=(2,), network_init="svd")


# -- hybrid_classification -----------------------------------------------------------------------

LABELS = (X[:, 0] > 0).astype(jnp.int32)
LABELS3 = jnp.asarray(np.arange(N) % 3, dtype=jnp.int32)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_classifier_with_identity_network_is_the_dgp_classifier(num_classes):
    """W = I, b = 0, identity activation: the hybrid classifier's log joint is the DGP
    classifier's (Bernoulli probit / robust-max, last layer marginalised) plus the weights' log
    prior, to 1e-10; with hidden=() the sites and values are the DGP classifier's."""
    from ppl_dgp.models.gp_classification import (
        classification_likelihood,
        dgp_classification,
        init_dgp_classification,
    )

    y = LABELS if num_classes == 2 else LABELS3
    lik = classification_likelihood(num_classes=num_classes)
    config = init_dgp_classification(X, likelihood=lik, num_layers=2, num_inducing=5)
    plain = functools.partial(dgp_classification, **config)
    hyb = functools.partial(hybrid_classification, **config, hidden=(2,),
                            activation="identity", prior_precision=2.0)  # fmt: skip
    tr = trace(seed(plain, 3)).get_trace(X, y)
    values = {k: v["value"] for k, v in tr.items() if v["type"] in ("sample", "param")}
    values = {k: v for k, v in values.items() if k != "y"}
    net = {"net0.W": jnp.eye(2), "net0.b": jnp.zeros(2)}
    lp_plain, _ = log_density(plain, (X, y), {}, values)
    lp_hyb, tr_h = log_density(hyb, (X, y), {}, {**values, **net})
    log_prior = 6 * 0.5 * np.log(2.0 / (2 * np.pi)) - 0.5 * 2.0 * 2
    assert float(lp_hyb) - float(lp_plain) == pytest.approx(log_prior, abs=1e-10)
    np.testing.assert_allclose(tr_h["f"]["value"], tr["f"]["value"], rtol=1e-12)

    none = functools.partial(hybrid_classification, **config, hidden=())
    tr_n = trace(seed(none, 3)).get_trace(X, y)
    assert list(tr_n) == list(tr)
    for k in tr:
        np.testing.assert_array_equal(tr_n[k]["value"], tr[k]["value"])


def test_classifier_builds_z_in_feature_space_and_checks_labels():
    model = build_hybrid_classification(X, num_inducing=4, layers=2, width=3, y=LABELS3)
    assert model.keywords["likelihood"].num_classes == 3
    assert model.keywords["layers"][-1].num_outputs == 3
    assert np.shape(model.keywords["layers"][0].Z) == (4, 3)
    tr = trace(seed(model, 0)).get_trace(X, LABELS3)
    assert tr["f"]["value"].shape == (N, 3) and tr["net0.W"]["value"].shape == (2, 3)
    with pytest.raises(ValueError, match="y"):
        trace(seed(model, 0)).get_trace(X, LABELS3 + 5)
    config = init_dgp(X, num_layers=1, num_inducing=4)
    bad = functools.partial(hybrid_classification, layers=config["layers"], hidden=(3,))
    with pytest.raises(ValueError, match=r"hybrid_classification: the first GP layer's Z"):
        trace(seed(bad, 0)).get_trace(X, LABELS)
