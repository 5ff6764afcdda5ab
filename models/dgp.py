"""Deep GP regression (Salimbeni & Deisenroth 2017) as a NumPyro program.

``dgp_regression(X, y=None, *, layers, noise_variance, batch_size=None)`` stacks
:func:`~ppl_dgp.layers.gp_layer` calls and a Gaussian likelihood inside one data plate;
:func:`init_dgp` builds ``layers`` with the paper's recipe: identity (or PCA) mean functions on
the inner layers and zero mean on the last, ``Z`` from k-means (or a data subset), inner
``q_sqrt`` started at ``1e-5``.

Example:
    >>> import functools, jax.numpy as jnp
    >>> from numpyro.handlers import seed, trace
    >>> from ppl_dgp.models import dgp
    >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]
    >>> config = dgp.init_dgp(X, num_layers=2, num_inducing=4)
    >>> [(spec.num_outputs, spec.M) for spec in config["layers"]]
    [(1, 4), (1, 4)]
    >>> model = functools.partial(dgp.dgp_regression, **config)
    >>> tr = trace(seed(model, 0)).get_trace(X)
    >>> [name for name, site in tr.items() if site["type"] == "sample" and "layer1" in name]
    ['layer1.variance', 'layer1.lengthscales', 'layer1.u']
    >>> tr["y"]["value"].shape
    (8,)

References:
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array

from ppl_dgp.inducing import kmeans
from ppl_dgp.layers import (
    Hyper,
    LayerSpec,
    gaussian_likelihood,
    gp_layer,
    gp_output_layer,
    hyper,
)
from ppl_dgp.likelihoods import Likelihood
from ppl_dgp.mean_functions import Identity, Zero, pca_projection
from ppl_dgp.observe import check_observations
from ppl_dgp.outputs import (
    LMC,
    check_output_width,
    has_marginal,
    likelihood_site,
    multi_gaussian_site,
)
from ppl_dgp.validation import check_regression_data
from ppl_dgp.zoo import ZooModel, register_model

__all__ = [
    "DGPOutput",
    "build_dgp",
    "dgp_layers",
    "dgp_likelihood_model",
    "dgp_regression",
    "init_dgp",
    "single_gaussian_output",
    "STANDARDISED_PRIORS",
]

#: LogNormal ``(median, sigma)`` hyperpriors for standardised data (zero-mean, unit-variance
#: inputs and targets), what the zoo's ``dgp`` uses (``init_dgp(..., hyperpriors=
#: "standardised")``):
#:
#: - ``noise_variance``: median 0.1 of the unit target variance, 95% in [0.014, 0.71].
#: - last layer: kernel variance median 1 (the standardised signal), lengthscales median 1
#:   (the inputs span about +-2), sigma 1 each: weakly informative.
#: - inner layers: near the identity, as Salimbeni & Deisenroth (2017) initialise them (identity
#:   mean function, ``q_sqrt`` 1e-5): kernel variance median 0.05 (the warp ``f(x) - x`` has a
#:   prior sd of about 0.22 input units), lengthscales median 2 (smooth warps, 95% in [0.75,
#:   5.3]), sigma 0.5. Without this, the inner layer's warping and the outer lengthscale trade
#:   off (a short inner lengthscale with a long outer one, or the reverse) and the per-datum
#:   inner ``eps`` soak up the noise: NUTS's chains then sit in different modes (R-hat 1.7 on
#:   the motorcycle data; ``.bench/issue15_nuts.py``).
#:
#: The old default, LogNormal(log init, 1) around ``noise_variance=0.01``, put the noise median
#: at 1% of the target variance: the motorcycle posterior then explained the noise by the inner
#: ``eps`` (noise variance 0.007) and 113 of 400 NUTS transitions diverged.
STANDARDISED_PRIORS: dict[str, tuple[float, float]] = {
    "noise_variance": (0.1, 1.0),
    "last.variance": (1.0, 1.0),
    "last.lengthscales": (1.0, 1.0),
    "inner.variance": (0.05, 0.5),
    "inner.lengthscales": (2.0, 0.5),
}


class DGPOutput(NamedTuple):
    """What :func:`dgp_layers` leaves for the likelihood: the data plate, the batch of ``y``
    and the last layer's output ``F [B, Q]`` (with its variance ``F_var [B, Q]`` when the
    output is marginalised, else ``None`` and ``F`` is a sample of layer ``last``)."""

    plate: numpyro.plate
    y: Array | None
    F: Array
    F_var: Array | None
    last: str


def dgp_layers(
    X: Array,  # [N, D]
    y: Array | None,  # [N] or [N, P]
    layers: tuple[LayerSpec, ...],
    *,
    batch_size: int | None = None,
    marginalise_output: bool = True,
    inputs: Callable[[Array, Any], Array] | None = None,
) -> DGPOutput:
    """The data plate and the ``L`` GP layers that every DGP program of the zoo shares.

    ``H^0 = X``, ``H^l = f^l(H^{l-1})`` for the inner layers (:func:`~ppl_dgp.layers.gp_layer`,
    sites ``layer{l}.*``); the last layer ``layer{L-1}`` is marginalised
    (:func:`~ppl_dgp.layers.gp_output_layer`: its moments, no ``eps``) or sampled.

    Args:
        X: inputs ``[N, D]``.
        y: targets (any trailing shape) or ``None``; indexed by the plate's batch.
        layers: one :class:`~ppl_dgp.layers.LayerSpec` per layer.
        batch_size: minibatch size ``B`` (``None`` = all ``N``).
        marginalise_output: return the last layer's moments instead of a sample.
        inputs: ``inputs(X[idx], plate) -> H^0`` in front of the GP layers (a latent input,
            a network); ``None``: ``H^0 = X[idx]``.

    Returns:
        :class:`DGPOutput` ``(plate, y[idx], F, F_var, last)``.
    """
    data = numpyro.plate("data", X.shape[0], subsample_size=batch_size, dim=-1)
    with data as idx:
        H = X[idx]
        yb = None if y is None else y[idx]
    if inputs is not None:
        H = inputs(H, data)
    for l, spec in enumerate(layers[:-1]):
        H = gp_layer(f"layer{l}", H, spec, plate=data)
    last = f"layer{len(layers) - 1}"
    if marginalise_output:  # y | u ~ int p(y | f) p(f | u) df: no per-datum eps
        F, F_var = gp_output_layer(last, H, layers[-1], plate=data)
        return DGPOutput(data, yb, F, F_var, last)
    return DGPOutput(data, yb, gp_layer(last, H, layers[-1], plate=data), None, last)


def single_gaussian_output(out: DGPOutput, noise_variance: Array) -> Array:
    """The observed site ``y [N]`` of one Gaussian output after :func:`dgp_layers`: the
    marginalised last layer's ``N(F, F_var + s2)``, or ``N(F, s2)`` given a sampled ``F``.
    Returns ``F``."""
    if out.F_var is not None:
        gaussian_likelihood("y", out.F, out.y, noise_variance, plate=out.plate, F_var=out.F_var)
    else:
        gaussian_likelihood("y", out.F, out.y, noise_variance, plate=out.plate, layer=out.last)
    return out.F


def dgp_likelihood_model(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N]
    *,
    layers: tuple[LayerSpec, ...],
    likelihood: Likelihood,
    batch_size: int | None = None,
    marginalise_output: bool | None = None,
    output_site: str | None = None,
    owner: str = "dgp_likelihood_model",
) -> Array:  # [N, L]
    """L-layer deep GP with any likelihood value: ``y_n ~ p(y | f^L(... f^1(x_n)))``.

    The last layer has ``likelihood.latent_dim`` outputs (1 for Bernoulli/Poisson/Student-t,
    2 for the heteroscedastic Gaussian, ``K`` for a categorical); ``y`` is observed through
    :func:`~ppl_dgp.outputs.likelihood_site` (SVI's bound takes the likelihood's variational
    expectation). Where the likelihood has a deterministic marginal over a Gaussian latent
    (:func:`~ppl_dgp.outputs.has_marginal`) the last layer is integrated out by default.

    Args:
        X: inputs ``[N, D]``.
        y: observations ``[N]`` in the likelihood's support, or ``None`` to predict.
        layers: one :class:`~ppl_dgp.layers.LayerSpec` per layer.
        likelihood: a value of :mod:`ppl_dgp.likelihoods`.
        batch_size: minibatch size ``B`` (``None`` = all ``N``).
        marginalise_output: integrate the last layer out (``None``: when it has a
            deterministic marginal).
        output_site: record the classifier's logits under this name.
        owner: the public model's name, for messages.

    Returns:
        The last layer's output ``[N, L]`` (its conditional mean when marginalised).

    Raises:
        ValueError: ``y`` outside the likelihood's support (naming ``y``), a last layer of the
            wrong width, or ``marginalise_output=True`` without a deterministic marginal.
    """
    check_regression_data(X, y, batch_size=batch_size)
    if y is not None and np.ndim(y) != 1:
        raise ValueError(
            f"y must have shape [N] = [{np.shape(X)[0]}] ({owner}: one observation per datum); "
            f"received {np.shape(y)}"
        )
    check_observations(likelihood, y, name="y")
    L = likelihood.latent_dim
    if layers[-1].num_outputs != L:
        raise ValueError(
            f"{owner}: the last layer must have num_outputs={L} (the latent functions of "
            f"{type(likelihood).__name__}); received {layers[-1].num_outputs}"
        )
    marginal = has_marginal(likelihood) if marginalise_output is None else marginalise_output
    if marginal and not has_marginal(likelihood):
        raise ValueError(
            f"{owner}: marginalise_output=True needs a likelihood with a deterministic "
            f"marginal (Gaussian, Bernoulli, robust-max); received {likelihood!r}"
        )
    out = dgp_layers(X, y, layers, batch_size=batch_size, marginalise_output=marginal)
    likelihood_site("y", likelihood, out.F, out.y, plate=out.plate, F_var=out.F_var,
                    layer=None if marginal else out.last, output_site=output_site)  # fmt: skip
    return out.F


def dgp_regression(
    X: Array,  # [N, D]
    y: Array | None = None,  # [N] or [N, P]
    *,
    layers: tuple[LayerSpec, ...],
    noise_variance: Hyper | float = Hyper(0.01),
    batch_size: int | None = None,
    marginalise_output: bool = True,
    lmc: LMC | None = None,
) -> Array:
    """L-layer deep GP regression: ``y_n = f^L(... f^1(x_n)) + e_n``, ``e_n ~ N(0, s2)``.

    Sites: ``layer{l}.*`` (see :mod:`ppl_dgp.layers`), ``noise_variance``, observed ``y``
    (and ``W`` with ``lmc``).

    With ``P > 1`` outputs (``y [N, P]``), the last layer either has ``P`` independent
    outputs, or ``Q`` latent GPs mixed by the linear model of coregionalisation ``f = W g``
    (``lmc``, ``W [P, Q]``; see :func:`~ppl_dgp.outputs.lmc_moments`); ``noise_variance`` is
    one per output (``[P]``) or shared (scalar).

    Args:
        X: inputs ``[N, D]``.
        y: targets ``[N]`` (one output) or ``[N, P]``, or ``None`` to predict.
        layers: one :class:`~ppl_dgp.layers.LayerSpec` per layer; the last has ``P`` outputs
            (``Q`` with ``lmc``).
        noise_variance: :class:`~ppl_dgp.layers.Hyper` (or a fixed value) for ``s2``.
        batch_size: minibatch size ``B`` (``None`` = all ``N``); the likelihood is scaled by
            ``N / B`` through the plate.
        marginalise_output: integrate the last layer's output out of the Gaussian likelihood
            (:func:`~ppl_dgp.layers.gp_output_layer`; no ``layer{L-1}.eps`` site), so MCMC and
            Laplace work on ``N`` fewer dimensions. ``False`` samples it like the inner layers.
            SVI's bound is the same either way.
        lmc: an :class:`~ppl_dgp.outputs.LMC` mixing of the last layer's outputs.

    Returns:
        The last layer's output ``F [N, Q]`` for the plate's batch (its conditional mean when
        ``marginalise_output``).

    Raises:
        ValueError: ``y`` of the wrong width for the model's ``P`` outputs (naming ``y``), or a
            last layer of the wrong width.
    """
    check_regression_data(X, y, batch_size=batch_size)
    P = check_output_width("dgp_regression", y, layers[-1].num_outputs, lmc)
    s2 = hyper("noise_variance", noise_variance)
    if P is None:  # one output, y [N]: GPflow's/GPflux's sites and closed forms
        out = dgp_layers(X, y, layers, batch_size=batch_size,
                         marginalise_output=marginalise_output)  # fmt: skip
        return single_gaussian_output(out, s2)
    W = None if lmc is None else lmc.sample("W", layers[-1].num_outputs)
    out = dgp_layers(X, y, layers, batch_size=batch_size, marginalise_output=marginalise_output)
    multi_gaussian_site("y", out.F, out.y, s2, plate=out.plate, F_var=out.F_var,
                        layer=None if marginalise_output else out.last, W=W)  # fmt: skip
    return out.F


def init_dgp(
    X: Array,  # [N, D]
    *,
    num_layers: int = 2,
    num_inducing: int = 20,
    width: int | None = None,
    kernel: str = "se",
    lengthscale: float = 1.0,
    inner_variance: float = 1.0,
    Z_init: Array | None = None,
    hyperpriors: bool | str = True,
    noise_variance: float = 0.01,
    inner_q_sqrt: float = 1e-5,
    seed: int = 0,
    num_outputs: int = 1,
    num_latent: int | None = None,
) -> dict[str, Any]:
    """Layer specs for :func:`dgp_regression` with the Salimbeni & Deisenroth recipe.

    Args:
        X: standardised training inputs ``[N, D]``.
        num_layers: ``L >= 1`` (``L = 1`` is the SVGP).
        num_inducing: ``M`` per layer (``M <= N``).
        width: inner layers' width ``Q`` (default ``D``); ``Q != D`` uses a PCA mean.
        kernel: kernel family for every layer.
        lengthscale: initial ARD lengthscales.
        inner_variance: initial kernel variance of the inner layers.
        Z_init: initial inducing inputs ``[M, D]`` (default: k-means centres of ``X``).
        hyperpriors: ``True``: LogNormal(log init, 1) priors on the kernel hyperparameters and
            the noise, centred on the initial values (a proper joint for MCMC and Laplace);
            ``"standardised"``: the priors of :data:`STANDARDISED_PRIORS` for standardised
            data (inner layers near the identity), which then also set the initial values of
            ``lengthscale``, ``inner_variance`` and ``noise_variance`` (their medians);
            ``False`` makes them point parameters (GPflux's convention).
        noise_variance: initial likelihood variance.
        inner_q_sqrt: initial ``q_sqrt`` scale of the inner layers.
        seed: seed of the k-means initialisation.
        num_outputs: ``P``, the outputs of ``y [N, P]`` (one noise variance each when
            ``P > 1``).
        num_latent: ``Q`` latent GPs on the last layer mixed into the ``P`` outputs by an
            :class:`~ppl_dgp.outputs.LMC` (``W`` with a standard normal prior); ``None``: the
            last layer has ``P`` independent outputs.

    Returns:
        ``{"layers": (LayerSpec, ...), "noise_variance": Hyper}`` (and ``"lmc": LMC`` with
        ``num_latent``).
    """
    X = np.asarray(X)
    check_regression_data(X, None)
    N, D = X.shape
    if num_layers < 1:
        raise ValueError(f"init_dgp: num_layers must be >= 1; received {num_layers}")
    if Z_init is None:
        if num_inducing > N:
            raise ValueError(
                f"init_dgp: num_inducing (M={num_inducing}) must be <= N={N} for k-means "
                "initialisation; pass fewer inducing points or Z_init"
            )
        Z_init = kmeans(X, num_inducing, seed=seed)
    Z_init = np.asarray(Z_init)
    if Z_init.ndim != 2 or Z_init.shape[1] != D:
        raise ValueError(f"init_dgp: Z_init must have shape [M, {D}]; received {Z_init.shape}")
    Q = D if width is None else width
    if not isinstance(num_outputs, int | np.integer) or num_outputs < 1:
        raise ValueError(f"init_dgp: num_outputs must be an int >= 1; received {num_outputs!r}")
    if num_latent is not None and not (
        isinstance(num_latent, int | np.integer) and num_latent >= 1
    ):
        raise ValueError(f"init_dgp: num_latent must be an int >= 1; received {num_latent!r}")
    last_width = num_outputs if num_latent is None else num_latent

    if hyperpriors not in (True, False, "standardised"):
        raise ValueError(
            f"init_dgp: hyperpriors must be True, False or 'standardised'; received {hyperpriors!r}"
        )

    def hp(value: float, shape: tuple[int, ...] = (), role: str | None = None) -> Hyper:
        """Positive hyperparameter at ``value``: LogNormal(log value, 1) prior, or a param;
        with ``hyperpriors="standardised"`` the prior (and its median as the value) of
        ``role`` in :data:`STANDARDISED_PRIORS`."""
        if hyperpriors == "standardised" and role is not None:
            median, sigma = STANDARDISED_PRIORS[role]
            init = np.full(shape, median) if shape else median
            return Hyper(init, prior=dist.LogNormal(float(np.log(median)), sigma))
        init = np.full(shape, value) if shape else value
        if not hyperpriors:
            return Hyper(init)
        return Hyper(init, prior=dist.LogNormal(float(np.log(value)), 1.0))

    specs = []
    H, Z = X, Z_init
    for l in range(num_layers):
        last = l == num_layers - 1
        D_in = H.shape[1]
        if last:
            mean_function, q_out, var0, q0 = Zero(), last_width, 1.0, 1.0
        else:
            mean_function = Identity() if Q == D_in else pca_projection(jnp.asarray(H), Q)
            q_out, var0, q0 = Q, inner_variance, inner_q_sqrt
        where = "last" if last else "inner"
        specs.append(
            LayerSpec(
                num_outputs=q_out,
                Z=Z,
                kernel=kernel,
                variance=hp(var0, role=f"{where}.variance"),
                lengthscales=hp(lengthscale, (D_in,), role=f"{where}.lengthscales"),
                mean_function=mean_function,
                whiten=True,
                q_sqrt_init=q0,
            )
        )
        if not last:  # propagate the inputs and Z through the mean function
            H = np.asarray(mean_function(jnp.asarray(H)))
            Z = np.asarray(mean_function(jnp.asarray(Z)))
    config = {
        "layers": tuple(specs),
        "noise_variance": hp(
            noise_variance, (num_outputs,) if num_outputs > 1 else (), role="noise_variance"
        ),
    }
    if num_latent is not None:
        config["lmc"] = LMC(num_outputs)
    return config


def build_dgp(
    X: Array, *, num_inducing: int = 10, layers: int = 2, num_outputs: int = 1,
    num_latent: int | None = None,
) -> Any:  # fmt: skip
    """The zoo's ``dgp``: :func:`dgp_regression` with :func:`init_dgp`'s recipe on ``X``
    (``M = min(num_inducing, N)``) and the hyperpriors for standardised data
    (:data:`STANDARDISED_PRIORS`: the zoo's data are standardised); ``num_outputs`` ``P`` for
    ``y [N, P]``, mixed from ``num_latent`` latent GPs by an LMC when given."""
    M = min(num_inducing, np.shape(X)[0])
    config = init_dgp(X, num_layers=layers, num_inducing=M, num_outputs=num_outputs,
                      num_latent=num_latent, hyperpriors="standardised")  # fmt: skip
    return functools.partial(dgp_regression, **config)


register_model(
    ZooModel(
        name="dgp",
        build=build_dgp,
        likelihood="gaussian",
        task="regression",
        smoke={"num_inducing": 5, "layers": 2},
        description="L-layer deep GP regression (Salimbeni & Deisenroth 2017)",
    )
)
