"""The one result type of every inference method, and its open on-disk format.

A :class:`Posterior` holds draws shaped ``(chain, draw, ...)`` keyed by constrained site name
(the model's *global* latent sites: for GP programs ``{layer}.u`` and the hyperparameters, not
the per-datum ``{layer}.eps``), per-draw sample statistics, the fitted point parameters
(guide parameters and model ``param`` sites such as ``layer0.Z``), the method's name and
configuration, and timings. SVI draws from ``q`` have one chain.

On-disk format (version :data:`FORMAT`), two files side by side, no pickle:

``<path>.npz``
    uncompressed NumPy archive; one array per entry, named ``draws/<site>``,
    ``sample_stats/<stat>`` or ``params/<name>`` (dtype and shape preserved; loaded with
    ``allow_pickle=False``).
``<path>.json``
    ``{"format": "ppl_dgp.posterior/1", "method": str, "config": {...}, "timings": {...}}``;
    ``config`` is the method's JSON configuration and ``timings`` has ``compile_seconds`` and
    ``run_seconds`` (plus method-specific entries).

Example:
    >>> # post = fit(NUTS(num_chains=2), key, model, X, y)
    >>> # post.save("runs/nuts")  # runs/nuts.npz + runs/nuts.json
    >>> # assert Posterior.load("runs/nuts") == post
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "Posterior"]

#: Identifier and version of the on-disk format, stored in the JSON sidecar.
FORMAT = "ppl_dgp.posterior/1"
_GROUPS = ("draws", "sample_stats", "params")


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


@dataclasses.dataclass(frozen=True, eq=False)
class Posterior:
    """Draws, sample statistics and fitted parameters of one inference run.

    Attributes:
        draws: ``{site: array (chain, draw, *site_shape)}``, constrained values.
        sample_stats: ``{stat: array (chain, draw)}``; MCMC: ``diverging``, ``accept_prob``,
            ``step_size``, ``num_steps`` (leapfrog steps), ``energy`` (and ``tree_depth`` for
            NUTS); SVI: ``loss`` shaped ``(1, num_steps)``.
        params: fitted point parameters ``{name: array}`` (guide parameters, model ``param``
            sites).
        method: the method's name (``"svi"``, ``"nuts"``, ``"hmc"``, ...).
        config: the method's configuration (JSON-able).
        timings: ``compile_seconds``, ``run_seconds`` and method-specific entries.
    """

    draws: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    method: str
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {k: np.shape(v)[:2] for k, v in self.draws.items()}
        if any(len(s) < 2 for s in shapes.values()):
            raise ValueError(f"Posterior.draws must be shaped (chain, draw, ...); got {shapes}")
        if len(set(shapes.values())) > 1:
            raise ValueError(f"Posterior.draws disagree on (chain, draw): {shapes}")
        for group in _GROUPS:
            for k in getattr(self, group):
                if not isinstance(k, str) or not k:
                    raise ValueError(f"Posterior.{group}: keys must be non-empty str; got {k!r}")

    # -- shape -----------------------------------------------------------------------------
    @property
    def num_chains(self) -> int:
        """Number of chains (1 for SVI and other approximations sampled i.i.d.)."""
        return int(next(iter(self.draws.values())).shape[0]) if self.draws else 0

    @property
    def num_draws(self) -> int:
        """Draws per chain."""
        return int(next(iter(self.draws.values())).shape[1]) if self.draws else 0

    def flat(self) -> dict[str, np.ndarray]:
        """Draws with chain and draw merged: ``{site: (chain * draw, *site_shape)}``."""
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.draws.items()}

    # -- equality --------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Posterior):
            return NotImplemented
        if (self.method, self.config, self.timings) != (other.method, other.config, other.timings):
            return False
        for group in _GROUPS:
            a, b = getattr(self, group), getattr(other, group)
            if a.keys() != b.keys():
                return False
            for k in a:
                x, y = np.asarray(a[k]), np.asarray(b[k])
                if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
                    return False
        return True

    __hash__ = None  # type: ignore[assignment]

    # -- I/O -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.npz`` and ``<path>.json`` (see the module docstring).

        Returns:
            The two paths written.
        """
        npz, sidecar = _paths(path)
        arrays = {
            f"{group}/{k}": np.asarray(v)
            for group in _GROUPS
            for k, v in getattr(self, group).items()
        }
        meta = {
            "format": FORMAT,
            "method": self.method,
            "config": self.config,
            "timings": self.timings,
        }
        text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=True)
        npz.parent.mkdir(parents=True, exist_ok=True)
        with open(npz, "wb") as f:
            np.savez(f, **arrays)
        sidecar.write_text(text + "\n")
        return npz, sidecar

    @classmethod
    def load(cls, path: str | Path) -> Posterior:
        """Read a Posterior written by :meth:`save` (``path`` with or without suffix)."""
        npz, sidecar = _paths(path)
        meta = json.loads(sidecar.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{sidecar}: unknown format {meta.get('format')!r}; expected {FORMAT!r}"
            )
        groups: dict[str, dict[str, np.ndarray]] = {g: {} for g in _GROUPS}
        with np.load(npz, allow_pickle=False) as data:
            for key in data.files:
                group, _, name = key.partition("/")
                if group not in groups or not name:
                    raise ValueError(f"{npz}: unexpected entry {key!r}")
                groups[group][name] = data[key]
        return cls(method=meta["method"], config=meta["config"], timings=meta["timings"], **groups)
