"""The user-facing multi-trait model: ``LMM("mvbind(y1, y2) ~ x + (1 | id)", ...)``.

:class:`~bayeslmm.LMM` hands a formula whose left side binds traits (``mvbind(...)``, or
``cbind(...)`` under the Gaussian family) to :class:`MultiTraitLMM`; it can also be made
directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from bayeslmm.errors import SpecificationError
from bayeslmm.families import Family
from bayeslmm.fit_arguments import nuts_arguments, print_messages
from bayeslmm.kinship import Kinship
from bayeslmm.kinship.pedigree_inverse import DENSE_PEDIGREE_LIMIT, SparsePedigreeKinship
from bayeslmm.multitrait_spec import MultiTraitSpec, specify_multitrait


class MultiTraitLMM:
    """A multi-trait Gaussian animal model with genetic (Σ_G ⊗ K) and residual (Σ_E)
    covariances between traits.

    Parameters
    ----------
    formula : str
        ``"mvbind(y1, y2) ~ x + (1 | id)"`` (brms) or ``"cbind(y1, y2) ~ x + (1 | id)"``.
    data : pandas.DataFrame
        One row per individual, a column per trait (NaN: not recorded).
    kinship : dict
        ``{"id": K}``.
    family : str or dict
        ``"gaussian"`` (the default), or a family per trait, e.g. ``{"disease":
        "bernoulli", "weight": "gaussian"}``: a latent-scale multi-trait GLMM fitted by NUTS
        (:mod:`bayeslmm.engines.bayes.multitrait_glmm`; the combinations covered are listed
        in :mod:`bayeslmm.multitrait_glmm_spec`).
    priors : dict, optional
        See :mod:`bayeslmm.engines.bayes.multitrait_density`.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> rng = np.random.default_rng(1)
    >>> ids = [f"i{k}" for k in range(40)]
    >>> W = rng.normal(size=(40, 80))
    >>> K = bl.Kinship(W @ W.T / 80, ids)
    >>> df = pd.DataFrame({"y1": rng.normal(size=40), "y2": rng.normal(size=40), "id": ids})
    >>> model = bl.LMM("mvbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": K})
    >>> type(model).__name__
    'MultiTraitLMM'
    >>> fit = model.fit(method="reml")
    >>> fit.genetic_covariance().shape
    (2, 2)
    """

    def __init__(
        self,
        formula: str,
        data: pd.DataFrame,
        kinship: Mapping[str, Kinship | pd.DataFrame] | None = None,
        family: str | Family | Mapping[str, Any] = "gaussian",
        priors: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec: MultiTraitSpec = specify_multitrait(
            formula, data, kinship=kinship, family=family, priors=priors
        )

    def fit(
        self,
        method: str = "nuts",
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        cores: int | None = None,
        seed: int | None = None,
        sampler: str = "auto",
        progressbar: bool | None = None,
        target_accept: float = 0.9,
        hdi_prob: float = 0.95,
        verbose: bool = True,
    ) -> Any:
        """Fit by REML (``method="reml"``) or NUTS (``"nuts"``, the default; nutpie).

        Parameters
        ----------
        method : {"nuts", "reml"}
        draws, tune, chains, cores, seed, progressbar, target_accept, hdi_prob
            As :meth:`bayeslmm.LMM.fit`.
        sampler : {"auto", "nutpie", "importance"}
            The closed-form density is sampled by nutpie. Gaussian traits on a sparse
            pedigree kinship of more than 5,000 animals take the sparse-pedigree posterior
            (:mod:`bayeslmm.engines.bayes.multitrait_pedigree`: every breeding value and β
            integrated out by one sparse factorisation per point, PSIS importance sampling
            of Σ_G and Σ_E, NUTS on the same density when Pareto k̂ > 0.7);
            ``"importance"`` takes that route at any size (a warning instead of the NUTS
            fallback), and ``"nutpie"`` above 5,000 animals samples its density by NUTS.
        verbose : bool
            Print diagnostic warnings after sampling.

        Returns
        -------
        MultiTraitRemlFit, MultiTraitBayesFit or MultiTraitGLMMBayesFit

        Examples
        --------
        >>> # fit = model.fit(method="reml"); fit.genetic_correlation()
        """
        if method == "reml" and not self.spec.is_gaussian:
            raise SpecificationError(
                "REML is not built for a multi-trait model with non-Gaussian traits (its "
                "likelihood has no closed form); fit it with method='nuts' (the latent-scale "
                "posterior)."
            )
        if method == "reml":
            from bayeslmm.engines.reml.multitrait import fit_multitrait_reml

            return fit_multitrait_reml(self.spec)
        if method != "nuts":
            raise SpecificationError(
                f"A multi-trait model is fitted with method='nuts' or 'reml'; got {method!r}."
            )
        if sampler not in ("auto", "nutpie", "importance"):
            raise SpecificationError(
                f"Multi-trait models are sampled by nutpie (closed-form density), or by "
                f"importance sampling on a sparse pedigree; got sampler={sampler!r}. Use "
                "sampler='auto'."
            )
        kin = self.spec.kinship
        sparse_pedigree = isinstance(kin, SparsePedigreeKinship)
        large = sparse_pedigree and kin.n_pedigree > DENSE_PEDIGREE_LIMIT
        if large and not self.spec.is_gaussian:
            # the latent-scale GLMM densities need A itself (its eigendecomposition)
            raise SpecificationError(
                f"The multi-trait posterior with non-Gaussian traits needs the dense "
                f"relationship matrix, formed from a sparse pedigree kinship only up to "
                f"{DENSE_PEDIGREE_LIMIT} animals; '{kin.name}' has {kin.n_pedigree}. Give "
                "the dense kinship of the recorded animals (pedigree_relationship(pedigree)) "
                "if memory allows, or fit the Gaussian traits alone (any pedigree size)."
            )
        if sampler == "importance" and not (sparse_pedigree and self.spec.is_gaussian):
            raise SpecificationError(
                "sampler='importance' samples the sparse-pedigree posterior of Gaussian "
                "traits: give the kinship as pedigree_relationship(pedigree, sparse=True), or "
                "use sampler='auto'."
            )
        if tune is None or target_accept is None:
            # the single-trait fit reads None as its route's default; here there is one
            raise SpecificationError(
                "A multi-trait fit takes tune and target_accept as numbers; leave them out "
                f"for the defaults (1000 and 0.9). Got tune={tune!r}, "
                f"target_accept={target_accept!r}."
            )
        draws, tune, chains, cores, seed = nuts_arguments(
            draws, tune, chains, cores, seed, target_accept, hdi_prob
        )
        from bayeslmm.engines.bayes.multitrait_glmm import sample_multitrait_glmm
        from bayeslmm.engines.bayes.multitrait_pedigree import sample_multitrait_pedigree
        from bayeslmm.engines.bayes.multitrait_sampling import NutsSettings, sample_multitrait

        options: dict[str, Any] = {}
        if large or sampler == "importance":
            # A never formed: Henderson's equations on A⁻¹ with β and the breeding values
            # integrated out (dense below the limit: see the engine's module notes)
            sample, options = sample_multitrait_pedigree, {"sampler": sampler}
        elif self.spec.is_gaussian:
            sample = sample_multitrait
        else:
            sample = sample_multitrait_glmm
        settings = NutsSettings(draws, tune, chains, cores, seed, progressbar, target_accept)
        fit = sample(self.spec, settings, hdi_prob=hdi_prob, **options)
        if verbose:
            print_messages(fit.messages)
        return fit

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"MultiTraitLMM({s.formula!r}, traits={list(s.traits)}, n={s.n}, "
            f"missing={int((~s.observed).sum())})"
        )
