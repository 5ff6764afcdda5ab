"""``ppl-dgp compare``: fit one model with several methods and write a comparison report.

For each method (a name registered in :data:`ppl_dgp.infer.METHODS`) the command fits the
model to the training split (standardised), converts the Posterior to an ArviZ DataTree
(:mod:`ppl_dgp.diagnostics`) and saves it as ``DIR/{method}.nc``, predicts the held-out
split, and computes PSIS-LOO. ``DIR/report.md`` collects timings, test metrics, LOO and
``compare``, agreement with the NUTS reference, the MCMC summary and diagnostics warnings; the
figures are PNGs beside it.

**The reference.** With ``nuts`` among the methods, its fit is the reference, saved as
``DIR/nuts.npz`` + ``DIR/nuts.json`` (:meth:`~ppl_dgp.posterior.Posterior.save`); with
``reference=PATH`` a saved MCMC posterior (a long run, once) is loaded instead of fitting NUTS,
after checking that its sites and shapes are the model's. Every other method is scored against
it (:mod:`ppl_dgp.agreement`: per site, and on the predictive distribution at the test inputs)
only when the reference passes its own checks (:func:`ppl_dgp.diagnostics.reference_check`:
R-hat and bulk ESS of every hyperparameter and of the predictive at the test inputs, no
divergences); otherwise the report and an :class:`UnreliableReferenceWarning` say which check
failed and what to run.

**Chains side by side.** For every method of several chains (NUTS, HMC, SGHMC) the report
has a "Chains of ..." section (:func:`ppl_dgp.diagnostics.chain_view`): when the chains
disagree, each chain's means of the hyperparameters and of the predictive mean at a few test
inputs, R-hat across chains and each chain's own split-R-hat, which tells chains stuck in
separate modes (each stationary) from chains still drifting (warm-up unfinished); and the
stacking of the chains (:mod:`ppl_dgp.stacking`, Yao, Vehtari & Gelman 2022): weights
maximising the PSIS-LOO log score of the chain mixture, and the stacked predictive's test MLPD.

**Beyond one Gaussian output.** A classifier of the zoo (:func:`classification_models`, on
``breast_cancer``, ``digits``, ``moons`` or a CSV of labels ``0, ..., K-1``) is scored by the
accuracy, NLL, ECE and Brier score of its predictive class probabilities, with a reliability
diagram, and against the NUTS reference (behind the same gate) by ``|p - p_NUTS|``; a
multi-output regression (:func:`multi_output_models`, on ``linnerud`` or a CSV with
``target="a,b,c"``) gets RMSE, MLPD and coverage per output and a panel of bands per output.
A model the data do not suit is refused by name (:func:`check_model_data`).

Methods come from the method registry (their ``"compare"`` and ``"smoke"`` presets), models
from the zoo registry (:data:`ppl_dgp.models.MODELS`: its builder and per-method overrides): a
method or model registered there is in the report with no edit here.

One concept per module: :mod:`~ppl_dgp.report.compare` (:func:`run_compare`: the checks, the
methods' configurations, the reference resolved), :mod:`~ppl_dgp.report.regression` and
:mod:`~ppl_dgp.report.classification` (each task's run and its Markdown),
:mod:`~ppl_dgp.report.multioutput` (several outputs), :mod:`~ppl_dgp.report.chains` (chains
side by side and their stacking), :mod:`~ppl_dgp.report.reference` (the reference: loaded,
checked, built once), :mod:`~ppl_dgp.report.data` (the split and the program),
:mod:`~ppl_dgp.report.tasks` (which model suits which data), :mod:`~ppl_dgp.report.markdown`
(tables and the sections every report has), :mod:`~ppl_dgp.report.figures` and
:mod:`~ppl_dgp.report.constants`. The names below are loaded from their modules on first use,
so that ``ppl-dgp compare`` checks its arguments (:mod:`~ppl_dgp.report.tasks`: the data sets,
which model suits which) before the fitting and ArviZ modules are imported.

Example (the CLI's ``ppl-dgp compare``; a smoke-size run of one method here):

    >>> import tempfile
    >>> from ppl_dgp.report import run_compare
    >>> out = tempfile.mkdtemp()
    >>> result = run_compare("svgp", "motorcycle", ["map"], out, smoke=True, log=lambda _: None,
    ...                      overrides={"map": {"num_steps": 3000, "learning_rate": 0.05}})
    >>> result["report"].name, sorted(result["methods"])
    ('report.md', ['map'])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ppl_dgp.report.compare import run_compare
    from ppl_dgp.report.constants import (
        AUTO,
        CHAIN_VIEW_INPUTS,
        CI_PROB,
        DEFAULT_METHODS,
        ECE_BINS,
        MIN_CHAIN_PLOT_DRAWS,
        MIN_LOO_DRAWS,
        MIN_PLOT_DRAWS,
        PREDICTIVE_COMPONENTS,
        REFERENCE,
        REFERENCE_PREDICTIVE_INPUTS,
    )
    from ppl_dgp.report.reference import (
        UnreliableReferenceWarning,
        UnverifiedReferenceWarning,
        build_reference,
        load_reference,
    )
    from ppl_dgp.report.tasks import (
        CLASSIFICATION_DATA,
        MULTI_OUTPUT_DATA,
        REGRESSION_DATA,
        check_model_data,
        models_for_data,
        multi_output_models,
    )
    from ppl_dgp.zoo import classification_models, compare_models, regression_models

#: Where each public name lives (loaded on first use, PEP 562).
_HOMES = {
    "run_compare": "ppl_dgp.report.compare",
    **dict.fromkeys(
        ("AUTO", "CHAIN_VIEW_INPUTS", "CI_PROB", "DEFAULT_METHODS", "ECE_BINS",
         "MIN_CHAIN_PLOT_DRAWS", "MIN_LOO_DRAWS", "MIN_PLOT_DRAWS", "PREDICTIVE_COMPONENTS",
         "REFERENCE", "REFERENCE_PREDICTIVE_INPUTS"),
        "ppl_dgp.report.constants",
    ),
    **dict.fromkeys(
        ("UnreliableReferenceWarning", "UnverifiedReferenceWarning", "build_reference",
         "load_reference"),
        "ppl_dgp.report.reference",
    ),
    **dict.fromkeys(
        ("CLASSIFICATION_DATA", "MULTI_OUTPUT_DATA", "REGRESSION_DATA", "check_model_data",
         "models_for_data", "multi_output_models"),
        "ppl_dgp.report.tasks",
    ),
    **dict.fromkeys(("classification_models", "compare_models", "regression_models"),
                    "ppl_dgp.zoo"),
}  # fmt: skip

__all__ = [
    "AUTO",
    "CHAIN_VIEW_INPUTS",
    "CI_PROB",
    "CLASSIFICATION_DATA",
    "DEFAULT_METHODS",
    "ECE_BINS",
    "MIN_CHAIN_PLOT_DRAWS",
    "MIN_LOO_DRAWS",
    "MIN_PLOT_DRAWS",
    "MULTI_OUTPUT_DATA",
    "PREDICTIVE_COMPONENTS",
    "REFERENCE",
    "REFERENCE_PREDICTIVE_INPUTS",
    "REGRESSION_DATA",
    "UnreliableReferenceWarning",
    "UnverifiedReferenceWarning",
    "build_reference",
    "check_model_data",
    "classification_models",
    "compare_models",
    "load_reference",
    "models_for_data",
    "multi_output_models",
    "regression_models",
    "run_compare",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
