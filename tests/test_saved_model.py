"""A saved model you can reload (issue 13): what the format stores of a model and what it
refuses, without fitting (the contract test fits every zoo model x method and reloads them in
a fresh process)."""

from __future__ import annotations

import functools
import json

import numpy as np
import numpyro.distributions as dist
import pytest

import ppl_dgp
from ppl_dgp import kernels as K
from ppl_dgp import mean_functions as mf
from ppl_dgp.infer import MAP
from ppl_dgp.layers import Hyper, LayerSpec
from ppl_dgp.models import MODELS
from ppl_dgp.models.dgp import dgp_regression
from ppl_dgp.posterior import Opaque, Posterior
from ppl_dgp.zoo import Program, register_program

X = np.linspace(-1.0, 1.0, 8)[:, None]


def _post(model) -> Posterior:
    return Posterior(draws={"w": np.zeros((1, 2))}, method=MAP(), model=model)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_zoo_model_round_trips_by_value(name, tmp_path):
    """Each zoo model comes back from the file as an equal Program: same function, same
    configuration by value (arrays bit for bit)."""
    model = MODELS[name].make(X, smoke=True)
    _post(model).save(tmp_path / "p")
    back, post = ppl_dgp.load(tmp_path / "p")
    assert isinstance(back, Program) and back is not model
    assert back == model and hash(back) == hash(model) and back.func is model.func
    assert post.model is back


def test_values_inside_a_configuration_round_trip(tmp_path):
    """Layer specs with Hyper priors (expanded, independent), PCA-style linear and constant
    mean functions, arrays and tuples keep their types and values."""
    prior = dist.LogNormal(0.0, 1.0).expand((2,)).to_event(1)
    spec = LayerSpec(
        1, np.array([[0.0, 1.0], [1.0, 0.0]]), kernel="matern32",
        variance=Hyper(0.5, prior=dist.Gamma(2.0, 3.0)), lengthscales=Hyper(np.ones(2), prior),
        mean_function=mf.Linear(A=np.ones((2, 1)), b=np.zeros(1)), jitter=1e-5,
    )  # fmt: skip
    model = Program(dgp_regression, layers=(spec,), noise_variance=Hyper(0.1, fixed=True))
    _post(model).save(tmp_path / "p")
    back, _ = ppl_dgp.load(tmp_path / "p")
    assert back == model
    b = back.keywords["layers"][0]
    assert type(b.lengthscales.prior) is dist.Independent
    assert type(b.lengthscales.prior.base_dist) is dist.ExpandedDistribution
    assert b.lengthscales.prior.batch_shape == () and b.lengthscales.prior.event_shape == (2,)
    assert type(b.variance.prior) is dist.Gamma and float(b.variance.prior.rate) == 3.0
    assert type(b.mean_function) is mf.Linear and b.kernel == "matern32" and b.jitter == 1e-5
    assert back.keywords["noise_variance"] == Hyper(0.1, fixed=True)


def test_program_equality_is_by_value():
    a = Program(dgp_regression, layers=(LayerSpec(1, X[:3]),))
    assert a == Program(dgp_regression, layers=(LayerSpec(1, X[:3].copy()),))
    assert a != Program(dgp_regression, layers=(LayerSpec(1, X[1:4]),))
    assert a != Program(dgp_regression, layers=(LayerSpec(1, X[:3], kernel="matern12"),))
    with_fn = Program(dgp_regression, layers=(LayerSpec(1, X[:3]),), extra=lambda x: x)
    assert with_fn == with_fn and with_fn != Program(dgp_regression, extra=lambda x: x)


def _user_model(X, y=None):
    return dgp_regression(X, y, layers=(LayerSpec(1, X[:3]),))


def test_a_users_function_saves_without_the_model_and_load_says_so(tmp_path):
    post = _post(_user_model)
    post.save(tmp_path / "p")
    loaded = Posterior.load(tmp_path / "p")
    assert isinstance(loaded.model, Opaque) and "_user_model" in loaded.model.description
    assert loaded == post  # described the same way
    with pytest.raises(TypeError, match="_user_model.*was not saved with the Posterior"):
        loaded.model(X)
    with pytest.raises(ValueError, match=r"no model that can be rebuilt.*pass the model"):
        ppl_dgp.load(tmp_path / "p")


def test_a_configuration_with_a_function_saves_without_the_model(tmp_path):
    model = functools.partial(dgp_regression, layers=(LayerSpec(1, X[:3]),), hook=np.sin)
    _post(model).save(tmp_path / "p")
    loaded = Posterior.load(tmp_path / "p")
    assert isinstance(loaded.model, Opaque) and "['hook'] cannot be stored" in str(loaded.model)


def test_a_registered_users_program_is_rebuilt(tmp_path):
    from ppl_dgp import zoo

    register_program(_user_model)
    try:
        _post(functools.partial(_user_model)).save(tmp_path / "p")
        back, _ = ppl_dgp.load(tmp_path / "p")
    finally:
        zoo._PROGRAMS.pop(zoo._name_of(_user_model))
    assert back is _user_model
    with pytest.raises(ValueError, match="must be a module-level function"):
        register_program(lambda X, y=None: None)


def test_a_program_outside_the_zoo_is_never_imported(tmp_path):
    _post(MODELS["svgp"].make(X)).save(tmp_path / "p")
    meta = json.loads((tmp_path / "p.json").read_text())
    meta["posterior"]["model"]["__program__"] = "os:system"
    (tmp_path / "p.json").write_text(json.dumps(meta))
    loaded = Posterior.load(tmp_path / "p")
    assert isinstance(loaded.model, Opaque) and "'os:system' is neither" in str(loaded.model)
    with pytest.raises(ValueError, match="'os:system' is neither a function of a zoo module"):
        ppl_dgp.load(tmp_path / "p")


def test_files_without_a_model_still_load(tmp_path):
    """Format /3 (before the model was stored) reads with ``model=None``; load asks for it."""
    _post(None).save(tmp_path / "p")
    meta = json.loads((tmp_path / "p.json").read_text())
    meta["format"] = "ppl_dgp.posterior/3"
    del meta["posterior"]["model"]
    (tmp_path / "p.json").write_text(json.dumps(meta))
    assert Posterior.load(tmp_path / "p").model is None
    with pytest.raises(ValueError, match="holds no model; load the posterior alone"):
        ppl_dgp.load(tmp_path / "p")


def test_kernels_and_likelihoods_are_values_of_the_format(tmp_path):
    from ppl_dgp.likelihoods import Bernoulli

    k = K.SquaredExponential(variance=2.0, lengthscales=np.array([0.5])) + K.Linear(0.3)
    model = Program(dgp_regression, kernel=k, likelihood=Bernoulli(link="logit"))
    _post(model).save(tmp_path / "p")
    back, _ = ppl_dgp.load(tmp_path / "p")
    assert back == model and type(back.keywords["kernel"]) is K.Sum
    assert back.keywords["likelihood"] == Bernoulli(link="logit")
