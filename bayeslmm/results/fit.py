"""The calls every fit answers, whatever the engine that made it.

:class:`FitTables` is the base of :class:`~bayeslmm.results.bayes_result.BayesFit`,
:class:`~bayeslmm.results.reml_result.RemlFit` and
:class:`~bayeslmm.results.laplace_result.LaplaceFit`. A fit supplies :meth:`FitTables.
estimate` (its parameters as posterior draws or as a point estimate with covariance, see
:mod:`bayeslmm.results.estimate`); the tables and the summary.json sections are then written
once (:mod:`bayeslmm.results.tables`), so that their rows and leading columns are the same
for every engine. Engine-specific columns come after the common ones, never instead of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pandas as pd

from bayeslmm.results import tables
from bayeslmm.results.estimate import COMMON_COLUMNS, POSTERIOR_COLUMNS, Estimate


class FitTables:
    """Mixin: heritability, variance components, fixed effects and GLMM scales.

    Subclasses set :attr:`engine` and implement :meth:`estimate`; ``spec`` is the fitted
    :class:`~bayeslmm.spec.ModelSpec`.
    """

    #: ``"nuts"``, ``"reml"`` or ``"laplace"`` (summary.json's ``method``).
    engine: ClassVar[str] = ""
    #: Default interval mass of the tables (NUTS fits carry their own ``hdi_prob``).
    default_prob: ClassVar[float] = 0.95

    def estimate(self) -> Estimate:
        """The fitted parameters under the estimate protocol."""
        raise NotImplementedError

    def _prob(self, prob: float | None) -> float:
        prob = getattr(self, "hdi_prob", self.default_prob) if prob is None else prob
        if not 0.0 < float(prob) < 1.0:
            raise ValueError(f"The interval probability must lie in (0, 1); got {prob}.")
        return float(prob)

    # -- output -----------------------------------------------------------------------------
    def save(
        self, out_dir: Any, prevalence: float | None = None, inputs: bool = True
    ) -> dict[str, Any]:
        """Write a point fit's ``summary.json`` (and ``inputs/``) to ``out_dir``.

        REML, ML and Laplace fits; a NUTS fit's ``save`` also writes its draws. All or
        nothing, as :meth:`BayesFit.save <bayeslmm.results.bayes_result.BayesFit.save>`:
        the folder holds this fit's complete set or what it held before.

        Parameters
        ----------
        out_dir : path
            The results folder (created if missing; its parent must exist).
        prevalence : float, optional
            Laplace fits of binary traits: adds the liability-scale h².
        inputs : bool
            Also store the data columns the model uses and its kinships in ``inputs/``
            (:mod:`bayeslmm.results.inputs`; a kinship takes about 8 n² bytes), so that
            ``bl.load_fit(out_dir)`` needs nothing else. ``False`` for huge kinships.

        Returns
        -------
        dict
            ``{"summary": path[, "inputs": path]}``.

        Examples
        --------
        >>> # fit.save("results"); bl.load_fit("results").fixed_effects()
        """
        from pathlib import Path

        from bayeslmm.results.output import result_directory, write_point_files

        with result_directory(out_dir) as stage:
            staged = write_point_files(self, stage, prevalence=prevalence, inputs=inputs)
        return {key: Path(out_dir) / path.name for key, path in staged.items()}

    # -- tables -----------------------------------------------------------------------------
    def heritability(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """Share of the phenotypic variance of each random term; ``h2`` for a sole kinship
        term with one coefficient (``h2_gcta`` too where GCTA's K_ii = 1 convention differs).

        Columns ``estimate, se, ci_low, ci_high`` for every engine (a posterior's mean, SD
        and HDI; a point estimate, its delta-method SE and Wald interval), then a posterior's
        ``mean, sd, hdi_low, hdi_high, ess_bulk, ess_tail, r_hat``. Definitions:
        :mod:`bayeslmm.results.tables`.

        Examples
        --------
        >>> # fit.heritability().loc["h2", ["estimate", "ci_low", "ci_high"]]
        """
        return tables.heritability(self.estimate(), self._prob(hdi_prob))

    def variance_components(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(fit))`` layout (grp, var1, var2, vcov, sdcor) with
        ``se``, ``se_sdcor``, ``ci_low``, ``ci_high``; see
        :func:`bayeslmm.results.tables.variance_components`."""
        return tables.variance_components(self.estimate(), self._prob(hdi_prob))

    def fixed_effects(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """One row per fixed effect: ``estimate, se, ci_low, ci_high`` (+ engine columns)."""
        return tables.fixed_effects(self.estimate(), self._prob(hdi_prob))

    def heritability_scales(
        self,
        prevalence: float | None = None,
        case_fraction: float | None = None,
        term: str | None = None,
        hdi_prob: float | None = None,
    ) -> pd.DataFrame:
        """GLMMs: h² of the genetic term on the latent, link, observed (and, with a
        ``prevalence``, liability) scales; rows ``h2_latent``, ``h2_link``, ``h2_observed``,
        ``h2_liability``. See docs/glmm_scales.md for which scale answers which question.

        Examples
        --------
        >>> # fit.heritability_scales(prevalence=0.05).loc["h2_liability", "estimate"]
        """
        if prevalence is not None and not 0.0 < float(prevalence) < 1.0:
            raise ValueError(f"prevalence must lie in (0, 1); got {prevalence}.")
        return tables.heritability_scales(
            self.estimate(), prevalence, case_fraction, term, self._prob(hdi_prob)
        )

    # -- predictions ---------------------------------------------------------------------------
    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        kind: str = "conditional",
        hdi_prob: float | None = None,
        draws: bool = False,
        kinship: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> pd.DataFrame | Any:
        """Predicted mean response, conditional on the individuals or marginal over them.

        Parameters
        ----------
        newdata : pandas.DataFrame, optional
            Rows to predict, with the columns of the formula (not the response); the fitted
            observations when None. Individuals without records are welcome: with
            ``kind="conditional"`` they need a kinship that relates them to the fitted ones.
        kind : {"conditional", "marginal"}
            ``"conditional"``: h(Xβ + Zu) for these individuals (their breeding values
            included: BLUP through the kinship for individuals without records).
            ``"marginal"``: the population average with these covariates, the random effects
            integrated out (Gaussian: Xβ; GLMMs: population-averaged probabilities or
            counts by Gauss–Hermite). See docs/questions.md.
        hdi_prob : float, optional
            Interval mass (default: the fit's).
        draws : bool
            NUTS: return the posterior draws (an ``xarray.DataArray`` with dims chain, draw,
            row) instead of the table.
        kinship : dict, optional
            Grouping factor → :class:`~bayeslmm.Kinship` covering the individuals of
            ``newdata`` that have no records (it may be the full kinship the model was
            given).
        seed : int, optional
            NUTS: seed of the draws of what relatives do not predict of a new individual's
            effect (the fit's seed by default).

        Returns
        -------
        pandas.DataFrame
            One row per prediction (index of ``newdata``, or the observation number):
            ``estimate, se, ci_low, ci_high`` (a posterior's mean, SD and HDI, then its
            ``mean, sd, hdi_low, hdi_high, ess_bulk, ess_tail, r_hat``; a point fit's
            prediction, its standard error and Wald interval), on the response scale.
            ``frame.attrs["kind"]`` says which question it answers.

        Examples
        --------
        >>> # fit.predict(pd.DataFrame({"id": ["new1"]}), kinship={"id": K_all})
        >>> # fit.predict(pd.DataFrame({"sex": ["F", "M"]}), kind="marginal")
        """
        from bayeslmm.results.predict import predict

        return predict(self, newdata, kind, hdi_prob, draws, kinship, seed)

    def snp_effects(
        self,
        genotypes: pd.DataFrame | Any | None = None,
        scale: float | None = None,
        hdi_prob: float | None = None,
        draws: bool = False,
        kind: str = "posterior",
        seed: int | None = None,
    ) -> pd.DataFrame | Any:
        """Per-marker effects of the SNP form of the model: b̂ = σ_β² Wᵀ Zᵀ V⁻¹ (y − Xβ̂).

        With K = W Wᵀ / c the genetic effect is u = W b, b ~ N(0, σ_β² I), σ_β² = σ_g²/c:
        b̂ is ridge regression on the markers with λ = σ_e²/σ_β² (rrBLUP), and W b̂ = û, the
        genomic breeding values. See :mod:`bayeslmm.results.snp`.

        Parameters
        ----------
        genotypes : pandas.DataFrame or ndarray, optional
            Individuals × markers, the matrix the kinship was built from (raw dosages are
            centred per marker to match it): a table indexed by id, or an array with one row
            per level of the kinship term in the fit's order. Optional for a low-rank kinship
            (``bl.grm(..., low_rank=True)``), which holds its markers: without genotypes the
            effects are those of its scaled markers (names ``m0, m1, …``); the SNP-space route
            never forms an n × n matrix (one m × m eigendecomposition, or none when each
            individual has one record).
        scale : float, optional
            c in K = W Wᵀ / c; by default tr(W Wᵀ)/tr(K). Either way K = W Wᵀ / c is checked.
        hdi_prob : float, optional
        draws : bool
            NUTS: return the draws (an ``xarray.DataArray``, dims chain, draw, marker)
            instead of the table.
        kind : {"posterior", "conditional_mean"}
            NUTS: ``"posterior"`` (default) draws b | y, θ, β once per posterior draw, so
            the table is the posterior of b (its SDs and intervals include the markers'
            conditional variance, σ_β² I − σ_β⁴ WᵀZᵀV⁻¹ZW); ``"conditional_mean"`` gives
            E[b | y, θ, β] per draw (the same means, but a spread that is only θ's and β's
            part). A point fit's table is always b̂ with its prediction error SD.
        seed : int, optional
            NUTS, ``kind="posterior"``: seed of the normal draws (the fit's seed,
            ``fit.seed``, by default, so the table is reproducible).

        Returns
        -------
        pandas.DataFrame
            One row per marker: ``estimate, se, ci_low, ci_high`` (REML: b̂ with its
            prediction error SD; NUTS: posterior summaries of the ``kind`` of draws, then
            ``mean, sd, hdi_low, hdi_high, ess_bulk, ess_tail, r_hat``).
            ``frame.attrs`` holds ``scale`` (c), ``ci_prob`` and ``kind``.

        Examples
        --------
        >>> # fit.snp_effects(dosages).sort_values("estimate").tail()
        >>> # fit.snp_effects(dosages, kind="conditional_mean")  # E[b | y, θ, β] per draw
        """
        from bayeslmm.results.snp import snp_effects

        return snp_effects(self, genotypes, scale, hdi_prob, draws, kind, seed)

    # -- model comparison ----------------------------------------------------------------------
    def loo(self, kind: str | None = None, pointwise: bool = True) -> Any:
        """PSIS leave-one-out cross-validation (ArviZ's ``ELPDData``), marginal or conditional.

        Parameters
        ----------
        kind : {"marginal", "conditional"}, optional
            ``"marginal"`` (default for Gaussian models): log p(y_i | y_−i, θ, β), the random
            effects integrated out, exact without refitting — how well the model predicts a
            new record from the others (choosing a kinship, or kinship vs none).
            ``"conditional"`` (default for GLMMs): log p(y_i | u, θ, β) — this individual's
            next record given its fitted effect. See :mod:`bayeslmm.results.loo` and
            docs/questions.md.
        pointwise : bool
            Keep ``loo_i`` and ``pareto_k`` per observation.

        Returns
        -------
        arviz.ELPDData
            ``elpd_loo``, ``se``, ``p_loo``, ``pareto_k``, …, and ``kind``. Pass several to
            :func:`bayeslmm.compare` (or ``az.compare``) to rank models of the same data.

        Examples
        --------
        >>> # fit.loo()["elpd_loo"], fit.loo()["kind"]
        """
        from bayeslmm.results.loo import loo

        return loo(self, kind, pointwise)

    def waic(self, kind: str | None = None, pointwise: bool = True) -> Any:
        """WAIC (ArviZ's ``ELPDData``) from the pointwise log-likelihood of :meth:`loo`.

        Examples
        --------
        >>> # fit.waic("marginal")["elpd_waic"]
        """
        from bayeslmm.results.loo import waic

        return waic(self, kind, pointwise)

    def log_likelihood(self, kind: str | None = None) -> Any:
        """The posterior with a per-observation ``log_likelihood`` group of ``kind``
        (``attrs["kind"]`` records it), ready for ``az.loo``, ``az.waic``, ``az.compare``.

        Examples
        --------
        >>> # az.loo(fit.log_likelihood("marginal"))
        """
        from bayeslmm.results.loo import log_likelihood_data

        return log_likelihood_data(self, kind)

    # -- summary.json -------------------------------------------------------------------------
    def _summary_sections(
        self,
        prob: float | None = None,
        prevalence: float | None = None,
        case_fraction: float | None = None,
    ) -> dict[str, Any]:
        """``heritability``, ``variance_components`` and ``fixed_effects`` of summary.json.

        ``heritability`` holds the rows of :meth:`heritability`, the residual's share
        (``"residual"``) and, for a GLMM with one kinship term, :meth:`heritability_scales`.
        Every ENTRY holds ``estimate, se, ci_low, ci_high, ci_prob``; a posterior's entries
        add ``mean, sd, hdi_low, hdi_high, hdi_prob, ess_bulk, ess_tail, r_hat``.
        """
        prob = self._prob(prob)
        spec = self.spec
        herit: dict[str, Any] = {}
        if spec.terms:
            index, q = tables.share_quantity(self.estimate(), include_residual=True)
            herit = entries(tables.table(q, index, prob, "component"), prob)
        if not spec.family.is_gaussian and len(spec.kinship_terms) == 1:
            scales = self.heritability_scales(prevalence, case_fraction, hdi_prob=prob)
            herit.update(entries(scales, prob))
        fixed = self.fixed_effects(prob)
        fixed.index = list(spec.fixed_names)  # one spelling for every engine ("Intercept")
        vc = self.variance_components(prob)
        return {
            "heritability": herit,
            "variance_components": vc.to_dict(orient="records"),
            "fixed_effects": entries(fixed, prob),
        }

    def _kinship_summary(self) -> dict[str, Any]:
        """summary.json ``kinship``: each kinship term's matrix name and scale."""
        out = {}
        for term in self.spec.kinship_terms:
            K = term.kinship
            out[term.group] = {
                "name": K.name,
                "n_levels": int(term.n_levels),
                "mean_diagonal": float(K.mean_diagonal),
                "sample_scale": term.kinship_scale(),
            }
        return out


def entries(frame: pd.DataFrame, prob: float) -> dict[str, dict[str, Any]]:
    """summary.json ENTRYs ``{row: {column: value}}``: the common keys (and ``ci_prob``),
    then a posterior's keys (with ``hdi_prob``), then other numeric columns (``t``, ``z``)."""
    out = {}
    posterior = "mean" in frame.columns
    for name, row in frame.iterrows():
        entry: dict[str, Any] = {c: row[c] for c in COMMON_COLUMNS}
        entry["ci_prob"] = prob
        if posterior:
            entry.update({c: row[c] for c in POSTERIOR_COLUMNS[:4]})
            entry["hdi_prob"] = prob
            entry.update({c: row[c] for c in POSTERIOR_COLUMNS[4:]})
        for c in frame.columns:
            if c not in entry:
                entry[c] = row[c]
        out[str(name)] = entry
    return out
