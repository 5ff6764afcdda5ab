"""Latent-variable inputs (``ppl_dgp.latent``) and the ``lv_dgp_regression`` zoo model:
``dim = 0`` is the plain deep GP, the sites and the guide's ``q(w_n)``, errors."""

import functools
import re

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from numpyro.handlers import seed, substitute, trace  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402

from ppl_dgp.collapse import ROLE  # noqa: E402
from ppl_dgp.elbo import DoublyStochasticELBO, elbo_terms  # noqa: E402
from ppl_dgp.guides import InducingPointGuide  # noqa: E402
from ppl_dgp.infer import inspect_model  # noqa: E402
from ppl_dgp.latent import LATENT_INPUT, LatentVariableGuide, latent_layer  # noqa: E402
from ppl_dgp.models.dgp import dgp_regression, init_dgp  # noqa: E402
from ppl_dgp.models.lv_dgp import build_lv_dgp, init_lv_dgp, lv_dgp_regression  # noqa: E402

N = 12
X = jnp.linspace(-2.0, 2.0, N)[:, None]
Y = jnp.sin(2.0 * X[:, 0])


def _params(model, guide):
    svi = numpyro.infer.SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
    return svi.get_params(svi.init(jax.random.key(0), X, Y))


def test_dim_zero_is_the_plain_dgp():
    """Same layers, latent_dim = 0: the same sites, log joint and doubly-stochastic bound."""
    config = init_dgp(X, num_layers=2, num_inducing=5)
    plain = functools.partial(dgp_regression, **config)
    lv = functools.partial(lv_dgp_regression, **config, latent_dim=0)
    tr_p = trace(seed(plain, 3)).get_trace(X, Y)
    tr_l = trace(seed(lv, 3)).get_trace(X, Y)
    assert list(tr_p) == list(tr_l)
    for name in tr_p:
        np.testing.assert_array_equal(tr_p[name]["value"], tr_l[name]["value"])
    values = {k: v["value"] for k, v in tr_p.items() if v["type"] in ("sample", "param")}
    lp_p, _ = log_density(plain, (X, Y), {}, values)
    lp_l, _ = log_density(lv, (X, Y), {}, values)
    assert float(lp_p) == float(lp_l)
    # init_lv_dgp with latent_dim = 0 is init_dgp's recipe
    lv_layers = init_lv_dgp(X, latent_dim=0, num_layers=2, num_inducing=5)["layers"]
    for a, b in zip(lv_layers, config["layers"], strict=True):
        np.testing.assert_array_equal(a.Z, b.Z)
        assert (a.num_outputs, a.mean_function, a.q_sqrt_init) == (
            b.num_outputs, b.mean_function, b.q_sqrt_init,
        )  # fmt: skip
    guide_p, guide_l = InducingPointGuide(plain), InducingPointGuide(lv)
    params = _params(plain, guide_p)
    _params(lv, guide_l)  # set the guide up
    key = jax.random.key(7)
    a = elbo_terms(key, params, plain, guide_p, X, Y)["elbo"]
    b = elbo_terms(key, params, lv, guide_l, X, Y)["elbo"]
    assert float(a) == float(b)


def test_latent_layer_site_and_output():
    def model(X):
        data = numpyro.plate("data", X.shape[0])
        with data as idx:
            Xb = X[idx]
        return latent_layer("latent", Xb, 2, plate=data)

    tr = trace(seed(model, 0)).get_trace(X)
    site = tr["latent.w"]
    assert site["value"].shape == (N, 2) and site["cond_indep_stack"][0].name == "data"
    assert site["infer"][ROLE] == "layer_noise" and site["infer"][LATENT_INPUT]
    assert float(site["fn"].log_prob(jnp.zeros((N, 2)))[0]) == pytest.approx(-np.log(2 * np.pi))
    H = seed(model, 0)(X)
    np.testing.assert_array_equal(H, jnp.concatenate([X, site["value"]], axis=1))
    # every method sees w as a per-datum latent (NUTS samples it, predictions redraw it)
    lv = build_lv_dgp(X, num_inducing=4, layers=2)
    sites = inspect_model(jax.random.key(0), lv, X, Y)
    assert "latent.w" in sites.local_latent and "latent.w" not in sites.global_latent


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_latent_layer_dim_is_checked(bad):
    with pytest.raises(ValueError, match=r"dim must be an int >= 0; received"):
        latent_layer("latent", X, bad, plate=numpyro.plate("data", N))


def test_lv_dgp_checks_its_first_layer():
    config = init_dgp(X, num_layers=1, num_inducing=4)  # Z has D = 1 column
    with pytest.raises(ValueError, match=r"D \+ latent_dim = 1 \+ 1 columns; received 1"):
        trace(seed(functools.partial(lv_dgp_regression, **config, latent_dim=1), 0)).get_trace(X)
    with pytest.raises(ValueError, match="layers must be 1, 2 or 3; received 4"):
        build_lv_dgp(X, layers=4)


@pytest.mark.parametrize("encoder", ["free", "amortised"])
def test_guide_q_w(encoder):
    """q(w_n) per datum (indexed by the minibatch for the free form), counted by the bound."""
    model = build_lv_dgp(X, num_inducing=4, layers=1, latent_dim=2)
    guide = LatentVariableGuide(model, encoder=encoder, init_latent_scale=0.3)
    params = dict(_params(model, guide))
    assert guide.latent_site_names == ["latent.w"]
    loc, scale = guide.q_latent(params, X, Y)["latent.w"]
    assert loc.shape == scale.shape == (N, 2)
    np.testing.assert_allclose(loc, 0.0, atol=1e-12)  # starts at N(0, init_latent_scale^2)
    np.testing.assert_allclose(scale, 0.3, rtol=1e-12)
    if encoder == "free":
        assert params["latent.w.loc"].shape == (N, 2)
        params["latent.w.loc"] = jnp.asarray(np.random.default_rng(0).normal(size=(N, 2)))
        # q_latent reads the fitted params (not the initial values)
        np.testing.assert_array_equal(guide.q_latent(params, X, Y)["latent.w"][0],
                                      params["latent.w.loc"])  # fmt: skip
        batched = functools.partial(model, batch_size=5)
        g = LatentVariableGuide(batched, encoder=encoder)
        tr = trace(seed(substitute(g, data=params), 1)).get_trace(X, Y)
        idx = tr["data"]["value"]
        np.testing.assert_array_equal(
            tr["latent.w"]["fn"].base_dist.loc, params["latent.w.loc"][idx]
        )
    else:
        assert {k for k in params if k.startswith("latent.w.encoder")} == {
            "latent.w.encoder.W0", "latent.w.encoder.b0", "latent.w.encoder.W1",
            "latent.w.encoder.b1",
        }  # fmt: skip
        assert params["latent.w.encoder.W0"].shape == (2, 20)  # (x_n, y_n) -> 20 tanh units
    # the standard bound counts log p(w) - log q(w) (the guide's q(w) is not the prior)
    terms = elbo_terms(jax.random.key(2), params, model, guide, X, Y)
    assert float(terms["log_prior_ratio"]) != 0.0


def test_guide_errors():
    with pytest.raises(ValueError, match="encoder must be 'free' or 'amortised'"):
        LatentVariableGuide(lambda X, y=None: None, encoder="mlp")
    plain = functools.partial(dgp_regression, **init_dgp(X, num_layers=1, num_inducing=4))
    with pytest.raises(ValueError, match="no latent-input site"):
        _params(plain, LatentVariableGuide(plain))
    model = build_lv_dgp(X, num_inducing=4, layers=1)
    guide = LatentVariableGuide(model)
    params = _params(model, guide)
    with pytest.raises(ValueError, match="holds N=12 data; received X with 3 rows"):
        guide.q_latent(params, X[:3])


def test_predictions_redraw_w_from_its_prior():
    """SVI's predictive integrates w out by its passes: each component has its own prior draw
    of w, so the components' means differ at a point (with latent_dim = 0, one layer, they are
    all the same Gaussian)."""
    from ppl_dgp.infer import SVI, fit
    from ppl_dgp.predictive import predict

    X_new = jnp.array([[-1.0], [0.5]])
    spread = {}
    for dim in (0, 1):
        model = build_lv_dgp(X, num_inducing=4, layers=1, latent_dim=dim)
        post = fit(SVI(num_steps=30, num_samples=5), jax.random.key(0), model, X, Y)
        assert "latent.w" not in post.draws  # a per-datum site: not a posterior draw
        pred = predict(jax.random.key(1), model, post, X_new, num_samples=16)
        spread[dim] = np.ptp(np.asarray(pred.means), axis=0)
    np.testing.assert_allclose(spread[0], 0.0, atol=1e-12)
    assert np.all(spread[1] > 1e-3), spread[1]


@pytest.mark.parametrize("encoder", ["free", "amortised"])
def test_fit_gives_latent_inputs_their_own_q_and_iwvi(encoder):
    """``fit(SVI)`` on a latent-variable program uses the LatentVariableGuide (its q(w) params
    are in the fit), and ``num_importance > 1`` the importance-weighted bound."""
    from ppl_dgp.infer import SVI, fit

    model = build_lv_dgp(X, num_inducing=4, layers=1)
    sites = inspect_model(jax.random.key(0), model, X, Y)
    assert sites.latent_inputs == ("latent.w",)
    losses = {}
    for K in (1, 3):
        method = SVI(num_steps=20, num_samples=2, latent_encoder=encoder, num_importance=K)
        post = fit(method, jax.random.key(0), model, X, Y)
        losses[K] = post.traces["loss"]
        assert np.all(np.isfinite(losses[K]))
        names = set(post.approx.guide_params)
        assert any(k.startswith("latent.w.") for k in names), sorted(names)
    assert not np.array_equal(losses[1], losses[3])  # another bound was optimised
    with pytest.raises(ValueError, match="SVI.latent_encoder must be 'free' or 'amortised'"):
        SVI(latent_encoder="mlp")
    plain = functools.partial(dgp_regression, **init_dgp(X, num_layers=1, num_inducing=4))
    with pytest.raises(ValueError, match="num_importance=3 needs per-datum latent inputs"):
        fit(SVI(num_steps=5, num_importance=3), jax.random.key(0), plain, X, Y)


# 30 steps: far from converged, enough to see which sites move
@pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning")
def test_map_holds_layer_noise_and_optimises_latent_inputs():
    """A 2-layer LV-DGP has both kinds of per-datum latent: ``local_latents="auto"`` (the
    default) holds the layer noise ``layer0.eps`` at exactly 0 and moves the latent inputs
    ``latent.w``; ``"map"`` moves both; ``"fixed"`` is refused (it would hold ``w`` at 0);
    an unknown setting is refused by every MAP-based method."""
    from ppl_dgp.infer import MAP, DeepEnsemble, initialize
    from ppl_dgp.infer.core import LOCAL_LATENTS, ModelSites, held_local_latents
    from ppl_dgp.infer.map import map_estimate

    model = build_lv_dgp(X, num_inducing=4, layers=2)
    info, sites = initialize(jax.random.key(0), model, X, Y, owner="MAP")
    assert sites.latent_inputs == ("latent.w",) and sites.layer_noise == ("layer0.eps",)
    z0 = info.param_info.z
    moved = {}
    for setting in ("auto", "map"):
        z, _ = map_estimate(info, sites, jax.random.key(1), num_steps=30, N=N,
                            local_latents=setting)  # fmt: skip
        moved[setting] = {k: float(np.max(np.abs(np.asarray(z[k]) - np.asarray(z0[k]))))
                          for k in ("latent.w", "layer0.eps")}  # fmt: skip
    assert moved["auto"]["layer0.eps"] == 0.0 and moved["auto"]["latent.w"] > 1e-2, moved
    assert min(moved["map"].values()) > 1e-2, moved
    assert held_local_latents(sites, "map", "MAP") == ()
    with pytest.raises(ValueError, match=r"MAP.local_latents='fixed' would hold the model's "
                       r"latent inputs \['latent.w'\] .* at their initial value 0"):  # fmt: skip
        map_estimate(info, sites, jax.random.key(1), num_steps=2, N=N, local_latents="fixed")
    # without latent inputs "fixed" holds every per-datum latent, as "auto" does
    dgp_sites = ModelSites(("layer0.u", "layer1.u"), ("layer0.eps",), {}, ("layer0", "layer1"), ())
    assert dgp_sites.layer_noise == ("layer0.eps",)
    for setting in ("auto", "fixed"):
        assert held_local_latents(dgp_sites, setting, "MAP") == ("layer0.eps",)
    for cls in (MAP, DeepEnsemble):
        with pytest.raises(ValueError, match=rf"{cls.__name__}.local_latents must be one of "
                           rf"{re.escape(str(LOCAL_LATENTS))}; received 'held'"):  # fmt: skip
            cls(local_latents="held")
