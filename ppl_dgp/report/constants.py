"""The comparison report's fixed choices: the default methods, the interval probability, the
fewest draws for LOO and for each figure, the test inputs the reference is checked at."""

from __future__ import annotations

__all__ = [
    "AUTO",
    "CHAIN_VIEW_INPUTS",
    "CI_PROB",
    "DEFAULT_METHODS",
    "ECE_BINS",
    "MIN_CHAIN_PLOT_DRAWS",
    "MIN_LOO_DRAWS",
    "MIN_PLOT_DRAWS",
    "PREDICTIVE_COMPONENTS",
    "REFERENCE",
    "REFERENCE_PREDICTIVE_INPUTS",
]

#: The default ``--methods``.
DEFAULT_METHODS = ("svi", "nuts", "sghmc", "laplace", "map", "ensemble")
#: Probability of the central interval the report scores (coverage, agreement, forest).
CI_PROB = 0.9
#: PSIS-LOO fits a Pareto tail to the largest importance ratios: with fewer draws (a MAP, a
#: small ensemble) there is no tail to fit, and the report says so instead.
MIN_LOO_DRAWS = 50
#: Fewest draws a method needs for a density in the marginals plot (else a line per draw).
MIN_PLOT_DRAWS = 10
#: Fewest draws per chain for the trace and rank figures of a method of several chains.
MIN_CHAIN_PLOT_DRAWS = 20
#: Components of each method's mixture predictive at the test inputs.
PREDICTIVE_COMPONENTS = 200
#: The method whose fit is the reference the others are scored against.
REFERENCE = "nuts"
#: ``build_reference``'s fit key: ``fold_in(key(seed), _REFERENCE_KEY)`` (the shipped file's).
_REFERENCE_KEY = 1
#: ``reference=AUTO``: the reference shipped in the package when it was fitted on exactly this
#: run's model and data (its provenance and model configuration, :mod:`ppl_dgp.reference`),
#: else NUTS is fitted.
AUTO = "auto"
#: Test inputs (evenly spread over the test split) at which the reference's predictive must
#: pass R-hat and ESS (at least :data:`ppl_dgp.diagnostics.MIN_PREDICTIVE_INPUTS`). The
#: quantity checked is the predictive mean of ``y`` given each draw: a component of
#: :func:`~ppl_dgp.predictive.predict` with every draw (chain-major; a DGP's inner layers are
#: one sample per draw).
REFERENCE_PREDICTIVE_INPUTS = 10
#: Test inputs (evenly spread) whose predictive mean the per-chain view shows chain by chain.
CHAIN_VIEW_INPUTS = 5
#: Equal-width confidence bins of a classifier's ECE and reliability diagram
#: (:func:`ppl_dgp.calibration.reliability_curve`; the calibration module's default).
ECE_BINS = 10
