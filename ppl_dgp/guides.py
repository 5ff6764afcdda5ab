"""The inducing-point guide for GP-layer programs.

For every GP layer (sites tagged ``inducing`` by :func:`~ppl_dgp.layers.gp_layer`) the guide
holds ``q(u_q) = N(q_mu[:, q], q_sqrt[q] q_sqrt[q]^T)``, full rank per output. Its layer-noise
sites ``eps`` follow the model's own ``N(0, 1)``, so ``q(f | u) = p(f | u)`` and the ELBO of the
pair is the doubly-stochastic bound (Salimbeni & Deisenroth 2017): exactly (in expectation) under
``Trace_ELBO``, and with ``u`` integrated out analytically under
:class:`~ppl_dgp.elbo.DoublyStochasticELBO`. Every other latent site (kernel hyperparameters,
noise) gets a point estimate (``hyper="delta"``, MAP) or a mean-field normal in unconstrained
space (``hyper="normal"``).

Guide parameters: ``{layer}.q_mu`` ``[M, Q]``, ``{layer}.q_sqrt`` ``[Q, M, M]`` (only its lower
triangle is read, unconstrained as in GPflow), ``{site}.loc`` (and ``{site}.scale``) for the
other sites; positive point estimates use a softplus transform, as GPflow does.

Example:
    >>> import functools, jax, jax.numpy as jnp, numpyro, optax
    >>> from ppl_dgp.elbo import DoublyStochasticELBO
    >>> from ppl_dgp.models import svgp
    >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]; y = jnp.sin(3.0 * X[:, 0])
    >>> model = functools.partial(svgp.svgp_regression, **svgp.init_svgp(X, num_inducing=4))
    >>> guide = InducingPointGuide(model)
    >>> svi = numpyro.infer.SVI(model, guide, optax.adam(1e-2), DoublyStochasticELBO())
    >>> params = svi.get_params(svi.init(jax.random.key(0), X, y))
    >>> params["layer0.q_mu"].shape, params["layer0.q_sqrt"].shape
    ((4, 1), (1, 4, 4))
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import Array
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer.autoguide import AutoGuide, AutoNormal
from numpyro.infer.initialization import init_to_median

from ppl_dgp.compile_effort import AdaptiveJit
from ppl_dgp.layers import ROLE

__all__ = [
    "CompiledAutoNormal",
    "InducingPointGuide",
    "compiled_init",
    "init_to_model_init",
    "init_trace",
    "scale_tril",
]


def _init_to_model_init(site: dict | None = None) -> Array | None:
    if site is None:
        return init_to_model_init
    if site["type"] == "sample" and not site["is_observed"]:
        if "init" in site["infer"]:
            return jnp.broadcast_to(site["infer"]["init"], site["fn"].shape())
        if site["infer"].get(ROLE) in ("inducing", "layer_noise"):
            return jnp.zeros(site["fn"].shape())
    return init_to_median(site)


#: NumPyro init strategy: a site's ``infer["init"]`` (set by :class:`~ppl_dgp.layers.Hyper`),
#: zeros for inducing values and layer noise, the prior median otherwise. (NumPyro expects a
#: ``functools.partial``.)
init_to_model_init = functools.partial(_init_to_model_init)


def init_trace(
    rng_key: Array, model: Callable, args: tuple, kwargs: dict, init_loc_fn: Any = None
) -> dict:
    """One trace of ``model(*args, **kwargs)`` at its initial values (``init_loc_fn``, by
    default :data:`init_to_model_init`), seeded with ``rng_key``; NumPyro's
    ``initialize_model`` seeds its first try with ``jax.random.split(key)[1]`` of its key."""
    init_loc_fn = init_to_model_init if init_loc_fn is None else init_loc_fn
    with handlers.block():
        return handlers.trace(
            handlers.substitute(handlers.seed(model, rng_key), substitute_fn=init_loc_fn)
        ).get_trace(*args, **kwargs)


def scale_tril(q_sqrt: Array) -> Array:  # [Q, M, M] -> [Q, M, M]
    """A valid ``scale_tril`` (positive diagonal) with the covariance of ``tril(q_sqrt)``.

    GPflow's ``q_sqrt`` is any lower-triangular matrix; flipping the sign of the columns whose
    diagonal is negative leaves ``L L^T`` unchanged.
    """
    L = jnp.tril(q_sqrt)
    sign = jnp.where(jnp.diagonal(L, axis1=-2, axis2=-1) < 0, -1.0, 1.0)
    return L * sign[..., None, :]


def _softplus_if_positive(support: Any) -> Any:
    """GPflow's convention for positive parameters: a softplus, not an exp, transform."""
    return constraints.softplus_positive if support is constraints.positive else support


class InducingPointGuide(AutoGuide):
    """Full-rank Gaussian ``q(u)`` per GP layer and output; point or normal for the rest.

    Args:
        model: a NumPyro program built from :func:`~ppl_dgp.layers.gp_layer`.
        hyper: ``"delta"`` (MAP point estimates, default) or ``"normal"`` (mean-field normal
            in unconstrained space) for sites that are neither inducing values nor layer noise.
        init_loc_fn: NumPyro init strategy for those sites.
        init_scale: initial standard deviation for ``hyper="normal"``.
        q_sqrt_transform: ``"triangular"`` (GPflow/GPflux: an unconstrained lower triangle,
            so Adam grows a tiny start additively) or ``"softplus"`` (positive diagonal through
            a softplus, NumPyro's ``softplus_lower_cholesky``: a 1e-5 start grows
            multiplicatively, slowly). They optimise differently from the Salimbeni start: on
            the diabetes benchmark ``"triangular"`` keeps the inner layer's KL at GPflux's
            1457 nats while ``"softplus"`` lets it collapse to ~0 (a better ELBO); on step1d and
            synth10k ``"triangular"`` learns faster in 2000 steps.
    """

    def __init__(
        self,
        model: Any,
        *,
        hyper: str = "delta",
        init_loc_fn: Any = init_to_model_init,
        init_scale: float = 0.1,
        q_sqrt_transform: str = "triangular",
        prefix: str = "guide",
    ):
        if hyper not in ("delta", "normal"):
            raise ValueError(
                f"InducingPointGuide: hyper must be 'delta' or 'normal'; received {hyper!r}"
            )
        if q_sqrt_transform not in ("triangular", "softplus"):
            raise ValueError(
                "InducingPointGuide: q_sqrt_transform must be 'triangular' or 'softplus'; "
                f"received {q_sqrt_transform!r}"
            )
        self.hyper = hyper
        self.q_sqrt_transform = q_sqrt_transform
        self.init_scale = init_scale
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    # -- structure -----------------------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        # NumPyro's AutoGuide set-up runs ``initialize_model``: a search for a valid initial
        # point whose log density and gradient are evaluated op by op (~250 small compilations
        # for a 2-layer DGP). The guide needs only the model's structure and initial values:
        # one trace at ``init_loc_fn``, the same initial point (the loss checks finiteness).
        rng_key = jax.random.split(numpyro.prng_key())[1]
        self.prototype_trace = init_trace(rng_key, self.model, args, kwargs, self.init_loc_fn)
        self._prototype_frames = {}
        self._prototype_plate_sizes = {}
        for name, site in self.prototype_trace.items():
            if site["type"] == "sample" and not site["is_observed"]:
                if site["fn"].support.is_discrete:
                    raise ValueError(
                        f"InducingPointGuide: latent site {name!r} is discrete; the guide "
                        "supports continuous latent sites only"
                    )
                for frame in site["cond_indep_stack"]:
                    self._prototype_frames.setdefault(frame.name, frame)
            elif site["type"] == "plate":
                self._prototype_frame_full_sizes[name] = site["args"][0]
        self._layers: dict[str, dict] = {}
        self._noise_sites: list[str] = []
        self._other_sites: list[str] = []
        for name, site in self.prototype_trace.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            role = site["infer"].get(ROLE)
            if role == "inducing":
                layer = name.rsplit(".", 1)[0]
                Q, M = site["fn"].shape()
                self._layers[layer] = {
                    "site": name,
                    "Q": Q,
                    "M": M,
                    "q_sqrt_init": site["infer"]["q_sqrt_init"],
                }
            elif role == "layer_noise":
                self._noise_sites.append(name)
            else:
                if site["cond_indep_stack"]:
                    raise ValueError(
                        f"InducingPointGuide: latent site {name!r} is local to plate "
                        f"{site['cond_indep_stack'][0].name!r}; only GP layer noise may be local"
                    )
                self._other_sites.append(name)
        if not self._layers:
            raise ValueError("InducingPointGuide: the model has no GP layer (no 'inducing' site)")
        # constrained initial values of the point-estimated (or normal) sites
        self._init_locs = {k: self.prototype_trace[k]["value"] for k in self._other_sites}

    @property
    def layer_names(self) -> list[str]:
        return list(self._layers)

    @property
    def inducing_sites(self) -> dict[str, str]:
        """``{layer: its inducing-value site}`` (e.g. ``{"layer0": "layer0.u"}``)."""
        return {layer: info["site"] for layer, info in self._layers.items()}

    def q_params(self, params: dict[str, Array]) -> dict[str, Array]:
        """The ``q(u)`` parameters ``{layer}.q_mu``, ``{layer}.q_sqrt`` from a param dict."""
        return {
            k: params[k] for layer in self._layers for k in (f"{layer}.q_mu", f"{layer}.q_sqrt")
        }

    # -- the guide program ---------------------------------------------------------------
    # The guide's distributions are valid by construction (scale_tril's positive diagonal, the
    # softplus scales): they skip NumPyro's argument checks, which evaluate constant arguments
    # (the initial values) op by op even while the guide is traced under jit.
    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Array]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        result: dict[str, Array] = {}
        for layer, info in self._layers.items():
            Q, M = info["Q"], info["M"]
            q_mu = numpyro.param(f"{layer}.q_mu", jnp.zeros((M, Q)))
            # GPflow's parameterisation: an unconstrained lower triangle (the layers read only
            # the lower triangle). Adam then grows a 1e-5 start additively, as in GPflux.
            q_sqrt = numpyro.param(
                f"{layer}.q_sqrt",
                info["q_sqrt_init"] * jnp.broadcast_to(jnp.eye(M), (Q, M, M)),
                constraint=constraints.real
                if self.q_sqrt_transform == "triangular"
                else constraints.softplus_lower_cholesky,
            )
            # NumPyro's replay copies the guide's ``infer`` onto the model site: tag it too.
            result[info["site"]] = numpyro.sample(
                info["site"],
                dist.MultivariateNormal(
                    q_mu.T, scale_tril=scale_tril(q_sqrt), validate_args=False
                ).to_event(1),
                infer={ROLE: "inducing"},
            )
        for name in self._noise_sites:
            site = self.prototype_trace[name]
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                # Full batch shape (the plate's current size): no implicit rank promotion.
                shape = tuple(f.size for f in site["cond_indep_stack"]) + site["fn"].event_shape
                result[name] = numpyro.sample(
                    name,
                    dist.Normal(jnp.zeros(shape), 1.0, validate_args=False).to_event(
                        len(site["fn"].event_shape)
                    ),
                    infer={ROLE: "layer_noise"},
                )
        for name in self._other_sites:
            site = self.prototype_trace[name]
            support = site["fn"].support
            event_dim = site["fn"].event_dim
            init = self._init_locs[name]
            if self.hyper == "delta":
                loc = numpyro.param(
                    f"{name}.loc",
                    init,
                    constraint=_softplus_if_positive(support),
                    event_dim=event_dim,
                )
                result[name] = numpyro.sample(
                    name, dist.Delta(loc, event_dim=event_dim, validate_args=False)
                )
            else:
                transform = biject_to(support)
                loc = numpyro.param(f"{name}.loc", transform.inv(init))
                scale = numpyro.param(
                    f"{name}.scale",
                    jnp.full(jnp.shape(loc), self.init_scale),
                    constraint=constraints.softplus_positive,
                )
                base = dist.Normal(loc, scale, validate_args=False).to_event(jnp.ndim(loc))
                result[name] = numpyro.sample(name, dist.TransformedDistribution(base, transform))
        return result

    # -- draws ---------------------------------------------------------------------------
    def sample_posterior(
        self,
        rng_key: Array,
        params: dict[str, Array],
        *args: Any,
        sample_shape: tuple = (),
        **kwargs: Any,
    ) -> dict[str, Array]:
        """Draws of the global latent sites (``u`` per layer and the hyperparameters)."""
        out: dict[str, Array] = {}
        keys = jax.random.split(rng_key, len(self._layers) + len(self._other_sites) + 1)
        for key, (layer, info) in zip(keys, self._layers.items(), strict=False):
            q = dist.MultivariateNormal(
                params[f"{layer}.q_mu"].T,
                scale_tril=scale_tril(params[f"{layer}.q_sqrt"]),
                validate_args=False,  # valid by construction, as in __call__
            )
            out[info["site"]] = q.sample(key, sample_shape)
        for key, name in zip(keys[len(self._layers) :], self._other_sites, strict=False):
            if self.hyper == "delta":
                v = params[f"{name}.loc"]
                out[name] = jnp.broadcast_to(v, sample_shape + jnp.shape(v))
            else:
                transform = biject_to(self.prototype_trace[name]["fn"].support)
                z = dist.Normal(
                    params[f"{name}.loc"], params[f"{name}.scale"], validate_args=False
                ).sample(key, sample_shape)
                out[name] = transform(z)
        return out

    def median(self, params: dict[str, Array], *, inducing: bool = True) -> dict[str, Array]:
        """Posterior medians of the global latent sites (``q_mu^T`` for ``u``; with
        ``inducing=False`` only the other sites, the hyperparameters)."""
        layers = self._layers.items() if inducing else ()
        out = {info["site"]: params[f"{layer}.q_mu"].T for layer, info in layers}
        for name in self._other_sites:
            loc = params[f"{name}.loc"]
            if self.hyper == "normal":
                loc = biject_to(self.prototype_trace[name]["fn"].support)(loc)
            out[name] = loc
        return out


class CompiledAutoNormal(AutoNormal):
    """NumPyro's ``AutoNormal`` (mean-field Normal in unconstrained space, the same parameters
    ``{site}_auto_loc`` / ``{site}_auto_scale``) whose set-up compiles as one program.

    ``AutoNormal`` sets itself up with ``initialize_model``, which traces the model and then
    evaluates the potential and its gradient at the initial point eagerly, every operation
    compiled on its own: a fresh process fitting a smoke BNN compiled 328 small programs
    (6 s) before its first step. Under :func:`compiled_init` the set-up is traced inside
    one ``jax.jit`` program with the data as arguments; the closures NumPyro keeps (the
    potential and the map back to constrained values) are then rebuilt from their generators
    at the concrete data (:meth:`bind`), and the initial values come back as arrays. Called
    outside :func:`compiled_init` (e.g. by NumPyro's own ``SVI.init``), it behaves as
    ``AutoNormal``.
    """

    def bind(self, args: tuple, kwargs: dict) -> bool:
        """Rebuild the closures of a set-up traced under ``jax.jit`` (which hold its tracers)
        at concrete ``args``/``kwargs``: the potential from its generator, and the map back to
        constrained values, which NumPyro builds as ``partial(constrain_fn, model, args,
        kwargs)`` when the model has deterministic sites to replay and as a data-free
        ``partial(transform_fn, transforms)`` otherwise.

        Returns:
            Whether every closure was rebuilt (``False``: set the guide up eagerly instead).
        """
        self._potential_fn = self._potential_fn_gen(*args, **kwargs)
        post = getattr(self._postprocess_fn, "fn", None)
        if not isinstance(post, functools.partial):
            return False
        a = post.args
        if len(a) >= 2 and isinstance(a[-2], tuple) and isinstance(a[-1], dict):
            # partial(constrain_fn, model, args, kwargs): the replayed model's data
            post = functools.partial(post.func, *a[:-2], args, kwargs, **post.keywords)
        if _holds_tracer(post.args):
            return False
        self._postprocess_fn = handlers.seed(post, rng_seed=0)
        return True


def _holds_tracer(obj: Any, depth: int = 0) -> bool:
    """Whether ``obj`` (a constraint, a transform, or containers of them) holds a tracer."""
    if isinstance(obj, jax.core.Tracer):
        return True
    if depth > 4:
        return False
    if isinstance(obj, tuple | list):
        return any(_holds_tracer(v, depth + 1) for v in obj)
    if isinstance(obj, dict):
        return any(_holds_tracer(v, depth + 1) for v in obj.values())
    return hasattr(obj, "__dict__") and any(_holds_tracer(v, depth + 1) for v in vars(obj).values())


def compiled_init(svi: Any, guide: Any, rng_key: Array, *args: Any, **kwargs: Any) -> Any:
    """``svi.init(rng_key, *args, **kwargs)`` as one compiled program.

    NumPyro's ``SVI.init`` runs the guide's set-up and a trace of the guide and of the model
    eagerly, every operation compiled on its own (~250 compilations, 10-16 s cold for a
    2-layer DGP). For an :class:`InducingPointGuide` or a :class:`CompiledAutoNormal`
    (``guide``, which ``svi.guide`` may wrap) that has not been set up yet, the whole
    ``init`` is traced once under ``jax.jit`` with the arrays of ``args`` as arguments; the
    guide's initial values are then put back as concrete arrays (its prototype trace keeps
    only structure: names, shapes, supports, plates, and its distributions' parameters are
    not to be evaluated), and an ``AutoNormal``'s closures are rebuilt at the concrete
    ``args``. An :class:`InducingPointGuide` keeps only its initial values: its prototype's
    other values are left out of the program (so none of the model's layers is computed) and
    become ``jax.ShapeDtypeStruct`` shapes. A prototype whose supports depend on the data (a
    tracer in a constraint) is set up again eagerly, as are other guides (``svi.init``
    itself).

    The model's checks of concrete data (e.g. labels in range) do not run under the trace:
    call this after a concrete or abstract trace of the model at the same arguments (as
    :func:`~ppl_dgp.infer.core.inspect_model` does).

    Returns:
        NumPyro's ``SVIState``; ``svi.constrain_fn`` is set as by ``svi.init``.
    """
    compiled = isinstance(guide, InducingPointGuide | CompiledAutoNormal)
    if not compiled or guide.prototype_trace is not None:
        return svi.init(rng_key, *args, **kwargs)

    # An InducingPointGuide needs only its initial values (``_init_locs``) after the set-up:
    # the rest of its prototype's values stay out of the program, which then computes none
    # of the model's layers (0.8 -> 0.3 s to compile a 2-layer DGP's set-up), and are kept
    # as their shapes. An AutoNormal's prototype keeps its values.
    keep_values = isinstance(guide, CompiledAutoNormal)

    def init(key: Array, args: tuple) -> tuple:
        state = svi.init(key, *args, **kwargs)
        values = {
            name: site["value"]
            for name, site in guide.prototype_trace.items()
            if site["type"] in ("sample", "param", "deterministic", "plate")
            and isinstance(site["value"], jax.Array)
        }
        return state, guide._init_locs, values if keep_values else {}

    state, init_locs, values = AdaptiveJit(init)(rng_key, args)  # runs once: compiled quick
    if isinstance(guide, CompiledAutoNormal):
        supports = [
            site["fn"].support
            for site in guide.prototype_trace.values()
            if site["type"] == "sample" and not site["is_observed"]
        ]
        if _holds_tracer(supports) or not guide.bind(args, kwargs):  # data-dependent: eagerly
            guide.prototype_trace = None
            return svi.init(rng_key, *args, **kwargs)
    # traced, the initial values come out of NumPyro's while_loop with sorted keys: put them
    # back in the model's order, as the eager set-up has them (AutoNormal.sample_posterior
    # splits its key over the sites in this order)
    order = [name for name in guide.prototype_trace if name in init_locs]
    guide._init_locs = {name: init_locs[name] for name in order}
    for name, site in guide.prototype_trace.items():
        if name in values:
            site["value"] = values[name]
        elif isinstance(site["value"], jax.core.Tracer):  # left the program: its shape only
            site["value"] = jax.ShapeDtypeStruct(site["value"].shape, site["value"].dtype)
    return state
