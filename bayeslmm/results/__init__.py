"""Results: heritability, variance proportions, scales, summaries, comparisons and plots.

Everything here reads an engine's output (a posterior or point estimates) and returns labelled
pandas / xarray objects; nothing here fits a model. The names below are imported when first
used (:mod:`bayeslmm._imports`), so a submodule (``bayeslmm.results.algebra``) loads alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bayeslmm._imports import lazy_names

# imported now, not lazily: the function reaction_norm shares its module's name, and any import
# of that module (bayeslmm.results.reaction_norm) would set this package's attribute to the
# module, so a lazy name would give `from bayeslmm.results import reaction_norm` a module
from bayeslmm.results.reaction_norm import (
    ReactionNorm,
    plot_genotype_norms,
    plot_reaction_norm,
    reaction_norm,
)

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from bayeslmm.results.compare import compare_fits, plot_comparison
    from bayeslmm.results.environment import environment_summary, environment_table
    from bayeslmm.results.epistasis import epistasis_table
    from bayeslmm.results.heritability import heritability_draws, heritability_table
    from bayeslmm.results.ppc import plot_ppc, ppc_summary
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

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "compare_fits": "bayeslmm.results.compare",
        "plot_comparison": "bayeslmm.results.compare",
        "environment_summary": "bayeslmm.results.environment",
        "environment_table": "bayeslmm.results.environment",
        "epistasis_table": "bayeslmm.results.epistasis",
        "heritability_draws": "bayeslmm.results.heritability",
        "heritability_table": "bayeslmm.results.heritability",
        "plot_ppc": "bayeslmm.results.ppc",
        "ppc_summary": "bayeslmm.results.ppc",
        "heritability_scales": "bayeslmm.results.scales",
        "posterior_heritability_scales": "bayeslmm.results.tables",
    },
)
