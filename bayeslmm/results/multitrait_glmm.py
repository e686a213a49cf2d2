"""Results of a latent-scale multi-trait GLMM (a family per trait, NUTS).

The tables of :class:`~bayeslmm.results.multitrait.MultiTraitBayesFit`, read on the latent
(link) scale of the non-Gaussian traits:

* :meth:`genetic_covariance`, :meth:`genetic_correlation`: Σ_G between the traits' linear
  predictors (the data scale for Gaussian traits, the link scale otherwise);
* :meth:`residual_covariance`: the residual covariances the model has: between Gaussian
  traits, a probit trait's liability residual (variance fixed at 1) and its covariances with
  them, a Poisson trait's observation-level variance; NaN elsewhere (logit and Poisson
  residuals are independent of every other trait by assumption);
* :meth:`residual_correlation`: the estimated pairs only;
* :meth:`heritability`: ``scale="link"`` (default) or ``"latent"``, per trait.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bayeslmm.results.multitrait import MultiTraitBayesFit, _pairs


@dataclass(eq=False)
class MultiTraitGLMMBayesFit(MultiTraitBayesFit):
    """Posterior of a latent-scale multi-trait GLMM (made by the NUTS engine).

    Attributes
    ----------
    families : tuple of str
        Each trait's family and link, e.g. ``("bernoulli(probit)", "gaussian")``.
    residual_block : tuple of str
        The traits whose residuals are correlated in the model (Gaussian traits and one
        probit trait); every other residual is independent of the other traits.

    Examples
    --------
    >>> # fit = bl.LMM("mvbind(d, w) ~ 1 + (1 | id)", df, family={"d": "bernoulli"},
    >>> #              kinship={"id": K}).fit()
    >>> # fit.genetic_correlation(); fit.heritability(scale="link")
    """

    families: tuple[str, ...] = ()
    residual_block: tuple[str, ...] = ()
    #: The traits with a non-Gaussian family: their (co)variances are on the latent scale.
    latent_traits: tuple[str, ...] = ()

    @property
    def notes(self) -> list[str]:
        """What the scales and the residual structure are, in words."""
        latent = list(self.latent_traits)
        out = [
            f"Genetic (co)variances of {latent} are on the latent (link) scale; heritability() "
            "is V_A / (V_A + other latent variances + the link variance: π²/3 logit, 1 "
            "probit, ln(1 + 1/λ) Poisson) by default (scale='link')."
        ]
        alone = [t for t in self.traits if t not in self.residual_block]
        if alone:
            out.append(
                f"Residuals of {alone} are independent of the other traits' (assumed, not "
                "estimated): a logit or Poisson trait has no residual covariance here."
            )
        if len(self.residual_block) > 1:
            out.append(f"Residual covariances are estimated between {list(self.residual_block)}.")
        return out

    def residual_correlation(self, hdi_prob: float | None = None) -> pd.DataFrame:
        """r_e for the pairs of traits whose residual correlation is a model parameter."""
        block = set(self.residual_block)
        pairs = [
            (a, b) for a, b in _pairs(self.traits) if {self.traits[a], self.traits[b]} <= block
        ]
        return self._correlation_table("residual_correlation", hdi_prob, pairs)

    def heritability(self, hdi_prob: float | None = None, scale: str = "link") -> pd.DataFrame:
        """h² per trait: posterior mean, sd, HDI, ESS, R-hat, and the trait's family.

        Parameters
        ----------
        hdi_prob : float, optional
        scale : {"link", "latent"}
            ``"link"``: V_A / (V_A + other latent variances + the distribution's link-scale
            variance), the single-trait GLMM's link scale; ``"latent"``: V_A / (V_A + other
            latent variances). For Gaussian traits both are c σ²_G / (c σ²_G + σ²_E).

        Examples
        --------
        >>> # fit.heritability(scale="latent")
        """
        if scale not in ("link", "latent"):
            raise ValueError(f"scale must be 'link' or 'latent'; got {scale!r}.")
        prob = hdi_prob or self.hdi_prob
        name = "heritability" if scale == "link" else "heritability_latent"
        da = self.posterior[name].values
        rows = [self._summary(da[:, :, a], prob) for a in range(len(self.traits))]
        out = pd.DataFrame(rows, index=pd.Index(list(self.traits), name="trait"))
        out["family"] = list(self.families)
        out["scale"] = [scale if t in self.latent_traits else "data" for t in self.traits]
        return out

    def __repr__(self) -> str:
        post = self.posterior
        head = (
            f"MultiTraitGLMMBayesFit({self.formula!r}, traits={list(self.traits)}, "
            f"families={list(self.families)}, chains={post.sizes['chain']}, "
            f"draws={post.sizes['draw']}, divergences={self.divergences})"
        )
        return "\n".join([head] + [f"  {note}" for note in self.notes])
