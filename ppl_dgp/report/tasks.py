"""Which zoo model suits which data: the bundled sets by task, the models ``compare`` can fit
to each, and the refusal of a model the data do not suit (naming ``--model``, ``--data`` and
``--target``)."""

from __future__ import annotations

import inspect
from typing import Any

from ppl_dgp.datasets import BENCH_NAMES, CLASSIFICATION_NAMES
from ppl_dgp.models import MODELS
from ppl_dgp.zoo import classification_models, compare_models, regression_models

__all__ = [
    "CLASSIFICATION_DATA",
    "MULTI_OUTPUT_DATA",
    "REGRESSION_DATA",
    "check_model_data",
    "models_for_data",
    "multi_output_models",
]

#: Bundled data sets by task (a CSV suits any model: its ``target`` decides).
REGRESSION_DATA = ("motorcycle", *(n for n in BENCH_NAMES if n != "moons"))
MULTI_OUTPUT_DATA = ("linnerud",)
CLASSIFICATION_DATA = CLASSIFICATION_NAMES
#: Classes of the bundled classification sets, outputs of the bundled multi-output ones.
_BUNDLED_CLASSES = {"breast_cancer": 2, "digits": 10, "moons": 2}
_BUNDLED_OUTPUTS = {"linnerud": 3}


def _build_default(model_name: str, option: str) -> Any:
    """The default of a builder option of a zoo model (``inspect.Parameter.empty``: none, and
    ``None`` when the builder does not take the option)."""
    p = inspect.signature(MODELS[model_name].build).parameters.get(option)
    return None if p is None else p.default


def multi_output_models() -> list[str]:
    """Regression models of ``y [N, P]`` (their builder takes ``num_outputs``)."""
    return [k for k in regression_models() if _build_default(k, "num_outputs") is not None]


def _multi_output_only(model_name: str) -> bool:
    """A model built for ``P >= 2`` outputs by default (``dgp_multioutput``), not for one."""
    default = _build_default(model_name, "num_outputs")
    return isinstance(default, int) and default > 1


def _binary_only(model_name: str) -> bool:
    """A classifier of two classes only (one logit: its builder takes no ``num_classes``)."""
    return "num_classes" not in inspect.signature(MODELS[model_name].build).parameters


def models_for_data(data: str, num_classes: int | None = None) -> list[str]:
    """The zoo models ``compare`` can fit to a bundled set (every one for a CSV, whose
    ``--target`` decides), for the CLI's listing and the mismatch messages."""
    if data in CLASSIFICATION_DATA:
        K = num_classes if num_classes is not None else _BUNDLED_CLASSES.get(data, 2)
        return [k for k in classification_models() if K == 2 or not _binary_only(k)]
    if data in MULTI_OUTPUT_DATA:
        return multi_output_models()
    if data in REGRESSION_DATA:
        return [k for k in regression_models() if not _multi_output_only(k)]
    return compare_models()


def check_model_data(model_name: str, data: str, target: str | None = None) -> None:
    """Refuse a model and data that do not go together, naming ``--model``, ``--data`` and
    ``--target`` and what each expects (a classifier on a regression set, a multi-output model
    on one output, a binary classifier on more classes). Labels of a CSV are checked when
    read (:func:`~ppl_dgp.report.data._load_labels`).

    Raises:
        ValueError: unknown model, or a model the data does not suit.
    """
    if model_name not in compare_models():
        raise ValueError(
            f"--model {model_name!r} is not a model compare takes; regression: "
            f"{', '.join(regression_models())}; classification: "
            f"{', '.join(classification_models())}"
        )
    task = MODELS[model_name].task
    if data in CLASSIFICATION_DATA and task != "classification":
        raise ValueError(
            f"--model {model_name!r} is a {task} model, but --data {data!r} is a "
            f"classification set (integer labels); its models: "
            f"{', '.join(models_for_data(data))}"
        )
    if data in (*REGRESSION_DATA, *MULTI_OUTPUT_DATA) and task == "classification":
        raise ValueError(
            f"--model {model_name!r} is a classifier, but --data {data!r} is a regression set "
            f"(real-valued targets); its models: {', '.join(models_for_data(data))}; "
            f"classification sets: {', '.join(CLASSIFICATION_DATA)} or a CSV whose --target "
            "holds labels 0, ..., K-1"
        )
    if data in CLASSIFICATION_DATA and _binary_only(model_name):
        K = _BUNDLED_CLASSES.get(data, 2)
        if K > 2:
            raise ValueError(
                f"--model {model_name!r} is a binary classifier (one logit), but --data "
                f"{data!r} has {K} classes; its models: {', '.join(models_for_data(data))}"
            )
    targets = _targets(target)
    P = _BUNDLED_OUTPUTS.get(data, len(targets) if targets else 1)
    if task == "regression" and P > 1 and model_name not in multi_output_models():
        raise ValueError(
            f"--model {model_name!r} has one output, but --data {data!r}"
            + (f" --target {target!r}" if targets else "")
            + f" has P = {P} outputs; multi-output models: {', '.join(multi_output_models())}"
        )
    if task == "regression" and P == 1 and _multi_output_only(model_name):
        raise ValueError(
            f"--model {model_name!r} needs y [N, P] with P >= 2 outputs, but --data {data!r}"
            + (f" --target {target!r}" if targets else "")
            + " has one; multi-output data: "
            + ", ".join(MULTI_OUTPUT_DATA)
            + ", or a CSV with several --target columns (--target a,b,c)"
        )
    if task == "classification" and len(targets) > 1:
        raise ValueError(
            f"--target {target!r}: a classifier takes one label column; received {len(targets)}"
        )


def _targets(target: str | None) -> list[str]:
    """``--target a,b,c`` as column names (several: a multi-output regression)."""
    return [] if target is None else [t.strip() for t in str(target).split(",") if t.strip()]
