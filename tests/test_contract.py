"""The contract, over the registries: every zoo model under every method it declares.

For each ``(model, method)`` pair of :data:`ppl_dgp.models.MODELS` x
:data:`ppl_dgp.infer.METHODS`, built at the smoke sizes both registries declare, the fit
returns a Posterior whose draws are the model's global latent sites shaped
``(chain, draw, ...)``, whose approximation has the type the method promises, whose
predictives (the ones the model declares) are finite and well formed, and which survives
save -> load -> predict bit for bit with the model rebuilt from the file (``ppl_dgp.load``):
in this process for each row, and once, at the end, in a fresh process that loads every row's
file with nothing but the import and compares its predictions with the values the rows stored.
A model or method added to a registry is in this matrix with no edit here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from ppl_dgp import predictive
from ppl_dgp.infer import METHODS, fit, inspect_model, make_method
from ppl_dgp.infer.svi import GuideApprox, InducingApprox
from ppl_dgp.laplace import LaplaceApprox
from ppl_dgp.models import MODELS
from ppl_dgp.posterior import load
from ppl_dgp.predictive import predict, predict_proba

# Smoke sizes stop MAPs short of convergence, which they say (the warnings are tested in
# test_inference and test_laplace): a Laplace Hessian there may need its repair. And NUTS on
# the smoke DGP (a few inducing points, long inner lengthscales under the standardised priors)
# reaches Kmm that need more than the default jitter, which the Cholesky reports (tested in
# test_linalg).
pytestmark = [
    pytest.mark.filterwarnings("ignore:cholesky. the matrix was not positive definite"),
    pytest.mark.filterwarnings("ignore::ppl_dgp.infer.map.MapNotConvergedWarning"),
    pytest.mark.filterwarnings("ignore::ppl_dgp.laplace.fit.NotPositiveDefiniteWarning"),
]

N = 12
#: Settings the contract needs beyond the smoke presets: the minibatch paths on the SVGP.
MINIBATCH = {("svgp", "svi"): {"batch_size": 6}, ("svgp", "sghmc"): {"batch_size": 6}}
#: The per-draw statistics each method records (none: an optimiser's trace is not per draw).
STATS = {
    "nuts": {"diverging", "accept_prob", "step_size", "num_steps", "energy", "tree_depth"},
    "hmc": {"diverging", "accept_prob", "step_size", "num_steps", "energy"},
    "sghmc": {"log_density"},
}
PAIRS = [(m, k) for m, entry in MODELS.items() for k in entry.methods]
#: The rows run in this many groups, each whole on one pytest-xdist worker (``--dist
#: loadgroup``, see :func:`xdist_group_of` and tests/conftest.py) and checked at its end by its
#: own fresh process: the matrix spreads over the workers instead of holding one.
SHARDS = 4


def shard(model_name: str) -> int:
    """The group of a model's rows (round robin over the sorted model names)."""
    return sorted(MODELS).index(model_name) % SHARDS


def xdist_group_of(item: pytest.Item) -> str:
    """pytest-xdist's group of a test of this file (read by tests/conftest.py)."""
    params = getattr(item, "callspec", None)
    params = params.params if params is not None else {}
    if "model_name" in params:
        return f"test_contract.py::shard{shard(params['model_name'])}"
    if "shard_index" in params:
        return f"test_contract.py::shard{params['shard_index']}"
    return "test_contract.py"


#: Prediction inputs, key and sizes of every row (the fresh process repeats them).
X_NEW = np.linspace(-3.0, 3.0, 7)[:, None]
NUM_SAMPLES = 10


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder where each row saves its Posterior and the predictions it made."""
    return tmp_path_factory.mktemp("contract")


def _data(task: str, num_outputs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Smoke data of a task; ``y [N, P]`` for a model whose smoke build has ``P > 1`` outputs.

    ``"unsupervised"`` (the GPLVM): ``X`` is the placeholder ``[N, 1]`` (zeros; only its row
    count is read) and ``Y [N, P]`` points on a noisy 1-D curve; the rows' predictions at
    ``X_NEW`` are then the density of a new datum (``w`` from its prior, the inputs unread),
    held to the same shape, finiteness and save -> load checks as every other row.
    """
    if task == "unsupervised":
        t = np.linspace(-2.0, 2.0, N)
        curve = np.stack([np.sin(2.0 * t), np.cos(2.0 * t), t][:num_outputs], axis=1)
        if num_outputs > 3:  # more columns: more harmonics of the same curve
            curve = np.concatenate(
                [curve, *(np.sin(k * t)[:, None] for k in range(3, num_outputs))], axis=1
            )
        noise = 0.1 * np.random.default_rng(0).normal(size=(N, num_outputs))
        return np.zeros((N, 1)), curve + noise
    X = np.linspace(-2.0, 2.0, N)[:, None]
    if task == "classification":
        return X, (X[:, 0] > 0).astype(np.int32)
    if task == "counts":
        return X, np.random.default_rng(0).poisson(np.exp(np.sin(2.0 * X[:, 0])))
    noise = 0.1 * np.random.default_rng(0).normal(size=(N, num_outputs))
    if num_outputs > 1:
        return X, np.sin(2.0 * X) * np.arange(1, num_outputs + 1) + noise
    return X, np.sin(2.0 * X[:, 0]) + noise[:, 0]


def _approx_type(method_name: str, gp: bool) -> type | None:
    if method_name == "svi":  # GP programs get the inducing guide, networks NumPyro's
        return InducingApprox if gp else GuideApprox
    return LaplaceApprox if method_name == "laplace" else None


def test_every_registered_method_is_in_the_matrix():
    assert {k for _, k in PAIRS} == set(METHODS)
    assert {m for m, _ in PAIRS} == set(MODELS)


@pytest.mark.parametrize(("model_name", "method_name"), PAIRS, ids=[f"{m}-{k}" for m, k in PAIRS])
def test_contract(model_name, method_name, saved):
    entry = MODELS[model_name]
    X, y = _data(entry.task, entry.smoke.get("num_outputs", 1))
    model = entry.make(X, smoke=True)
    settings = {**entry.method_overrides.get(method_name, {}),
                **MINIBATCH.get((model_name, method_name), {})}  # fmt: skip
    method = make_method(method_name, preset="smoke", **settings)
    post = fit(method, jax.random.key(0), model, X, y)

    sites = inspect_model(jax.random.key(1), model, X, y)
    assert set(post.draws) == set(sites.global_latent)  # no per-datum latents kept
    C, D = post.num_chains, post.num_draws
    for name, v in post.draws.items():
        assert v.shape[:2] == (C, D), name
        assert np.all(np.isfinite(v)), name
    assert set(post.sample_stats) == STATS.get(method_name, set())
    for name, v in post.sample_stats.items():
        assert v.shape[:2] == (C, D), name
    assert set(post.params) == set(sites.params)
    assert post.name == method_name and post.method == method
    expected = _approx_type(method_name, bool(sites.gp_layers))
    assert type(post.approx) is expected if expected else post.approx is None
    assert post.timings["compile_seconds"] > 0 and post.timings["run_seconds"] > 0
    first = next(iter(post.draws.values())).reshape(C, D, -1)[..., 0]
    if post.sample_stats:  # a sampler moves (a stuck one repeats its initial point); some
        # sites may be point estimates held constant (SGHMC's MCEM hyperparameters)
        moving = [np.unique(v.reshape(C, D, -1)[0, :, 0]).size for v in post.draws.values()]
        assert max(moving) > 5, moving
    if method_name == "ensemble":  # members start apart and end apart
        assert np.unique(first).size == D

    X_new = X_NEW
    key = jax.random.key(2)
    outputs = {}
    if "mixture" in entry.predictives:
        pred = predict(key, model, post, X_new, num_samples=NUM_SAMPLES)
        S = 10 if isinstance(post.approx, InducingApprox) else min(10, C * D)
        if isinstance(post.approx, LaplaceApprox) and post.approx.predictive == "glm":
            S = 1  # a GP program's linearised Laplace: one closed-form Gaussian per input
        assert pred.means.shape == pred.variances.shape == (S, 7, *np.shape(y)[1:])
        assert np.all(np.isfinite(pred.means)) and np.all(pred.variances > pred.f_variances)
        outputs["means"], outputs["variances"] = pred.means, pred.variances
    else:
        with pytest.raises(NotImplementedError, match="use ppl_dgp.predictive.predict_proba"):
            predict(key, model, post, X_new)
    if "proba" in entry.predictives:
        p = np.asarray(predict_proba(model, post, X_new, num_samples=NUM_SAMPLES))
        assert p.shape == (7,) and np.all((p >= 0) & (p <= 1))
        outputs["proba"] = p
    if "distribution" in entry.predictives:  # any likelihood: a mixture of its components
        dist = predictive.predict_distribution(key, model, post, X_new, num_samples=NUM_SAMPLES)
        mean, var = np.asarray(dist.mean), np.asarray(dist.variance)
        assert mean.shape[0] == 7 and np.all(np.isfinite(mean)) and np.all(var >= 0)
        outputs["dist_mean"], outputs["dist_variance"] = mean, var

    # save -> load: the model comes back from the file, not from this test
    folder = saved / f"shard{shard(model_name)}"
    folder.mkdir(exist_ok=True)
    path = folder / f"{model_name}-{method_name}"
    post.save(path)
    np.savez(folder / f"{model_name}-{method_name}.expected.npz", **outputs)
    model_back, loaded = load(path)
    assert model_back is not model and loaded == post
    assert model_back == model  # the same program by value (its compiled predictives reused)
    _assert_same_predictions(model_back, loaded, outputs)


def _assert_same_predictions(model, post, outputs: dict) -> None:
    """``predict`` / ``predict_proba`` at the rows' inputs give ``outputs`` bit for bit."""
    if "means" in outputs:
        again = predict(jax.random.key(2), model, post, X_NEW, num_samples=NUM_SAMPLES)
        np.testing.assert_array_equal(again.means, outputs["means"])
        np.testing.assert_array_equal(again.variances, outputs["variances"])
    if "proba" in outputs:
        again = predict_proba(model, post, X_NEW, num_samples=NUM_SAMPLES)
        np.testing.assert_array_equal(np.asarray(again), outputs["proba"])
    if "dist_mean" in outputs:
        again = predictive.predict_distribution(
            jax.random.key(2), model, post, X_NEW, num_samples=NUM_SAMPLES
        )
        np.testing.assert_array_equal(np.asarray(again.mean), outputs["dist_mean"])
        np.testing.assert_array_equal(np.asarray(again.variance), outputs["dist_variance"])


# The fresh process: only the import, ppl_dgp.load, and the predictives (float64 as the rows).
_FRESH = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import ppl_dgp
    from ppl_dgp import predictive
    from ppl_dgp.predictive import predict, predict_proba

    X_new = np.linspace(-3.0, 3.0, 7)[:, None]
    checked = []
    for expected in sorted(Path(sys.argv[1]).glob("*.expected.npz")):
        row = expected.name.removesuffix(".expected.npz")
        model, post = ppl_dgp.load(expected.with_name(row))
        want = np.load(expected)
        if "means" in want:
            got = predict(jax.random.key(2), model, post, X_new, num_samples=10)
            np.testing.assert_array_equal(got.means, want["means"], err_msg=row)
            np.testing.assert_array_equal(got.variances, want["variances"], err_msg=row)
        if "proba" in want:
            got = predict_proba(model, post, X_new, num_samples=10)
            np.testing.assert_array_equal(np.asarray(got), want["proba"], err_msg=row)
        if "dist_mean" in want:
            got = predictive.predict_distribution(
                jax.random.key(2), model, post, X_new, num_samples=10
            )
            np.testing.assert_array_equal(np.asarray(got.mean), want["dist_mean"], err_msg=row)
            np.testing.assert_array_equal(
                np.asarray(got.variance), want["dist_variance"], err_msg=row
            )
        checked.append(row)
    print(len(checked), "rows:", ",".join(checked))
    """
)


@pytest.mark.parametrize("shard_index", range(SHARDS))
def test_saved_models_predict_identically_in_a_fresh_process(saved, shard_index):
    """Every row's file of a shard, loaded in one new Python process (model and posterior from
    the file, no test code), predicts what the row predicted before saving, bit for bit."""
    folder = saved / f"shard{shard_index}"
    rows = sorted(p.name.removesuffix(".expected.npz") for p in folder.glob("*.expected.npz"))
    expected = sorted(f"{m}-{k}" for m, k in PAIRS if shard(m) == shard_index)
    if not rows:
        pytest.skip("no contract row of this shard ran in this session (run the whole file)")
    assert rows == expected or len(rows) < len(expected)  # a -k selection runs fewer
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    run = subprocess.run(
        [sys.executable, "-c", _FRESH, str(folder)], capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[:2] == [str(len(rows)), "rows:"]
    assert run.stdout.split()[2].split(",") == rows
