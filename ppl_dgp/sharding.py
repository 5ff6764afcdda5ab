"""Data parallelism across devices with JAX's own sharding: a ``Mesh`` over the batch axis.

A minibatch method (``SVI(batch_size=B, devices=k)``, ``SGHMC(batch_size=B, devices=k)``) runs
its compiled step on a one-axis :class:`jax.sharding.Mesh` of ``k`` devices named ``"data"``.
The data and the method's state are *replicated* on every device (:func:`replicate`); the
minibatch's indices are *sharded* along ``"data"`` (:func:`shard_batch`), so each device
gathers and evaluates ``B / k`` of the ``B`` data points, and XLA's SPMD partitioner turns the
sum of the per-datum terms and the gradient with respect to the replicated parameters into an
all-reduce. Nothing here is a home-made distribution layer: one ``jax.jit`` program, one
sharding annotation on the batch, the partitioner does the rest. The result equals the
one-device fit up to floating-point reassociation of the sums.

MCMC chains across devices are NumPyro's ``chain_method="parallel"`` (``NUTS(num_chains=k,
chain_method="parallel")``), one chain per device.

Beyond one host, start every process with ``jax.distributed.initialize()`` (coordinator
address, process count and id from the environment or arguments; see JAX's "multi-process"
guide); ``jax.devices()`` then lists every host's devices and ``devices=jax.device_count()``
spreads the batch over all of them, each process running the same program on its own data
copy.

To try it on one CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before JAX starts
gives two host devices.

Example:
    >>> import jax, jax.numpy as jnp
    >>> mesh = batch_mesh(1)
    >>> idx = jax.jit(lambda i: shard_batch(i, mesh))(jnp.arange(4))
    >>> mesh.axis_names, idx.shape
    (('data',), (4,))
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax import Array
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["AXIS", "batch_mesh", "check_divisible", "replicate", "shard_batch"]

#: The mesh axis the minibatch is split along.
AXIS = "data"


def batch_mesh(devices: int | None, owner: str = "devices") -> Mesh | None:
    """A one-axis mesh named :data:`AXIS` over the first ``devices`` of ``jax.devices()``.

    Args:
        devices: how many devices (``None``: no mesh, the default device alone).
        owner: the argument named in errors (e.g. ``"SVI.devices"``).

    Raises:
        ValueError: ``devices`` is not a positive integer or exceeds the devices present.
    """
    if devices is None:
        return None
    if isinstance(devices, bool) or not isinstance(devices, int | np.integer) or devices < 1:
        raise ValueError(f"{owner} must be None or a positive integer; received {devices!r}")
    present = jax.devices()
    if devices > len(present):
        raise ValueError(
            f"{owner}={devices} but only {len(present)} device(s) are present "
            f"({present[0].platform}); on a CPU, XLA_FLAGS="
            f"--xla_force_host_platform_device_count={devices} before JAX starts gives "
            f"{devices} host devices"
        )
    return Mesh(np.asarray(present[:devices]), (AXIS,))


def check_divisible(batch_size: int | None, devices: int | None, owner: str) -> None:
    """A data-parallel fit needs a minibatch that splits evenly: ``batch_size % devices == 0``.

    Raises:
        ValueError: ``devices`` without ``batch_size``, or ``batch_size`` not divisible.
    """
    if devices is None:
        return
    if batch_size is None:
        raise ValueError(
            f"{owner}.devices={devices} splits the minibatch over devices: give "
            f"{owner}.batch_size (the full-batch fit is not data-parallel)"
        )
    if batch_size % devices:
        raise ValueError(
            f"{owner}.batch_size={batch_size} must be divisible by {owner}.devices={devices} "
            "(each device takes batch_size / devices points)"
        )


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """``tree``'s arrays placed whole on every device of ``mesh`` (unchanged without one)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())
    put = lambda x: jax.device_put(x, sharding) if isinstance(x, np.ndarray | jax.Array) else x
    return jax.tree.map(put, tree)


def shard_batch(idx: Array, mesh: Mesh | None) -> Array:
    """The minibatch indices ``idx [B]`` split along the mesh's :data:`AXIS` (inside ``jit``):
    every array gathered with them, and every per-datum term after, is split the same way."""
    if mesh is None:
        return idx
    return jax.lax.with_sharding_constraint(idx, NamedSharding(mesh, PartitionSpec(AXIS)))
