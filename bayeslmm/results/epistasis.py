"""Additive and epistatic variance: narrow-sense h² and broad-sense H².

An epistatic (additive × additive) kernel is the Hadamard product K∘K of the additive
relationship matrix with itself (Henderson 1985; Jiang & Reif 2015). bayeslmm fits it as a
second kinship on a second grouping factor that copies the genotype id::

    data["id_epi"] = data["id"]
    LMM("y ~ 1 + (1 | id) + (1 | id_epi)", data,
        kinship={"id": K, "id_epi": K.hadamard()})

With σ²_A and σ²_AA the two terms' variances (at a kernel diagonal of 1), σ²_other the
variances of any further random terms and σ²_E the residual (mean σ²_i when heteroscedastic),

    V_P = σ²_A + σ²_AA + σ²_other + σ²_E,    h² = σ²_A / V_P,    H² = (σ²_A + σ²_AA) / V_P,

and the epistatic share σ²_AA / V_P. Several epistatic kernels (e.g. AA, AD, DD) may be
named; H² then sums all genetic terms. NUTS: per posterior draw (HDIs); REML: at θ̂ with
delta-method standard errors and Wald intervals.

The VanRaden GRM has mean diagonal ≈ 1 + F, so K∘K has a larger mean diagonal ≈ (1 + F)²
plus the spread of the diagonal; ``K.hadamard().normalized()`` rescales it to mean
diagonal 1 if the variances should refer to the sample's average individual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.results._variance_source import VarianceSource, stack, summary_frame

#: Rows of :func:`epistasis_table`.
EPISTASIS_ROWS = (
    "var_additive",
    "var_epistatic",
    "var_other",
    "var_residual",
    "var_phenotypic",
    "h2",
    "H2",
    "epistatic_share",
)


def _roles(source: VarianceSource, additive: str | None, epistatic: Any) -> tuple[str, list[str]]:
    kin = [t for t in source.spec.terms if t.kinship is not None]
    if isinstance(epistatic, str):
        epistatic = [epistatic]
    if epistatic is None:
        marked = [
            t.group
            for t in kin
            if "epi" in t.group.lower() or "∘" in t.kinship.name or "epi" in t.kinship.name.lower()
        ]
        if len(kin) == 2 and len(marked) == 1:
            epistatic = marked
        else:
            raise ValueError(
                "Name the epistatic term(s), e.g. epistatic='id_epi' (auto-detection needs "
                "exactly two kinship terms, one whose group or kernel name marks it epistatic); "
                f"kinship terms here: {[t.group for t in kin]}."
            )
    if additive is None:
        rest = [t.group for t in kin if t.group not in epistatic]
        if len(rest) != 1:
            raise ValueError(f"Name the additive term, e.g. additive='id'; candidates: {rest}.")
        additive = rest[0]
    for g in [additive, *epistatic]:
        term = source.term(g)
        if not term.is_intercept_only:
            raise ValueError(
                f"Epistasis summaries need intercept-only genetic terms; ({term.label}) has "
                "slopes (see reaction_norm for random regressions)."
            )
    if additive in epistatic:
        raise ValueError(f"'{additive}' cannot be both the additive and an epistatic term.")
    return additive, list(epistatic)


def epistasis_quantities(
    fit: Any,
    additive: str | None = None,
    epistatic: str | Sequence[str] | None = None,
    *,
    spec: Any = None,
):
    """The quantities of :data:`EPISTASIS_ROWS` as one stacked Draws / Linear (in row order)."""
    source = VarianceSource(fit, spec)
    additive, epistatic = _roles(source, additive, epistatic)
    n = source.spec.n_obs
    # every variance at the sample's kinship scale, as heritability() (Legarra 2016): the
    # additive and epistatic variances of *these* individuals, whatever the kernels' scale

    def var(g: str):
        return source.average_variance(g, [source.term(g).design])

    v_a = var(additive)
    v_aa = source.constant(np.zeros(1))
    for g in epistatic:
        v_aa = v_aa + var(g)
    v_other = source.constant(np.zeros(1))
    for g in source.groups:
        if g != additive and g not in epistatic:
            v_other = v_other + var(g)
    v_e = source.observation_residual([np.arange(n)])
    v_p = v_a + v_aa + v_other + v_e
    rows = [v_a, v_aa, v_other, v_e, v_p, v_a / v_p, (v_a + v_aa) / v_p, v_aa / v_p]
    return stack(rows), additive, epistatic, source


def epistasis_table(
    fit: Any,
    additive: str | None = None,
    epistatic: str | Sequence[str] | None = None,
    *,
    spec: Any = None,
    hdi_prob: float | None = None,
) -> pd.DataFrame:
    """Additive and epistatic variances, h² and H², with intervals.

    Parameters
    ----------
    fit : BayesFit or RemlFit
        A fit of e.g. ``y ~ 1 + (1 | id) + (1 | id_epi)`` with kinship
        ``{"id": K, "id_epi": K.hadamard()}``.
    additive : str, optional
        Group of the additive term; default the kinship term that is not epistatic.
    epistatic : str or list of str, optional
        Group(s) of the epistatic term(s); default the kinship term whose group contains
        "epi" or whose kernel name contains "∘" (the name ``Kinship.hadamard`` gives).
    spec : ModelSpec, optional
        The fitted specification, needed for a RemlFit (``model.spec``).
    hdi_prob : float, optional

    Returns
    -------
    pandas.DataFrame
        Rows :data:`EPISTASIS_ROWS`; NUTS columns ``mean, sd, hdi_low, hdi_high, hdi_prob,
        ess_bulk, ess_tail, r_hat, median``; REML ``estimate, se, ci_low, ci_high, ci_prob``.

    Examples
    --------
    >>> # epistasis_table(fit).loc[["h2", "H2"]]
    """
    q, *_ = epistasis_quantities(fit, additive, epistatic, spec=spec)
    table = summary_frame(q, EPISTASIS_ROWS, hdi_prob or getattr(fit, "hdi_prob", 0.95))
    table.index.name = "quantity"
    return table
