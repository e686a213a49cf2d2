"""Results: heritability, variance proportions, scales, summaries, comparisons and plots.

Everything here reads an engine's output (a posterior or point estimates) and returns labelled
pandas / xarray objects; nothing here fits a model.
"""

from bayeslmm.results.compare import compare_fits, plot_comparison
from bayeslmm.results.environment import environment_summary, environment_table
from bayeslmm.results.epistasis import epistasis_table
from bayeslmm.results.heritability import heritability_draws, heritability_table
from bayeslmm.results.ppc import plot_ppc, ppc_summary
from bayeslmm.results.reaction_norm import (
    ReactionNorm,
    plot_genotype_norms,
    plot_reaction_norm,
    reaction_norm,
)
from bayeslmm.results.scales import heritability_scales
from bayeslmm.results.tables import posterior_heritability_scales

__all__ = [
    "ReactionNorm",
    "compare_fits",
    "environment_summary",
    "environment_table",
    "epistasis_table",
    "heritability_draws",
    "heritability_scales",
    "heritability_table",
    "plot_comparison",
    "plot_ppc",
    "plot_genotype_norms",
    "plot_reaction_norm",
    "posterior_heritability_scales",
    "ppc_summary",
    "reaction_norm",
]
