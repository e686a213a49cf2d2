"""BayesFit: the posterior of a bayeslmm model with its tables, plots and summary.json."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from bayeslmm.results import tables
from bayeslmm.results.display import FitDisplay
from bayeslmm.results.estimate import PosteriorEstimate
from bayeslmm.results.fit import FitTables
from bayeslmm.results.heritability import summarise_draws
from bayeslmm.results.summary import assemble_summary

if TYPE_CHECKING:
    import xarray as xr

    from bayeslmm.spec import ModelSpec


def _environment_keys(fit: Any, prob: float) -> dict[str, Any]:
    """``heritability_by_environment`` for a heteroscedastic model (docs/summary_json.md)."""
    from bayeslmm.results.environment import summary_keys

    return summary_keys(fit, hdi_prob=prob)


def _lme4_name(name: str) -> str:
    return "(Intercept)" if name == "Intercept" else name


@dataclass(eq=False)
class BayesFit(FitTables, FitDisplay):
    """Result of :meth:`bayeslmm.LMM.fit` with ``method="nuts"``.

    Attributes
    ----------
    idata : arviz.InferenceData
        Groups posterior, sample_stats, observed_data, constant_data (and log_likelihood when
        asked), with named dims and coords (``fixed``, ``component``, ``<group>_level`` ...).
    built : BuiltModel
        The model that was sampled (``built.model`` is the :class:`pymc.Model`).
    strategy : str
        ``"spectral"``, ``"spectral-low-rank"`` (a low-rank kinship) or ``"latent"``.
    timing : dict
        Seconds: ``eigh_s``, ``build_s``, ``compile_s``, ``sample_s``, ``total_s``.
    diagnostics : dict
        ``divergences``, ``max_r_hat``, ``min_ess_bulk``, ``chains``, ``draws``.
    messages : list of str
        Diagnostic warnings in plain words (empty when all is well).
    hdi_prob : float
        Default HDI mass of the tables.
    sampler : str
        The NUTS implementation that ran.
    seed : int or None
        The seed the sampler ran with.
    breeding_value_sampler : callable, optional
        ``(posterior, seed) -> DataArray`` drawing u | y, θ for a strategy that integrates
        the random effects out (supplied by the engine that made the fit).
    posterior_predictive_sampler : callable, optional
        ``(posterior, seed, variables=None) -> Dataset`` drawing one replicate of the
        observed data per posterior draw (supplied by the engine that made the fit).
    """

    engine: ClassVar[str] = "nuts"

    idata: Any
    built: Any
    timing: dict[str, float]
    diagnostics: dict[str, Any]
    messages: list[str] = field(default_factory=list)
    hdi_prob: float = 0.95
    sampler: str = "pymc"
    seed: int | None = None
    breeding_value_sampler: Callable[..., Any] | None = field(default=None, repr=False)
    posterior_predictive_sampler: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def spec(self) -> ModelSpec:
        """The :class:`~bayeslmm.spec.ModelSpec` that was fitted."""
        return self.built.spec

    @property
    def strategy(self) -> str:
        # a low-rank kinship's spectral fit says so (the SNP-space path, no n × n matrix)
        if getattr(self.built.rotation, "low_rank", False):
            return f"{self.built.strategy}-low-rank"
        return self.built.strategy

    @property
    def posterior(self) -> xr.Dataset:
        return self.idata.posterior

    def estimate(self) -> PosteriorEstimate:
        """The posterior draws under the estimate protocol (:mod:`bayeslmm.results.estimate`)."""
        return PosteriorEstimate(self.posterior, self.spec)

    # -- tables ---------------------------------------------------------------------------
    def heritability_draws(self, include_residual: bool = False) -> xr.DataArray:
        """Draws of the variance shares (the rows of :meth:`heritability`, plus
        ``"residual"`` when asked) as an ``xarray.DataArray`` (chain, draw, component)."""
        import xarray as xr

        index, q = tables.share_quantity(self.estimate(), include_residual)
        post = self.posterior
        return xr.DataArray(
            q.values,
            dims=("chain", "draw", "component"),
            coords={"chain": post["chain"].values, "draw": post["draw"].values, "component": index},
            name="variance_share",
        )

    def variance_component_draws(self) -> dict[tuple, np.ndarray]:
        """Posterior draws (chain, draw) of each row of :meth:`variance_components`.

        Keys are ``(grp, var1, var2)`` as in lme4's ``as.data.frame(VarCorr(fit))``; values
        are ``(variance or covariance draws, SD or correlation draws)`` stacked on a leading
        axis of length 2. ``"Residual"`` (Gaussian; the mean over observations of σ_i² for a
        heteroscedastic model) comes last; a Poisson model's observation-level effect is
        ``"olre"``.
        """
        post = self.posterior
        rows: dict[tuple, np.ndarray] = {}

        def draws(name: str, **sel: Any) -> np.ndarray:
            da = post[name].sel(sel) if sel else post[name]
            return np.asarray(da.transpose("chain", "draw").values, dtype=float)

        for t in self.spec.terms:
            g = t.group
            if t.n_coef == 1:
                v = draws(f"var_{g}")
                rows[(g, _lme4_name(t.covariates[0]), None)] = np.stack([v, np.sqrt(v)])
                continue
            dim, dim2 = f"{g}_coef", f"{g}_coef_bis"
            for c in t.covariates:
                v = draws(f"cov_{g}", **{dim: c, dim2: c})
                rows[(g, _lme4_name(c), None)] = np.stack([v, np.sqrt(v)])
            if t.correlated:
                for j, c1 in enumerate(t.covariates):
                    for c2 in t.covariates[j + 1 :]:
                        key = (g, _lme4_name(c1), _lme4_name(c2))
                        rows[key] = np.stack(
                            [
                                draws(f"cov_{g}", **{dim: c1, dim2: c2}),
                                draws(f"corr_{g}", **{dim: c1, dim2: c2}),
                            ]
                        )
        if "var_olre" in post:
            v = draws("var_olre")
            rows[("olre", "(Intercept)", None)] = np.stack([v, np.sqrt(v)])
        if self.spec.family.is_gaussian:
            v = draws("var_residual")
            rows[("Residual", None, None)] = np.stack([v, np.sqrt(v)])
        return rows

    # -- breeding values ------------------------------------------------------------------
    def breeding_values_draws(
        self, group: str | None = None, seed: int | None = None
    ) -> xr.DataArray:
        """Posterior draws of the random effects u of a term, dims (chain, draw, level, coef).

        For the latent strategy these are the sampled ``u_<group>``; for the spectral
        strategy they are drawn once from the exact conditional u | y, θ of every posterior
        draw (then stored in ``idata.posterior``).
        """
        term = self._term(group)
        name = f"u_{term.group}"
        if name not in self.posterior:
            if self.breeding_value_sampler is None:
                raise ValueError(
                    f"This fit has no draws of {name} and no way to draw them; refit with "
                    "LMM(...).fit(breeding_values=True)."
                )
            draws = self.breeding_value_sampler(self.posterior, self.seed if seed is None else seed)
            self.idata.posterior[name] = draws
        return self.posterior[name]

    def breeding_values(
        self, group: str | None = None, hdi_prob: float | None = None
    ) -> pd.DataFrame:
        """Table of the random effects of a term: one row per level (and coefficient).

        Columns mean, sd, hdi_low, hdi_high, ess_bulk, ess_tail, r_hat. ``group`` defaults
        to the sole kinship term (or the only term).
        """
        draws = self.breeding_values_draws(group)
        term = self._term(group)
        prob = hdi_prob or self.hdi_prob
        frames = []
        for c in term.covariates:
            part = summarise_draws(draws.sel({f"{term.group}_coef": c}), prob)
            part.index = pd.MultiIndex.from_product([part.index, [c]], names=[term.group, "coef"])
            frames.append(part)
        table = pd.concat(frames)
        if term.n_coef == 1:
            table.index = table.index.droplevel("coef")
        return table

    def _term(self, group: str | None):
        terms = self.spec.terms
        if group is None:
            kin = self.spec.kinship_terms
            if len(kin) == 1:
                return kin[0]
            if len(terms) == 1:
                return terms[0]
            raise ValueError(
                f"This model has several random terms {[t.group for t in terms]}; name one "
                "with group=..."
            )
        for t in terms:
            if t.group == group:
                return t
        raise ValueError(f"No random term '{group}'; terms: {[t.group for t in terms]}.")

    # -- plots and output -----------------------------------------------------------------
    def plot_heritability(self, ax: Any = None, component: str | None = None, **kwargs: Any) -> Any:
        """Posterior density of h² (or of another term's share) with its HDI shaded.

        Returns the matplotlib Axes.
        """
        from bayeslmm.results.plots import plot_posterior_density

        draws = self.heritability_draws()
        labels = [str(c) for c in draws["component"].values]
        if not labels:
            raise ValueError("This model has no random terms, hence no heritability to plot.")
        component = component or ("h2" if "h2" in labels else labels[0])
        label = "h²" if component == "h2" else f"variance share of {component}"
        return plot_posterior_density(
            draws.sel(component=component).values,
            label=label,
            hdi_prob=kwargs.pop("hdi_prob", self.hdi_prob),
            ax=ax,
            **kwargs,
        )

    def _replicate(self, seed: int | None, variables: list[str] | None = None) -> xr.Dataset:
        if self.posterior_predictive_sampler is None:
            raise ValueError(
                "This fit has no way to draw replicated data; fit the model with "
                "LMM(...).fit(method='nuts') or read it back with bl.load_fit."
            )
        return self.posterior_predictive_sampler(
            self.posterior, self.seed if seed is None else seed, variables
        )

    def posterior_predictive(self, seed: int | None = None) -> np.ndarray:
        """Replicated responses, one per posterior draw: array (chain, draw, obs).

        Every strategy has them: the latent strategy's from
        :func:`pymc.sample_posterior_predictive`; the spectral strategy's as
        offset + Xβ + Zu + e with the breeding values drawn from their exact conditional
        u | y, β, θ; the laplace-marginal strategy's from the family given the linear
        predictor drawn from the Laplace approximation. ``seed`` defaults to the fit's seed
        (the same draws at every call); :meth:`add_posterior_predictive` stores them for
        ArviZ.

        Examples
        --------
        >>> # fit.posterior_predictive(seed=1).shape  # (chains, draws, n_obs)
        """
        return np.asarray(
            self._replicate(seed, [self.spec.response])[self.spec.response]
            .transpose("chain", "draw", ...)
            .values
        )

    def add_posterior_predictive(self, seed: int | None = None) -> Any:
        """Store replicated data in ``idata.posterior_predictive`` (replacing any there),
        one variable per variable of ``idata.observed_data``, so that
        ``az.plot_ppc(fit.idata)`` and ``az.plot_bpv(fit.idata)`` work.

        The response ``<response>`` has dims (chain, draw, obs), as
        :meth:`posterior_predictive`; a spectral fit also stores its rotated response
        ``<response>_rotated`` (dims (chain, draw, eigen)), the replicate of the observed
        node of its sampled model. Returns ``idata``.

        Examples
        --------
        >>> # import arviz as az
        >>> # az.plot_ppc(fit.add_posterior_predictive(seed=1), var_names=["y"])
        """
        import xarray as xr

        if "observed_data" not in self.idata.groups():
            response = np.asarray(self.spec.y)
            observed = {self.spec.response: xr.DataArray(response, dims="obs")}
            self.idata.add_groups(
                observed_data=xr.Dataset(observed, coords={"obs": np.arange(response.size)})
            )
        names = [str(v) for v in self.idata.observed_data.data_vars]
        replicated = self._replicate(seed, names)
        if "posterior_predictive" in self.idata.groups():
            del self.idata["posterior_predictive"]
        self.idata.add_groups(posterior_predictive=replicated)
        return self.idata

    def ppc(self, seed: int | None = None, interval: float = 0.9) -> pd.DataFrame:
        """Posterior predictive check: observed vs replicated statistics (mean, variance, zeros
        for counts, case fraction for binary traits) with posterior predictive p-values.

        See :func:`bayeslmm.results.ppc.ppc_summary`; the replicates are those of
        :meth:`posterior_predictive` (every strategy). Plot with
        ``bl.results.plot_ppc(fit.spec.y, fit.posterior_predictive())``, or with ArviZ after
        :meth:`add_posterior_predictive`.

        Examples
        --------
        >>> # fit.ppc(seed=1)  # rows mean, variance, min, max for a Gaussian trait
        """
        from bayeslmm.results.ppc import ppc_summary

        return ppc_summary(self.spec.y, self.posterior_predictive(seed), interval=interval)

    def plot_ppc(self, ax: Any = None, seed: int | None = None, **kwargs: Any) -> Any:
        """Observed data against the replicated draws of :meth:`posterior_predictive`.

        Counts as bars per value, binary traits as the case fraction, continuous traits as a
        histogram against the replicated densities, labelled with the response's name; see
        :func:`bayeslmm.results.ppc.plot_ppc` for the options (``interval``, ``max_count``).
        Returns the matplotlib Axes.

        Examples
        --------
        >>> # ax = fit.plot_ppc(); ax.figure.savefig("ppc.png")
        """
        from bayeslmm.results.ppc import plot_ppc

        kwargs.setdefault("name", self.spec.response)
        return plot_ppc(self.spec.y, self.posterior_predictive(seed), ax=ax, **kwargs)

    def plot_trace(self, var_names: list[str] | None = None) -> Any:
        """ArviZ trace plots (density and trace per chain) of the variance parameters.

        ``var_names`` defaults to h² and the variances (at most six, the residual last).
        Returns a matplotlib Figure outside pyplot.

        Examples
        --------
        >>> # fig = fit.plot_trace(); fig.savefig("trace.png")
        """
        from bayeslmm.results.plots import trace_figure, trace_variables

        return trace_figure(self.idata, var_names or trace_variables(self.posterior))

    def plot_rank(self, var_names: list[str] | None = None) -> Any:
        """ArviZ rank plots of the variance parameters: uniform bars when chains mix.

        ``var_names`` as in :meth:`plot_trace`. Returns a matplotlib Figure.

        Examples
        --------
        >>> # fig = fit.plot_rank()
        """
        from bayeslmm.results.plots import rank_figure, trace_variables

        return rank_figure(self.idata, var_names or trace_variables(self.posterior))

    def summary(
        self, hdi_prob: float | None = None, prevalence: float | None = None
    ) -> dict[str, Any]:
        """The summary.json dictionary (see ``docs/summary_json.md``).

        For a GLMM with one kinship term, ``heritability`` also holds ``h2_latent``,
        ``h2_link``, ``h2_observed`` (and ``h2_liability`` with ``prevalence``).
        """
        prob = self._prob(hdi_prob)
        diagnostics = dict(self.diagnostics)
        diagnostics["messages"] = list(self.messages)
        return assemble_summary(
            method=self.engine,
            n_obs=self.spec.n_obs,
            formula=self.spec.formula,
            strategy=self.strategy,
            **self._summary_sections(prob, prevalence),
            diagnostics=diagnostics,
            timing=self.timing,
            family=self.spec.family.name,
            link=self.spec.family.link,
            extra={
                "sampler": self.sampler,
                "seed": self.seed,
                "priors": self.built.priors.table(),
                "kinship": self._kinship_summary(),
                **_environment_keys(self, prob),
            },
        )

    def save(
        self,
        out_dir: str | Path,
        plot: bool = True,
        prevalence: float | None = None,
        inputs: bool = True,
    ) -> dict[str, Path]:
        """Write ``summary.json``, ``posterior.nc``, ``h2_posterior.png`` and ``inputs/`` to
        ``out_dir``.

        All or nothing: the files are written beside the folder and swapped in at once, so
        the folder holds either this fit's complete set or what it held before (see
        :mod:`bayeslmm.results.output`); result files of an older run that this one does
        not write are removed, other files in the folder are kept. The plot is drawn
        without pyplot: the user's matplotlib backend is left alone.

        ``inputs=True`` also stores the data columns the model uses and its kinships
        (:mod:`bayeslmm.results.inputs`; a kinship takes about 8 n² bytes), so that
        ``bl.load_fit(out_dir)`` reads the fit back without them; ``inputs=False`` leaves
        them out (then give ``load_fit`` the data and kinship again).

        Examples
        --------
        >>> # fit.save("results"); bl.load_fit("results").heritability()
        """
        from bayeslmm.results.output import result_directory, write_bayes_files

        with result_directory(out_dir) as stage:
            staged = write_bayes_files(self, stage, plot=plot, prevalence=prevalence, inputs=inputs)
        return {key: Path(out_dir) / path.name for key, path in staged.items()}

    def __repr__(self) -> str:
        h = self.heritability() if self.spec.terms else None
        lines = [
            f"BayesFit({self.spec.formula!r}, family={self.spec.family.name}, "
            f"strategy={self.strategy}, sampler={self.sampler}, "
            f"{self.diagnostics.get('chains')}×{self.diagnostics.get('draws')} draws)"
        ]
        if h is not None:
            for lab, row in h.iterrows():
                lines.append(
                    f"  {lab}: {row['mean']:.3f} ({int(round(100 * self.hdi_prob))}% HDI "
                    f"{row['hdi_low']:.3f}–{row['hdi_high']:.3f})"
                )
        lines.extend(f"  warning: {m}" for m in self.messages)
        return "\n".join(lines)
