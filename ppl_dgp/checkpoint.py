"""Checkpoints of the iterative fits (SVI, SGHMC, MAP, the Laplace MAP): written every K steps
and on Ctrl-C, resumed bit for bit.

A method given ``checkpoint_dir`` (``SVI``, ``SGHMC``, ``MAP``, ``Laplace``) keeps one
checkpoint of its loop (:class:`~ppl_dgp.infer.loop.Loop`) in that directory: the loop's whole
state (optimizer or sampler state, NumPyro's key, the minibatch stream's permutation, position
and key), the step count, the losses so far and the kept draws. It is written every
``checkpoint_every`` steps, at the end of the loop, and when the loop is interrupted
(``KeyboardInterrupt``: written, then re-raised). Run the same fit again with the same
directory and it continues from the checkpoint; since every step's key is derived from
``(key, step index)`` and nothing else, the continued fit equals the uninterrupted one bit for
bit (same seed, same machine and library versions). A longer ``num_steps`` (``num_samples`` for
SGHMC) continues a finished fit.

A checkpoint belongs to one fit, recorded as its *fingerprint*: the method's configuration
(less the fields that only say how long to run or where to checkpoint), the ``rng_key``, the
model (its function and keywords), and the data's shapes, dtypes and SHA-256. A directory
holding another fit's checkpoint is refused with a :class:`CheckpointError` that names the
directory and every entry that differs; so is a state whose layout (site names, shapes, dtypes)
differs from the model's.

Format (version :data:`FORMAT`), no pickle:

``data-<digest>.npz``
    the arrays: ``state.<i>`` (the state's leaves in pytree order; a typed PRNG key as
    ``jax.random.key_data``), ``losses``, ``outputs.<i>`` (kept draws) and ``meta``, the UTF-8
    JSON of the manifest's description below (so the digest covers it too);
``checkpoint.json``
    the manifest, strict JSON: ``{"format", "data": file name, "sha256": the npz's digest,
    "owner", "stage", "step", "fingerprint", "state": [{path, shape, dtype, key}], "outputs",
    "extra"}``.

Writes are atomic: the npz goes to a temporary file, is renamed to its digest's name, then the
manifest is written the same way (temporary file, ``os.replace``) and only then is the previous
npz removed. At every instant the manifest names a complete npz whose digest it holds; an
interruption leaves the previous checkpoint (or none), never a mixed one.

Example:
    A MAP fitted in two calls (300 steps, then on to 600) equals the one-call fit:

    >>> import dataclasses, jax, numpy as np, numpyro, numpyro.distributions as dist, tempfile
    >>> from ppl_dgp.infer import MAP, fit
    >>> def model(X, y=None):
    ...     w = numpyro.sample("w", dist.Normal(0.0, 10.0))
    ...     with numpyro.plate("data", X.shape[0]):
    ...         numpyro.sample("y", dist.Normal(w * X[:, 0], 1.0), obs=y)
    >>> X = np.ones((20, 1)); y = 2.0 * np.ones(20)
    >>> folder = tempfile.mkdtemp()
    >>> method = MAP(num_steps=300, learning_rate=0.1, checkpoint_dir=folder)
    >>> first = fit(method, jax.random.key(0), model, X, y)
    >>> more = fit(dataclasses.replace(method, num_steps=600), jax.random.key(0), model, X, y)
    >>> whole = fit(MAP(num_steps=600, learning_rate=0.1), jax.random.key(0), model, X, y)
    >>> bool(np.array_equal(more.traces["map_loss"], whole.traces["map_loss"]))
    True
    >>> Checkpoint(folder).saved.step
    600
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl_dgp.posterior import sha256_file

__all__ = [
    "FORMAT",
    "Checkpoint",
    "CheckpointError",
    "Saved",
    "canonical",
    "check_checkpoint_fields",
    "describe",
    "fit_fingerprint",
]

FORMAT = "ppl_dgp.checkpoint/1"
MANIFEST = "checkpoint.json"

#: Method fields that never enter a fingerprint: where and how often to checkpoint.
CHECKPOINT_FIELDS = ("checkpoint_dir", "checkpoint_every")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be resumed from; the message names the path."""


def check_checkpoint_fields(owner: str, cfg: Any) -> None:
    """A method's ``checkpoint_dir`` (``None``, a str or a path, kept as a str) and
    ``checkpoint_every`` (an int >= 1), checked with errors naming them."""
    where = cfg.checkpoint_dir
    if where is not None:
        if not isinstance(where, str | os.PathLike) or not str(where):
            raise ValueError(
                f"{owner}.checkpoint_dir must be a directory path (str) or None; received {where!r}"
            )
        object.__setattr__(cfg, "checkpoint_dir", str(where))
    every = cfg.checkpoint_every
    if not isinstance(every, int | np.integer) or isinstance(every, bool) or every < 1:
        raise ValueError(f"{owner}.checkpoint_every must be an int >= 1; received {every!r}")
    object.__setattr__(cfg, "checkpoint_every", int(every))


# -- describing a fit ------------------------------------------------------------------------


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def describe(value: Any) -> Any:
    """A JSON value that identifies ``value`` across processes (no memory addresses).

    Arrays by shape, dtype and the SHA-256 of their bytes (a PRNG key by its key data),
    functions by ``module.qualname``, ``functools.partial`` by its function, arguments and
    keywords, dataclasses by type and fields, containers element-wise; any other object by its
    type's name only.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.generic) and not isinstance(value, np.ndarray):
        return describe(value.item())
    if _is_key(value):
        value = jax.random.key_data(value)
    if isinstance(value, np.ndarray | jax.Array):
        a = np.ascontiguousarray(np.asarray(value))
        return {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": _sha256_bytes(a.tobytes())}
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [describe(v) for v in value]
    if isinstance(value, functools.partial):
        return {
            "partial": describe(value.func),
            "args": describe(list(value.args)),
            "keywords": describe(dict(value.keywords)),
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"type": type(value).__qualname__, "fields": fields}
    if isinstance(value, Path):
        return str(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def fit_fingerprint(
    method: Any,
    rng_key: Any,
    model: Callable,
    X: Any,
    y: Any,
    model_kwargs: dict[str, Any],
    *,
    ignore: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """What makes a fit the same fit: the JSON value a checkpoint is checked against.

    Args:
        method: the method's configuration (a dataclass).
        rng_key: the fit's PRNG key.
        model: the NumPyro program.
        X: inputs ``[N, D]``.
        y: targets ``[N]``.
        model_kwargs: the model's further keywords.
        ignore: method fields left out (those saying only how long to run: a checkpoint of a
            shorter fit continues into a longer one). The checkpoint fields are always left out.
        only: if given, the only method fields kept (e.g. the Laplace MAP's).

    Returns:
        ``{"method": {field: value}, "rng_key", "model", "model_kwargs", "X", "y"}``.
    """
    names = [f.name for f in dataclasses.fields(method)]
    if only is not None:
        names = [n for n in names if n in only]
    fields = {
        n: describe(getattr(method, n))
        for n in names
        if n not in ignore and n not in CHECKPOINT_FIELDS
    }
    fingerprint = {
        "method": {"name": getattr(method, "name", type(method).__qualname__), **fields},
        "rng_key": describe(rng_key),
        "model": describe(model),
        "model_kwargs": describe(dict(model_kwargs)),
        "X": describe(X),
        "y": describe(y),
    }
    return json.loads(json.dumps(fingerprint))  # as it reads back from the manifest


def _differences(saved: Any, current: Any, where: str = "") -> list[str]:
    """Human-readable differences between two JSON values (dict entries by name)."""
    if isinstance(saved, dict) and isinstance(current, dict) and not _is_array_description(saved):
        out = []
        for k in sorted(set(saved) | set(current)):
            at = f"{where}.{k}" if where else k
            if k not in saved:
                out.append(f"{at}: absent in the checkpoint, {_short(current[k])} here")
            elif k not in current:
                out.append(f"{at}: {_short(saved[k])} in the checkpoint, absent here")
            else:
                out += _differences(saved[k], current[k], at)
        return out
    if saved != current:
        return [f"{where}: {_short(saved)} in the checkpoint, {_short(current)} here"]
    return []


def _is_array_description(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"shape", "dtype", "sha256"}


def _short(value: Any) -> str:
    if _is_array_description(value):
        return f"array{tuple(value['shape'])} {value['dtype']} sha256 {value['sha256'][:12]}"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- pytree leaves to arrays and back -----------------------------------------------------------


def canonical(tree: Any) -> Any:
    """``tree`` with every array leaf a strongly typed copy of itself (keys kept as they are).

    A restored state is read from NumPy arrays, which JAX types strongly; a fresh state may hold
    weakly typed leaves (a Python scalar's ``jnp.asarray``). The loop passes every state through
    this first, so that a resumed and an uninterrupted fit run the same compiled program.
    """

    def leaf(x: Any) -> Any:
        if _is_key(x) or not isinstance(x, jax.Array | np.ndarray | np.generic):
            return x
        return jnp.asarray(np.asarray(x))

    return jax.tree.map(leaf, tree)


def _leaves(tree: Any) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    arrays, meta = [], []
    for path, x in flat:
        key = None
        if _is_key(x):
            key = str(jax.random.key_impl(x))
            x = jax.random.key_data(x)
        a = np.asarray(x)
        arrays.append(a)
        meta.append({"path": jax.tree_util.keystr(path), "shape": list(a.shape),
                     "dtype": str(a.dtype), "key": key})  # fmt: skip
    return arrays, meta


def _rebuild(
    template: Any, arrays: list[np.ndarray], saved_meta: list[dict], what: str, where: Path
) -> Any:
    """``template``'s pytree with the saved leaves, checked leaf by leaf against it."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    _, want = _leaves(template)
    have = {m["path"]: m for m in saved_meta}
    missing = [w["path"] for w in want if w["path"] not in have]
    extra = [p for p in have if p not in {w["path"] for w in want}]
    if missing or extra or len(arrays) != len(flat):
        raise CheckpointError(
            f"{where}: the checkpoint's {what} does not have this fit's layout (a different "
            f"model, guide or method): leaves only here {missing[:5]}, only in the checkpoint "
            f"{extra[:5]}"
        )
    for w, s in zip(want, saved_meta, strict=True):
        if w["path"] != s["path"] or (w["shape"], w["dtype"]) != (s["shape"], s["dtype"]):
            raise CheckpointError(
                f"{where}: the checkpoint's {what} leaf {s['path']} is "
                f"{s['dtype']}{tuple(s['shape'])}, this fit's {w['path']} is "
                f"{w['dtype']}{tuple(w['shape'])} (a different model site layout or data shape)"
            )
    leaves = []
    for (_, t), a in zip(flat, arrays, strict=True):
        if _is_key(t):
            leaves.append(jax.random.wrap_key_data(jnp.asarray(a), impl=jax.random.key_impl(t)))
        else:
            leaves.append(jnp.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the checkpoint directory -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Saved:
    """A checkpoint read back and verified (see :meth:`Checkpoint.saved`).

    Attributes:
        stage: the loop it belongs to (``"loop"``; SGHMC: ``"burnin"`` or ``"sample"``).
        step: steps done in that loop.
        losses: the loss per step so far ``[step, ...]``.
        extra: the method's own notes (JSON).
        state_meta: ``[{path, shape, dtype, key}]`` of the state's leaves.
        path: the data file.
    """

    stage: str
    step: int
    losses: np.ndarray
    extra: dict[str, Any]
    state_meta: list[dict[str, Any]]
    path: Path
    _state: list[np.ndarray]
    _outputs: list[np.ndarray] | None


class Checkpoint:
    """A fit's checkpoint directory: where, how often, and which fit it belongs to.

    Args:
        directory: the folder (created if missing; one fit per folder).
        every: write a checkpoint every ``every`` loop steps (and at the end, and on Ctrl-C).
        fingerprint: the fit's identity (:func:`fit_fingerprint`); ``None`` reads any
            checkpoint (inspection only).
        owner: named in messages (``"SVI"``).

    Raises:
        CheckpointError: ``directory`` is a file or cannot be written (checked here, before
            any work).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        every: int = 100,
        fingerprint: dict[str, Any] | None = None,
        owner: str = "fit",
    ) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"{owner}: checkpoint_every must be an int >= 1; received {every!r}")
        self.directory = Path(directory)
        self.every, self.fingerprint, self.owner = every, fingerprint, owner
        self._saved: Saved | None | bool = False  # False: not read yet
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(
                f"{owner}: checkpoint_dir {self.directory} is a file; expected a directory"
            )

    @property
    def manifest(self) -> Path:
        return self.directory / MANIFEST

    def prepare(self) -> Checkpoint:
        """Check the directory before any work: create it, check that it can be written, and
        read and verify the checkpoint it holds (see :attr:`saved`). Returns ``self``."""
        self.check_writable()
        _ = self.saved
        return self

    def check_writable(self) -> None:
        """Create the directory and check that a file can be written there."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise CheckpointError(
                f"{self.owner}: checkpoint_dir {self.directory} cannot be written: {err}"
            ) from None

    # -- reading -------------------------------------------------------------------------
    @property
    def saved(self) -> Saved | None:
        """The checkpoint in the directory, verified (``None``: there is none yet).

        Raises:
            CheckpointError: the manifest is not JSON or of another format, the data file is
                missing, truncated or does not match the manifest's digest, or the checkpoint
                belongs to another fit (every differing entry named).
        """
        if self._saved is False:
            self._saved = self._read()
        return self._saved  # type: ignore[return-value]

    def _read(self) -> Saved | None:
        m = self.manifest
        if not m.is_file():
            return None  # nothing yet (a first write interrupted before its manifest: none)
        bad = f"{self.owner}: the checkpoint {m}"
        try:
            meta = json.loads(m.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(
                f"{bad} is not valid JSON (truncated or edited?): {err}"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise CheckpointError(f"{bad} has format {fmt!r}; expected {FORMAT!r}")
        name = meta.get("data")
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".npz"):
            raise CheckpointError(f"{bad} names no data file in its folder: {name!r}")
        data = self.directory / name
        if not data.is_file():
            raise CheckpointError(f"{bad} names {data}, which is missing")
        if sha256_file(data) != meta.get("sha256"):
            raise CheckpointError(
                f"{self.owner}: the checkpoint data {data} does not match {m} (its SHA-256 "
                "differs from the one recorded: a tampered, truncated or replaced file)"
            )
        try:
            with open(data, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            raise CheckpointError(f"{self.owner}: {data} is not a readable npz: {err}") from None
        try:
            inner = json.loads(arrays.pop("meta").tobytes().decode())
        except (KeyError, json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{self.owner}: {data} has no readable meta entry") from None
        described = {k: v for k, v in meta.items() if k not in ("format", "data", "sha256")}
        if inner != described:
            differ = sorted(
                k for k in set(inner) | set(described) if inner.get(k) != described.get(k)
            )
            raise CheckpointError(
                f"{bad} does not agree with {data} on {differ} (an edited manifest)"
            )
        if self.fingerprint is not None and meta.get("fingerprint") != self.fingerprint:
            diffs = _differences(meta.get("fingerprint"), self.fingerprint)
            raise CheckpointError(
                f"{self.owner}: the checkpoint in {self.directory} belongs to another fit; "
                f"it differs in: {'; '.join(diffs)}. Use another checkpoint_dir, or remove "
                "this one to start afresh"
            )
        try:
            state = [arrays[f"state.{i}"] for i in range(len(meta["state"]))]
            outputs = (None if meta["outputs"] is None else
                       [arrays[f"outputs.{i}"] for i in range(len(meta["outputs"]))])  # fmt: skip
            return Saved(
                stage=str(meta["stage"]), step=int(meta["step"]), losses=arrays["losses"],
                extra=dict(meta.get("extra") or {}), state_meta=list(meta["state"]), path=data,
                _state=state, _outputs=outputs,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{bad} and {data} are incomplete: no {err}") from None

    def restore(
        self, stage: str, template: Any, outputs_template: Any = None
    ) -> tuple[Any, int, np.ndarray, Any] | None:
        """``(state, step, losses, outputs)`` of the checkpoint of ``stage``, rebuilt in the
        pytree structure of ``template`` (``None``: no checkpoint of that stage).

        Args:
            stage: the loop's name.
            template: a state of this fit (its structure, shapes and dtypes are checked).
            outputs_template: one step's collected output (``None``: nothing collected).
        """
        saved = self.saved
        if saved is None or saved.stage != stage:
            return None
        state = _rebuild(template, saved._state, saved.state_meta, "state", saved.path)
        outputs = None
        if saved._outputs is not None and outputs_template is not None:
            treedef = jax.tree.structure(outputs_template)
            if treedef.num_leaves != len(saved._outputs):
                raise CheckpointError(
                    f"{saved.path}: the checkpoint keeps {len(saved._outputs)} output arrays, this "
                    f"fit {treedef.num_leaves}"
                )
            outputs = jax.tree.unflatten(treedef, list(saved._outputs))
        return state, saved.step, saved.losses, outputs

    # -- writing -------------------------------------------------------------------------
    def save(
        self, stage: str, step: int, state: Any, losses: np.ndarray, outputs: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> Path:  # fmt: skip
        """Write the checkpoint atomically (see the module docstring); returns the manifest."""
        self.directory.mkdir(parents=True, exist_ok=True)
        leaves, leaf_meta = _leaves(state)
        arrays = {f"state.{i}": a for i, a in enumerate(leaves)}
        out_meta = None
        if outputs is not None:
            out_leaves, out_meta = _leaves(outputs)
            arrays.update({f"outputs.{i}": a for i, a in enumerate(out_leaves)})
        arrays["losses"] = np.asarray(losses)
        described = {
            "owner": self.owner, "stage": stage, "step": int(step),
            "fingerprint": self.fingerprint, "state": leaf_meta, "outputs": out_meta,
            "extra": extra or {},
        }  # fmt: skip
        text = json.dumps(described, allow_nan=False)
        arrays["meta"] = np.frombuffer(text.encode(), dtype=np.uint8)
        tag = f".tmp-{os.getpid()}"
        tmp_data = self.directory / f"{tag}-data.npz"
        tmp_manifest = self.directory / f"{tag}-{MANIFEST}"
        try:
            with open(tmp_data, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            digest = sha256_file(tmp_data)
            name = f"data-{digest[:16]}.npz"
            os.replace(tmp_data, self.directory / name)
            manifest = {"format": FORMAT, "data": name, "sha256": digest, **described}
            with open(tmp_manifest, "w") as f:
                f.write(json.dumps(manifest, indent=1, allow_nan=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_manifest, self.manifest)
            _fsync_directory(self.directory)  # the renames themselves survive a power cut
        finally:
            tmp_data.unlink(missing_ok=True)
            tmp_manifest.unlink(missing_ok=True)
        for old in self.directory.glob("data-*.npz"):  # the previous checkpoint's data
            if old.name != name:
                old.unlink(missing_ok=True)
        self._saved = False  # read back on the next access
        return self.manifest
