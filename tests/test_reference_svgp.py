"""SVGP and two-layer DGP math against GPflow / GPflux reference values.

The reference figures live in ``tests/data/`` (see ``tests/data/PROVENANCE.md``); they were
produced by GPflow 2.11.2 and GPflux 0.4.5 at stored parameters, not by ``ppl_dgp``.
Every comparison is at 1e-9 relative (the peer values agree with NumPy closed forms to 3e-13).
"""

import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ppl_dgp.conditionals import conditional  # noqa: E402
from ppl_dgp.kernels import SquaredExponential  # noqa: E402
from ppl_dgp.kl import prior_kl  # noqa: E402
from ppl_dgp.likelihoods import gaussian_variational_expectations  # noqa: E402

pytestmark = pytest.mark.strict_rank
DATA = Path(__file__).parent / "data"
RTOL = 1e-9

with open(DATA / "svgp_gpflow.json") as fh:
    SVGP = json.load(fh)
with open(DATA / "dgp_fixed_eps.json") as fh:
    DGP = json.load(fh)

SVGP_CASES = sorted(SVGP["cases"])


def _close(actual, desired, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol, atol=0)


def test_reference_files_have_the_four_cases():
    # Guards against a truncated copy silently dropping parametrised cases.
    assert SVGP_CASES == [
        "nowhiten_jitter0",
        "nowhiten_jitter1e-06",
        "whiten_jitter0",
        "whiten_jitter1e-06",
    ]


@pytest.fixture(scope="module")
def svgp_inputs():
    inp = {k: jnp.asarray(v) for k, v in SVGP["inputs"].items()}
    kernel = SquaredExponential(
        variance=float(SVGP["inputs"]["kernel_variance"]),
        lengthscales=inp["lengthscales"],
    )
    return inp, kernel


@pytest.mark.filterwarnings("error")  # a jitter escalation would change the numbers
@pytest.mark.parametrize("case", SVGP_CASES)
def test_svgp_matches_gpflow(case, svgp_inputs):
    inp, kernel = svgp_inputs
    ref = SVGP["cases"][case]
    whiten, jitter = bool(ref["whiten"]), float(ref["jitter"])
    noise = float(SVGP["inputs"]["noise_variance"])
    args = dict(whiten=whiten, jitter=jitter)
    X, Y, Z, Xtest = inp["X"], inp["Y"], inp["Z"], inp["Xtest"]
    q_mu, q_sqrt = inp["q_mu"], inp["q_sqrt"]

    kl = prior_kl(kernel, Z, q_mu, q_sqrt, **args)
    _close(kl, ref["kl"])

    f_mean_train, f_var_train = conditional(kernel, X, Z, q_mu, q_sqrt, **args)
    _close(f_mean_train, ref["f_mean_train"])
    _close(f_var_train, ref["f_var_train"])

    var_exp = gaussian_variational_expectations(Y, f_mean_train, f_var_train, noise)  # [N, 1]
    assert var_exp.shape == (50, 1)
    _close(var_exp[:, 0], ref["var_exp"])
    _close(jnp.sum(var_exp) - kl, ref["elbo"])

    f_mean, f_var = conditional(kernel, Xtest, Z, q_mu, q_sqrt, **args)
    assert f_mean.shape == f_var.shape == (5, 1)
    _close(f_mean, ref["f_mean"])
    _close(f_var, ref["f_var"])
    _close(f_var + noise, ref["y_var"])

    f_mean_full, f_cov = conditional(kernel, Xtest, Z, q_mu, q_sqrt, full_cov=True, **args)
    assert f_cov.shape == (1, 5, 5)
    _close(f_mean_full, ref["f_mean"])
    # Every entry of f_cov is >= 1e-3 in magnitude in all four cases, so rtol alone is fair.
    assert np.min(np.abs(ref["f_cov"])) > 1e-3
    _close(f_cov, ref["f_cov"])


def test_svgp_jitter_changes_the_unwhitened_answer(svgp_inputs):
    """The 1e-6 jitter is visible at 1e-9: the reference cases can tell a dropped jitter."""
    a = SVGP["cases"]["nowhiten_jitter1e-06"]["elbo"]
    b = SVGP["cases"]["nowhiten_jitter0"]["elbo"]
    assert abs(a - b) > 1e3 * RTOL * abs(a)


# ---------------------------------------------------------------------------------------------
# Two-layer DGP with fixed reparameterisation noise (math level; the model test lives elsewhere)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dgp():
    inp = {k: jnp.asarray(v) for k, v in DGP["inputs"].items()}
    out = {k: np.asarray(v) for k, v in DGP["outputs"].items()}
    k1 = SquaredExponential(variance=float(DGP["inputs"]["var1"]), lengthscales=inp["ls1"])
    k2 = SquaredExponential(variance=float(DGP["inputs"]["var2"]), lengthscales=inp["ls2"])
    return inp, out, k1, k2


@pytest.mark.filterwarnings("error")
def test_dgp_hidden_layer(dgp):
    inp, out, k1, _ = dgp
    mean1, var1 = conditional(
        k1, inp["X"], inp["Z1"], inp["q_mu1"], inp["q_sqrt1"], whiten=True, jitter=1e-6
    )
    mean1 = mean1 + inp["X"]  # identity mean function
    _close(mean1, out["mean1"])
    _close(var1, out["var1"])
    h = mean1[None] + jnp.sqrt(var1)[None] * inp["eps"]  # [S, N, 2]
    _close(h, out["h"])


@pytest.mark.filterwarnings("error")
def test_dgp_output_layer_kl_and_elbo(dgp):
    inp, out, k1, k2 = dgp
    noise = float(DGP["inputs"]["noise"])
    mean1, var1 = conditional(
        k1, inp["X"], inp["Z1"], inp["q_mu1"], inp["q_sqrt1"], whiten=True, jitter=1e-6
    )
    h = (mean1 + inp["X"])[None] + jnp.sqrt(var1)[None] * inp["eps"]  # [S, N, 2]

    kl1 = prior_kl(k1, inp["Z1"], inp["q_mu1"], inp["q_sqrt1"], whiten=True, jitter=1e-6)
    kl2 = prior_kl(k2, inp["Z2"], inp["q_mu2"], inp["q_sqrt2"], whiten=True, jitter=1e-6)
    _close(kl1, out["kl1"])
    _close(kl2, out["kl2"])

    S = inp["eps"].shape[0]
    per_sample = []
    for s in range(S):
        mean2, var2 = conditional(
            k2, h[s], inp["Z2"], inp["q_mu2"], inp["q_sqrt2"], whiten=True, jitter=1e-6
        )
        _close(mean2, out["mean2"][s])
        _close(var2, out["var2"][s])
        ve = gaussian_variational_expectations(inp["Y"], mean2, var2, noise)
        per_sample.append(jnp.sum(ve) - kl1 - kl2)
    per_sample = jnp.stack(per_sample)
    _close(per_sample, out["elbo_per_sample"])
    _close(jnp.mean(per_sample), out["elbo_fixed_eps"])
