"""Seeded simulation of family-structured genotypes and phenotypes with known variance components.

The generative model, step by step:

1. Allele frequencies pⱼ ~ Uniform(0.05, 0.95) for m unlinked SNPs.
2. Unrelated founder parents with two haplotypes each, alleles ~ Bernoulli(pⱼ) (Hardy-Weinberg).
   Family f (a full-sib family) has dam f and sire ⌊f/2⌋, so families 2k and 2k+1 are paternal
   half-sibs of each other.
3. Offspring by Mendelian sampling: at every SNP each parent passes one of its two alleles
   with probability 1/2, independently across SNPs.
4. K = the VanRaden GRM of the offspring genotypes (:func:`bayeslmm.kinship.grm`), and
   breeding values u ~ N(0, V_A K), drawn exactly from the eigendecomposition of K.
5. ``repeats`` records per offspring: η = μ + u (+ e), then y from the family.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayeslmm.families import FAMILIES, Family, get_family
from bayeslmm.kinship import Kinship, grm


def simulated_families() -> list[str]:
    """Names of the registered families the simulator covers (a default intercept set).

    Examples
    --------
    >>> simulated_families()
    ['bernoulli', 'gaussian', 'poisson']
    """
    return sorted(name for name, cls in FAMILIES.items() if cls.simulation_intercept is not None)


@dataclass(frozen=True)
class SimulatedData:
    """Output of :func:`simulate`.

    Attributes
    ----------
    data : DataFrame
        One row per record: ``id``, ``family`` (full-sib family), ``sire``, ``dam``,
        ``record`` (1..repeats) and ``y``.
    kinship : Kinship
        VanRaden GRM of the phenotyped offspring (name ``"GRM"``); the truth refers to it.
    genotypes : DataFrame
        Offspring dosages (0/1/2), indexed by id, columns ``snp0``, ``snp1``, ...
    pedigree : DataFrame
        ``id``, ``sire``, ``dam`` of parents (founders, unknown parents NaN) and offspring.
    truth : dict
        ``family``, ``intercept``, ``V_A``, ``V_e``, ``h2``, ``mean_diagonal`` (of K) and
        ``breeding_values`` (Series of u by id). See :func:`simulate` for definitions.
    """

    data: pd.DataFrame
    kinship: Kinship
    genotypes: pd.DataFrame
    pedigree: pd.DataFrame
    truth: dict = field(repr=False)


def simulate(
    n_families: int = 50,
    family_size: int = 10,
    n_snps: int = 1000,
    h2: float = 0.5,
    family: str | Family = "gaussian",
    repeats: int = 1,
    seed: int | None = None,
    intercept: float | None = None,
    total_variance: float = 1.0,
) -> SimulatedData:
    """Simulate genotypes of full-sib/half-sib families and phenotypes with known truth.

    Parameters
    ----------
    n_families : int
        Number of full-sib families (each with its own dam; pairs of families share a sire).
    family_size : int
        Offspring per family; all offspring are phenotyped.
    n_snps : int
        Unlinked SNPs; more SNPs make the GRM closer to the pedigree expectation
        (full sibs 0.5, half sibs 0.25, before sample centring).
    h2 : float
        Latent-scale heritability. ``gaussian``: V_A/(V_A + V_e) with V_A + V_e =
        ``total_variance``. ``poisson`` (log link, observation-level random effect e): the same
        split of the latent variance, excluding Poisson noise. ``bernoulli`` (no residual
        effect, which binary data cannot identify): V_A/(V_A + V_d) with V_d the link's
        latent variance (π²/3 logit, the default; 1 probit), i.e. V_A = h2/(1 - h2)·V_d,
        and ``total_variance`` is ignored.
    family : {"gaussian", "poisson", "bernoulli"} or Family
        Response distribution (a name, or a family object such as
        ``bl.Bernoulli(link="probit")``); see :func:`simulated_families`.
    repeats : int
        Records per individual; each gets its own residual (or Poisson/Bernoulli draw), the
        breeding value is shared.
    seed : int, optional
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same data.
    intercept : float, optional
        μ on the link scale (default 0 for gaussian and bernoulli, 1 for poisson).
    total_variance : float
        V_A + V_e on the latent scale (gaussian and poisson).

    Returns
    -------
    SimulatedData
        ``truth["V_A"]`` is the variance of u *per unit of K*: Var(u) = V_A·K, so the
        expected sample variance of u is about V_A × ``truth["mean_diagonal"]``. The VanRaden
        GRM uses the sample's allele frequencies, so K is relative to this sample.

    Examples
    --------
    >>> from bayeslmm.datasets import simulate
    >>> sim = simulate(n_families=4, family_size=5, n_snps=200, h2=0.4, seed=1)
    >>> sim.data.shape, sim.kinship.n, round(sim.truth["V_A"], 2)
    ((20, 6), 20, 0.4)
    """
    covered = simulated_families()
    if isinstance(family, str) and family not in covered:
        raise ValueError(f"family must be one of {covered}; got {family!r}.")
    fam = get_family(family)
    if fam.simulation_intercept is None:
        raise ValueError(f"family must be one of {covered}; got {fam!r}.")
    for label, value, low in (
        ("n_families", n_families, 1),
        ("family_size", family_size, 1),
        ("n_snps", n_snps, 2),
        ("repeats", repeats, 1),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"{label} must be an integer >= {low}; got {value!r}.")
    if n_families * family_size < 2:
        raise ValueError("Simulate at least two offspring.")
    # no residual effect (binary traits): h² = 1 would need an infinite V_A
    upper_ok = h2 < 1 if fam.fixed_latent_residual else h2 <= 1
    if not (0 <= h2 and upper_ok):
        raise ValueError(
            f"h2 must lie in [0, 1{')' if fam.fixed_latent_residual else ']'} for family "
            f"{fam.name!r}; got {h2}."
        )
    if total_variance <= 0:
        raise ValueError(f"total_variance must be positive; got {total_variance}.")

    rng = np.random.default_rng(seed)
    m = n_snps
    freq = rng.uniform(0.05, 0.95, size=m)
    n_sires = (n_families + 1) // 2
    sire_haps = rng.random((n_sires, 2, m)) < freq
    dam_haps = rng.random((n_families, 2, m)) < freq
    snp = np.arange(m)

    ids, fams, sires, dams, rows = [], [], [], [], []
    for f in range(n_families):
        s = f // 2
        for _ in range(family_size):
            from_sire = sire_haps[s, rng.integers(0, 2, size=m), snp]
            from_dam = dam_haps[f, rng.integers(0, 2, size=m), snp]
            rows.append(from_sire.astype(np.int8) + from_dam.astype(np.int8))
            ids.append(f"i{len(ids):04d}")
            fams.append(f"fam{f:03d}")
            sires.append(f"sire{s:03d}")
            dams.append(f"dam{f:03d}")
    genotypes = pd.DataFrame(
        np.vstack(rows).astype(float),
        index=pd.Index(ids, name="id"),
        columns=[f"snp{j}" for j in range(m)],
    )
    with warnings.catch_warnings():
        # A SNP can be monomorphic among the offspring; grm drops it and K is defined by it.
        warnings.simplefilter("ignore", UserWarning)
        kinship = grm(genotypes, name="GRM")

    V_A, V_e = fam.simulation_variances(h2, total_variance)
    mu = fam.simulation_intercept if intercept is None else float(intercept)
    # u = √V_A · U √S z has covariance V_A · U S Uᵀ = V_A · K exactly (K is PSD, often singular);
    # one normal per individual, the last paired with the root's first (largest) eigenvalue
    root = kinship.root()
    u = np.sqrt(V_A) * root.factor @ rng.standard_normal(kinship.n)[::-1][: root.rank]

    n = kinship.n
    eta = mu + np.repeat(u, repeats)
    y = fam.sample_response(eta, V_e, rng)

    data = pd.DataFrame(
        {
            "id": np.repeat(ids, repeats),
            "family": np.repeat(fams, repeats),
            "sire": np.repeat(sires, repeats),
            "dam": np.repeat(dams, repeats),
            "record": np.tile(np.arange(1, repeats + 1), n),
            "y": y,
        }
    )
    parents = [f"sire{s:03d}" for s in range(n_sires)] + [f"dam{f:03d}" for f in range(n_families)]
    pedigree = pd.DataFrame(
        {
            "id": parents + ids,
            "sire": [None] * len(parents) + sires,
            "dam": [None] * len(parents) + dams,
        }
    )
    truth = {
        "family": fam.name,
        "intercept": mu,
        "V_A": V_A,
        "V_e": V_e,
        "h2": h2,
        "mean_diagonal": kinship.mean_diagonal,
        "breeding_values": pd.Series(u, index=pd.Index(ids, name="id"), name="u"),
    }
    return SimulatedData(
        data=data, kinship=kinship, genotypes=genotypes, pedigree=pedigree, truth=truth
    )
