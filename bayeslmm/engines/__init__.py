"""Engines consume a :class:`bayeslmm.spec.ModelSpec`: the PyMC builder, REML, Laplace ML.

They know nothing of formula text and nothing of the command line.
"""
