"""The collapsed (doubly-stochastic) run of a GP-layer program, as a NumPyro handler.

Under :class:`collapse` every GP layer integrates its inducing values out analytically against
``q(u) = N(q_mu, q_sqrt q_sqrt^T)`` read from the handler's ``params`` and propagates one
sample per datum through the layer's marginals,

.. math::
    q(f_n) = \\int p(f_n \\mid u)\\, q(u)\\, du = N(\\mu_q(x_n), \\sigma^2_q(x_n)), \\qquad
    f_n = \\mu_q(x_n) + \\sigma_q(x_n)\\, \\epsilon_n,

(layers without a ``q(u)`` in ``params`` keep ``p(f | u)`` given their ``u``), and a Gaussian
likelihood whose input moments ``q(f_n) = N(m_n, v_n)`` are known takes its expectation in
closed form, ``E_q[log N(y_n | f_n, s2)] = log N(y_n | m_n, s2) - v_n / (2 s2)``: the terms of
the bound of Salimbeni & Deisenroth (2017), eq. (4)-(5).

The program does not read any global to find out whether it runs collapsed. A layer sends a
message of type :data:`COLLAPSE` through NumPyro's handler stack (like
``numpyro.prng_key()`` does for :class:`~numpyro.handlers.seed`): outside the handler it comes
back unanswered and the program is the proper joint; inside, :meth:`collapse.process_message`
answers with the layer's ``q(u)``. The results are recorded as ``deterministic`` sites that
:class:`~numpyro.handlers.trace` sees, with ``infer={ROLE: <stat>, "of": <owner>}``:

=============================  ======================================================  ==========
site                           meaning                                                 shape
=============================  ======================================================  ==========
``{layer}.kl``                 ``KL[q(u) || p(u)]`` (layers with a ``q(u)`` only)       ``[]``
``{layer}.f``                  the propagated output ``F``                              ``[N, Q]``
``{layer}.f_mean``             mean of ``q(f_n)`` (or ``p(f_n | u)``)                   ``[N, Q]``
``{layer}.f_var``              variance of ``q(f_n)`` (or ``p(f_n | u)``)               ``[N, Q]``
``{lik}.f_mean``, ``.f_var``   moments of the likelihood's latent input                 ``[N]``
``{lik}.noise_variance``       the likelihood's ``s2``                                  ``[]``
``{lik}.var_exp``              ``E_q[log p(y_n | f_n)]`` (observed; closed form for    ``[N]``
                               a Gaussian, see :mod:`ppl_dgp.outputs` otherwise)
=============================  ======================================================  ==========

References:
    Salimbeni & Deisenroth (2017), "Doubly Stochastic Variational Inference for Deep Gaussian
    Processes", NeurIPS, eq. (4)-(5). Hensman, Matthews & Ghahramani (2015), "Scalable
    Variational Gaussian Process Classification", AISTATS.

Example:
    With ``q(u)`` equal to the (whitened) prior, the layer's KL term is zero:

    >>> import functools, jax.numpy as jnp
    >>> from numpyro.handlers import seed, trace
    >>> from ppl_dgp.models import svgp
    >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]; y = jnp.sin(3.0 * X[:, 0])
    >>> model = functools.partial(svgp.svgp_regression, **svgp.init_svgp(X, num_inducing=4))
    >>> params = {"layer0.q_mu": jnp.zeros((4, 1)), "layer0.q_sqrt": jnp.eye(4)[None]}
    >>> with collapse(params=params):
    ...     tr = trace(seed(model, 0)).get_trace(X, y)
    >>> float(tr["layer0.kl"]["value"]), tr["y.var_exp"]["value"].shape
    (0.0, (8,))
    >>> gaussian_output(tr, "y").var.shape
    (8,)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from jax import Array
from numpyro.primitives import Messenger, apply_stack

from ppl_dgp.compile_effort import AdaptiveJit

__all__ = ["COLLAPSE", "ROLE", "GaussianOutput", "collapse", "gaussian_output"]

ROLE = "ppl_dgp_role"  # key in a site's ``infer`` dict: "inducing", "layer_noise", "kl", ...
COLLAPSE = "ppl_dgp_collapse"  # type of the message a layer sends to ask for its q(u)


class InducingPosterior(NamedTuple):
    """A layer's ``q(u)`` under :class:`collapse`; ``None`` members: no ``q(u)`` given."""

    q_mu: Array | None  # [M, Q]
    q_sqrt: Array | None  # [Q, M, M]


class collapse(Messenger):
    """Run GP layers collapsed: marginalise ``u`` against ``q(u)`` and record the bound's terms.

    ``params`` holds each collapsed layer's ``{layer}.q_mu [M, Q]`` and
    ``{layer}.q_sqrt [Q, M, M]`` (the :class:`~ppl_dgp.guides.InducingPointGuide` parameters);
    a layer without them keeps the prior conditional ``p(f | u)`` given its ``u`` (the
    predictive of an MCMC draw, SGHMC's minibatch estimator), and still records its moments.
    The handler holds no results: they are trace sites (see the module). Nested handlers: the
    innermost answers. Not a density: for SVI's bound and the predictive only.

    Args:
        fn: a program (optional, as for every NumPyro handler).
        params: the ``q(u)`` parameters, keyed by site name.

    Example:
        The same program, plain and collapsed (the bound's terms appear as sites):

        >>> import functools, jax.numpy as jnp
        >>> from numpyro.handlers import seed, trace
        >>> from ppl_dgp.models import svgp
        >>> X = jnp.linspace(-1.0, 1.0, 8)[:, None]; y = jnp.sin(3.0 * X[:, 0])
        >>> model = functools.partial(svgp.svgp_regression, **svgp.init_svgp(X, num_inducing=4))
        >>> "y.var_exp" in trace(seed(model, 0)).get_trace(X, y)
        False
        >>> params = {"layer0.q_mu": jnp.zeros((4, 1)), "layer0.q_sqrt": jnp.eye(4)[None]}
        >>> with collapse(params=params):
        ...     tr = trace(seed(model, 0)).get_trace(X, y)
        >>> sorted(name for name in tr if name.startswith("y."))
        ['y.f_mean', 'y.f_var', 'y.noise_variance', 'y.var_exp']
    """

    def __init__(self, fn: Callable | None = None, params: Mapping[str, Array] | None = None):
        self.params = {} if params is None else dict(params)
        self._moments: dict[str, dict[str, Array]] = {}
        super().__init__(fn)

    def __enter__(self) -> collapse:
        self._moments = {}
        return super().__enter__()

    def __exit__(self, *args: Any) -> None:
        self._moments = {}  # no tracer outlives the run
        return super().__exit__(*args)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "deterministic" and msg.get("infer", {}).get(ROLE) in _MOMENTS:
            # Remembered for the run only, so a likelihood told its input layer can use them.
            self._moments.setdefault(msg["infer"]["of"], {})[msg["infer"][ROLE]] = msg["value"]
            return
        if msg["type"] != COLLAPSE or msg["value"] is not None:
            return  # not ours, or an inner collapse handler answered
        layer, want = msg["kwargs"]["layer"], msg["kwargs"]["want"]
        if want == "active":
            msg["value"] = True
        elif want == "q":
            p = self.params
            msg["value"] = InducingPosterior(p.get(f"{layer}.q_mu"), p.get(f"{layer}.q_sqrt"))
        else:  # "moments": (mean, var) of a layer recorded earlier in this run
            m = self._moments.get(layer)
            if m is None:
                raise ValueError(
                    f"collapse: the likelihood's input layer {layer!r} has not run in this "
                    f"collapsed program; layers that ran: {sorted(self._moments)}"
                )
            msg["value"] = (m["f_mean"], m["f_var"])


_MOMENTS = ("f_mean", "f_var")


def _ask(layer: str | None, want: str) -> Any:
    """Send a :data:`COLLAPSE` message; ``None`` when no :class:`collapse` handler answers.

    (With no handler at all, NumPyro's default processing calls ``fn``, which answers ``None``.)
    """
    msg = {
        "type": COLLAPSE,  # no "name": trace records nothing for it
        "fn": lambda **kwargs: None,
        "args": (),
        "kwargs": {"layer": layer, "want": want},
        "value": None,
    }
    return apply_stack(msg)["value"]


def inducing_posterior(layer: str) -> InducingPosterior | None:
    """``q(u)`` of ``layer`` under :class:`collapse`; ``None`` when the run is not collapsed."""
    return _ask(layer, "q")


def recorded_moments(layer: str) -> tuple[Array, Array]:
    """``(f_mean, f_var)`` ``[N, Q]`` that ``layer`` recorded earlier in this collapsed run."""
    value = _ask(layer, "moments")
    if value is None:
        raise ValueError(f"recorded_moments({layer!r}) needs a collapse handler")
    return value


def is_collapsed() -> bool:
    """Whether the program runs under a :class:`collapse` handler."""
    return _ask(None, "active") is not None


def record(name: str, value: Array, *, role: str, of: str) -> Array:
    """Record ``value`` as a ``deterministic`` site with ``infer={ROLE: role, "of": of}``."""
    msg = {
        "type": "deterministic",
        "name": name,
        "value": value,
        "cond_indep_stack": [],
        "infer": {ROLE: role, "of": of},
    }
    return apply_stack(msg)["value"]  # with no handler, the value itself


class GaussianOutput(NamedTuple):
    """A Gaussian likelihood's latent input and observation, ``f ~ N(mean, f_var)``,
    ``y ~ N(mean, var)`` with ``var = f_var + noise_variance``; arrays ``[..., N]``."""

    mean: Array
    f_var: Array
    noise_variance: Array  # [...] (one per leading index)
    var: Array


def gaussian_output(values: Mapping[str, Any], site: str) -> GaussianOutput:
    """The last layer plus Gaussian noise as one Gaussian: ``N(m_n, v_n + s2)`` per datum.

    .. math:: p(y_n \\mid \\cdot) = \\int N(y_n \\mid f_n, s^2)\\, N(f_n \\mid m_n, v_n)\\, df_n
        = N(y_n \\mid m_n, v_n + s^2)

    Args:
        values: a collapsed trace (``{name: site}``) or its values (``{name: array}``), with
            leading batch axes allowed (e.g. ``[S, N]`` from a vmapped run).
        site: the Gaussian likelihood's site name (e.g. ``"y"``).

    Returns:
        :class:`GaussianOutput` ``(mean, f_var, noise_variance, var)``.

    Raises:
        KeyError: ``site`` recorded no moments (not a collapsed run, or not a Gaussian
            likelihood).

    References:
        Salimbeni & Deisenroth (2017), section 3.1 (the predictive); Havasi et al. (2018),
        ``predict_density``.
    """

    def get(key: str) -> Array:
        if key not in values:
            raise KeyError(
                f"gaussian_output: no site {key!r}; run the program under collapse(...) and "
                f"pass its trace and the name of a gaussian_likelihood site (received {site!r})"
            )
        v = values[key]
        return v["value"] if isinstance(v, dict) else v

    mean, f_var = get(f"{site}.f_mean"), get(f"{site}.f_var")
    s2 = get(f"{site}.noise_variance")
    return GaussianOutput(mean, f_var, s2, _plus_noise(f_var, s2))


def _add_noise(f_var: Array, s2: Array) -> Array:  # [..., N], [...] -> [..., N]
    return f_var + s2[..., None]


#: one small program (eagerly, the broadcast and the sum would each compile at XLA's
#: defaults in every fresh process; inside a traced program it is inlined)
_plus_noise = AdaptiveJit(_add_noise)
