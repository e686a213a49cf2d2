"""Linear covariance structure V = Σ_i θ_i V_i built from a :class:`ModelSpec`.

Every REML route works on the same list of :class:`CovParameter`: one per variance of a
random coefficient, one per covariance of two correlated coefficients of the same term, and
one per residual variance (one in total, or one per environment level when the spec has a
categorical ``sigma`` formula).

For a term with coefficients j = 1..m, designs Z_j (n × q) and kinship K (q × q, identity for
iid levels), Cov(vec u) = Σ ⊗ K gives

    Var(Σ_j Z_j u_j) = Σ_j Σ_jj Z_j K Z_jᵀ + Σ_{j<k} Σ_jk (Z_j K Z_kᵀ + Z_k K Z_jᵀ),

so each entry of Σ multiplies a known matrix. Residual variance of environment e multiplies
the diagonal indicator of its observations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayeslmm.errors import SpecificationError
from bayeslmm.spec import ModelSpec, RandomTerm

VARIANCE, COVARIANCE, RESIDUAL = "variance", "covariance", "residual"


def lme4_name(name: str) -> str:
    """lme4's spelling of a coefficient name (``Intercept`` → ``(Intercept)``)."""
    return "(Intercept)" if name == "Intercept" else name


@dataclass(frozen=True)
class CovParameter:
    """One θ_i with its label and what it multiplies.

    ``term``/``j``/``k`` locate it in a random term's Σ (``j == k`` for a variance); residual
    parameters have ``term = -1`` and ``mask`` (the observations of their environment).
    """

    kind: str
    grp: str
    var1: str | None
    var2: str | None
    term: int
    j: int
    k: int
    kinship: str | None = None
    mask: np.ndarray | None = None
    rank: int = 1

    @property
    def is_residual(self) -> bool:
        return self.kind == RESIDUAL


@dataclass(frozen=True)
class Structure:
    """Parameters of V plus the term labels (lme4's ``grp``, de-duplicated with ``.1``)."""

    params: tuple[CovParameter, ...]
    term_labels: tuple[str, ...]
    terms: tuple[RandomTerm, ...]
    n_obs: int

    def blocks(self) -> list[list[int]]:
        """Indices of parameters forming one correlated Σ (m > 1), for PSD projection."""
        out: dict[int, list[int]] = {}
        for i, p in enumerate(self.params):
            if p.term >= 0 and self.terms[p.term].correlated and self.terms[p.term].n_coef > 1:
                out.setdefault(p.term, []).append(i)
        return list(out.values())

    def residual_shares(self) -> np.ndarray:
        """Fraction of observations behind each residual parameter (0 for the others)."""
        return np.array(
            [p.mask.mean() if p.is_residual and p.mask is not None else 0.0 for p in self.params]
        )

    def mean_diagonal(self, i: int) -> float:
        """Mean of the diagonal of V_i, without forming V_i (the scale of a start value)."""
        p = self.params[i]
        if p.is_residual:
            return float(p.mask.mean())
        term = self.terms[p.term]
        kdiag = np.ones(term.n_levels) if term.kinship is None else np.diag(term.kinship.matrix)
        d = term.design[:, p.j] * term.design[:, p.k] * kdiag[term.index]
        return float(np.mean(d)) * (1.0 if p.j == p.k else 2.0)

    def matrix(self, i: int) -> np.ndarray:
        """V_i as a dense n × n array (diagonal parameters as a 1-D vector of the diagonal)."""
        p = self.params[i]
        if p.is_residual:
            return p.mask.astype(float)
        term = self.terms[p.term]
        zj = term.z(p.j)
        zk = zj if p.j == p.k else term.z(p.k)
        if term.kinship is None:
            cross = (zj @ zk.T).toarray()
            return cross if p.j == p.k else cross + cross.T
        K = term.kinship.matrix
        zjk = np.asarray(zj @ K)  # n × q
        cross = np.asarray((zk @ zjk.T).T)  # Z_j K Z_kᵀ
        return cross if p.j == p.k else cross + cross.T


def build_structure(spec: ModelSpec) -> Structure:
    """Enumerate the covariance parameters of a Gaussian model specification."""
    labels = spec.coefficient_groups()  # lme4's grp of each coefficient (g, g.1, …)
    params: list[CovParameter] = []
    for t, (term, coef_labels) in enumerate(zip(spec.terms, labels, strict=True)):
        names = [lme4_name(c) for c in term.covariates]
        kin = term.kinship.name if term.kinship is not None else None
        label = coef_labels[0]
        for j, name in enumerate(names):
            params.append(
                CovParameter(VARIANCE, coef_labels[j], name, None, t, j, j, kin, rank=term.n_levels)
            )
        if term.correlated:
            for j in range(len(names)):
                for k in range(j + 1, len(names)):
                    params.append(CovParameter(COVARIANCE, label, names[j], names[k], t, j, k, kin))
    params.extend(_residual_parameters(spec))
    return Structure(tuple(params), tuple(c[0] for c in labels), spec.terms, spec.n_obs)


def _residual_parameters(spec: ModelSpec) -> list[CovParameter]:
    n = spec.n_obs
    if spec.sigma_X is None:
        return [
            CovParameter(RESIDUAL, "Residual", None, None, -1, 0, 0, mask=np.ones(n, bool), rank=n)
        ]
    environments = spec.residual_groups()
    if environments is None:
        S = np.asarray(spec.sigma_X, dtype=float)
        distinct = np.unique(np.round(S, 12), axis=0).shape[0]
        raise SpecificationError(
            f"The REML engine models residual variances by the levels of categorical factors: "
            f"the sigma formula {spec.sigma_formula!r} has {S.shape[1]} columns but its rows "
            f"take {distinct} distinct values, so it is not one variance per level. "
            "Use a factor, e.g. sigma='~ 0 + env' or '~ env' (a continuous covariate in the "
            "variance model needs the Bayesian engine)."
        )
    labels, group = environments
    out = []
    for g, label in enumerate(labels):
        mask = group == g
        out.append(
            CovParameter(
                RESIDUAL, "Residual", label, None, -1, 0, 0, mask=mask, rank=int(mask.sum())
            )
        )
    return out


def fixed_names(spec: ModelSpec) -> list[str]:
    return [lme4_name(c) for c in spec.fixed_names]


def response(spec: ModelSpec) -> np.ndarray:
    """y minus the offset (a Gaussian offset just shifts the response)."""
    y = np.asarray(spec.y, dtype=float)
    return y - spec.offset if spec.offset is not None else y


def as_frame(structure: Structure, theta: np.ndarray, cov: np.ndarray) -> pd.DataFrame:
    """The ``parameters`` table of :class:`RemlFit`."""
    se = np.sqrt(np.where(np.diag(cov) >= 0, np.diag(cov), np.nan))
    shares = structure.residual_shares()
    return pd.DataFrame(
        {
            "grp": pd.Series([p.grp for p in structure.params], dtype=object),
            "var1": pd.Series([p.var1 for p in structure.params], dtype=object),
            "var2": pd.Series([p.var2 for p in structure.params], dtype=object),
            "kind": pd.Series([p.kind for p in structure.params], dtype=object),
            "estimate": np.asarray(theta, dtype=float),
            "se": se,
            "kinship": pd.Series([p.kinship for p in structure.params], dtype=object),
            "residual_share": shares,
        }
    )
