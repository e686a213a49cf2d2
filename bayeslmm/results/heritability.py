"""Heritability and variance proportions.

Definition (every engine)
-------------------------
For random terms k = 1..K adding variances v_k across the sample's observations and a
residual variance σ_e²,

    share_k = v_k / (v_1 + ... + v_K + σ_e²).

Each term is labelled by its group (e.g. the share of an iid ``family`` term is c²); when
the model has exactly one kinship term and it has a single coefficient, its share is
repeated under the label ``h2``. The v_k are those of :func:`bayeslmm.results.tables.
heritability`: a kinship term's σ_k² (mean diag K − mean K) (Legarra 2016: h² at the
sample's own scale, unchanged by K → cK; ``h2_gcta`` keeps GCTA's σ_k² at K_ii = 1 where it
differs), a slope term's variance across observations, an iid term's σ_k²; GLMMs use the
latent-scale residual (π²/3 logit, 1 probit, ln(1 + 1/λ̄) + σ²_olre Poisson; Nakagawa,
Johnson & Schielzeth 2017).

For NUTS the shares are deterministics of the model (``variance_share``, dims
``component``), so every posterior draw carries its own h².
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from bayeslmm.results.summary import posterior_summaries, posterior_summary

if TYPE_CHECKING:
    import xarray as xr

#: Columns of the heritability table (az.summary style).
TABLE_COLUMNS = ("mean", "sd", "hdi_low", "hdi_high", "ess_bulk", "ess_tail", "r_hat")


def variance_shares(term_variances: Mapping[str, float], residual: float) -> dict[str, float]:
    """Point shares of the phenotypic variance (e.g. from REML estimates).

    Parameters
    ----------
    term_variances : dict
        Label → variance of each random term (use ``"h2"`` as the label of a sole kinship
        term, as :func:`bayeslmm.engines.bayes.builder.component_labels` does).
    residual : float
        Residual (or latent-scale distribution-specific) variance.

    Returns
    -------
    dict
        Label → share; the residual's share under ``"residual"``.

    Examples
    --------
    >>> variance_shares({"h2": 3.0, "litter": 1.0}, residual=4.0)
    {'h2': 0.375, 'litter': 0.125, 'residual': 0.5}
    """
    total = float(sum(term_variances.values())) + float(residual)
    if not total > 0:
        raise ValueError(f"The total variance must be positive; got {total}.")
    out = {k: float(v) / total for k, v in term_variances.items()}
    out["residual"] = float(residual) / total
    return out


def heritability_draws(posterior: xr.Dataset, include_residual: bool = False) -> xr.DataArray:
    """Posterior draws of the variance shares, dims (chain, draw, component).

    Parameters
    ----------
    posterior : xarray.Dataset
        ``idata.posterior`` of a bayeslmm model (holds ``variance_share``).
    include_residual : bool
        Keep the residual's share.

    Returns
    -------
    xarray.DataArray

    Examples
    --------
    >>> # fit.heritability_draws().sel(component="h2").mean()
    """
    if "variance_share" not in posterior:
        raise ValueError("The posterior has no 'variance_share'; was it built by bayeslmm?")
    import xarray as xr

    draws = posterior["variance_share"]
    if not include_residual:
        draws = draws.sel(component=[c for c in draws["component"].values if c != "residual"])
    if "h2" in posterior and "h2" not in draws["component"].values:
        h2 = posterior["h2"].expand_dims(component=["h2"], axis=-1)
        draws = xr.concat([draws, h2], dim="component")
    return draws.rename("variance_share")


def heritability_table(posterior, hdi_prob: float = 0.95) -> pd.DataFrame:
    """One row per random term's variance share, plus ``"h2"`` for a sole kinship term.

    Columns: mean, sd, hdi_low, hdi_high, ess_bulk, ess_tail, r_hat.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> draws = np.random.default_rng(0).dirichlet([4, 6], size=(2, 200))
    >>> post = xr.Dataset({"variance_share": (("chain", "draw", "component"), draws)},
    ...                   coords={"component": ["h2", "residual"]})
    >>> heritability_table(post).index.tolist()
    ['h2']
    """
    draws = heritability_draws(posterior)
    rows = {}
    for comp in draws["component"].values:
        s = posterior_summary(draws.sel(component=comp).values, hdi_prob)
        rows[str(comp)] = [s[c] for c in TABLE_COLUMNS]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(TABLE_COLUMNS))
    table.index.name = "component"
    return table


def summarise_draws(values, hdi_prob: float = 0.95) -> pd.DataFrame:
    """az.summary-style table of a (chain, draw, k) array or DataArray with a label dim."""
    arr = values.transpose("chain", "draw", ...)
    label_dim = [d for d in arr.dims if d not in ("chain", "draw")]
    if not label_dim:
        rows = {str(arr.name): posterior_summary(arr.values, hdi_prob)}
        return pd.DataFrame.from_dict(rows, orient="index")[list(TABLE_COLUMNS)]
    (dim,) = label_dim
    # all labels at once (a breeding-value table has one per level: thousands)
    columns = posterior_summaries(arr.values, hdi_prob)
    index = pd.Index([str(lab) for lab in arr[dim].values])
    return pd.DataFrame({c: columns[c] for c in TABLE_COLUMNS}, index=index)
