"""The one result type of every inference method, typed, and its lossless on-disk format.

A :class:`Posterior` holds

- ``draws``: ``{site: (chain, draw, *site_shape)}``, constrained values of the model's
  *global* latent sites (for GP programs ``{layer}.u`` and the hyperparameters, not the
  per-datum ``{layer}.eps``);
- ``sample_stats``: per-draw statistics only, ``{stat: (chain, draw)}`` (MCMC's divergences,
  acceptance, step size, ...; SGHMC's minibatch log density);
- ``traces``: optimisation traces, ``{name: (..., steps)}`` (SVI's ``loss``, a MAP's
  ``map_loss``; ``(member, steps)`` for an ensemble);
- ``params``: the model's ``param`` sites (``{layer}.Z``) at their fitted values;
- ``approx``: what the method leaves beside the draws, a typed pytree per method (the
  inducing-point guide's ``q(u)``, the Laplace Gaussian; ``None`` for samplers). Predictives
  dispatch on its type (:func:`ppl_dgp.predictive.predict`);
- ``method``: the method's configuration object itself (``NUTS(...)``, ``SVI(...)``);
- ``timings``: ``compile_seconds`` (JAX tracing, lowering and compiling inside ``fit``) and
  ``run_seconds`` (the rest of ``fit``'s wall time), the same meaning for every method, plus
  method-specific phases;
- ``model``: the program that was fitted (``fit`` records it). A zoo model, or any
  ``functools.partial(fn, **config)`` of a function registered with
  :func:`ppl_dgp.zoo.register_program`, is saved with the Posterior (the function by name, its
  configuration in the same open format: arrays, layer specs, kernels, mean functions,
  likelihoods, priors), so :func:`load` gives back a model that predicts identically. A user's
  own function is saved by description only (an :class:`Opaque`): pass it to ``predict``.

On-disk format (version :data:`FORMAT`): two files side by side, no pickle.

``<path>.npz``
    uncompressed NumPy archive, one array per entry (dtype and shape preserved; loaded with
    ``allow_pickle=False``);
``<path>.json``
    strict JSON (no ``NaN``), ``{"format": "ppl_dgp.posterior/3", "npz_sha256": digest,
    "posterior": tree}``; ``digest`` is the SHA-256 of the npz file written with it, so a pair
    that does not belong together (an interrupted save, a file replaced by hand) is refused on
    load. ``tree`` mirrors the Posterior: dicts, lists, tuples and scalars as JSON (NumPy
    scalars of a method's configuration and of the timings as plain numbers; a non-finite float
    as ``{"__float__": "nan"}``), arrays as ``{"__array__": key}`` into the npz, registered
    types (methods, approximations, precision structures) as
    ``{"__type__": name, "fields": {...}}``, and so are the dataclasses of ``ppl_dgp`` modules
    (by ``module.qualname``); a NumPyro distribution is ``{"__dist__": class, "args": {...}}``;
    the model is ``{"__program__": "module:qualname", "args": [...], "keywords": {...}}``. A
    value JSON cannot hold (a user's guide function, an optax transformation, a user's model)
    is stored by description, ``{"__opaque__": "<function g>"}``. Files of format
    ``ppl_dgp.posterior/3`` (no model) and ``/2`` (no model, no digest) are still read.

Example:
    >>> import numpy as np
    >>> from ppl_dgp.infer import NUTS
    >>> post = Posterior(draws={"w": np.zeros((2, 5, 3))}, method=NUTS(num_chains=2))
    >>> (post.name, post.num_chains, post.num_draws)
    ('nuts', 2, 5)
    >>> import pathlib, tempfile
    >>> npz, sidecar = post.save(pathlib.Path(tempfile.mkdtemp()) / "post")
    >>> npz.name, sidecar.name
    ('post.npz', 'post.json')
    >>> loaded = Posterior.load(npz)
    >>> loaded == post, loaded.method == NUTS(num_chains=2)
    (True, True)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "Opaque", "Posterior", "load", "register_type", "sha256_file"]

#: Identifier and version of the on-disk format, stored in the JSON sidecar.
FORMAT = "ppl_dgp.posterior/4"
#: /3: the same tree without the model; /2: without the model and the npz digest.
_READABLE = (FORMAT, "ppl_dgp.posterior/3", "ppl_dgp.posterior/2")
_DIGESTED = (FORMAT, "ppl_dgp.posterior/3")
_ARRAY_GROUPS = ("draws", "sample_stats", "traces", "params")

#: Types a Posterior may hold (methods, approximations, structures), by class name.
_TYPES: dict[str, type] = {}


def register_type(cls: type) -> type:
    """Class decorator: a dataclass the Posterior format may store and restore by name."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"register_type: {cls.__name__} must be a dataclass")
    other = _TYPES.get(cls.__name__)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"register_type: the name {cls.__name__!r} is taken by {other}")
    _TYPES[cls.__name__] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class Opaque:
    """A value the format could not store (a function, an optax transformation): its name.

    Calling it raises a ``TypeError`` that says what was not saved (a loaded Posterior's
    ``model`` is an ``Opaque`` when the model was a user's function: pass the function).
    """

    description: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{self.description} was not saved with the Posterior (the format stores it by "
            "description only); pass the function itself"
        )


# -- the codec -----------------------------------------------------------------------------


def _is_array(v: Any) -> bool:
    return isinstance(v, np.ndarray | np.generic) or type(v).__module__.startswith("jax")


#: Top-level fields whose NumPy scalars are stored as JSON numbers (a configuration's
#: ``np.int64(200)`` is the number 200, not an array); elsewhere a NumPy scalar keeps its dtype.
_SCALARS_AS_NUMBERS = ("method", "timings")


def _encode(value: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.generic) and path.split("/", 1)[0] in _SCALARS_AS_NUMBERS:
        if isinstance(value, np.bool_ | np.integer | np.floating):
            value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(float(value))}  # strict JSON has no NaN / Infinity
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if _is_array(value):
        key = path
        while key in arrays:
            key += "_"
        arrays[key] = np.asarray(value)
        return {"__array__": key}
    if isinstance(value, Opaque):
        return {"__opaque__": value.description}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"Posterior format: dict keys at {path!r} must be str")
        return {"__dict__": {k: _encode(v, f"{path}/{k}", arrays) for k, v in value.items()}}
    if isinstance(value, tuple | list):
        tag = "__tuple__" if isinstance(value, tuple) else "__list__"
        return {tag: [_encode(v, f"{path}/{i}", arrays) for i, v in enumerate(value)]}
    cls = type(value)
    type_name = _type_name(cls) if dataclasses.is_dataclass(value) else None
    if type_name is not None:
        fields = {
            f.name: _encode(getattr(value, f.name), f"{path}/{f.name}", arrays)
            for f in dataclasses.fields(value)
            if f.init
        }
        return {"__type__": type_name, "fields": fields}
    dist = _encode_distribution(value, path, arrays)
    if dist is not None:
        return dist
    name = getattr(value, "__name__", None)
    return {"__opaque__": f"<function {name}>" if name else f"<{cls.__name__}>"}


def _type_name(cls: type) -> str | None:
    """The name a dataclass is stored under: its registered name, or ``module.qualname`` for a
    value type of ``ppl_dgp`` (kernels, mean functions, likelihoods, layer specs); ``None``
    for any other class (stored by description)."""
    if _TYPES.get(cls.__name__) is cls:
        return cls.__name__
    module, qualname = cls.__module__, cls.__qualname__
    if module.startswith("ppl_dgp.") and "<" not in qualname:
        return f"{module}.{qualname}"
    return None


def _resolve_type(name: str) -> type:
    """The class stored as ``name`` (see :func:`_type_name`); only ``ppl_dgp`` modules are
    imported, and only dataclasses defined in them are returned."""
    cls = _TYPES.get(name)
    if cls is not None:
        return cls
    module, _, qualname = name.rpartition(".")
    if module.startswith("ppl_dgp."):
        try:
            obj = getattr(importlib.import_module(module), qualname, None)
        except ImportError:
            obj = None
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and _type_name(obj) == name:
            return obj
    raise ValueError(
        f"Posterior format: unknown type {name!r}; import the module that defines it "
        f"(registered: {sorted(_TYPES)}, or a dataclass of a ppl_dgp module)"
    )


def _encode_distribution(value: Any, path: str, arrays: dict[str, np.ndarray]) -> dict | None:
    """A NumPyro distribution of ``numpyro.distributions``' namespace as
    ``{"__dist__": class name, "args": {...}}`` (its constructor's positional arguments, read
    back from the attributes of the same names), or ``None`` when it cannot be rebuilt that way
    (checked by rebuilding it and comparing)."""
    try:
        import numpyro.distributions as nd
    except ImportError:  # pragma: no cover - numpyro is a dependency
        return None
    cls = type(value)
    if not isinstance(value, nd.Distribution) or getattr(nd, cls.__name__, None) is not cls:
        return None
    params = [
        p.name
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    if not all(hasattr(value, p) for p in params):
        return None
    args = {p: getattr(value, p) for p in params}
    scratch: dict[str, np.ndarray] = {}
    node = {"__dist__": cls.__name__, "args": _encode(args, f"{path}/{cls.__name__}", scratch)}
    try:  # the constructor must give back the same distribution, value for value
        rebuilt = _decode(node, scratch)
        ok = type(rebuilt) is cls and _same_values(args, {p: getattr(rebuilt, p) for p in params})
    except Exception:  # noqa: BLE001 - any failure: not rebuildable, store by description
        ok = False
    if not ok or _has_opaque(node):
        return None
    arrays.update(scratch)
    return node


def _same_values(a: Any, b: Any) -> bool:
    """``a`` and ``b`` encode to the same tree with the same arrays (dtype, shape, values)."""
    ta, aa, tb, ab = *_encoded(a), *_encoded(b)
    return ta == tb and aa.keys() == ab.keys() and all(
        aa[k].dtype == ab[k].dtype and aa[k].shape == ab[k].shape
        and np.array_equal(aa[k], ab[k], equal_nan=aa[k].dtype.kind in "fc")
        for k in aa
    )  # fmt: skip


def _encoded(value: Any) -> tuple[Any, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    return _encode(value, "v", arrays), arrays


def _has_opaque(node: Any) -> bool:
    if isinstance(node, dict):
        return "__opaque__" in node or any(_has_opaque(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_opaque(v) for v in node)
    return False


def _decode(node: Any, arrays: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if "__array__" in node:
        return arrays[node["__array__"]]
    if "__float__" in node:
        return float(node["__float__"])
    if "__opaque__" in node:
        return Opaque(node["__opaque__"])
    if "__dict__" in node:
        return {k: _decode(v, arrays) for k, v in node["__dict__"].items()}
    if "__tuple__" in node:
        return tuple(_decode(v, arrays) for v in node["__tuple__"])
    if "__list__" in node:
        return [_decode(v, arrays) for v in node["__list__"]]
    if "__type__" in node:
        cls = _resolve_type(node["__type__"])
        fields = {k: _decode(v, arrays) for k, v in node["fields"].items()}
        return _construct(cls, fields)
    if "__dist__" in node:
        import numpyro.distributions as nd

        cls = getattr(nd, str(node["__dist__"]), None)
        if not (isinstance(cls, type) and issubclass(cls, nd.Distribution)):
            raise ValueError(f"Posterior format: unknown distribution {node['__dist__']!r}")
        return cls(**_decode(node["args"], arrays))
    if "__program__" in node:
        from ppl_dgp.zoo import Program, resolve_program

        fn = resolve_program(node["__program__"])
        args, keywords = _decode(node["args"], arrays), _decode(node["keywords"], arrays)
        return Program(fn, *args, **keywords) if args or keywords else fn
    raise ValueError(f"Posterior format: unexpected node {sorted(node)}")


def _construct(cls: type, fields: dict[str, Any]) -> Any:
    """``cls(**fields)``, validated; only a value stored by description (an :class:`Opaque`
    user guide or optimizer, which validation cannot check) skips the validation."""
    if not any(isinstance(v, Opaque) for v in fields.values()):
        return cls(**fields)
    obj = object.__new__(cls)
    for k, v in fields.items():
        object.__setattr__(obj, k, v)
    return obj


def _encode_model(model: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The model as ``{"__program__": "module:qualname", "args": ..., "keywords": ...}`` when it
    is a registered program (a zoo model function, or one registered with
    :func:`ppl_dgp.zoo.register_program`), bare or in a ``functools.partial`` whose arguments the
    format stores (arrays, layer specs, kernels, mean functions, likelihoods, ``Hyper`` values
    with NumPyro priors); otherwise ``{"__opaque__": why}`` (a user's function is not saved)."""
    if model is None:
        return None
    if isinstance(model, Opaque):
        return {"__opaque__": model.description}
    from ppl_dgp.zoo import program_name

    fn, args, keywords = model, (), {}
    if isinstance(model, functools.partial):
        fn, args, keywords = model.func, tuple(model.args), dict(model.keywords)
    label = getattr(fn, "__qualname__", type(fn).__name__)
    name = program_name(fn)
    if name is None:
        return {"__opaque__": f"the model <function {label}> (not a registered program: see "
                              "ppl_dgp.zoo.register_program)"}  # fmt: skip
    scratch: dict[str, np.ndarray] = {}
    try:
        node = {
            "__program__": name,
            "args": _encode(args, "model/args", scratch),
            "keywords": _encode(keywords, "model/keywords", scratch),
        }
    except TypeError as err:  # a dict with non-str keys
        return {"__opaque__": f"the model <function {label}> ({err})"}
    if _has_opaque(node):
        what = [k for k, v in keywords.items() if _has_opaque(_encode(v, "", {}))]
        return {"__opaque__": f"the model <function {label}> (its argument(s) {what or 'args'} "
                              "cannot be stored)"}  # fmt: skip
    arrays.update(scratch)
    return node


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


# -- the Posterior ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Posterior:
    """Draws, statistics, traces and the fitted approximation of one inference run.

    Attributes:
        draws: ``{site: array (chain, draw, *site_shape)}``, constrained values.
        method: the method's configuration object (``NUTS(...)``, ``Laplace(...)``).
        sample_stats: ``{stat: array (chain, draw)}``, per draw only.
        traces: ``{name: array (..., steps)}``, optimisation traces (``loss``, ``map_loss``).
        params: the model's ``param`` sites ``{name: array}`` (e.g. ``layer0.Z``).
        approx: the method's typed approximation (``None`` for samplers).
        timings: ``compile_seconds``, ``run_seconds`` and method-specific phases.
        model: the fitted program (see the module docstring), ``None`` when not recorded, or
            an :class:`Opaque` when loaded from a file that could not store it.
    """

    draws: dict[str, np.ndarray]
    method: Any
    sample_stats: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    traces: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    params: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    approx: Any = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    model: Callable | None = None

    def __post_init__(self) -> None:
        if self.model is not None and not callable(self.model):
            raise TypeError(f"Posterior.model must be the fitted program; received {self.model!r}")
        if not hasattr(type(self.method), "name"):
            raise TypeError(
                f"Posterior.method must be a method configuration (with a name); "
                f"received {self.method!r}"
            )
        shapes = {k: np.shape(v)[:2] for k, v in self.draws.items()}
        if any(len(s) < 2 for s in shapes.values()):
            raise ValueError(f"Posterior.draws must be shaped (chain, draw, ...); got {shapes}")
        if len(set(shapes.values())) > 1:
            raise ValueError(f"Posterior.draws disagree on (chain, draw): {shapes}")
        cd = next(iter(shapes.values()), None)
        for k, v in self.sample_stats.items():
            if cd is not None and np.shape(v)[:2] != cd:
                raise ValueError(
                    f"Posterior.sample_stats[{k!r}] must be shaped (chain, draw) = {cd}; "
                    f"received {np.shape(v)} (optimisation traces belong in Posterior.traces)"
                )
        for group in _ARRAY_GROUPS:
            for k in getattr(self, group):
                if not isinstance(k, str) or not k:
                    raise ValueError(f"Posterior.{group}: keys must be non-empty str; got {k!r}")

    # -- shape -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The method's name (``"svi"``, ``"nuts"``, ``"laplace"``, ...)."""
        return str(type(self.method).name)

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

    def replace(self, **changes: Any) -> Posterior:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # -- the codec -------------------------------------------------------------------------
    def _tree(self, *, timings: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}
        tree = {
            f.name: _encode(getattr(self, f.name), f.name, arrays)
            for f in dataclasses.fields(self)
            if (timings or f.name != "timings") and f.name != "model"
        }
        tree["model"] = _encode_model(self.model, arrays)
        return tree, arrays

    def __eq__(self, other: object) -> bool:
        """Equal draws, statistics, traces, params, approximation, method and model (not
        timings); arrays must agree in dtype, shape and every value."""
        if not isinstance(other, Posterior):
            return NotImplemented
        (ta, aa), (tb, ab) = self._tree(timings=False), other._tree(timings=False)
        if ta != tb or aa.keys() != ab.keys():
            return False
        return all(
            aa[k].dtype == ab[k].dtype and aa[k].shape == ab[k].shape
            and np.array_equal(aa[k], ab[k], equal_nan=aa[k].dtype.kind in "fc")
            for k in aa
        )  # fmt: skip

    __hash__ = None  # type: ignore[assignment]

    # -- I/O -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.npz`` and ``<path>.json`` (see the module docstring).

        Both are written to temporary files in the same folder first and renamed into place,
        the npz first and the JSON last; the JSON carries the npz's SHA-256, so an interrupted
        save never leaves a pair that :meth:`load` accepts but that does not belong together.
        The JSON is strict (``allow_nan=False``).

        Returns:
            The two paths written.

        Raises:
            TypeError: a dict with non-str keys (the format's limit).
        """
        npz, sidecar = _paths(path)
        tree, arrays = self._tree()
        npz.parent.mkdir(parents=True, exist_ok=True)
        tag = f".{os.getpid()}.tmp"
        tmp_npz, tmp_json = npz.with_name(npz.name + tag), sidecar.with_name(sidecar.name + tag)
        try:
            with open(tmp_npz, "wb") as f:
                np.savez(f, **arrays)
            meta = {"format": FORMAT, "npz_sha256": sha256_file(tmp_npz), "posterior": tree}
            tmp_json.write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n")
            tmp_npz.replace(npz)
            tmp_json.replace(sidecar)
        finally:
            tmp_npz.unlink(missing_ok=True)
            tmp_json.unlink(missing_ok=True)
        return npz, sidecar

    @classmethod
    def load(cls, path: str | Path) -> Posterior:
        """Read a Posterior written by :meth:`save` (``path`` with or without suffix).

        Raises:
            FileNotFoundError: the npz or the JSON is missing (both paths named).
            ValueError: a file is truncated, not JSON or not an npz, of an unknown format, the
                pair does not belong together (the npz's digest differs from the JSON's), a
                field or array is missing, or a stored configuration fails its checks; the
                message names the file.
        """
        npz, sidecar = _paths(path)
        missing = [str(p) for p in (npz, sidecar) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"Posterior.load: {' and '.join(missing)} not found (a saved Posterior is the "
                f"pair {npz.name} + {sidecar.name})"
            )
        try:
            meta = json.loads(sidecar.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"Posterior.load: {sidecar} is not valid JSON (truncated or edited?): {err}"
            ) from None
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt not in _READABLE:
            raise ValueError(f"{sidecar}: unknown format {fmt!r}; expected {FORMAT!r}")
        digest = meta.get("npz_sha256")
        if fmt in _DIGESTED and digest != sha256_file(npz):
            raise ValueError(
                f"Posterior.load: {npz} does not belong to {sidecar} (its SHA-256 differs from "
                "the one recorded at saving: an interrupted save, or a file replaced or edited)"
            )
        try:
            with open(npz, "rb") as fh, np.load(fh, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            raise ValueError(
                f"Posterior.load: {npz} is not a readable npz archive (truncated?): {err}"
            ) from None
        tree = meta.get("posterior")
        names = [f.name for f in dataclasses.fields(cls) if f.name != "model"]
        absent = [n for n in names if not isinstance(tree, dict) or n not in tree]
        if fmt == FORMAT and isinstance(tree, dict) and "model" not in tree:
            absent.append("model")
        if absent:
            raise ValueError(
                f"Posterior.load: {sidecar} has no entry for {absent} (every field is stored; "
                "an entry left out would change how the posterior predicts)"
            )
        try:
            fields = {k: _decode(tree[k], arrays) for k in names}
            fields["model"] = _decode_model(tree.get("model"), arrays)
            return cls(**fields)
        except KeyError as err:
            raise ValueError(
                f"Posterior.load: {sidecar} and {npz} do not agree: no entry {err.args[0]!r} "
                "(a tampered or mismatched file)"
            ) from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"Posterior.load: {sidecar}: {err}") from err


def _decode_model(node: Any, arrays: Any) -> Any:
    """The stored model, or an :class:`Opaque` saying why it cannot be rebuilt here (a program
    whose module is not imported); a configuration that fails its checks raises."""
    if isinstance(node, dict) and "__program__" in node:
        from ppl_dgp.zoo import resolve_program

        try:
            resolve_program(node["__program__"])
        except ValueError as err:
            return Opaque(f"the model {node['__program__']!r} ({err})")
    return _decode(node, arrays)


def load(path: str | Path) -> tuple[Callable, Posterior]:
    """The model and the Posterior saved at ``path``: ``model, posterior = ppl_dgp.load(path)``.

    The model is rebuilt from the file (its function by name, its configuration from the open
    format), so ``predict(key, model, posterior, X)`` gives what it gave before saving.

    Raises:
        FileNotFoundError, ValueError: as :meth:`Posterior.load`.
        ValueError: the file holds no model that can be rebuilt (a user's own function, saved
            by description only, or a program whose module is not imported): the message
            names it; load the posterior alone with :meth:`Posterior.load` and pass the model.

    Example:
        >>> import jax, numpy as np, pathlib, tempfile
        >>> from ppl_dgp.infer import MAP, fit
        >>> from ppl_dgp.models import MODELS
        >>> X = np.linspace(-1.0, 1.0, 6)[:, None]; y = np.sin(X[:, 0])
        >>> post = fit(MAP(num_steps=5), jax.random.key(0), MODELS["svgp"].make(X), X, y)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "svgp"
        >>> _ = post.save(path)
        >>> model, loaded = load(path)
        >>> loaded == post, model.func.__name__
        (True, 'svgp_regression')
    """
    post = Posterior.load(path)
    if post.model is None or isinstance(post.model, Opaque):
        what = "no model" if post.model is None else "no model that can be rebuilt here: "
        what += "" if post.model is None else post.model.description
        raise ValueError(
            f"load: {_paths(path)[1]} holds {what}; load the posterior alone with "
            "Posterior.load(path) and pass the model it was fitted to to predict"
        )
    return post.model, post


def sha256_file(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks (the open format's checksum)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def approx_type(cls: type | None = None, *, static: tuple[str, ...] = ()) -> Any:
    """Class decorator for an approximation: a frozen dataclass registered with the Posterior
    format and as a JAX pytree (``static`` fields are metadata, the rest are leaves)."""

    def wrap(c: type) -> type:
        import jax

        c = register_type(c)
        names = [f.name for f in dataclasses.fields(c)]
        jax.tree_util.register_dataclass(
            c, data_fields=[n for n in names if n not in static], meta_fields=list(static)
        )
        return c

    return wrap if cls is None else wrap(cls)
