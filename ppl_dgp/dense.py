"""A Bayesian dense layer as a NumPyro sub-program: ``dense(name, X, D_out, ...)``.

``z = X W + b`` with Gaussian priors ``W ~ N(0, 1/delta)`` ``[D_in, D_out]`` and
``b ~ N(0, 1/delta)`` ``[D_out]`` (``delta`` the layer's prior precision). Sites ``{name}.W``
and ``{name}.b`` (global, outside any plate) are tagged ``infer[ROLE] = "dense"`` so that the
Laplace orchestration can find the layers (last layer, KFAC blocks); the layer input is recorded
as the deterministic site ``{name}.input`` ``[N, D_in]`` (KFAC's input factor is built from it).
The layer can sit in front of GP layers like any other function of ``X``.

The initial values (``infer["init"]``, used by :data:`~ppl_dgp.guides.init_to_model_init` for
MAP, NUTS and SVI starts) are PyTorch's default for ``nn.Linear``: uniform on
``[-1/sqrt(D_in), 1/sqrt(D_in)]``, drawn from a NumPy generator seeded by ``(seed, name)``.

Example:
    >>> import jax.numpy as jnp
    >>> from numpyro.handlers import seed, trace
    >>> def model(X):
    ...     H = jnp.tanh(dense("layer0", X, 3))
    ...     return dense("layer1", H, 1)
    >>> tr = trace(seed(model, 0)).get_trace(jnp.ones((5, 2)))
    >>> tr["layer0.W"]["value"].shape, tr["layer1.b"]["value"].shape
    ((2, 3), (1,))
    >>> tr["layer1.input"]["value"].shape, tr["layer1.W"]["infer"][ROLE]
    ((5, 3), 'dense')
"""

from __future__ import annotations

import warnings
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array

from ppl_dgp.layers import ROLE

__all__ = ["DENSE", "dense", "dropout", "torch_default_init"]

#: The ``infer[ROLE]`` tag of a dense layer's weight and bias sites.
DENSE = "dense"


def torch_default_init(name: str, D_in: int, D_out: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``(W [D_in, D_out], b [D_out])`` uniform on ``+-1/sqrt(D_in)`` (PyTorch's default)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    bound = 1.0 / np.sqrt(D_in)
    return rng.uniform(-bound, bound, (D_in, D_out)), rng.uniform(-bound, bound, D_out)


def dense(
    name: str,
    X: Array,  # [N, D_in]
    D_out: int,
    *,
    prior_precision: float = 1.0,
    seed: int = 0,
    init: tuple[Any, Any] | None = None,
) -> Array:  # [N, D_out]
    """Bayesian affine layer ``X W + b`` with ``N(0, 1/prior_precision)`` weight priors.

    Args:
        name: site prefix (``{name}.W``, ``{name}.b``, ``{name}.input``).
        X: inputs ``[N, D_in]``.
        D_out: number of outputs.
        prior_precision: ``delta > 0`` of the Gaussian prior on ``W`` and ``b``.
        seed: seed of the initial values.
        init: ``(W [D_in, D_out], b [D_out])`` initial values (a warm start), instead of
            PyTorch's default draw.

    Returns:
        ``z = X W + b`` ``[N, D_out]``.

    Raises:
        ValueError: ``X`` is not 2-D, ``D_out < 1`` or ``prior_precision <= 0``.
    """
    if X.ndim != 2:
        raise ValueError(f"dense({name!r}): X must have shape [N, D_in]; received {X.shape}")
    if not isinstance(D_out, int | np.integer) or D_out < 1:
        raise ValueError(f"dense({name!r}): D_out must be a positive int; received {D_out!r}")
    if not np.all(np.asarray(prior_precision) > 0):
        raise ValueError(
            f"dense({name!r}): prior_precision must be > 0; received {prior_precision!r}"
        )
    D_in = X.shape[1]
    if init is None:
        W0, b0 = torch_default_init(name, D_in, D_out, seed)
    else:
        W0, b0 = (np.asarray(v, dtype=float) for v in init)
        if W0.shape != (D_in, D_out) or b0.shape != (D_out,):
            raise ValueError(
                f"dense({name!r}): init must be (W [{D_in}, {D_out}], b [{D_out}]); received "
                f"shapes {W0.shape}, {b0.shape}"
            )
    scale = 1.0 / np.sqrt(float(prior_precision))
    W = numpyro.sample(
        f"{name}.W",
        dist.Normal(0.0, scale).expand([D_in, D_out]).to_event(2),
        infer={ROLE: DENSE, "init": jnp.asarray(W0)},
    )
    b = numpyro.sample(
        f"{name}.b",
        dist.Normal(0.0, scale).expand([D_out]).to_event(1),
        infer={ROLE: DENSE, "init": jnp.asarray(b0)},
    )
    numpyro.deterministic(f"{name}.input", X)
    return X @ W + b


def dropout(H: Array, rate: float) -> Array:  # [N, D] -> [N, D]
    """Inverted dropout, ``H * m / (1 - rate)`` with ``m_nd ~ Bernoulli(1 - rate)`` per entry.

    The mask is drawn from ``numpyro.prng_key()``, so it is fresh in every seeded run of the
    program (each MC-dropout training step and each stochastic prediction pass). Where no key
    is given (a log density evaluated by NUTS, MAP or Laplace outside a ``seed`` handler) the
    layer is the identity, dropout's expectation (``E[m / (1 - rate)] = 1``, the "weight
    scaling" network). ``rate = 0`` is the identity and draws nothing.

    Args:
        H: activations ``[N, D]``.
        rate: the drop probability ``p`` in ``[0, 1)``.

    Returns:
        ``[N, D]``.

    Raises:
        ValueError: ``rate`` is not in ``[0, 1)``.

    References:
        Srivastava et al. (2014), "Dropout", JMLR; Gal & Ghahramani (2016), "Dropout as a
        Bayesian Approximation", ICML.

    Example:
        >>> import jax.numpy as jnp
        >>> from numpyro.handlers import seed
        >>> H = seed(lambda: dropout(jnp.ones((2, 4)), 0.5), 0)()
        >>> sorted(set(H.ravel().tolist()))  # dropped or scaled by 1 / (1 - p)
        [0.0, 2.0]
        >>> bool(jnp.all(dropout(jnp.ones((2, 4)), 0.0) == 1.0))
        True
    """
    if not (isinstance(rate, float | int) and 0.0 <= rate < 1.0) or isinstance(rate, bool):
        raise ValueError(f"dropout: rate must be a number in [0, 1); received {rate!r}")
    if rate == 0.0:
        return H
    with warnings.catch_warnings():  # outside every handler NumPyro warns and returns None
        warnings.simplefilter("ignore", UserWarning)
        key = numpyro.prng_key()
    if key is None:
        return H
    keep = jax.random.bernoulli(key, 1.0 - rate, jnp.shape(H))
    return jnp.where(keep, H / (1.0 - rate), jnp.zeros_like(H))
