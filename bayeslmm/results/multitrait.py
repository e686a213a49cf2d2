"""Results of multi-trait (multivariate) Gaussian animal models.

Both engines hand back the same questions a quantitative geneticist asks of a G-matrix:

* :meth:`genetic_covariance` / :meth:`residual_covariance`: Σ_G and Σ_E, trait × trait
  DataFrames labelled by trait in formula order (REML estimates; posterior means for NUTS,
  ``draws=True`` gives the posterior draws as an xarray DataArray);
* :meth:`genetic_correlation` / :meth:`residual_correlation`: one row per pair of traits,
  r = Σ_ab / √(Σ_aa Σ_bb) with an SE (delta method, REML) or a posterior SD and HDI (NUTS);
* :meth:`heritability`: h²_a = c Σ_G,aa / (c Σ_G,aa + Σ_E,aa) per trait, c = mean diag K −
  mean K over the individuals (the sample-scale h² of the single-trait tables).

REML standard errors come from the observed information of (vech Σ_G, vech Σ_E) computed
by the engine; functions of them get the delta method with a central-difference Jacobian.
Intervals are Wald intervals (estimate ± z SE), so an r_g interval can pass ±1 when the
SE is large; the NUTS intervals are HDIs of the draws and stay within [−1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayeslmm.results.multitrait_layout import wald_z

#: Columns of a posterior correlation table (:meth:`MultiTraitBayesFit.genetic_correlation`).
POSTERIOR_COLUMNS = ("mean", "sd", "hdi_low", "hdi_high", "ess_bulk", "ess_tail", "r_hat")


def _pairs(traits: tuple[str, ...]) -> list[tuple[int, int]]:
    return [(a, b) for a in range(len(traits)) for b in range(a + 1, len(traits))]


def _correlation(S: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(S))
    with np.errstate(invalid="ignore", divide="ignore"):
        return S / np.outer(d, d)


def observed_dataset(spec: Any) -> Any:
    """The recorded traits as an ``observed_data`` group: one variable per trait (NaN where
    not recorded) over the individuals (dimension: the grouping factor, e.g. ``id``), in the
    specification's row order. ``bl.load_fit`` compares data given to it with these, row by
    row."""
    import xarray as xr

    Y = np.asarray(spec.Y, dtype=float)
    return xr.Dataset(
        {trait: (spec.group, Y[:, a].copy()) for a, trait in enumerate(spec.traits)},
        coords={spec.group: np.asarray(spec.ids, dtype=str)},
    )


@dataclass(eq=False)
class MultiTraitRemlFit:
    """REML estimates of a multi-trait model (made by the REML engine).

    Attributes
    ----------
    traits : tuple of str
    genetic, residual : ndarray, shape (t, t)
        Σ_G and Σ_E in the traits' units.
    covariance : ndarray
        Covariance of the estimates of (vech Σ_G, vech Σ_E) (row-major lower triangles),
        the inverse observed information.
    beta : ndarray, shape (t, p)
        GLS fixed effects per trait; ``beta_covariance`` their covariance (trait-major).
    loglik : float
        REML log-likelihood at the estimates.
    route : {"rotated", "low-rank", "dense", "sparse-pedigree"}
        Complete data on the rotated basis (of a dense kinship, or of a low-rank kinship's
        thin SVD), the stacked dense V of the observed records, or the mixed-model
        equations on a pedigree's sparse A⁻¹.
    breeding_values : pandas.DataFrame or None
        Sparse-pedigree route: EBV and PEV per trait (columns ``trait``, ``pev:trait``) of
        every animal of the pedigree, ancestors without records included.
    timing : dict
        Sparse-pedigree route: seconds by stage and evaluation counts.
    """

    traits: tuple[str, ...]
    fixed_names: tuple[str, ...]
    genetic: np.ndarray
    residual: np.ndarray
    covariance: np.ndarray
    beta: np.ndarray
    beta_covariance: np.ndarray
    loglik: float
    kinship_scale: float
    n: int
    n_records: tuple[int, ...]
    route: str
    converged: bool
    gradient_max: float
    seconds: float
    formula: str = ""
    at_boundary: bool = False
    breeding_values: pd.DataFrame | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    method: str = field(default="reml", init=False)
    #: The :class:`~bayeslmm.multitrait_spec.MultiTraitSpec` fitted (a keyword the engine
    #: passes): summary.json's ``kinship`` and the stored inputs read it.
    spec: Any = field(kw_only=True, repr=False)

    # -- helpers --------------------------------------------------------------------------
    @property
    def _t(self) -> int:
        return len(self.traits)

    def _phi(self) -> np.ndarray:
        rows, cols = np.tril_indices(self._t)
        return np.concatenate([self.genetic[rows, cols], self.residual[rows, cols]])

    def _matrices(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self._t
        m = phi.size // 2
        G, E = np.zeros((t, t)), np.zeros((t, t))
        rows, cols = np.tril_indices(t)
        G[rows, cols] = G[cols, rows] = phi[:m]
        E[rows, cols] = E[cols, rows] = phi[m:]
        return G, E

    def _delta(self, func: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[Any, Any]:
        """Estimates of func(Σ_G, Σ_E) and their delta-method SEs."""
        phi = self._phi()
        value = np.asarray(func(*self._matrices(phi)), dtype=float)
        J = np.empty((value.size, phi.size))
        for j in range(phi.size):
            h = 1e-6 * max(abs(phi[j]), 1e-3 * float(np.max(np.abs(phi))))
            e = np.zeros_like(phi)
            e[j] = h
            J[:, j] = (
                np.asarray(func(*self._matrices(phi + e))).ravel()
                - np.asarray(func(*self._matrices(phi - e))).ravel()
            ) / (2 * h)
        cov = J @ self.covariance @ J.T
        return value.ravel(), np.sqrt(np.clip(np.diag(cov), 0.0, None))

    def _table(self, index: Any, value: np.ndarray, se: np.ndarray, prob: float) -> pd.DataFrame:
        z = wald_z(prob)
        return pd.DataFrame(
            {"estimate": value, "se": se, "ci_low": value - z * se, "ci_high": value + z * se},
            index=index,
        )

    # -- the tables ----------------------------------------------------------------------
    def genetic_covariance(self) -> pd.DataFrame:
        """Σ_G, labelled by trait.

        Examples
        --------
        >>> # fit.genetic_covariance().loc["y1", "y2"]
        """
        return pd.DataFrame(self.genetic, index=list(self.traits), columns=list(self.traits))

    def residual_covariance(self) -> pd.DataFrame:
        """Σ_E, labelled by trait."""
        return pd.DataFrame(self.residual, index=list(self.traits), columns=list(self.traits))

    def covariance_table(self, prob: float = 0.95) -> pd.DataFrame:
        """Every (co)variance with its SE: rows (matrix, trait1, trait2)."""
        t = self._t
        rows, cols = np.tril_indices(t)
        se = np.sqrt(np.clip(np.diag(self.covariance), 0, None))
        index = pd.MultiIndex.from_tuples(
            [
                (m, self.traits[a], self.traits[b])
                for m in ("genetic", "residual")
                for a, b in zip(rows.tolist(), cols.tolist(), strict=True)
            ],
            names=["matrix", "trait1", "trait2"],
        )
        return self._table(index, self._phi(), se, prob)

    def _at_zero(self, which: int) -> np.ndarray:
        """Traits whose genetic (0) or residual (1) variance is estimated at 0 (below 1e-6 of
        the trait's total): their correlations are undefined."""
        S = (self.genetic, self.residual)[which]
        total = np.diag(self.genetic) + np.diag(self.residual)
        return np.diag(S) < 1e-6 * total

    def _singular(self, which: int) -> bool:
        """Whether Σ_G (0) or Σ_E (1) is singular at the estimate (a boundary fit)."""
        S = (self.genetic, self.residual)[which]
        d = 1.0 / np.sqrt(np.diag(self.genetic) + np.diag(self.residual))
        return bool(np.min(np.linalg.eigvalsh(S * np.outer(d, d))) < 1e-6)

    @property
    def messages(self) -> list[str]:
        """Plain-words notes: boundary fits, no convergence."""
        out = []
        for which, label in ((0, "genetic"), (1, "residual")):
            zero = [t for t, z in zip(self.traits, self._at_zero(which), strict=True) if z]
            if zero:
                out.append(
                    f"boundary fit: the {label} variance of {zero} is estimated at 0; its "
                    f"{label} correlations are undefined (NaN in the tables)."
                )
            elif self._singular(which):
                out.append(
                    f"boundary fit: the {label} covariance matrix is singular at the estimate "
                    f"(a {label} correlation at ±1 or a combination of traits without {label} "
                    "variance); correlations at ±1 have no standard error (NaN), and the other "
                    "SEs are those of a boundary fit. The posterior (method='nuts') describes "
                    "the uncertainty there."
                )
        if not self.converged:
            out.append(
                f"REML did not converge (largest gradient {self.gradient_max:.2g}); check "
                "the data (e.g. a trait nearly constant or duplicated)."
            )
        return out

    def _correlation_table(self, which: int, prob: float) -> pd.DataFrame:
        pairs = _pairs(self.traits)
        value, se = self._delta(
            lambda G, E: np.array([_correlation((G, E)[which])[a, b] for a, b in pairs])
        )
        zero = self._at_zero(which)
        undefined = np.array([zero[a] or zero[b] for a, b in pairs], dtype=bool)
        value = np.where(undefined, np.nan, value)
        # at ±1 the correlation is on the boundary: the delta method's SE means nothing
        se = np.where(undefined | (np.abs(value) > 1.0 - 1e-6), np.nan, se)
        index = pd.MultiIndex.from_tuples(
            [(self.traits[a], self.traits[b]) for a, b in pairs], names=["trait1", "trait2"]
        )
        return self._table(index, value, se, prob)

    def genetic_correlation(self, prob: float = 0.95) -> pd.DataFrame:
        """r_g for each pair of traits: estimate, delta-method SE, Wald interval.

        Parameters
        ----------
        prob : float
            Interval mass.

        Returns
        -------
        pandas.DataFrame
            Index (trait1, trait2); columns estimate, se, ci_low, ci_high.

        Examples
        --------
        >>> # fit.genetic_correlation()
        """
        return self._correlation_table(0, prob)

    def residual_correlation(self, prob: float = 0.95) -> pd.DataFrame:
        """r_e for each pair of traits (as :meth:`genetic_correlation`)."""
        return self._correlation_table(1, prob)

    def heritability(self, prob: float = 0.95) -> pd.DataFrame:
        """h² per trait (sample scale, as the single-trait tables), with delta-method SEs.

        Examples
        --------
        >>> # fit.heritability().loc["y1", "estimate"]
        """
        c = self.kinship_scale
        value, se = self._delta(lambda G, E: c * np.diag(G) / (c * np.diag(G) + np.diag(E)))
        return self._table(pd.Index(list(self.traits), name="trait"), value, se, prob)

    def fixed_effects(self, prob: float = 0.95) -> pd.DataFrame:
        """β per trait with GLS SEs: index (trait, term)."""
        se = np.sqrt(np.clip(np.diag(self.beta_covariance), 0, None))
        index = pd.MultiIndex.from_product(
            [list(self.traits), list(self.fixed_names)], names=["trait", "term"]
        )
        return self._table(index, self.beta.ravel(), se, prob)

    # -- summary.json and results folders -------------------------------------------------
    def to_summary(self, prob: float = 0.95) -> dict[str, Any]:
        """The summary.json dictionary (``docs/summary_json.md``, "Multi-trait fits").

        The single-trait layout read trait by trait (``heritability`` and ``n_records`` by
        trait, ``fixed_effects`` by ``"trait:term"``, lme4's VarCorr rows with a row per
        covariance), plus ``traits``, ``families``, ``genetic_correlation``,
        ``residual_correlation`` (``"y1:y2"`` → ENTRY), ``genetic_covariance`` and
        ``residual_covariance`` (trait → trait → ENTRY). The numbers are those of
        :meth:`heritability`, :meth:`genetic_correlation`, ... ; NaN is ``None``.

        Examples
        --------
        >>> # fit.to_summary()["genetic_correlation"]["y1:y2"]["estimate"]
        """
        from bayeslmm.results.multitrait_summary import reml_summary

        return reml_summary(self, prob)

    def save(self, out_dir: Any, inputs: bool = True) -> dict[str, Any]:
        """Write ``summary.json`` and ``inputs/`` to ``out_dir``, all or nothing (the folder
        holds this fit's set or what it held before; :mod:`bayeslmm.results.output`).

        Parameters
        ----------
        out_dir : path
            The results folder (created if missing; its parent must exist).
        inputs : bool
            Also store the data columns the model uses, its kinship and each trait's family
            in ``inputs/`` (:mod:`bayeslmm.results.inputs`; a dense kinship takes about
            8 n² bytes), so that ``bl.load_fit(out_dir)`` needs nothing else. ``False``
            leaves them out (then give ``load_fit`` the data and kinship again).

        Returns
        -------
        dict
            ``{"summary": path[, "inputs": path]}``.

        Examples
        --------
        >>> # fit.save("results"); bl.load_fit("results").genetic_correlation()
        """
        from bayeslmm.results.multitrait_summary import save_reml

        return save_reml(self, out_dir, inputs=inputs)

    def __repr__(self) -> str:
        return (
            f"MultiTraitRemlFit({self.formula!r}, traits={list(self.traits)}, n={self.n}, "
            f"route={self.route!r}, loglik={self.loglik:.4f}, converged={self.converged})"
        )


@dataclass(eq=False)
class MultiTraitBayesFit:
    """Posterior of a multi-trait model (made by the NUTS engine).

    Attributes
    ----------
    idata : arviz.InferenceData
        Posterior variables ``genetic_covariance`` and ``residual_covariance`` (chain, draw,
        trait, trait_), ``genetic_correlation``, ``residual_correlation``, ``genetic_sd``,
        ``residual_sd``, ``heritability`` (trait) and ``beta`` (trait, term); the sampler's
        statistics.
    """

    traits: tuple[str, ...]
    fixed_names: tuple[str, ...]
    idata: Any
    hdi_prob: float = 0.95
    seed: int | None = None
    timing: dict[str, float] = field(default_factory=dict)
    formula: str = ""
    priors: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    route: str = "rotated"  # "low-rank": the SNP-space rotation of a LowRankKinship
    #: "nutpie" (NUTS), or "importance": PSIS importance sampling of the sparse-pedigree
    #: marginal posterior (:mod:`bayeslmm.engines.bayes.multitrait_pedigree`)
    sampler: str = "nutpie"
    method: str = field(default="nuts", init=False)
    #: The :class:`~bayeslmm.multitrait_spec.MultiTraitSpec` sampled (a keyword the engine
    #: passes): summary.json's ``n_obs``, ``n_records`` and ``kinship``, the stored inputs,
    #: and the ``observed_data`` group it adds to ``idata``.
    spec: Any = field(kw_only=True, repr=False)

    def __post_init__(self) -> None:
        if "observed_data" not in self.idata.groups():
            self.idata.add_groups(observed_data=observed_dataset(self.spec))

    @property
    def posterior(self) -> Any:
        return self.idata.posterior

    def _matrix(self, name: str, draws: bool) -> Any:
        da = self.posterior[name]
        if draws:
            return da
        return pd.DataFrame(
            da.mean(("chain", "draw")).values, index=list(self.traits), columns=list(self.traits)
        )

    def genetic_covariance(self, draws: bool = False) -> Any:
        """Posterior mean of Σ_G labelled by trait, or (``draws=True``) its draws.

        Examples
        --------
        >>> # fit.genetic_covariance(); fit.genetic_covariance(draws=True)  # xarray
        """
        return self._matrix("genetic_covariance", draws)

    def residual_covariance(self, draws: bool = False) -> Any:
        """Posterior mean of Σ_E labelled by trait, or its draws."""
        return self._matrix("residual_covariance", draws)

    def _summary(self, values: np.ndarray, prob: float) -> dict[str, float]:
        """mean, sd, HDI, ESS and R-hat of draws of shape (chain, draw)."""
        import arviz as az

        low, high = az.hdi(values.ravel(), hdi_prob=prob)  # values: (chain, draw)
        return {
            "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)),
            "hdi_low": float(low),
            "hdi_high": float(high),
            "ess_bulk": min(float(az.ess(values, method="bulk")), self.ess_limit),
            "ess_tail": min(float(az.ess(values, method="tail")), self.ess_limit),
            "r_hat": float(az.rhat(values)) if values.shape[0] > 1 else float("nan"),
        }

    @property
    def ess_limit(self) -> float:
        """The most effective draws any quantity can have: importance-sampled draws are a
        resample of weighted proposals, no more informative than their importance ESS
        (``timing["importance_ess"]``), however the resampled draws autocorrelate; infinite
        for NUTS."""
        if self.sampler == "importance":
            return float(self.timing.get("importance_ess", float("inf")))
        return float("inf")

    def _correlation_table(
        self, name: str, prob: float | None, pairs: list[tuple[int, int]] | None = None
    ) -> pd.DataFrame:
        """Posterior summaries of the correlation draws ``name`` for ``pairs`` (positions of
        traits; default every pair), one row each (no row: an empty table)."""
        prob = prob or self.hdi_prob
        da = self.posterior[name].values
        pairs = _pairs(self.traits) if pairs is None else pairs
        rows = [self._summary(da[:, :, a, b], prob) for a, b in pairs]
        index = pd.MultiIndex.from_tuples(
            [(self.traits[a], self.traits[b]) for a, b in pairs], names=["trait1", "trait2"]
        )
        return pd.DataFrame(rows, index=index, columns=list(POSTERIOR_COLUMNS))

    def genetic_correlation(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """r_g for each pair of traits: posterior mean, sd, HDI, ESS, R-hat.

        Parameters
        ----------
        hdi_prob : float, optional
            HDI mass (default: the fit's ``hdi_prob``).

        Returns
        -------
        pandas.DataFrame
            Index (trait1, trait2); columns mean, sd, hdi_low, hdi_high, ess_bulk, ess_tail,
            r_hat.

        Examples
        --------
        >>> # fit.genetic_correlation()
        """
        return self._correlation_table("genetic_correlation", hdi_prob)

    def residual_correlation(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """r_e for each pair of traits (as :meth:`genetic_correlation`)."""
        return self._correlation_table("residual_correlation", hdi_prob)

    def heritability(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """h² per trait (sample scale): posterior mean, sd, HDI, ESS, R-hat."""
        prob = hdi_prob or self.hdi_prob
        da = self.posterior["heritability"].values
        rows = [self._summary(da[:, :, a], prob) for a in range(len(self.traits))]
        return pd.DataFrame(rows, index=pd.Index(list(self.traits), name="trait"))

    def fixed_effects(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """β per trait: index (trait, term)."""
        prob = hdi_prob or self.hdi_prob
        da = self.posterior["beta"].values
        rows, index = [], []
        for a, trait in enumerate(self.traits):
            for j, term in enumerate(self.fixed_names):
                rows.append(self._summary(da[:, :, a, j], prob))
                index.append((trait, term))
        return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["trait", "term"]))

    @property
    def divergences(self) -> int:
        stats = getattr(self.idata, "sample_stats", None)
        if stats is None or "diverging" not in stats:
            return 0
        return int(stats["diverging"].values.sum())

    # -- summary.json and results folders -------------------------------------------------
    def summary(self, hdi_prob: float | None = None) -> dict[str, Any]:
        """The summary.json dictionary (``docs/summary_json.md``, "Multi-trait fits").

        The single-trait layout read trait by trait, with posterior ENTRYs, plus ``traits``,
        ``families``, ``genetic_correlation``, ``residual_correlation``,
        ``genetic_covariance`` and ``residual_covariance``; a multi-trait GLMM adds
        ``heritability_latent`` and ``residual_block``. NaN is ``None``.

        Examples
        --------
        >>> # fit.summary()["genetic_correlation"]["y1:y2"]["hdi_low"]
        """
        from bayeslmm.results.multitrait_summary import bayes_summary

        return bayes_summary(self, hdi_prob)

    def save(self, out_dir: Any, plot: bool = True, inputs: bool = True) -> dict[str, Any]:
        """Write ``summary.json``, ``posterior.nc`` (the draws and the observed traits),
        ``inputs/`` and, with ``plot``, ``rg_posterior.png`` (the r_g posterior of each pair
        of traits) to ``out_dir``, all or nothing (:mod:`bayeslmm.results.output`).

        Parameters
        ----------
        out_dir : path
            The results folder (created if missing; its parent must exist).
        plot : bool
            Draw ``rg_posterior.png``.
        inputs : bool
            Also store the data columns, the kinship and each trait's family in ``inputs/``
            (as :meth:`MultiTraitRemlFit.save`), so that ``bl.load_fit(out_dir)`` needs
            nothing else; ``False`` leaves them out.

        Returns
        -------
        dict
            ``{"summary": path, "posterior": path[, "plot": path][, "inputs": path]}``.

        Examples
        --------
        >>> # fit.save("results"); bl.load_fit("results").genetic_correlation()
        >>> # arviz.from_netcdf("results/posterior.nc")  # the draws themselves
        """
        from bayeslmm.results.multitrait_summary import save_bayes

        return save_bayes(self, out_dir, plot=plot, inputs=inputs)

    def __repr__(self) -> str:
        post = self.posterior
        return (
            f"MultiTraitBayesFit({self.formula!r}, traits={list(self.traits)}, "
            f"chains={post.sizes['chain']}, draws={post.sizes['draw']}, "
            f"divergences={self.divergences})"
        )
