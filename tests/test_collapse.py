"""The collapse handler: the doubly-stochastic run of a GP-layer program without a global.

The bound's values themselves are checked against GPflow/GPflux in ``test_programs.py`` and
``test_reference_svgp.py``; here: the handler's contract (which sites it records, with which
shapes and roles, that runs do not leak into each other, that the program outside it is the
proper joint) and the likelihood's explicitly stated input moments.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.handlers import seed, substitute, trace

from ppl_dgp import collapse as collapse_module
from ppl_dgp import layers
from ppl_dgp.collapse import ROLE, collapse, gaussian_output
from ppl_dgp.elbo import elbo_terms
from ppl_dgp.guides import InducingPointGuide
from ppl_dgp.layers import Hyper, LayerSpec, gaussian_likelihood, gp_layer
from ppl_dgp.likelihoods import gaussian_variational_expectations
from ppl_dgp.mean_functions import Identity, Zero
from ppl_dgp.models.dgp import dgp_regression

N, M, D = 12, 4, 2
RECORDED = {"f", "f_mean", "f_var", "kl", "noise_variance", "var_exp"}


def _data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(N, D))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(N)
    return jnp.asarray(X), jnp.asarray(y)


def _layers():
    Z = np.asarray(_data()[0][:M])
    return (
        LayerSpec(D, Z, variance=Hyper(0.7), lengthscales=Hyper(np.ones(D)),
                  mean_function=Identity()),
        LayerSpec(1, Z, variance=Hyper(1.3), lengthscales=Hyper(np.ones(D)),
                  mean_function=Zero()),
    )  # fmt: skip


def _q(seed_: int) -> dict[str, jax.Array]:
    """A random ``q(u)`` per layer (lower-triangular ``q_sqrt`` with a positive diagonal)."""
    rng = np.random.default_rng(seed_)
    out = {}
    for name, Q in (("layer0", D), ("layer1", 1)):
        L = np.tril(0.2 * rng.standard_normal((Q, M, M)), -1) + 0.5 * np.eye(M)
        out[f"{name}.q_mu"] = jnp.asarray(rng.standard_normal((M, Q)))
        out[f"{name}.q_sqrt"] = jnp.asarray(L)
    return out


MODEL = functools.partial(dgp_regression, layers=_layers(), noise_variance=Hyper(0.1))


def _trace(model, params, key=0, handler=None):
    X, y = _data()
    fn = substitute(seed(model, key), data=params)
    if handler is None:
        return trace(fn).get_trace(X, y)
    with handler:
        return trace(fn).get_trace(X, y)


def _recorded(tr):
    return {
        name: site
        for name, site in tr.items()
        if site["type"] == "deterministic" and site.get("infer", {}).get(ROLE) in RECORDED
    }


def test_no_module_level_state():
    assert not hasattr(layers, "_COLLAPSED")
    assert not hasattr(layers, "_collapsed_state")
    for module in (layers, collapse_module):
        mutable = [
            name
            for name, value in vars(module).items()
            if isinstance(value, (list, set)) and not name.startswith("__")
        ]
        assert mutable == [], f"{module.__name__} has module-level mutable state {mutable}"
    assert layers.collapse is collapse  # the handler is re-exported next to the layers


def test_collapsed_run_records_the_terms_as_trace_sites():
    params = _q(0)
    tr = _trace(MODEL, params, handler=collapse(params=params))
    rec = _recorded(tr)
    expected = {
        "layer0.kl": (), "layer0.f": (N, D), "layer0.f_mean": (N, D), "layer0.f_var": (N, D),
        "layer1.kl": (), "layer1.f": (N, 1), "layer1.f_mean": (N, 1), "layer1.f_var": (N, 1),
        "y.f_mean": (N,), "y.f_var": (N,), "y.noise_variance": (), "y.var_exp": (N,),
    }  # fmt: skip
    assert {k: jnp.shape(v["value"]) for k, v in rec.items()} == expected
    assert rec["layer0.kl"]["infer"] == {ROLE: "kl", "of": "layer0"}
    assert rec["y.var_exp"]["infer"] == {ROLE: "var_exp", "of": "y"}
    # The likelihood's input is the last layer's marginalised output, stated via F_var:
    m, v = rec["layer1.f_mean"]["value"][:, 0], rec["layer1.f_var"]["value"][:, 0]
    np.testing.assert_array_equal(rec["y.f_mean"]["value"], m)
    np.testing.assert_array_equal(rec["y.f_var"]["value"], v)
    s2 = 0.1
    np.testing.assert_allclose(rec["y.noise_variance"]["value"], s2, rtol=1e-12)
    # E_q[log N(y | f, s2)] = log N(y | m, s2) - v / (2 s2), written out independently
    y = np.asarray(_data()[1])
    log_n = -0.5 * np.log(2 * np.pi * s2) - 0.5 * (y - np.asarray(m)) ** 2 / s2
    np.testing.assert_allclose(rec["y.var_exp"]["value"], log_n - np.asarray(v) / (2 * s2))
    assert np.all(np.asarray(v) > 0) and float(rec["layer1.kl"]["value"]) > 0
    out = gaussian_output(tr, "y")
    np.testing.assert_allclose(out.var, out.f_var + s2, rtol=1e-12)
    np.testing.assert_array_equal(out.mean, m)


def test_outside_the_handler_the_program_is_the_joint():
    params = _q(0)
    plain = _trace(MODEL, params)
    assert _recorded(plain) == {}
    assert all(site["type"] != "deterministic" for site in plain.values())
    # A handler without q(u) records the moments but leaves the density unchanged.
    record_only = _trace(MODEL, params, handler=collapse(params={}))
    assert "layer0.kl" not in record_only and "y.var_exp" in record_only
    for name, site in plain.items():
        if site["type"] == "sample":
            other = record_only[name]
            np.testing.assert_array_equal(site["value"], other["value"])
            np.testing.assert_array_equal(
                site["fn"].log_prob(site["value"]), other["fn"].log_prob(other["value"])
            )
    # Given u, the last layer's moments are those of p(f | u): y ~ N(mu(u), sigma^2(u) + s2).
    out = gaussian_output(record_only, "y")
    np.testing.assert_allclose(plain["y"]["fn"].loc, out.mean, rtol=1e-12)
    np.testing.assert_allclose(plain["y"]["fn"].scale ** 2, out.var, rtol=1e-12)
    with pytest.raises(KeyError, match="run the program under collapse"):
        gaussian_output(plain, "y")


def test_sequential_and_nested_runs_do_not_leak():
    p1, p2 = _q(1), _q(2)
    kl1 = float(_trace(MODEL, p1, handler=collapse(params=p1))["layer1.kl"]["value"])
    kl2 = float(_trace(MODEL, p2, handler=collapse(params=p2))["layer1.kl"]["value"])
    assert kl1 != kl2
    handler = collapse(params=p1)
    first = _trace(MODEL, p1, handler=handler)
    again = _trace(MODEL, p1, handler=handler)  # the same instance, re-entered
    for name, site in _recorded(first).items():
        np.testing.assert_array_equal(site["value"], again[name]["value"])
    assert handler._moments == {}  # nothing (no tracer) outlives a run
    # Nested: the innermost handler answers; each site is recorded once.
    with collapse(params=p1):
        nested = _trace(MODEL, p2, handler=collapse(params=p2))
    np.testing.assert_allclose(nested["layer1.kl"]["value"], kl2, rtol=1e-12)
    # After the runs the program is the joint again.
    assert _recorded(_trace(MODEL, p1)) == {}


def test_collapsed_elbo_under_jit_and_vmap():
    params = _q(0)
    guide = InducingPointGuide(MODEL)
    X, y = _data()
    elbo_terms(jax.random.key(0), params, MODEL, guide, X, y)  # the guide's set-up call
    eager = elbo_terms(jax.random.key(0), params, MODEL, guide, X, y)
    jitted = jax.jit(lambda k: elbo_terms(k, params, MODEL, guide, X, y)["elbo"])
    np.testing.assert_allclose(jitted(jax.random.key(0)), eager["elbo"], rtol=1e-10)
    keys = jax.random.split(jax.random.key(1), 3)
    assert jax.vmap(jitted)(keys).shape == (3,)
    assert set(eager["kl"]) == {"layer0", "layer1"}


def _sampled_last(layer: str | None):
    """Two GP layers with the last output sampled, its likelihood told the layer (or not)."""

    def model(X, y=None):
        s2 = 0.1
        data = numpyro.plate("data", X.shape[0], dim=-1)
        H = gp_layer("layer0", X, _layers()[0], plate=data)
        F = gp_layer("layer1", H, _layers()[1], plate=data)
        gaussian_likelihood("y", F, y, s2, plate=data, layer=layer)

    return model


def test_likelihood_is_told_its_input_layer():
    params = _q(0)
    y = np.asarray(_data()[1])
    told = _trace(_sampled_last("layer1"), params, handler=collapse(params=params))
    m, v = told["layer1.f_mean"]["value"], told["layer1.f_var"]["value"]
    expected = gaussian_variational_expectations(y[:, None], m, v, 0.1)[:, 0]
    np.testing.assert_allclose(told["y.var_exp"]["value"], expected, rtol=1e-12)
    # Not told: a point mass on the sampled F, the one-sample value log N(y | F, s2).
    untold = _trace(_sampled_last(None), params, handler=collapse(params=params))
    site = untold["y"]
    np.testing.assert_allclose(
        untold["y.var_exp"]["value"], site["fn"].log_prob(site["value"]), rtol=1e-12
    )
    np.testing.assert_array_equal(untold["y.f_var"]["value"], np.zeros(N))
    with pytest.raises(ValueError, match="input layer 'layer7' has not run"):
        _trace(_sampled_last("layer7"), params, handler=collapse(params=params))
    # Outside the handler the stated layer changes nothing: y ~ N(F, s2).
    plain = _trace(_sampled_last("layer1"), params)
    assert isinstance(plain["y"]["fn"], numpyro.distributions.Normal)
    assert _recorded(plain) == {}


def test_the_handler_wraps_a_program_like_any_numpyro_handler():
    params = _q(0)
    X, y = _data()
    wrapped = collapse(substitute(seed(MODEL, 0), data=params), params=params)
    assert isinstance(wrapped, collapse)
    tr = trace(wrapped).get_trace(X, y)
    assert "layer0.kl" in tr and "y.var_exp" in tr
    assert collapse_module.inducing_posterior("layer0") is None  # no handler: no answer
