"""The linear model of coregionalisation with one kernel per latent GP, as a NumPyro program.

``lmc_regression(X, y=None, *, latents, lmc, noise_variance, layers=())``: ``Q`` one-output GP
layers ``latent{q}`` (each with its own kernel variance, lengthscales, ``Z`` and ``u``) on the
same inputs, mixed into ``P`` outputs by ``W [P, Q]`` (:class:`~ppl_dgp.outputs.LMC`):

.. math:: g_q \\sim \\mathcal{GP}(0, k_q), \\qquad f_p(x) = \\sum_q W_{pq} g_q(x), \\qquad
    y_{np} = f_p(x_n) + \\epsilon_{np},\\ \\epsilon_{np} \\sim N(0, s^2_p)

so that ``Cov[f(x), f(x')] = sum_q k_q(x, x') w_q w_q^T`` (Álvarez, Rosasco & Lawrence 2012,
section 4.2; GPflow's ``LinearCoregionalization`` with a list of kernels). With ``Q``
*different* kernels ``W`` is identifiable up to the sign and order of its columns (and the
scale of a column against its kernel's variance: fix the variances, as :func:`init_lmc` does);
the last layer of :func:`~ppl_dgp.models.dgp.dgp_regression` has one kernel for all its
outputs, so its LMC identifies ``W`` only up to an orthogonal rotation ``W R``.

Each latent layer is marginalised (:func:`~ppl_dgp.layers.gp_output_layer`, no per-datum
``eps``): the observed site is the exact ``N(W m_n, W diag(v_n) W^T + diag(s2))`` of
:func:`~ppl_dgp.outputs.multi_gaussian_site` (a proper joint for NUTS, HMC and Laplace), and
SVI's bound takes its closed form per output. Optional inner ``layers`` (``layer{l}``, sampled
as in a DGP) feed all the latent GPs: a deep GP whose last layer is this LMC.

The zoo entry of this module is ``dgp_multioutput`` (:func:`build_dgp_multioutput`): the
multi-output :func:`~ppl_dgp.models.dgp.dgp_regression`, ``y [N, P]``, with ``P`` independent
outputs on its last layer (``mixing="independent"``) or ``Q`` latent GPs sharing the last
layer's kernel mixed by an LMC (``mixing="lmc"``, the default); its predictive is one Gaussian
per output and component (RMSE, MLPD and coverage per output). :func:`lmc_regression`, with a
kernel per latent GP, is built with :func:`build_lmc` or :func:`init_lmc`.

Example:
    >>> import functools, jax.numpy as jnp
    >>> from numpyro.handlers import seed, trace
    >>> from ppl_dgp.models import lmc
    >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]
    >>> config = lmc.init_lmc(X, num_outputs=3, num_latent=2, num_inducing=4)
    >>> [spec.lengthscales.init.tolist() for spec in config["latents"]]
    [[0.3], [3.0]]
    >>> model = functools.partial(lmc.lmc_regression, **config)
    >>> tr = trace(seed(model, 0)).get_trace(X)
    >>> tr["W"]["value"].shape, tr["y"]["value"].shape, sorted(
    ...     n for n in tr if n.startswith("latent1"))
    ((3, 2), (8, 3), ['latent1.Z', 'latent1.lengthscales', 'latent1.u'])

References:
    Journel & Huijbregts (1978), "Mining Geostatistics"; Álvarez, Rosasco & Lawrence (2012),
    "Kernels for Vector-Valued Functions: a Review", Foundations and Trends in ML, 4(3).
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array

from ppl_dgp.inducing import kmeans
from ppl_dgp.layers import Hyper, LayerSpec, gp_layer, gp_output_layer, hyper
from ppl_dgp.mean_functions import Zero
from ppl_dgp.outputs import LMC, check_output_width, multi_gaussian_site
from ppl_dgp.validation import check_regression_data
from ppl_dgp.zoo import ZooModel, register_model

__all__ = ["build_dgp_multioutput", "build_lmc", "init_lmc", "lmc_regression"]


def lmc_regression(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N, P]
    *,
    latents: tuple[LayerSpec, ...],
    lmc: LMC,
    noise_variance: Any,
    layers: tuple[LayerSpec, ...] = (),
    batch_size: int | None = None,
) -> Array:  # [N, Q]
    """``P`` Gaussian outputs mixing ``Q`` latent GPs with a kernel each: ``y_n ~ N(W g(x_n),
    diag(s2))`` (see the module).

    Sites: ``layer{l}.*`` (inner layers, if any), ``latent{q}.*`` (``variance``,
    ``lengthscales`` unless fixed, ``Z``, ``u``), ``W`` ``[P, Q]``, ``noise_variance``, ``y``.

    Args:
        X: inputs ``[N, D]``.
        y: observations ``[N, P]`` or ``None`` to predict.
        latents: ``Q`` :class:`~ppl_dgp.layers.LayerSpec`, each with ``num_outputs=1``.
        lmc: the mixing ``W`` (``lmc.num_outputs = P``).
        noise_variance: ``s2``, a :class:`~ppl_dgp.layers.Hyper` or a number, ``[]`` or ``[P]``.
        layers: inner GP layers in front of the latent GPs (``()``: the latent GPs read ``X``).
        batch_size: minibatch size ``B`` (``None`` = all ``N``).

    Returns:
        The latent GPs' conditional means ``[N, Q]`` for the plate's batch.

    Raises:
        ValueError: no latent GP, a latent spec with ``num_outputs != 1``, or ``y`` of the
            wrong width (naming ``y``: expected ``[N, P]``).
    """
    if len(latents) < 1:
        raise ValueError("lmc_regression: latents must hold at least one LayerSpec; received ()")
    for q, spec in enumerate(latents):
        if spec.num_outputs != 1:
            raise ValueError(
                f"lmc_regression: latents[{q}] must have num_outputs=1 (one GP per kernel); "
                f"received {spec.num_outputs}"
            )
    check_regression_data(X, y, batch_size=batch_size)
    check_output_width("lmc_regression", y, len(latents), lmc)
    s2 = hyper("noise_variance", noise_variance)
    W = lmc.sample("W", len(latents))  # [P, Q]
    data = numpyro.plate("data", X.shape[0], subsample_size=batch_size, dim=-1)
    with data as idx:
        H = X[idx]
        yb = None if y is None else y[idx]
    for l, spec in enumerate(layers):
        H = gp_layer(f"layer{l}", H, spec, plate=data)
    moments = [gp_output_layer(f"latent{q}", H, spec, plate=data) for q, spec in enumerate(latents)]
    F = jnp.concatenate([m for m, _ in moments], axis=-1)  # [B, Q]
    F_var = jnp.concatenate([v for _, v in moments], axis=-1)  # [B, Q]
    multi_gaussian_site("y", F, yb, s2, plate=data, F_var=F_var, W=W)
    return F


def init_lmc(
    X: Array,  # [N, D]
    *,
    num_outputs: int,
    num_latent: int,
    num_inducing: int = 20,
    lengthscales: Any = None,
    kernel: str = "se",
    learn_variance: bool = False,
    hyperpriors: bool = True,
    noise_variance: float = 0.01,
    W_init: Any = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Specs for :func:`lmc_regression` on standardised ``X``: ``Q`` latent GPs with their own
    kernels, ``Z`` from k-means (shared initial value, learnt per latent GP).

    Args:
        X: training inputs ``[N, D]``.
        num_outputs: ``P``.
        num_latent: ``Q``.
        num_inducing: ``M`` per latent GP (``M <= N``).
        lengthscales: ``Q`` initial lengthscales (distinct values break the latent GPs'
            symmetry; ``None``: geometrically spaced from 0.3 to 3).
        kernel: kernel family of every latent GP.
        learn_variance: learn each kernel's variance (``False``: fixed at 1, so that the
            columns of ``W`` carry the scale and are identifiable).
        hyperpriors: LogNormal(log init, 1) priors on lengthscales and noise (``False``: params).
        noise_variance: initial noise variance (one per output when ``P > 1``).
        W_init: initial ``W [P, Q]`` (``None``: :class:`~ppl_dgp.outputs.LMC`'s seeded default).
        seed: seed of the k-means initialisation.

    Returns:
        ``{"latents": (LayerSpec, ...), "lmc": LMC, "noise_variance": Hyper}``.
    """
    X = np.asarray(X)
    check_regression_data(X, None)
    N, D = X.shape
    for name, value in (("num_outputs", num_outputs), ("num_latent", num_latent),
                        ("num_inducing", num_inducing)):  # fmt: skip
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"init_lmc: {name} must be an int >= 1; received {value!r}")
    if num_inducing > N:
        raise ValueError(f"init_lmc: num_inducing (M={num_inducing}) must be <= N={N}")
    if lengthscales is None:
        lengthscales = np.geomspace(0.3, 3.0, num_latent) if num_latent > 1 else [1.0]
    lengthscales = np.asarray(lengthscales, dtype=float)
    if lengthscales.shape != (num_latent,):
        raise ValueError(
            f"init_lmc: lengthscales must have shape [Q] = [{num_latent}]; received "
            f"{lengthscales.shape}"
        )

    def hp(value: Any, shape: tuple[int, ...] = ()) -> Hyper:
        init = np.full(shape, value) if shape else float(value)
        if not hyperpriors:
            return Hyper(init)
        return Hyper(init, prior=dist.LogNormal(float(np.log(value)), 1.0))

    Z = kmeans(X, num_inducing, seed=seed)
    latents = tuple(
        LayerSpec(
            num_outputs=1,
            Z=Z,
            kernel=kernel,
            variance=hp(1.0) if learn_variance else Hyper(1.0, fixed=True),
            lengthscales=hp(float(ls), (D,)),
            mean_function=Zero(),
            whiten=True,
        )  # fmt: skip
        for ls in lengthscales
    )
    noise = hp(noise_variance, (num_outputs,) if num_outputs > 1 else ())
    return {"latents": latents, "lmc": LMC(num_outputs, W_init=W_init), "noise_variance": noise}


def build_lmc(
    X: Array, *, num_inducing: int = 10, num_outputs: int = 2, num_latent: int = 2
) -> Any:
    """:func:`lmc_regression` with :func:`init_lmc`'s recipe on ``X`` (``M = min(num_inducing,
    N)``)."""
    M = min(num_inducing, np.shape(X)[0])
    config = init_lmc(X, num_outputs=num_outputs, num_latent=num_latent, num_inducing=M)
    return functools.partial(lmc_regression, **config)


def build_dgp_multioutput(
    X: Array, *, num_inducing: int = 10, layers: int = 2, num_outputs: int = 2,
    mixing: str = "lmc", num_latent: int | None = None,
) -> Any:  # fmt: skip
    """The zoo's ``dgp_multioutput``: :func:`~ppl_dgp.models.dgp.dgp_regression` for
    ``y [N, P]`` with the zoo's ``dgp`` recipe (:func:`~ppl_dgp.models.dgp.build_dgp`).

    ``mixing="independent"``: the last layer has ``P`` outputs, ``y_np = f_p(h_n) + e_np``;
    ``mixing="lmc"``: it has ``Q`` (``num_latent``, default ``P``) outputs ``g`` mixed by
    ``W [P, Q]`` (standard normal prior), ``y_n = W g(h_n) + e_n``, so that
    ``Cov[f(x), f(x')] = k(h, h') W W^T`` (Alvarez, Rosasco & Lawrence 2012, section 4.2;
    ``W`` is identified up to an orthogonal rotation, the kernel being shared: for ``W`` up to
    sign and order use :func:`lmc_regression`'s kernel per latent GP). One noise variance per
    output either way.

    Args:
        X: standardised inputs ``[N, D]``.
        num_inducing: ``M`` per layer (``min(M, N)``).
        layers: ``L``.
        num_outputs: ``P >= 2`` (``y`` must be ``[N, P]``; one output is the zoo's ``dgp``).
        mixing: ``"independent"`` or ``"lmc"``.
        num_latent: ``Q`` for ``"lmc"`` (``None``: ``P``).

    Raises:
        ValueError: ``num_outputs < 2``, an unknown ``mixing``, or ``num_latent`` with
            ``"independent"`` (naming the argument).
    """
    from ppl_dgp.models.dgp import build_dgp

    if not isinstance(num_outputs, int | np.integer) or num_outputs < 2:
        raise ValueError(
            f"dgp_multioutput: num_outputs must be an int >= 2 (one output is the zoo's 'dgp'); "
            f"received {num_outputs!r}"
        )
    if mixing not in ("independent", "lmc"):
        raise ValueError(
            f"dgp_multioutput: mixing must be 'independent' or 'lmc'; received {mixing!r}"
        )
    if mixing == "independent" and num_latent is not None:
        raise ValueError(
            f"dgp_multioutput: num_latent is for mixing='lmc'; received num_latent={num_latent!r} "
            "with mixing='independent'"
        )
    Q = None if mixing == "independent" else (num_outputs if num_latent is None else num_latent)
    return build_dgp(X, num_inducing=num_inducing, layers=layers, num_outputs=num_outputs,
                     num_latent=Q)  # fmt: skip


register_model(
    ZooModel(
        name="dgp_multioutput",
        build=build_dgp_multioutput,
        likelihood="gaussian",
        task="regression",
        predictives=("mixture", "distribution"),
        smoke={"num_inducing": 4, "layers": 1, "num_outputs": 2, "mixing": "lmc"},
        method_overrides={"laplace": {"curvature": "hessian"}},
        description="deep GP regression of y [N, P]: P independent outputs or an LMC of Q "
        "latent GPs (mixing='independent' / 'lmc')",
    )
)
