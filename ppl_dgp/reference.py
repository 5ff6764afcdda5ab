"""A reference posterior computed once, stored with its provenance, and found again.

``ppl-dgp compare`` scores every method against a NUTS reference, and a reference that passes
its own checks on a 2-layer DGP needs more draws than a ~5-minute run allows (issue 15: 8
chains x 3000 iterations for R-hat <= 1.01 and bulk ESS >= 800 on every inducing value, not
only on the hyperparameters). Such a run is made once by a documented command::

    ppl-dgp reference --model dgp --data motorcycle --out DIR

which fits NUTS with :data:`REFERENCE_NUTS` on exactly the data and model that ``compare``
builds, and writes ``DIR/{model}-{data}.npz`` / ``.json`` (:meth:`Posterior.save
<ppl_dgp.posterior.Posterior.save>`) and ``.provenance.json``: a :class:`Provenance` that names
the model, the data set, the split and the model's size, a SHA-256 of the standardised
training data, and the command.

``compare`` uses a stored reference only when its provenance equals the run's own (the same
model name and size, data, split and training data, value for value): the references shipped
in the package (:data:`PACKAGED`) and any ``--reference PATH`` are checked alike
(:func:`check_provenance`), so a reference fitted on other data is refused
by name instead of scoring the methods against the wrong posterior. The shipped file is
reproduced by its command (``tests/test_reference_file.py``, marked slow: it compares the two
runs' posterior means within Monte Carlo error).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PACKAGED",
    "PROVENANCE_SUFFIX",
    "REFERENCE_NUTS",
    "Provenance",
    "check_provenance",
    "data_digest",
    "read_provenance",
    "reference_stem",
    "write_provenance",
]

#: Folder of the references shipped with the package.
PACKAGED = Path(__file__).parent / "data" / "references"
#: The sidecar beside ``STEM.npz`` / ``STEM.json``.
PROVENANCE_SUFFIX = ".provenance.json"
#: ``ppl-dgp reference``'s NUTS: 8 chains x (1000 warm-up + 3000 iterations), every 3rd kept
#: (1000 draws per chain; a kept draw counts as divergent when any iteration since the last
#: kept one diverged), target 0.95, tree depth <= 6. On the motorcycle DGP (M = 20) the
#: ``compare`` preset's 8 x (500 + 1000) at target 0.9 leaves R-hat 1.011-1.013 and bulk ESS
#: 534-571 (< 100 per chain) on components of ``layer{0,1}.u``; three times the iterations
#: closed both (max R-hat 1.0043, min bulk ESS 1146) but left one divergent transition of
#: 24,000. Every tree reaches depth 6 there, so a higher target costs no leapfrog steps, only
#: trajectory length per iteration.
REFERENCE_NUTS: dict[str, Any] = {
    "num_warmup": 1000,
    "num_samples": 3000,
    "thinning": 3,
    "num_chains": 8,
    "max_tree_depth": 6,
    "target_accept_prob": 0.95,
}


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What a stored reference was fitted on.

    Attributes:
        model: the zoo model's name.
        data: the data set (a bundled name, or a CSV's file name).
        target: a CSV's target column (``None`` for a bundled set).
        features: a CSV's input columns (``None``: all others).
        test_fraction: held-out share of the data.
        seed: the split's (and the fit's) seed.
        num_inducing: inducing points per GP layer.
        layers: GP layers.
        data_sha256: :func:`data_digest` of the standardised training ``X`` and ``y``.
        command: the command that wrote the file (not compared).
    """

    model: str
    data: str
    target: str | None
    features: tuple[str, ...] | None
    test_fraction: float
    seed: int
    num_inducing: int
    layers: int
    data_sha256: str
    command: str = ""

    def differences(self, other: Provenance) -> list[str]:
        """The fields (all but ``command``) in which ``self`` and ``other`` differ, as
        ``"name: self's value != other's value"`` lines."""
        out = []
        for f in dataclasses.fields(self):
            if f.name == "command":
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: {a!r} != {b!r}")
        return out


def data_digest(X: Any, y: Any) -> str:
    """SHA-256 of ``X`` and ``y`` as C-ordered float64 bytes, with their shapes."""
    h = hashlib.sha256()
    for a in (X, y):
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def reference_stem(model: str, data: str) -> str:
    """The file stem of a reference: ``{model}-{data}`` (a CSV's stem for its path)."""
    return f"{model}-{Path(data).stem}"


def _sidecar(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    if p.name.endswith(".provenance"):
        p = p.with_name(p.name[: -len(".provenance")])
    return p.with_name(p.name + PROVENANCE_SUFFIX)


def write_provenance(path: str | Path, prov: Provenance) -> Path:
    """Write ``prov`` beside the reference ``path`` (``STEM.npz``); returns the sidecar."""
    side = _sidecar(path)
    d = dataclasses.asdict(prov)
    d["features"] = None if prov.features is None else list(prov.features)
    side.write_text(json.dumps({"format": "ppl_dgp.reference/1", **d}, indent=1) + "\n")
    return side


def read_provenance(path: str | Path) -> Provenance | None:
    """The :class:`Provenance` beside the reference ``path``, or ``None`` when it has none.

    Raises:
        ValueError: the sidecar is not a reference provenance (the file named).
    """
    side = _sidecar(path)
    if not side.is_file():
        return None
    try:
        d = json.loads(side.read_text())
        if d.pop("format", None) != "ppl_dgp.reference/1":
            raise ValueError("unknown format")
        if d.get("features") is not None:
            d["features"] = tuple(d["features"])
        return Provenance(**d)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{side}: not a reference provenance file ({err})") from None


def check_provenance(path: str | Path, want: Provenance) -> list[str]:
    """Why the reference at ``path`` was not fitted on ``want``'s model and data: one line per
    differing field (empty: it was). A reference with no provenance file gives one line."""
    have = read_provenance(path)
    if have is None:
        return [f"it has no provenance file ({_sidecar(path).name})"]
    return have.differences(want)
