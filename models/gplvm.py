"""The Bayesian GPLVM (Titsias & Lawrence 2010): a GP layer whose inputs are latents only.

.. math::
    w_n \\sim N(0, I_Q), \\qquad f_p \\sim GP(0, k), \\qquad
    y_{np} = f_p(w_n) + e_{np}, \\quad e_{np} \\sim N(0, s_p^2),

the smallest unsupervised member of the latent-variable family: :func:`bayesian_gplvm` is
:func:`~ppl_dgp.models.dgp.dgp_layers` with one sparse GP layer (``P`` outputs sharing a
kernel, inducing inputs ``Z [M, Q]`` in the latent space) whose inputs are the
:func:`~ppl_dgp.latent.latent_layer` site ``latent.w`` ``[N, Q]`` and nothing else. Fitted by
SVI with :class:`~ppl_dgp.latent.LatentVariableGuide` (free-form ``q(w_n) = N(m_n, s_n^2)``,
the means started at the principal components: :func:`init_gplvm`), the bound is

.. math:: \\mathcal L = \\sum_n E_{q(w_n)} E_{q(f_n | w_n)}[\\log p(y_n | f_n)]
    - KL(q(u) \\| p(u)) - \\sum_n KL(q(w_n) \\| p(w_n)),

the uncollapsed form of Titsias & Lawrence's bound (their ``q(u)`` optimal in closed form; here
a free Gaussian, the expectation over ``w`` by the reparameterised draw). With
:class:`~ppl_dgp.elbo.ImportanceWeightedELBO` it is the IWAE bound over ``w``.

The programs of this library take inputs ``X`` (``fit`` and the data plate read the row
count from them); a GPLVM has none: ``X`` is a ``[N, 1]`` placeholder of which only the
number of rows is read (:func:`gplvm_inputs`). An amortised ``q(w_n)`` reads ``(x_n, y_n)``,
so from ``y_n`` alone. The embedding is the fitted ``q(w_n)``
(:meth:`~ppl_dgp.latent.LatentVariableGuide.q_latent`); :func:`~ppl_dgp.predictive.predict`
at any ``X_new [S, 1]`` draws a fresh ``w`` from its prior for every row, so each row's
predictive is the model's density of a new datum,
``p(y^*) = \\int p(y^* | f(w)) p(w) q(f) dw df`` (a mixture over ``w``, the same at every
row). In the zoo it is ``gplvm``, task ``"unsupervised"``.

Example:
    >>> import numpy as np
    >>> from numpyro.handlers import seed, trace
    >>> Y = np.random.default_rng(0).normal(size=(10, 3))
    >>> config, W0 = init_gplvm(Y, latent_dim=2, num_inducing=4)
    >>> import functools
    >>> model = functools.partial(bayesian_gplvm, **config)
    >>> tr = trace(seed(model, 0)).get_trace(gplvm_inputs(10), Y)
    >>> tr["latent.w"]["value"].shape, tr["layer0.Z"]["value"].shape, W0.shape
    ((10, 2), (4, 2), (10, 2))

References:
    Titsias & Lawrence (2010), "Bayesian Gaussian Process Latent Variable Model", AISTATS;
    Lawrence (2005), "Probabilistic Non-linear Principal Component Analysis with Gaussian
    Process Latent Variable Models", JMLR; Salimbeni, Dutordoir, Hensman & Deisenroth (2019),
    "Deep Gaussian Processes with Importance-Weighted Variational Inference", ICML.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from jax import Array

from ppl_dgp.latent import latent_layer
from ppl_dgp.layers import Hyper, LayerSpec, hyper
from ppl_dgp.models.dgp import dgp_layers, init_dgp, single_gaussian_output
from ppl_dgp.outputs import check_output_width, multi_gaussian_site
from ppl_dgp.validation import check_regression_data
from ppl_dgp.zoo import ZooModel, register_model

__all__ = ["bayesian_gplvm", "build_gplvm", "gplvm_inputs", "init_gplvm", "pca_latents"]


def gplvm_inputs(N: int) -> np.ndarray:  # [N, 1]
    """The placeholder inputs ``X = 0`` ``[N, 1]`` of a GPLVM (only the row count is read)."""
    if isinstance(N, bool) or not isinstance(N, int | np.integer) or N < 1:
        raise ValueError(f"gplvm_inputs: N must be an int >= 1; received {N!r}")
    return np.zeros((int(N), 1))


def bayesian_gplvm(
    X: Array,  # [N, 1] placeholder
    y: Array | None = None,  # [N, P] or [N]
    *,
    layer: LayerSpec,
    latent_dim: int,
    noise_variance: Hyper | float = Hyper(0.01),
    batch_size: int | None = None,
    latent_name: str = "latent",
) -> Array:  # [N, P]
    """Bayesian GPLVM: ``y_n = f(w_n) + e_n``, ``w_n ~ N(0, I_Q)``, one GP layer on ``w``.

    Sites: ``{latent_name}.w`` ``[N, Q]``, ``layer0.*`` (``Z [M, Q]``), ``noise_variance``
    (one per output), observed ``y``. The last layer is marginalised (no ``eps``).

    Args:
        X: placeholder ``[N, D]`` (:func:`gplvm_inputs`); its values are not read.
        y: observations ``[N, P]`` (``[N]`` for ``P = 1``) or ``None``.
        layer: the GP layer's :class:`~ppl_dgp.layers.LayerSpec` (``P`` outputs,
            ``Z [M, Q]``).
        latent_dim: ``Q >= 1``.
        noise_variance: :class:`~ppl_dgp.layers.Hyper` (or fixed), ``[P]`` or scalar.
        batch_size: minibatch size ``B`` (``None`` = all ``N``).
        latent_name: prefix of the latent site.

    Returns:
        The layer's conditional mean ``F [N, P]`` for the plate's batch.

    Raises:
        ValueError: ``latent_dim`` not an int ``>= 1``, ``Z`` not of width ``Q``, or ``y`` of
            the wrong width (naming ``y``).
    """
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int | np.integer):
        raise ValueError(f"bayesian_gplvm: latent_dim must be an int >= 1; received {latent_dim!r}")
    if latent_dim < 1:
        raise ValueError(f"bayesian_gplvm: latent_dim must be an int >= 1; received {latent_dim!r}")
    check_regression_data(X, y, batch_size=batch_size)
    if np.shape(layer.Z)[1] != latent_dim:
        raise ValueError(
            f"bayesian_gplvm: the layer's Z must have latent_dim = {latent_dim} columns (the "
            f"inputs are the latents only); received Z of shape {np.shape(layer.Z)}"
        )
    P = check_output_width("bayesian_gplvm", y, layer.num_outputs, None)
    s2 = hyper("noise_variance", noise_variance)

    def latents(H: Array, plate: Any) -> Array:  # [B, D] -> [B, Q]: the inputs are dropped
        return latent_layer(latent_name, H[:, :0], int(latent_dim), plate=plate)

    out = dgp_layers(X, y, (layer,), batch_size=batch_size, inputs=latents)
    if P is None:
        return single_gaussian_output(out, s2)
    multi_gaussian_site("y", out.F, out.y, s2, plate=out.plate, F_var=out.F_var)
    return out.F


def pca_latents(Y: Array, latent_dim: int) -> np.ndarray:  # [N, P] -> [N, Q]
    """The first ``Q`` principal-component scores of ``Y``, each scaled to unit variance
    (the prior's scale of ``w``): ``(Y - mean) V_Q / sd``, ``V`` the right singular vectors.

    Raises:
        ValueError: ``Y`` not ``[N, P]`` or ``latent_dim`` not in ``[1, min(N, P)]``.
    """
    Y = np.asarray(Y, dtype=float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.ndim != 2 or not 1 <= int(latent_dim) <= min(Y.shape):
        raise ValueError(
            f"pca_latents: Y must be [N, P] and 1 <= latent_dim <= min(N, P); received Y of "
            f"shape {np.shape(Y)}, latent_dim {latent_dim!r}"
        )
    Yc = Y - Y.mean(0)
    _, _, Vt = np.linalg.svd(Yc, full_matrices=False)
    W = Yc @ Vt[: int(latent_dim)].T  # [N, Q]
    return W / np.maximum(W.std(0), 1e-12)


def init_gplvm(
    Y: Array,  # [N, P]
    *,
    latent_dim: int = 2,
    num_inducing: int = 20,
    seed: int = 0,
    **options: Any,
) -> tuple[dict[str, Any], np.ndarray]:
    """Configuration of :func:`bayesian_gplvm` and the initial latent means.

    ``W0 = pca_latents(Y, Q)``; the layer is :func:`~ppl_dgp.models.dgp.init_dgp`'s one layer
    on ``W0`` (``Z`` at k-means centres of ``W0``, ARD SE kernel, ``P`` outputs, one noise
    variance per output). Start :class:`~ppl_dgp.latent.LatentVariableGuide` at
    ``init_latent_loc={"latent.w": W0}``.

    Args:
        Y: observations ``[N, P]``, standardised.
        latent_dim: ``Q``.
        num_inducing: ``M <= N``.
        seed: seed of the k-means.
        **options: other :func:`~ppl_dgp.models.dgp.init_dgp` options (``kernel``,
            ``lengthscale``, ``hyperpriors``, ``noise_variance``).

    Returns:
        ``({"layer", "noise_variance", "latent_dim"}, W0 [N, Q])``.
    """
    Y = np.asarray(Y, dtype=float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    W0 = pca_latents(Y, latent_dim)
    P = Y.shape[1]
    config = init_dgp(W0, num_layers=1, num_inducing=num_inducing, num_outputs=P, seed=seed,
                      **options)  # fmt: skip
    return {"layer": config["layers"][0], "noise_variance": config["noise_variance"],
            "latent_dim": int(latent_dim)}, W0  # fmt: skip


def build_gplvm(
    X: Array, *, num_inducing: int = 10, latent_dim: int = 1, num_outputs: int = 1,
    y: Array | None = None,
) -> Any:  # fmt: skip
    """The zoo's ``bayesian_gplvm`` for ``N = X.shape[0]`` data (``X`` the placeholder of
    :func:`gplvm_inputs`; its values are not read): :func:`init_gplvm`'s layer on the PCA
    latents of ``y`` when given, else ``Z`` at ``M`` points of the prior ``N(0, I_Q)``
    (k-means of ``N`` seeded prior draws), ``P = num_outputs`` outputs,
    ``M = min(num_inducing, N)``.

    The zoo's ``gplvm`` (task ``"unsupervised"``). SVI (free-form ``q(w_n)``), NUTS, HMC and
    SGHMC sample or fit ``w`` as they are; MAP, the ensemble and Laplace optimise it with the
    rest (their default ``local_latents="auto"`` holds only layer noise, never latent inputs:
    at the initial point ``w = 0`` every datum would have the same input and the GP could fit
    only a constant). The MAP is then the classic GPLVM of Lawrence (2005) with the
    ``N(0, I)`` prior on ``w`` as its regulariser; Laplace's Gaussian is over the global sites
    given ``w`` at its MAP (the exact Hessian: the linearised GP Laplace needs every per-datum
    latent held at 0), and prediction draws fresh ``w`` from the prior."""
    N = int(np.shape(X)[0])
    M = min(int(num_inducing), N)
    if y is not None:
        config, _ = init_gplvm(y, latent_dim=latent_dim, num_inducing=M)
    else:
        W0 = np.random.default_rng(0).normal(size=(N, int(latent_dim)))
        layer_config = init_dgp(W0, num_layers=1, num_inducing=M, num_outputs=num_outputs)
        config = {"layer": layer_config["layers"][0],
                  "noise_variance": layer_config["noise_variance"],
                  "latent_dim": int(latent_dim)}  # fmt: skip
    return functools.partial(bayesian_gplvm, **config)


register_model(
    ZooModel(
        name="gplvm",
        build=build_gplvm,
        likelihood="gaussian",
        task="unsupervised",
        smoke={"num_inducing": 4, "latent_dim": 2, "num_outputs": 3},
        description="Bayesian GPLVM, y_n = f(w_n) + e_n with w_n ~ N(0, I) the only inputs "
        "(Titsias & Lawrence 2010); X is a placeholder [N, 1] and predict gives a new "
        "datum's density (w from its prior)",
    )
)
