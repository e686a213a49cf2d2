"""The user-facing model: ``LMM(formula, data, kinship=...)`` → ``.fit()`` / ``.build()``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

import pandas as pd

from bayeslmm.errors import SpecificationError
from bayeslmm.families import Family
from bayeslmm.fit_arguments import nuts_arguments, print_messages
from bayeslmm.kinship import Kinship
from bayeslmm.spec import ModelSpec, one_term_per_group, specify

if TYPE_CHECKING:
    import pymc as pm

    from bayeslmm.engines.bayes.options import SamplerName, StrategyName

#: How :meth:`LMM.fit` fits: NUTS (the posterior), REML or ML (Gaussian point estimates; ML
#: is lme4's ``REML = FALSE``) or Laplace maximum likelihood (GLMM point estimates, lme4's
#: glmer). Not to be confused with the NUTS strategy ``"laplace-marginal"``.
Method = Literal["nuts", "reml", "ml", "laplace"]
METHODS: tuple[str, ...] = get_args(Method)


class LMM:
    """A (generalised) linear mixed model with kinship-correlated random effects.

    Wraps :func:`bayeslmm.specify` (validation happens here, once) and hands the
    specification to an engine: NUTS through PyMC (:meth:`fit`, :meth:`build`) or REML.

    Parameters
    ----------
    formula : str
        lme4/brms formula, e.g. ``"bp ~ sex + (1 | id)"``.
    data : pandas.DataFrame
    kinship : dict, optional
        Grouping factor → :class:`~bayeslmm.Kinship` (or square DataFrame labelled by id).
    family : str or Family
        ``"gaussian"`` (default), ``"poisson"``, ``"bernoulli"``, ``"binomial"``.
    link : str, optional
        ``"logit"`` or ``"probit"`` for the binary families.
    trials : str, optional
        Column with the number of trials (binomial).
    sigma : str, optional
        Model for the log residual SD, e.g. ``"~ env"``.
    priors : dict, optional
        Prior overrides; keys and syntax in :mod:`bayeslmm.priors`.

    Attributes
    ----------
    spec : ModelSpec
        The validated specification.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> rng = np.random.default_rng(1)
    >>> ids = [f"i{k}" for k in range(30)]
    >>> W = rng.normal(size=(30, 60))
    >>> K = bl.Kinship(W @ W.T / 60, ids)
    >>> df = pd.DataFrame({"bp": rng.normal(100, 5, 30), "id": ids})
    >>> model = LMM("bp ~ 1 + (1|id)", data=df, kinship={"id": K})
    >>> fit = model.fit(draws=200, tune=200, chains=2, cores=1, seed=1,
    ...                 sampler="pymc")  # doctest: +SKIP
    >>> fit.heritability()  # doctest: +SKIP
    >>> sorted(v.name for v in model.build().free_RVs)  # β is integrated out, drawn afterwards
    ['sd_id', 'sigma']
    """

    def __new__(cls, formula: Any = None, *args: Any, **kwargs: Any) -> Any:
        # mvbind(y1, y2) / Gaussian cbind(y1, y2): a multi-trait model, its own class (not
        # an LMM, so Python does not call __init__ on it a second time). Without arguments
        # (copy, pickle, from_spec) this is object.__new__.
        from bayeslmm.multitrait_spec import is_multitrait

        names = ("data", "kinship", "family", "link", "trials", "sigma", "priors")
        given = dict(zip(names, args, strict=False)) | kwargs
        if cls is LMM and is_multitrait(formula, given.get("family", "gaussian")):
            from bayeslmm.multitrait_model import MultiTraitLMM

            unsupported = [k for k in ("link", "trials", "sigma") if given.get(k) is not None]
            if unsupported:
                raise SpecificationError(
                    f"{unsupported} are not available for multi-trait (mvbind/cbind) models; "
                    "drop them."
                )
            for key in ("link", "trials", "sigma"):
                given.pop(key, None)
            return MultiTraitLMM(formula, **given)
        return super().__new__(cls)

    def __init__(
        self,
        formula: str,
        data: pd.DataFrame,
        kinship: Mapping[str, Kinship | pd.DataFrame] | None = None,
        family: str | Family = "gaussian",
        link: str | None = None,
        trials: str | None = None,
        sigma: str | None = None,
        priors: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec: ModelSpec = specify(
            formula,
            data,
            kinship=kinship,
            family=family,
            link=link,
            trials=trials,
            sigma=sigma,
            priors=priors,
        )
        self._built: dict[tuple, Any] = {}

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> LMM:
        """Wrap an existing specification (no re-validation)."""
        obj = cls.__new__(cls)
        obj.spec = spec
        obj._built = {}
        return obj

    def _build(self, strategy: StrategyName | str = "auto", rank_share: float | None = None):
        from bayeslmm.engines.bayes.builder import build
        from bayeslmm.engines.bayes.strategies import choose

        # the builder keeps one covariance per grouping factor: (1|g) + (0 + x|g) is given
        # to it as (1 + x || g), the same model with the same variance-component names
        spec = one_term_per_group(self.spec)
        # one choice (and one deprecation warning for a former name), one build per strategy
        key = (choose(spec, strategy).name, rank_share)
        if key not in self._built:
            self._built[key] = build(spec, strategy=key[0], rank_share=rank_share)
        return self._built[key]

    def build(
        self, strategy: StrategyName | str = "auto", rank_share: float | None = None
    ) -> pm.Model:
        """The :class:`pymc.Model`, to inspect, extend or sample yourself.

        Parameters
        ----------
        strategy : {"auto", "spectral", "latent", "laplace-marginal", "sparse-pedigree", \
"sparse-pedigree-nuts"}
            See :mod:`bayeslmm.engines.bayes.strategies`; ``"laplace-marginal"`` (GLMMs,
            experimental, never chosen by ``"auto"``; formerly ``"laplace"``, which still
            works with a DeprecationWarning) is described in docs/bayesian.md. A kinship from
            ``pedigree_relationship(ped, sparse=True)`` in a Gaussian ``(1 | id)`` model
            takes ``"sparse-pedigree"`` (exact independent draws from the sparse equations;
            ``"sparse-pedigree-nuts"``: NUTS on the Mendelian-sampling parametrisation),
            described in docs/animal_model.md.
        rank_share : float, optional
            Latent strategy: truncate each kinship to the leading eigenvectors holding this
            share of its trace.

        Returns
        -------
        pymc.Model

        Examples
        --------
        >>> # with model.build(): idata = pm.sample()
        """
        return self._build(strategy, rank_share).model

    def fit(
        self,
        method: Method = "nuts",
        draws: int = 1000,
        tune: int | None = None,
        chains: int = 4,
        cores: int | None = None,
        seed: int | None = None,
        sampler: SamplerName = "auto",
        strategy: StrategyName = "auto",
        progressbar: bool | None = None,
        target_accept: float | None = None,
        hdi_prob: float = 0.95,
        breeding_values: bool = False,
        log_likelihood: bool = False,
        rank_share: float | None = None,
        verbose: bool = True,
    ) -> Any:
        """Fit the model.

        Parameters
        ----------
        method : {"nuts", "reml", "ml", "laplace"}
            ``"nuts"``: posterior by NUTS (returns :class:`~bayeslmm.results.bayes_result.
            BayesFit`); ``"reml"``: REML point estimates of a Gaussian model (returns
            :class:`~bayeslmm.results.reml_result.RemlFit`); ``"ml"``: maximum likelihood of
            a Gaussian model (lme4's ``REML = FALSE``; a ``RemlFit`` with ``criterion ==
            "ml"``, whose AIC/BIC compare models with different fixed effects);
            ``"laplace"``: Laplace maximum likelihood of a GLMM, as lme4's ``glmer`` (returns
            :class:`~bayeslmm.engines.laplace.LaplaceFit`). Not the NUTS strategy
            ``"laplace-marginal"``.
        draws, tune, chains, cores : int
            NUTS settings (kept draws and warm-up per chain, chains, parallel processes).
            ``tune=None``: 300 where nutpie samples the one-term closed-form kinship GLMM
            without an observation-level effect (its warm-up settles that fast, see
            :data:`~bayeslmm.engines.bayes.glmm_density.CLOSED_FORM_TUNE`), else 1000.
        seed : int, optional
            Reproducible draws. Without one, a seed is drawn, used and recorded (``fit.seed``
            and ``summary.json``), so every run can be repeated.
        sampler : {"auto", "pymc", "nutpie", "numpyro", "blackjax"}
            ``"auto"``: nutpie (a core dependency). For the spectral strategy it samples the
            model's closed-form log posterior (nothing to compile per data set; see
            :mod:`~bayeslmm.engines.bayes.spectral_density`), otherwise the PyMC graph
            compiled with numba. ``"pymc"`` runs PyMC's own NUTS on the same model.
        strategy : {"auto", "spectral", "latent", "laplace-marginal", "sparse-pedigree", \
"sparse-pedigree-nuts"}
            As in :meth:`build`.
        progressbar : bool, optional
            Default: on in terminals, notebooks and interactive interpreters; off in pipelines.
        target_accept : float, optional
            NUTS target acceptance rate, in (0, 1). ``None``: 0.8 on the route where an unset
            ``tune`` gives 300 (a near-Gaussian posterior: the larger step gives more ESS per
            draw, without divergences), whatever ``tune`` is set to; else 0.9.
        hdi_prob : float
            Default HDI mass of the result's tables, in (0, 1).
        breeding_values : bool
            Spectral strategy: also draw u | y, θ for each posterior draw (``u_<group>`` in
            the posterior). The latent strategy always samples u.
        log_likelihood : bool
            Store pointwise log-likelihoods (for ``az.loo``). For the spectral strategy they
            are per rotated component, not per observation.
        rank_share : float, optional
            Latent strategy truncation (see :meth:`build`).
        verbose : bool
            Print diagnostic warnings in plain words after sampling.

        Returns
        -------
        BayesFit (NUTS) or the REML engine's result.

        Examples
        --------
        >>> # fit = LMM("bp ~ 1 + (1|id)", df, kinship={"id": K}).fit(seed=1)
        >>> # fit.heritability()
        """
        if method not in METHODS:
            raise SpecificationError(f"Unknown method '{method}'; choose one of {METHODS}.")
        if method == "nuts":
            draws, tune, chains, cores, seed = nuts_arguments(
                draws, tune, chains, cores, seed, target_accept, hdi_prob
            )
        if method in ("reml", "ml"):
            if not self.spec.family.is_gaussian:
                what = "REML is" if method == "reml" else "method='ml' (Gaussian ML) is"
                raise SpecificationError(
                    f"{what} defined for Gaussian responses; this model's family is "
                    f"'{self.spec.family.name}'. Use method='laplace' for point estimates of "
                    "a GLMM (lme4's glmer), or method='nuts' for its posterior."
                )
            from bayeslmm.engines.reml import fit_reml

            return fit_reml(self.spec, criterion=method)
        if method == "laplace":
            if self.spec.family.is_gaussian:
                raise SpecificationError(
                    "method='laplace' is for GLMMs; a Gaussian model has an exact likelihood: "
                    "use method='reml' (or 'nuts')."
                )
            from bayeslmm.engines.laplace import fit_laplace

            return fit_laplace(self.spec)
        return self._fit_nuts(
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            seed=seed,
            sampler=sampler,
            strategy=strategy,
            progressbar=progressbar,
            target_accept=target_accept,
            hdi_prob=hdi_prob,
            breeding_values=breeding_values,
            log_likelihood=log_likelihood,
            rank_share=rank_share,
            verbose=verbose,
        )

    def _fit_nuts(
        self,
        *,
        draws: int,
        tune: int | None,
        chains: int,
        cores: int | None,
        seed: int,
        sampler: SamplerName | str,
        strategy: StrategyName | str,
        progressbar: bool | None,
        target_accept: float | None,
        hdi_prob: float,
        breeding_values: bool,
        log_likelihood: bool,
        rank_share: float | None,
        verbose: bool,
    ) -> Any:
        """NUTS with checked arguments (see :meth:`fit`): build, sample, diagnose, wrap."""
        from bayeslmm.engines.bayes.fit import fit_posterior
        from bayeslmm.engines.bayes.glmm_density import nuts_defaults

        start = time.perf_counter()
        built = self._build(strategy, rank_share)
        # unset warm-up and target acceptance: the route's defaults (shorter on the
        # closed-form GLMM, whose reparametrised posterior is near-Gaussian)
        tune, target_accept = nuts_defaults(built, sampler, tune, target_accept)
        fit = fit_posterior(
            built,
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            seed=seed,
            sampler=sampler,
            progressbar=progressbar,
            target_accept=target_accept,
            hdi_prob=hdi_prob,
            log_likelihood=log_likelihood,
            started=start,
        )
        if breeding_values and fit.breeding_value_sampler is not None:
            fit.breeding_values_draws()
            fit.timing["total_s"] = time.perf_counter() - start
        if verbose:
            print_messages(fit.messages)
        return fit

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"LMM({s.formula!r}, n_obs={s.n_obs}, family={s.family.name}, "
            f"terms={[t.label for t in s.terms]})"
        )

    def _repr_html_(self) -> str:
        """What a notebook shows: formula, family, data size, random terms, priors."""
        from bayeslmm.results.display import model_html

        return model_html(self.spec)
