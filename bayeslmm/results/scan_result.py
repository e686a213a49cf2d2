"""The result of an association scan: one row per marker, the null models, plots.

:class:`ScanResult` is plain data built by :func:`bayeslmm.scan`; it knows nothing of how the
statistics were computed. Its marker table has GCTA-like columns, so that ``scan.tsv`` reads
like a ``.mlma`` / fastGWA file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.errors import SpecificationError
from bayeslmm.results.plots import figure_axes
from bayeslmm.results.summary import posterior_summary

__all__ = ["SCAN_COLUMNS", "ScanResult", "genomic_control"]

#: Columns of :attr:`ScanResult.table`, in order (``A1``/``A2`` only when the alleles are known).
SCAN_COLUMNS = (
    "SNP", "chr", "bp", "A1", "A2", "freq", "n", "beta", "se", "chi2", "p", "exact",
)  # fmt: skip

#: Median of χ²₁: genomic control's λ = median(χ²) / this. The value of
#: ``scipy.stats.chi2.ppf(0.5, 1)``, written out so that importing this module needs no
#: scipy.stats (~0.4 s to load).
CHI2_MEDIAN = 0.454936423119572


def marker_share_draws(fit: Any, g: np.ndarray) -> dict[str, np.ndarray]:
    """Draws (chain, draw) of a refitted marker's effect ``beta`` and variance ``share``.

    ``fit`` is the NUTS fit of ``y ~ covariates + scan_marker + (1 | id)`` and ``g`` the
    marker's allele counts in its rows; share = β² V_g / (β² V_g + σ_G² + σ_e²) as in
    :meth:`ScanResult.posterior_shares`, with σ_G² the kinship term's variance at the
    sample's scale (its weight from :meth:`bayeslmm.spec.RandomTerm.variance_weights`).

    Examples
    --------
    >>> # marker_share_draws(fit, g)["share"].mean()
    """
    post = fit.posterior
    beta = np.asarray(post["beta"].sel(fixed="scan_marker").transpose("chain", "draw").values)
    term = fit.spec.terms[0]
    weight = float(np.asarray(term.variance_weights("sample")).sum())
    genetic = np.asarray(post[f"var_{term.group}"].transpose("chain", "draw").values) * weight
    residual = np.asarray(post["var_residual"].transpose("chain", "draw").values)
    marker = beta**2 * float(np.var(g))
    return {"beta": beta, "share": marker / (marker + genetic + residual)}


def genomic_control(p: Any) -> float:
    """Genomic-control inflation factor λ = median(χ²₁ quantile of p) / 0.4549.

    Computed from p-values, so that it means the same for every test; NaN p-values
    (untestable markers) are left out.

    Examples
    --------
    >>> p = (np.arange(10_000) + 0.5) / 10_000  # uniform quantiles: no inflation
    >>> round(genomic_control(p), 6)
    1.0
    >>> round(genomic_control(p**2), 2)  # p-values too small: an inflated scan
    2.91
    """
    from scipy import stats  # imported here: scipy.stats takes ~0.4 s to load

    p = np.asarray(p, dtype=float)
    p = p[np.isfinite(p)]
    if p.size == 0:
        return math.nan
    return float(stats.chi2.isf(np.median(p), 1) / CHI2_MEDIAN)


@dataclass(eq=False)
class ScanResult:
    """Marker-by-marker association results of a mixed-model scan.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per tested marker: ``SNP``, ``chr``, ``bp``, ``A1`` and ``A2`` (when known;
        A1 is the counted allele), ``freq`` (A1 frequency among the analysed individuals),
        ``n`` (individuals with a called genotype), ``beta`` (effect per A1 allele), ``se``,
        ``chi2`` (the statistic of :attr:`test`), ``p`` and ``exact`` (True where the marker
        was refitted with its own variance components).
    null_models : pandas.DataFrame
        One row per chromosome: the REML fit of the model without markers on that
        chromosome's kinship (``h2``, ``h2_se``, ``sigma_g2``, ``sigma_e2``, ``loglik_reml``,
        ``boundary``), how many markers were tested, and seconds spent (``grm_s``, ``eigh_s``,
        ``null_s``, ``markers_s``, ``exact_s``).
    formula : str
        The null model's formula.
    test : str
        ``"wald"`` or ``"lrt"``; ``"score"`` for a binary or count trait, whose table has
        ``score``, ``score_se``, ``beta``, ``se``, ``chi2``, ``p``, ``p_normal`` and ``spa``
        after ``n`` (see :func:`bayeslmm.scan`).
    loco : bool
        Whether each chromosome's kinship left that chromosome out.
    n_obs : int
        Individuals analysed.
    exact_fits : pandas.DataFrame
        One row per marker of ``exact=``: ``SNP``, ``chr``, ``beta``, ``se``, ``chi2``, ``p``
        (as in :attr:`table`) and the variance components refitted with it (``h2`` at the
        sample's kinship scale, as :attr:`null_models` and every fit report it;
        ``sigma_g2``, ``sigma_e2``).
    timing : dict of str to float
        Seconds per stage and ``total_s``.
    notes : list of str
        What was dropped or flagged on the way (markers, individuals, boundary fits).
    posterior_refit : callable, optional
        Set by :func:`bayeslmm.scan` for a Gaussian trait: ``refit(snps, **fit_options)``
        returns one ``(BayesFit, allele counts)`` per marker, the NUTS fit of the null model
        plus the marker as a fixed effect on its chromosome's kinship
        (:meth:`posterior_shares` uses it).

    Examples
    --------
    >>> table = pd.DataFrame({"SNP": ["a", "b"], "chr": ["1", "2"], "bp": [10, 20],
    ...                       "freq": [0.3, 0.4], "n": [50, 50], "beta": [0.1, -0.2],
    ...                       "se": [0.1, 0.1], "chi2": [1.0, 4.0], "p": [0.32, 0.046],
    ...                       "exact": [False, False]})
    >>> res = ScanResult(table, pd.DataFrame(), "y ~ (1 | id)", "wald", True, 50)
    >>> res.top(1)["SNP"].tolist()
    ['b']
    """

    table: pd.DataFrame
    null_models: pd.DataFrame
    formula: str
    test: str
    loco: bool
    n_obs: int
    exact_fits: pd.DataFrame = field(default_factory=pd.DataFrame)
    timing: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    posterior_refit: Callable[..., Any] | None = field(default=None, repr=False)

    # -- summaries ------------------------------------------------------------------------
    def lambda_gc(self) -> float:
        """Genomic-control λ of the scan's p-values (:func:`genomic_control`)."""
        return genomic_control(self.table["p"])

    def mean_chi2(self) -> float:
        """Mean χ²₁ quantile of the p-values (1 under the null for a calibrated test)."""
        from scipy import stats  # imported here: scipy.stats takes ~0.4 s to load

        p = self.table["p"].to_numpy(dtype=float)
        p = p[np.isfinite(p)]
        return float(np.mean(stats.chi2.isf(p, 1))) if p.size else math.nan

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` markers with the smallest p-values."""
        return self.table.nsmallest(k, "p")

    def posterior_shares(
        self,
        top: int = 5,
        snps: list[str] | None = None,
        hdi_prob: float = 0.95,
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        seed: int | None = None,
        **fit_options: Any,
    ) -> pd.DataFrame:
        """Posterior of each top marker's share of the phenotypic variance (NUTS refits).

        Each marker is refitted as ``y ~ covariates + marker + (1 | id)`` with its
        chromosome's kinship (the LOCO kinship of a LOCO scan) by NUTS, and for every
        posterior draw its share of the phenotypic variance is

            share = β² V_g / (β² V_g + σ_G² + σ_e²),

        with β the marker's effect per allele, V_g = (1/n) Σ_i (g_i − ḡ)² the sample
        variance of its allele counts, σ_G² = σ_g² (mean diag K − mean K) the genetic
        variance at the sample's kinship scale and σ_e² the residual variance: the
        denominator is the phenotypic variance of the package's h² (σ_G² + σ_e²) plus the
        marker's own variance. Gaussian traits only; each marker costs one NUTS fit.

        Parameters
        ----------
        top : int
            Refit the ``top`` markers with the smallest p-values.
        snps : list of str, optional
            Refit these markers instead.
        hdi_prob : float
            Mass of the highest-density interval.
        draws, tune, chains, seed
            NUTS settings, as :meth:`bayeslmm.LMM.fit` takes them (``sampler``, ``strategy``,
            ``target_accept`` and ``cores`` may be given too).

        Returns
        -------
        pandas.DataFrame
            One row per marker: ``SNP``, ``chr``, ``bp``, ``p`` (the scan's), ``beta``
            (posterior mean), ``share`` (posterior mean), ``share_low``, ``share_high``
            (HDI), ``h2`` (posterior mean of the kinship term's share without the marker, as
            :meth:`BayesFit.heritability` reports it), ``r_hat`` and ``ess`` (bulk) of the
            share's draws.

        Examples
        --------
        >>> # res = bl.scan("y ~ 1 + (1 | id)", pheno, G, snps)
        >>> # res.posterior_shares(top=3, seed=1)[["SNP", "share", "share_low", "share_high"]]
        """
        if self.test == "score":
            raise SpecificationError(
                "posterior_shares refits markers of a Gaussian trait; this scan's trait is "
                "binary or a count (score tests). Fit a marker's latent-scale model with "
                "bayeslmm.LMM(..., family=...) and the marker as a covariate instead."
            )
        if self.posterior_refit is None:
            raise SpecificationError(
                "This ScanResult holds no data to refit (it was built by hand, not returned "
                "by bayeslmm.scan); run bayeslmm.scan, then posterior_shares."
            )
        if snps is None:
            if isinstance(top, bool) or not isinstance(top, int) or top < 1:
                raise SpecificationError(f"top must be a whole number >= 1; got {top!r}.")
            chosen = self.top(top)
        else:
            chosen = self.table[self.table["SNP"].astype(str).isin([str(s) for s in snps])]
        names = chosen["SNP"].astype(str).tolist()
        for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecificationError(f"{name} must be a whole number >= 1; got {value!r}.")
        if not isinstance(hdi_prob, float | int) or not 0.0 < hdi_prob < 1.0:
            raise SpecificationError(f"hdi_prob must lie in (0, 1); got {hdi_prob!r}.")
        fits = self.posterior_refit(
            names, draws=draws, tune=tune, chains=chains, seed=seed, hdi_prob=hdi_prob,
            **fit_options,
        )  # fmt: skip
        rows = []
        for (_, hit), (fit, g) in zip(chosen.iterrows(), fits, strict=True):
            draws_ = marker_share_draws(fit, g)
            summary = posterior_summary(draws_["share"], hdi_prob)
            rows.append(
                {
                    "SNP": hit["SNP"],
                    "chr": hit["chr"],
                    "bp": hit["bp"],
                    "p": hit["p"],
                    "beta": float(np.mean(draws_["beta"])),
                    "share": summary["mean"],
                    "share_low": summary["hdi_low"],
                    "share_high": summary["hdi_high"],
                    "h2": float(fit.heritability().loc["h2", "estimate"]),
                    "r_hat": summary["r_hat"],
                    "ess": summary["ess_bulk"],
                }
            )
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        n_chr = self.table["chr"].nunique()
        return (
            f"ScanResult({self.table.shape[0]} markers on {n_chr} chromosomes, "
            f"n={self.n_obs}, test={self.test!r}, loco={self.loco}, "
            f"lambda_gc={self.lambda_gc():.3f})"
        )

    # -- files ----------------------------------------------------------------------------
    def to_tsv(self, path: str | os.PathLike) -> Path:
        """Write the marker table as tab-separated text (NA for missing), full precision.

        Examples
        --------
        >>> import tempfile, os
        >>> res = ScanResult(pd.DataFrame({"SNP": ["a"], "p": [0.5]}), pd.DataFrame(),
        ...                  "y ~ (1 | id)", "wald", True, 10)
        >>> out = res.to_tsv(os.path.join(tempfile.mkdtemp(), "scan.tsv"))
        >>> out.read_text().splitlines()
        ['SNP\\tp', 'a\\t0.5']
        """
        path = Path(path)
        self.table.to_csv(path, sep="\t", index=False, na_rep="NA")
        return path

    # -- plots ----------------------------------------------------------------------------
    def manhattan(
        self,
        ax: Any = None,
        threshold: float | None = 5e-8,
        title: str | None = None,
    ) -> Any:
        """Manhattan plot: −log10 p by position, chromosomes side by side in scan order.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Axes to draw into; by default a new stand-alone Figure (pyplot is not used).
        threshold : float, optional
            p-value of the horizontal significance line (genome-wide 5e-8); None for none.
        title : str, optional

        Returns
        -------
        matplotlib.figure.Figure

        Examples
        --------
        >>> table = pd.DataFrame({"chr": ["1", "1", "2"], "bp": [1, 5, 3],
        ...                       "p": [0.5, 1e-3, 0.2]})
        >>> res = ScanResult(table, pd.DataFrame(), "y ~ (1 | id)", "wald", True, 10)
        >>> res.manhattan().axes[0].get_ylabel()
        '−log10 p'
        """
        ax = figure_axes((10.0, 3.8)) if ax is None else ax
        frame = self.table[["chr", "bp", "p"]].copy()
        frame = frame[np.isfinite(frame["p"].to_numpy(dtype=float))]
        order = list(dict.fromkeys(self.table["chr"]))
        offset, ticks, labels = 0.0, [], []
        for k, chrom in enumerate(order):
            part = frame[frame["chr"] == chrom]
            if part.empty:
                continue
            bp = part["bp"].to_numpy(dtype=float)
            lo, hi = float(bp.min()), float(bp.max())
            span = max(hi - lo, 1.0)
            x = offset + (bp - lo)
            y = -np.log10(np.clip(part["p"].to_numpy(dtype=float), 1e-300, 1.0))
            ax.scatter(x, y, s=6, color="C0" if k % 2 == 0 else "C7", linewidths=0, rasterized=True)
            ticks.append(offset + span / 2)
            labels.append(str(chrom))
            offset += span * 1.05 + 1.0
        if threshold is not None:
            ax.axhline(-math.log10(threshold), color="C3", lw=1, ls="--",
                       label=f"p = {threshold:g}")  # fmt: skip
            ax.legend(frameon=False, fontsize="small", loc="upper right")
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels, fontsize="small")
        ax.set_xlabel("chromosome")
        ax.set_ylabel("−log10 p")
        ax.set_ylim(bottom=0)
        ax.set_title(title or self._title("Manhattan plot"), fontsize="medium")
        ax.figure.tight_layout()
        return ax.figure

    def qq(self, ax: Any = None, title: str | None = None) -> Any:
        """QQ plot of −log10 p against its uniform expectation, with a 95% band and λ.

        Returns
        -------
        matplotlib.figure.Figure

        Examples
        --------
        >>> p = np.random.default_rng(1).uniform(size=500)
        >>> res = ScanResult(pd.DataFrame({"p": p}), pd.DataFrame(), "y ~ (1 | id)",
        ...                  "wald", True, 10)
        >>> res.qq().axes[0].get_xlabel()
        'expected −log10 p'
        """
        from scipy import stats  # imported here: scipy.stats takes ~0.4 s to load

        ax = figure_axes((4.5, 4.5)) if ax is None else ax
        p = np.sort(self.table["p"].to_numpy(dtype=float))
        p = p[np.isfinite(p)]
        m = p.size
        if m:
            k = np.arange(1, m + 1)
            expected = -np.log10(k / (m + 1))
            # order statistics of m uniforms: the k-th is Beta(k, m − k + 1)
            lo = -np.log10(stats.beta.ppf(0.975, k, m - k + 1))
            hi = -np.log10(stats.beta.ppf(0.025, k, m - k + 1))
            ax.fill_between(expected, lo, hi, color="0.85", label="95% band under the null")
            ax.scatter(expected, -np.log10(np.clip(p, 1e-300, 1.0)), s=6, color="C0",
                       linewidths=0, rasterized=True,
                       label=f"λ_GC = {genomic_control(p):.3f}")  # fmt: skip
            top = float(expected[0])
            ax.plot([0, top], [0, top], color="C3", lw=1)
            ax.legend(frameon=False, fontsize="small", loc="upper left")
        ax.set_xlabel("expected −log10 p")
        ax.set_ylabel("observed −log10 p")
        ax.set_title(title or self._title("QQ plot"), fontsize="medium")
        ax.figure.tight_layout()
        return ax.figure

    def _title(self, what: str) -> str:
        kind = "LOCO" if self.loco else "all-marker kinship"
        return f"{what}: {self.formula} ({self.test}, {kind}, n = {self.n_obs})"
