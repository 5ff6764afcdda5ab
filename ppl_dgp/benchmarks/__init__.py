"""Benchmarks on the peers' workloads, run by ``ppl-dgp bench``; not part of the library API.

- :mod:`ppl_dgp.benchmarks.dgp`: 2-layer DGP and SVGP on diabetes, step1d and synth10k, against
  GPflux / GPyTorch / GPflow (``ppl-dgp bench``).
- :mod:`ppl_dgp.benchmarks.laplace`: Laplace variants on two moons, against laplace-torch
  (``ppl-dgp bench laplace``).
"""
