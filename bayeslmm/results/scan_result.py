"""The result of an association scan: one row per marker, the null models, plots.

:class:`ScanResult` is plain data built by :func:`bayeslmm.scan`; it knows nothing of how the
statistics were computed. Its marker table has GCTA-like columns, so that ``scan.tsv`` reads
like a ``.mlma`` / fastGWA file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bayeslmm.results.plots import figure_axes

__all__ = ["SCAN_COLUMNS", "ScanResult", "genomic_control"]

#: Columns of :attr:`ScanResult.table`, in order (``A1``/``A2`` only when the alleles are known).
SCAN_COLUMNS = (
    "SNP", "chr", "bp", "A1", "A2", "freq", "n", "beta", "se", "chi2", "p", "exact",
)  # fmt: skip

#: Median of χ²₁: genomic control's λ = median(χ²) / this.
CHI2_MEDIAN = float(stats.chi2.ppf(0.5, 1))


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

    # -- summaries ------------------------------------------------------------------------
    def lambda_gc(self) -> float:
        """Genomic-control λ of the scan's p-values (:func:`genomic_control`)."""
        return genomic_control(self.table["p"])

    def mean_chi2(self) -> float:
        """Mean χ²₁ quantile of the p-values (1 under the null for a calibrated test)."""
        p = self.table["p"].to_numpy(dtype=float)
        p = p[np.isfinite(p)]
        return float(np.mean(stats.chi2.isf(p, 1))) if p.size else math.nan

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` markers with the smallest p-values."""
        return self.table.nsmallest(k, "p")

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
