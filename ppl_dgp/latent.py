"""Latent-variable inputs (Dutordoir et al. 2018; Salimbeni et al. 2019) and their guide.

:func:`latent_layer` concatenates a per-datum latent ``w_n ~ N(0, I_dim)`` to a layer's inputs,

.. math::
    h_n = [x_n, w_n] \\in \\mathbb R^{D + \\mathrm{dim}}, \\qquad w_n \\sim N(0, I),

so that a GP layer on ``h`` can express non-Gaussian (multimodal, skewed, heteroscedastic)
conditionals ``p(y_n | x_n) = int p(y_n | x_n, w_n) p(w_n) dw_n`` (GPflux's
``LatentVariableLayer``). ``w`` is the sample site ``{name}.w`` ``[N, dim]`` inside the data
plate, a *local* latent like a GP layer's noise ``eps``. It carries the same role tag
(``infer[ROLE] = "layer_noise"``: a standard-normal per-datum site), and the flag
``infer["latent_input"] = True`` (:data:`LATENT_INPUT`) sets it apart from layer noise
(:attr:`~ppl_dgp.infer.core.ModelSites.latent_inputs`): NUTS and HMC sample ``w`` with the rest;
MAP, the deep ensemble and Laplace optimise it with the rest (their default
``local_latents="auto"`` holds only the layer noise at ``0``: held at ``w = 0`` every datum would
have the same latent input; :func:`~ppl_dgp.infer.core.held_local_latents`); SVI's default guide
for such a model is :class:`LatentVariableGuide`, a real ``q(w_n)`` (the plain
:class:`~ppl_dgp.guides.InducingPointGuide` uses ``q(w_n) = p(w_n)``, a valid but loose bound);
and every predictive draws ``w`` from its prior at new inputs (a per-datum site is drawn afresh),
so the predictive is a mixture over ``w``.

:class:`LatentVariableGuide` is the inducing-point guide with a real ``q(w_n) = N(m_n, s_n^2)``
for the latent inputs: free-form (``{site}.loc``, ``{site}.scale`` ``[N, dim]``, one
mean and scale per datum) or amortised (GPflux's "encoder": a small MLP from ``(x_n, y_n)`` to
``(m_n, s_n)``). Fit it with :class:`~ppl_dgp.elbo.DoublyStochasticELBO` (the standard bound,
``E_q[log p(y | w) + log p(w) - log q(w)]``) or :class:`~ppl_dgp.elbo.ImportanceWeightedELBO`.

References:
    Dutordoir, Salimbeni, Deisenroth & Hensman (2018), "Gaussian Process Conditional Density
    Estimation", NeurIPS. Salimbeni, Dutordoir, Hensman & Deisenroth (2019), "Deep Gaussian
    Processes with Importance-Weighted Variational Inference", ICML.

Example:
    >>> import jax.numpy as jnp, numpyro
    >>> from numpyro.handlers import seed, trace
    >>> def model(X):
    ...     data = numpyro.plate("data", X.shape[0])
    ...     with data as idx:
    ...         Xb = X[idx]
    ...     return latent_layer("latent", Xb, 2, plate=data)
    >>> tr = trace(seed(model, 0)).get_trace(jnp.ones((5, 1)))
    >>> tr["latent.w"]["value"].shape, seed(model, 0)(jnp.ones((5, 1))).shape
    ((5, 2), (5, 3))
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions import constraints

from ppl_dgp.collapse import ROLE
from ppl_dgp.dense import torch_default_init
from ppl_dgp.guides import InducingPointGuide

__all__ = ["LATENT_INPUT", "LatentVariableGuide", "latent_layer", "latent_sites"]

#: ``infer`` key marking a latent-input site (``infer[LATENT_INPUT] = True``).
LATENT_INPUT = "latent_input"

#: ``infer[ROLE]`` of the guide's ``q(w_n)`` sites (not ``"layer_noise"``: ``q != p``, so the
#: bounds count ``log p(w_n) - log q(w_n)``).
Q_LATENT = "latent_q"


def latent_layer(name: str, X: Array, dim: int, *, plate: numpyro.plate) -> Array:  # [N, D + dim]
    """Concatenate a per-datum latent ``w_n ~ N(0, I_dim)`` to the inputs ``X``.

    Call it outside the data plate and pass the plate (as for :func:`~ppl_dgp.layers.gp_layer`).

    Args:
        name: prefix of the site ``{name}.w`` ``[N, dim]``.
        X: the layer's inputs ``[N, D]`` (the plate's current batch).
        dim: the latent dimension; ``0`` returns ``X`` unchanged and declares no site.
        plate: the data plate.

    Returns:
        ``[X, w]`` ``[N, D + dim]`` (``X`` itself when ``dim = 0``).

    Raises:
        ValueError: ``X`` is not 2-D or ``dim`` is not an int ``>= 0``.
    """
    if jnp.ndim(X) != 2:
        raise ValueError(f"latent_layer({name!r}): X must have shape [N, D]; received {X.shape}")
    if not isinstance(dim, int | np.integer) or isinstance(dim, bool) or dim < 0:
        raise ValueError(f"latent_layer({name!r}): dim must be an int >= 0; received {dim!r}")
    if dim == 0:
        return X
    with plate:
        w = numpyro.sample(
            f"{name}.w",
            dist.Normal(jnp.zeros((X.shape[0], int(dim)), X.dtype), 1.0).to_event(1),
            infer={ROLE: "layer_noise", LATENT_INPUT: True},
        )  # [N, dim]
    return jnp.concatenate([X, w], axis=-1)


def latent_sites(trace: dict) -> list[str]:
    """Names of the latent-input sites (:func:`latent_layer`) of a model trace."""
    return [
        name
        for name, site in trace.items()
        if site["type"] == "sample" and site.get("infer", {}).get(LATENT_INPUT, False)
    ]


class LatentVariableGuide(InducingPointGuide):
    """:class:`~ppl_dgp.guides.InducingPointGuide` with ``q(w_n) = N(m_n, diag(s_n^2))``.

    The inducing values, hyperparameters and layer noise are treated exactly as by the parent
    guide; each latent-input site of :func:`latent_layer` gets its own Gaussian factor per datum:

    - ``encoder="free"``: free-form, params ``{site}.loc`` and ``{site}.scale``
      ``[N, dim]`` (indexed by the plate's minibatch), started at ``m = 0``,
      ``s = init_latent_scale``;
    - ``encoder="amortised"``: ``(m_n, s_n) = g([x_n, y_n])``, a tanh MLP with hidden widths
      ``hidden`` (params ``{site}.encoder.W{l}``, ``{site}.encoder.b{l}``), softplus scales;
      its last layer starts at zero weights so that ``q(w_n) = N(0, init_latent_scale^2)``
      initially. Only training pairs ``(x_n, y_n)`` enter it (predictions draw ``w`` from the
      prior).

    Args:
        model: a program built from GP layers and :func:`latent_layer`.
        encoder: ``"free"`` or ``"amortised"``.
        hidden: the encoder's hidden widths.
        init_latent_scale: initial ``s_n``.
        init_latent_loc: ``{site: m0 [N, dim]}``, initial free-form means (``encoder="free"``
            only; default ``0``). A Bayesian GPLVM starts them at the data's principal
            components (:func:`~ppl_dgp.models.gplvm.init_gplvm`): at ``m = 0`` every datum
            has the same input, a saddle of the bound.
        seed: seed of the encoder's initial weights.
        **kwargs: the :class:`~ppl_dgp.guides.InducingPointGuide` options.

    Example:
        >>> import functools, jax, jax.numpy as jnp, numpyro, optax
        >>> from ppl_dgp.elbo import DoublyStochasticELBO
        >>> from ppl_dgp.models import lv_dgp
        >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]; y = jnp.sin(3.0 * X[:, 0])
        >>> model = lv_dgp.build_lv_dgp(X, num_inducing=4, layers=1)
        >>> guide = LatentVariableGuide(model, encoder="amortised")
        >>> svi = numpyro.infer.SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
        >>> params = svi.get_params(svi.init(jax.random.key(0), X, y))
        >>> guide.q_latent(params, X, y)["latent.w"][0].shape
        (8, 1)
    """

    def __init__(
        self,
        model: Any,
        *,
        encoder: str = "free",
        hidden: tuple[int, ...] = (20,),
        init_latent_scale: float = 0.5,
        init_latent_loc: dict[str, Any] | None = None,
        seed: int = 0,
        **kwargs: Any,
    ):
        if encoder not in ("free", "amortised"):
            raise ValueError(
                f"LatentVariableGuide: encoder must be 'free' or 'amortised'; received {encoder!r}"
            )
        if not init_latent_scale > 0:
            raise ValueError(
                "LatentVariableGuide: init_latent_scale must be > 0; received "
                f"{init_latent_scale!r}"
            )
        if any(int(h) < 1 for h in hidden):
            raise ValueError(
                f"LatentVariableGuide: hidden widths must be >= 1; received {tuple(hidden)}"
            )
        if init_latent_loc is not None and encoder != "free":
            raise ValueError(
                "LatentVariableGuide: init_latent_loc sets the free-form means; received it "
                f"with encoder={encoder!r}"
            )
        self.init_latent_loc = dict(init_latent_loc or {})
        self.encoder = encoder
        self.hidden = tuple(int(h) for h in hidden)
        self.init_latent_scale = float(init_latent_scale)
        self.seed = seed
        self._call_plates: dict | None = None
        super().__init__(model, **kwargs)

    # -- structure -----------------------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._latent: dict[str, dict] = {}
        for name in latent_sites(self.prototype_trace):
            site = self.prototype_trace[name]
            frames = site["cond_indep_stack"]
            if len(frames) != 1:
                raise ValueError(
                    f"LatentVariableGuide: latent site {name!r} must sit in exactly one (data) "
                    f"plate; received plates {[f.name for f in frames]}"
                )
            self._latent[name] = {
                "plate": frames[0].name,
                "N": int(self._prototype_frame_full_sizes[frames[0].name]),
                "dim": int(site["fn"].event_shape[0]),
            }
        if not self._latent:
            raise ValueError(
                "LatentVariableGuide: the model has no latent-input site (latent_layer); use "
                "InducingPointGuide"
            )
        for name, m0 in self.init_latent_loc.items():
            info = self._latent.get(name)
            if info is None:
                raise ValueError(
                    f"LatentVariableGuide: init_latent_loc names {name!r}, not a latent-input "
                    f"site of the model ({sorted(self._latent)})"
                )
            if np.shape(m0) != (info["N"], info["dim"]):
                raise ValueError(
                    f"LatentVariableGuide: init_latent_loc[{name!r}] must have shape "
                    f"[N, dim] = {(info['N'], info['dim'])}; received {np.shape(m0)}"
                )
        # The parent samples layer noise with q = p: the latent inputs are ours.
        self._noise_sites = [k for k in self._noise_sites if k not in self._latent]

    @property
    def latent_site_names(self) -> list[str]:
        """The latent-input sites this guide holds a ``q(w_n)`` for."""
        return list(self._latent)

    def _create_plates(self, *args: Any, **kwargs: Any) -> dict:
        # One set of plates per guide call: the parent's sites and q(w) share the minibatch.
        if self._call_plates is None:
            return super()._create_plates(*args, **kwargs)
        return self._call_plates

    # -- the guide program ---------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Array]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        self._call_plates = super()._create_plates(*args, **kwargs)
        try:
            result = super().__call__(*args, **kwargs)
            X = args[0] if args else kwargs["X"]
            y = args[1] if len(args) > 1 else kwargs.get("y")
            for name, info in self._latent.items():
                with self._call_plates[info["plate"]] as idx:
                    loc, scale = self._q_w(name, info, X, y, idx)
                    result[name] = numpyro.sample(
                        name, dist.Normal(loc, scale).to_event(1), infer={ROLE: Q_LATENT}
                    )
        finally:
            self._call_plates = None
        return result

    def _q_w(
        self, name: str, info: dict, X: Array, y: Array | None, idx: Array
    ) -> tuple[Array, Array]:  # [B, dim], [B, dim]
        N, dim = info["N"], info["dim"]
        X = jnp.asarray(X)
        if self.encoder == "free":
            m0 = self.init_latent_loc.get(name)
            m0 = jnp.zeros((N, dim), X.dtype) if m0 is None else jnp.asarray(m0, X.dtype)
            loc = numpyro.param(f"{name}.loc", m0)
            scale = numpyro.param(
                f"{name}.scale",
                jnp.full((N, dim), self.init_latent_scale, X.dtype),
                constraint=constraints.softplus_positive,
            )
            return loc[idx], scale[idx]
        yb = jnp.zeros(X.shape[:1], X.dtype) if y is None else jnp.asarray(y, X.dtype)
        yb = yb.reshape(yb.shape[0], -1)  # [N, P] (P = 1 for y [N])
        H = jnp.concatenate([X[idx], yb[idx]], axis=-1)  # [B, D + P]
        widths = [H.shape[1], *self.hidden]
        for l in range(len(self.hidden)):
            W0, b0 = torch_default_init(f"{name}.encoder{l}", widths[l], widths[l + 1], self.seed)
            W = numpyro.param(f"{name}.encoder.W{l}", jnp.asarray(W0, X.dtype))
            b = numpyro.param(f"{name}.encoder.b{l}", jnp.asarray(b0, X.dtype))
            H = jnp.tanh(H @ W + b)
        L = len(self.hidden)
        raw0 = float(np.log(np.expm1(self.init_latent_scale)))  # softplus^-1
        W = numpyro.param(f"{name}.encoder.W{L}", jnp.zeros((widths[-1], 2 * dim), X.dtype))
        b = numpyro.param(
            f"{name}.encoder.b{L}",
            jnp.concatenate([jnp.zeros(dim, X.dtype), jnp.full(dim, raw0, X.dtype)]),
        )
        out = H @ W + b  # [B, 2 dim]
        return out[:, :dim], jax.nn.softplus(out[:, dim:])

    def q_latent(
        self, params: dict[str, Array], X: Array, y: Array | None = None
    ) -> dict[str, tuple[Array, Array]]:
        """``{site: (m [N, dim], s [N, dim])}``: the fitted ``q(w_n)`` at the training data.

        For ``encoder="amortised"`` the encoder is evaluated at ``(X, y)`` (any inputs).
        """
        out = {}
        X = jnp.asarray(X)
        idx = jnp.arange(X.shape[0])
        for name, info in self._latent.items():
            if self.encoder == "free" and X.shape[0] != info["N"]:
                raise ValueError(
                    f"q_latent: the free-form q(w) holds N={info['N']} data; received X with "
                    f"{X.shape[0]} rows"
                )
            # block outermost: substitute (innermost) must see the params first
            with numpyro.handlers.block(), numpyro.handlers.substitute(data=params):
                out[name] = self._q_w(name, info, X, y, idx)
        return out
