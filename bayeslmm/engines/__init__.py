"""Engines consume a :class:`bayeslmm.spec.ModelSpec`: the PyMC builder, REML, Laplace ML.

They know nothing of formula text and nothing of the command line.
"""

from bayeslmm.engines import gaussian as _gaussian
from bayeslmm.results.algebra import register_gaussian_algebra as _register

# the results layer imports no engine: hand it the Gaussian algebra its predictions, marginal
# LOO, SNP effects and conditional AIC use (bayeslmm/results/algebra.py)
_register(_gaussian)
