"""The model zoo's registry: each module in ``models/`` declares what it is, once.

A :class:`ZooModel` names a model and says how to build it from (standardised) data, which
likelihood and sites it has, which inference methods and predictives it supports, and its
smoke-size build options. The command line, the compare report and the contract test iterate
:data:`MODELS`; adding a model to all three is one file in ``models/`` that calls
:func:`register_model` (and one import line in ``models/__init__.py``).

Example:
    >>> from ppl_dgp.models import MODELS
    >>> sorted(MODELS)[:3]
    ['bnn', 'bnn_binary', 'bnn_binary_dropout']
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "MODELS",
    "Program",
    "ZooModel",
    "program_name",
    "register_model",
    "register_program",
    "classification_models",
    "compare_models",
    "regression_models",
    "resolve_program",
]

#: Build options that are sizes (ints >= 1), checked by :meth:`ZooModel.make` for every model.
SIZE_OPTIONS = ("num_inducing", "layers", "width", "num_layers", "hidden_width")

#: Methods every zoo model supports unless it says otherwise.
ALL_METHODS = ("svi", "nuts", "hmc", "sghmc", "laplace", "map", "ensemble")


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """One model of the zoo.

    Attributes:
        name: the name the CLI and the report use (``--model NAME``).
        build: ``build(X, **options) -> model``: the NumPyro program (a ``functools.partial``
            of the model function) for standardised inputs ``X [N, D]``; it ignores no option
            silently (options it does not take are filtered out by :meth:`make`).
        likelihood: ``"gaussian"``, ``"heteroscedastic_gaussian"``, ``"bernoulli"``,
            ``"categorical"`` or ``"poisson"``.
        task: ``"regression"``, ``"classification"``, ``"counts"`` or ``"unsupervised"`` (no
            inputs: ``X`` is a placeholder ``[N, 1]`` of which only the row count is read, the
            observations ``y [N, P]`` are modelled alone, e.g. the Bayesian GPLVM; its
            ``predict`` at any inputs is the density of a new datum, ``w`` drawn from its
            prior).
        observed_site: the likelihood site (``"y"``).
        output_site: the deterministic network output (``"f"``) for models that record one
            (the Laplace GGN and the class-probability predictive read it), else ``None``.
        methods: names of the inference methods that support it.
        predictives: ``"mixture"`` (:func:`ppl_dgp.predictive.predict`) and/or ``"proba"``
            (:func:`ppl_dgp.predictive.predict_proba`).
        smoke: build options for a smoke-size run (tests, notebooks, ``--smoke``).
        method_overrides: per-method settings this model needs (e.g. the last-layer Laplace
            for a BNN).
        description: one line for the help and the report.
    """

    name: str
    build: Callable[..., Callable]
    likelihood: str
    task: str
    observed_site: str = "y"
    output_site: str | None = None
    methods: tuple[str, ...] = ALL_METHODS
    predictives: tuple[str, ...] = ("mixture",)
    smoke: dict[str, Any] = dataclasses.field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.likelihood not in (
            "gaussian", "heteroscedastic_gaussian", "bernoulli", "categorical", "poisson",
        ):  # fmt: skip
            raise ValueError(f"ZooModel.likelihood: unknown {self.likelihood!r}")
        if self.task not in ("regression", "classification", "counts", "unsupervised"):
            raise ValueError(f"ZooModel.task: unknown {self.task!r}")

    def make(self, X: Any, *, smoke: bool = False, **options: Any) -> Callable:
        """The program for ``X``: ``build`` with the smoke options (if asked) and ``options``
        (``None`` values dropped; options ``build`` does not take are dropped too, so one set
        of command-line options can build every model).

        Raises:
            ValueError, TypeError: ``X`` is not a finite float array ``[N, D]``
                (:func:`~ppl_dgp.validation.check_inputs`), or a size option
                (:data:`SIZE_OPTIONS`) is not an int ``>= 1``; checked before ``build`` runs.
        """
        from ppl_dgp.validation import check_inputs, check_positive_int

        check_inputs(X)
        for k in SIZE_OPTIONS:
            if options.get(k) is not None:
                check_positive_int(f"{self.name}", k, options[k])
        params = inspect.signature(self.build).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        opts = {**(self.smoke if smoke else {}), **{k: v for k, v in options.items()
                                                     if v is not None}}  # fmt: skip
        if not takes_all:
            opts = {k: v for k, v in opts.items() if k in params}
        model = self.build(np.asarray(X), **opts)
        if type(model) is functools.partial:  # equal by value to the same model rebuilt
            model = Program(model.func, *model.args, **model.keywords)
        return model


#: ``{name: ZooModel}`` of every registered model (filled by importing ``ppl_dgp.models``).
MODELS: dict[str, ZooModel] = {}


def register_model(entry: ZooModel) -> ZooModel:
    """Add ``entry`` to :data:`MODELS` (a name may be registered once)."""
    old = MODELS.get(entry.name)
    if old is not None and old.build.__module__ != entry.build.__module__:
        raise ValueError(
            f"register_model: the name {entry.name!r} is taken by {old.build.__module__}"
        )
    MODELS[entry.name] = entry
    return entry


def classification_models() -> list[str]:
    """Zoo classifiers the report can compare (class probabilities: the ``proba`` predictive)."""
    return [k for k, m in MODELS.items()
            if m.task == "classification" and "proba" in m.predictives]  # fmt: skip


def compare_models() -> list[str]:
    """Every model ``compare`` takes: regression models and classifiers."""
    return regression_models() + classification_models()


def regression_models() -> list[str]:
    """Zoo models the compare report can compare (regression with the mixture predictive)."""
    return [k for k, m in MODELS.items() if m.task == "regression" and "mixture" in m.predictives]


class Program(functools.partial):
    """A model function with its configuration, ``functools.partial(fn, **config)``, that is
    equal to (and hashes like) any other with the same function and the same configuration by
    value (arrays by dtype, shape and bytes; layer specs, kernels, priors field by field).

    :meth:`ZooModel.make` and :func:`ppl_dgp.load` return one, so a model rebuilt from a file
    is *the same program* as the one fitted: the predictives' compiled functions, cached per
    model, are reused instead of traced and compiled again. A configuration holding a value the
    Posterior format stores by description only (a user's function) falls back to identity.
    """

    def _value_key(self) -> tuple:
        key = self.__dict__.get("_key")
        if key is None:
            from ppl_dgp.posterior import _encode, _has_opaque

            arrays: dict[str, np.ndarray] = {}
            try:
                tree = _encode((self.args, self.keywords), "program", arrays)
            except TypeError:
                tree = None
            if tree is None or _has_opaque(tree):
                key = ("id", id(self))
            else:
                h = hashlib.sha256(json.dumps(tree, sort_keys=True).encode())
                for k in sorted(arrays):
                    a = np.ascontiguousarray(arrays[k])
                    h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
                    h.update(a.tobytes())
                key = (self.func, h.hexdigest())
            self.__dict__["_key"] = key
        return key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Program):
            return NotImplemented
        return self is other or self._value_key() == other._value_key()

    def __hash__(self) -> int:
        return hash(self._value_key())


# -- programs a saved Posterior may name ------------------------------------------------------

#: ``{name: function}`` registered with :func:`register_program` (beside the zoo's own).
_PROGRAMS: dict[str, Callable] = {}


def _name_of(fn: Callable) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def register_program(fn: Callable) -> Callable:
    """Decorator: a module-level model function that a saved Posterior may name, so that
    :func:`ppl_dgp.load` rebuilds ``functools.partial(fn, **config)`` from the file.

    The zoo's model functions (those of every module in ``models/``) need no registration;
    register your own when its module is imported before loading (the name stored is
    ``"module:qualname"``).

    Raises:
        ValueError: ``fn`` is not a module-level function (a lambda or a closure cannot be
            found again by name).
    """
    if not inspect.isfunction(fn) or "<" in fn.__qualname__ or "." in fn.__qualname__:
        raise ValueError(
            f"register_program: {fn!r} must be a module-level function (found again by "
            "module and name when a saved Posterior is loaded)"
        )
    _PROGRAMS[_name_of(fn)] = fn
    return fn


def _zoo_modules() -> set[str]:
    """Modules of the registered zoo models (``ppl_dgp.models`` is imported to fill them)."""
    importlib.import_module("ppl_dgp.models")
    return {e.build.__module__ for e in MODELS.values()}


def program_name(fn: Callable) -> str | None:
    """The name a saved Posterior stores for the model function ``fn``: ``"module:qualname"``
    when ``fn`` is a registered program or a module-level function of a zoo module, else
    ``None`` (a user's function that is not registered cannot be rebuilt from a file)."""
    if not inspect.isfunction(fn):
        return None
    name = _name_of(fn)
    if _PROGRAMS.get(name) is fn:
        return name
    module = sys.modules.get(fn.__module__)
    if fn.__module__ in _zoo_modules() and getattr(module, fn.__qualname__, None) is fn:
        return name
    return None


def resolve_program(name: str) -> Callable:
    """The function :func:`program_name` named ``name``: a registered program, or a
    module-level function of a zoo module (nothing else is imported or called).

    Raises:
        ValueError: ``name`` names neither (a user's program whose module is not imported, a
            model removed from the zoo, or an edited file).
    """
    if name in _PROGRAMS:
        return _PROGRAMS[name]
    module, _, qualname = str(name).partition(":")
    zoo = _zoo_modules()
    fn = getattr(sys.modules.get(module), qualname, None) if module in zoo else None
    if fn is None or not inspect.isfunction(fn) or _name_of(fn) != name:
        raise ValueError(
            f"the model program {name!r} is neither a function of a zoo module "
            f"({', '.join(sorted(zoo))}) nor registered with ppl_dgp.zoo.register_program "
            "(import the module that registers it before loading)"
        )
    return fn
