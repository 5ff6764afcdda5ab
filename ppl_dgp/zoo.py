"""The model zoo's registry: each module in ``models/`` declares what it is, once.

A :class:`ZooModel` names a model and says how to build it from (standardised) data, which
likelihood and sites it has, which inference methods and predictives it supports, and its
smoke-size build options. The command line, the compare report and the contract test iterate
:data:`MODELS`; adding a model to all three is one file in ``models/`` that calls
:func:`register_model` (and one import line in ``models/__init__.py``).

Example:
    >>> from ppl_dgp.models import MODELS
    >>> sorted(MODELS)[:3]
    ['bnn', 'bnn_binary', 'dgp']
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["MODELS", "ZooModel", "register_model"]

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
        likelihood: ``"gaussian"``, ``"bernoulli"`` or ``"categorical"``.
        task: ``"regression"`` or ``"classification"``.
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
        if self.likelihood not in ("gaussian", "bernoulli", "categorical"):
            raise ValueError(f"ZooModel.likelihood: unknown {self.likelihood!r}")
        if self.task not in ("regression", "classification"):
            raise ValueError(f"ZooModel.task: unknown {self.task!r}")

    def make(self, X: Any, *, smoke: bool = False, **options: Any) -> Callable:
        """The program for ``X``: ``build`` with the smoke options (if asked) and ``options``
        (``None`` values dropped; options ``build`` does not take are dropped too, so one set
        of command-line options can build every model)."""
        params = inspect.signature(self.build).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        opts = {**(self.smoke if smoke else {}), **{k: v for k, v in options.items()
                                                     if v is not None}}  # fmt: skip
        if not takes_all:
            opts = {k: v for k, v in opts.items() if k in params}
        return self.build(np.asarray(X), **opts)


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
