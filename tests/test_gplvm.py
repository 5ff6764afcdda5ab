"""Bayesian GPLVM (``ppl_dgp.models.gplvm``): its log joint at given latents is the multi-output
SVGP's on ``X = w`` plus the latents' standard-normal log prior; its bound with a free q(w)
equals a dense NumPy evaluation of the uncollapsed Titsias-Lawrence bound at the same draw;
PCA initial means; errors."""

import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numpyro.handlers import seed, substitute, trace  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402
from scipy.stats import norm  # noqa: E402

from ppl_dgp.latent import LatentVariableGuide  # noqa: E402
from ppl_dgp.models.dgp import dgp_regression  # noqa: E402
from ppl_dgp.models.gplvm import (  # noqa: E402
    bayesian_gplvm,
    build_gplvm,
    gplvm_inputs,
    init_gplvm,
    pca_latents,
)

RNG = np.random.default_rng(0)
N, P, Q = 9, 3, 2
T = np.linspace(0.0, 3.0, N)
Y = np.stack([np.sin(T), np.cos(T), T - 1.5], axis=1) + 0.05 * RNG.normal(size=(N, P))


@pytest.fixture(scope="module")
def setup():
    config, W0 = init_gplvm(Y, latent_dim=Q, num_inducing=5)
    return config, W0, functools.partial(bayesian_gplvm, **config)


def test_log_joint_is_the_svgp_on_the_latents_plus_their_prior(setup):
    config, W0, model = setup
    X = gplvm_inputs(N)
    tr = trace(seed(model, 1)).get_trace(X, Y)
    values = {k: v["value"] for k, v in tr.items() if v["type"] in ("sample", "param")}
    values.pop("y")
    w = values.pop("latent.w")
    svgp = functools.partial(dgp_regression, layers=(config["layer"],),
                             noise_variance=config["noise_variance"])  # fmt: skip
    lp, _ = log_density(model, (X, Y), {}, {**values, "latent.w": w})
    lp_svgp, _ = log_density(svgp, (w, Y), {}, values)
    log_prior_w = float(np.sum(norm.logpdf(np.asarray(w))))
    assert float(lp) - float(lp_svgp) == pytest.approx(log_prior_w, abs=1e-10)
    # the placeholder's values are not read
    lp2, _ = log_density(model, (X + 7.0, Y), {}, {**values, "latent.w": w})
    assert float(lp2) == float(lp)


def _se(A, B, variance, ls):
    d = (A[:, None, :] - B[None, :, :]) / ls
    return variance * np.exp(-0.5 * np.sum(d * d, -1))


def test_bound_equals_a_dense_evaluation_at_the_same_draw(setup):
    """The guide's draw of w, then the bound by hand (NumPy, whitened q(u)): sum_n E_q(f_n)
    log N(y_n | f_n, s2) - KL(q(v) || N(0, I)) + sum_n [log N(w_n; 0, I) - log q(w_n)]."""
    import numpyro
    import optax

    from ppl_dgp.elbo import DoublyStochasticELBO, elbo_terms

    config, W0, model = setup
    X = gplvm_inputs(N)
    guide = LatentVariableGuide(model, encoder="free", init_latent_loc={"latent.w": W0})
    svi = numpyro.infer.SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
    params = dict(svi.get_params(svi.init(jax.random.key(0), X, Y)))
    np.testing.assert_array_equal(params["latent.w.loc"], W0)
    # move q off its initial point so every term is exercised
    params["layer0.q_mu"] = jnp.asarray(0.3 * RNG.normal(size=np.shape(params["layer0.q_mu"])))
    params["latent.w.loc"] = params["latent.w.loc"] + 0.1
    key = jax.random.key(4)
    got = float(elbo_terms(key, params, model, guide, X, Y)["elbo"])

    key_guide, _ = jax.random.split(key)  # the guide's key inside elbo_terms
    gtr = trace(substitute(seed(guide, key_guide), params)).get_trace(X, Y)
    w = np.asarray(gtr["latent.w"]["value"])  # [N, Q]
    m, s = np.asarray(params["latent.w.loc"]), np.asarray(gtr["latent.w"]["fn"].base_dist.scale)
    med = {k: np.asarray(v["value"]) for k, v in gtr.items() if v["type"] == "sample"}
    var, ls = med["layer0.variance"], med["layer0.lengthscales"]
    s2 = med["noise_variance"]
    Z = np.asarray(params["layer0.Z"])
    q_mu = np.asarray(params["layer0.q_mu"])  # [M, P]
    q_sqrt = np.tril(np.asarray(params["layer0.q_sqrt"]))  # [P, M, M]
    Kmm = _se(Z, Z, var, ls) + 1e-6 * np.eye(len(Z))
    L = np.linalg.cholesky(Kmm)
    Kmn = _se(Z, w, var, ls)
    A = np.linalg.solve(L, Kmn)  # [M, N]
    mean = A.T @ q_mu  # [N, P]
    fvar = (
        var
        - np.sum(A * A, 0)[:, None]
        + np.stack([np.sum((q_sqrt[p].T @ A) ** 2, 0) for p in range(P)], 1)
    )
    ve = -0.5 * np.log(2 * np.pi * s2) - 0.5 * ((Y - mean) ** 2 + fvar) / s2
    kl_u = sum(
        0.5 * (np.sum(q_sqrt[p] ** 2) + q_mu[:, p] @ q_mu[:, p] - len(Z))
        - np.sum(np.log(np.abs(np.diag(q_sqrt[p]))))
        for p in range(P)
    )
    log_pw = np.sum(norm.logpdf(w))
    log_qw = np.sum(norm.logpdf(w, m, s))
    # the hyperparameters' point estimates enter through their priors (MAP-style: the
    # guide's point mass contributes log p(theta))
    log_p_theta = sum(
        float(np.sum(gtr_site["fn"].log_prob(gtr_site["value"])))
        for gtr_site in [trace(substitute(seed(model, 0), {**params, **med})).get_trace(X, Y)[k]
                         for k in ("layer0.variance", "layer0.lengthscales", "noise_variance")]
    )  # fmt: skip
    want = np.sum(ve) - kl_u + log_pw - log_qw + log_p_theta
    assert got == pytest.approx(want, rel=1e-9, abs=1e-8)


def test_pca_latents_and_errors():
    W = pca_latents(Y, 2)
    np.testing.assert_allclose(W.std(0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(W.mean(0), 0.0, atol=1e-12)
    assert abs(float(np.corrcoef(W.T)[0, 1])) < 1e-10  # principal components: uncorrelated
    with pytest.raises(ValueError, match="latent_dim"):
        pca_latents(Y, 4)
    config, _ = init_gplvm(Y, latent_dim=1, num_inducing=4)
    with pytest.raises(ValueError, match=r"Z must have latent_dim = 2 columns"):
        trace(seed(functools.partial(bayesian_gplvm, layer=config["layer"], latent_dim=2),
                   0)).get_trace(gplvm_inputs(N), Y)  # fmt: skip
    with pytest.raises(ValueError, match="latent_dim must be an int >= 1"):
        bayesian_gplvm(gplvm_inputs(N), Y, layer=config["layer"], latent_dim=0)
    with pytest.raises(ValueError, match="N must be an int >= 1"):
        gplvm_inputs(0)
    model = functools.partial(bayesian_gplvm, **config)
    with pytest.raises(ValueError, match=r"init_latent_loc\['latent.w'\] must have shape"):
        seed(LatentVariableGuide(model, init_latent_loc={"latent.w": np.zeros((N, 2))}), 0)(
            gplvm_inputs(N), Y
        )
    with pytest.raises(ValueError, match="init_latent_loc names 'w'"):
        seed(LatentVariableGuide(model, init_latent_loc={"w": np.zeros((N, 1))}), 0)(
            gplvm_inputs(N), Y
        )
    with pytest.raises(ValueError, match="init_latent_loc sets the free-form means"):
        LatentVariableGuide(model, encoder="amortised", init_latent_loc={"w": np.zeros((N, 1))})
    with pytest.raises(ValueError, match="y"):
        trace(seed(functools.partial(bayesian_gplvm, **config), 0)).get_trace(
            gplvm_inputs(N), Y[:, :2]
        )


def test_zoo_builder_places_z_in_the_latent_space():
    """build_gplvm: Z [M, Q] at PCA latents' k-means with y, at prior draws' without; P outputs;
    the program's latents have the placeholder's N rows."""
    X0 = gplvm_inputs(N)
    with_y = build_gplvm(X0, num_inducing=4, latent_dim=Q, y=Y)
    config, W0 = init_gplvm(Y, latent_dim=Q, num_inducing=4)
    np.testing.assert_array_equal(with_y.keywords["layer"].Z, config["layer"].Z)
    blind = build_gplvm(X0, num_inducing=20, latent_dim=1, num_outputs=2)
    Z = np.asarray(blind.keywords["layer"].Z)
    assert Z.shape == (N, 1) and blind.keywords["layer"].num_outputs == 2  # M = min(20, N)
    tr = trace(seed(blind, 0)).get_trace(X0, Y[:, :2])
    assert tr["latent.w"]["value"].shape == (N, 1) and tr["y"]["value"].shape == (N, 2)


# the MAPs run 300 steps; none needs to be converged for the comparisons
@pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning")
def test_map_and_ensemble_optimise_the_latent_inputs_by_default():
    """The zoo's ``gplvm`` (task ``"unsupervised"``) lists every method; MAP and the ensemble
    need no override: their default (``local_latents="auto"``) optimises the latent inputs
    ``w``, which held at their initial ``w = 0`` would give every datum the same input. The
    data lie on a curve with one parameter ``T``; the 1-D MAP latents order the points along
    it. The ensemble holds the same sites: started without perturbation its members follow
    the MAP's loss step by step. ``local_latents="fixed"`` is refused, naming the option."""
    from ppl_dgp.infer import MAP, METHODS, DeepEnsemble, fit, initialize
    from ppl_dgp.infer.core import held_local_latents
    from ppl_dgp.infer.map import map_estimate
    from ppl_dgp.models import MODELS
    from ppl_dgp.zoo import regression_models

    entry = MODELS["gplvm"]
    assert entry.task == "unsupervised" and set(entry.methods) == set(METHODS)
    assert "gplvm" not in regression_models()
    assert not any("local_latents" in over for over in entry.method_overrides.values())
    assert MAP().local_latents == DeepEnsemble().local_latents == "auto"
    X0 = gplvm_inputs(N)
    model = entry.make(X0, num_inducing=4, latent_dim=1, num_outputs=P)
    info, sites = initialize(jax.random.key(0), model, jnp.asarray(X0), jnp.asarray(Y))
    assert sites.latent_inputs == ("latent.w",) and sites.layer_noise == ()
    assert held_local_latents(sites, "auto", "MAP") == held_local_latents(sites, "map", "MAP")
    np.testing.assert_array_equal(info.param_info.z["latent.w"], 0.0)  # the initial point
    z, losses = map_estimate(info, sites, jax.random.key(1), num_steps=300, N=N)
    w = np.asarray(z["latent.w"])[:, 0]
    assert np.std(w) > 0.1, w
    assert abs(np.corrcoef(w, T)[0, 1]) > 0.9, w

    ens = fit(DeepEnsemble(num_members=2, num_steps=300, init_scale=0.0), jax.random.key(0),
              model, X0, Y)  # fmt: skip
    np.testing.assert_allclose(ens.traces["map_loss"][:, 0], losses, rtol=1e-8)
    with pytest.raises(ValueError, match=r"MAP.local_latents='fixed' would hold the model's "
                       r"latent inputs \['latent.w'\]"):  # fmt: skip
        fit(MAP(num_steps=5, local_latents="fixed"), jax.random.key(0), model, X0, Y)
    with pytest.raises(ValueError, match=r"DeepEnsemble.local_latents='fixed' would hold"):
        held_local_latents(sites, "fixed", "DeepEnsemble")


def test_laplace_refuses_to_hold_the_latent_inputs():
    """Laplace's default is MAP's (``local_latents="auto"``, so the zoo needs no override) and
    ``"fixed"`` is refused before the MAP, naming the option."""
    from ppl_dgp.infer import MAP, Laplace, fit
    from ppl_dgp.models import MODELS

    assert Laplace().local_latents == MAP().local_latents == "auto"
    X0 = gplvm_inputs(N)
    model = MODELS["gplvm"].make(X0, num_inducing=4, latent_dim=1, num_outputs=P)
    with pytest.raises(ValueError, match=r"Laplace.local_latents='fixed' would hold the model's "
                       r"latent inputs \['latent.w'\]"):  # fmt: skip
        fit(Laplace(num_steps=5, local_latents="fixed"), jax.random.key(0), model, X0, Y)


# ~17 s (the Laplace's compile); both MAPs run 300 steps, unconverged
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning")
def test_laplace_map_optimises_the_latent_inputs_as_map_does():
    """Laplace's MAP stage holds the sites MAP holds: on the GPLVM its loss follows MAP's step
    by step, so ``w`` is optimised (``test_map_and_ensemble_optimise_...`` shows it move)."""
    from ppl_dgp.infer import MAP, Laplace, fit
    from ppl_dgp.models import MODELS

    X0 = gplvm_inputs(N)
    model = MODELS["gplvm"].make(X0, num_inducing=4, latent_dim=1, num_outputs=P)
    lap = fit(Laplace(num_steps=300, num_samples=2), jax.random.key(0), model, X0, Y)
    ref = fit(MAP(num_steps=300), jax.random.key(0), model, X0, Y)
    np.testing.assert_allclose(lap.traces["map_loss"], ref.traces["map_loss"], rtol=1e-8)
