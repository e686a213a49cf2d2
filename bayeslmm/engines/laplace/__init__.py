"""Laplace-approximation maximum likelihood for GLMMs (lme4's ``glmer``, nAGQ = 1).

``fit(method="laplace")`` runs :func:`fit_laplace`; the result is a
:class:`~bayeslmm.results.laplace_result.LaplaceFit`. (The Bayesian strategy that integrates
the latent field out by a Laplace approximation inside NUTS is a different algorithm:
``strategy="laplace-marginal"``, :mod:`bayeslmm.engines.bayes.laplace_marginal`.)
"""

from bayeslmm.engines.laplace.engine import LaplaceFit, LaplaceProblem, fit_laplace

__all__ = ["LaplaceFit", "LaplaceProblem", "fit_laplace"]
