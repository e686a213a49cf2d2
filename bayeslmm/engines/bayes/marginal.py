"""The spectral strategy's likelihood with β integrated out: a marginal Gaussian in the
eigenbasis.

In the eigenbasis of Z K Zᵀ, r = Uᵀy − Uᵀoffset = A β + ε with ε ~ N(0, D) diagonal; with
β ~ N(μ, Σ_β) integrated out, r | θ ~ N(Aμ, D + A Σ_β Aᵀ), whose log-density costs O(n p²)
with the Woodbury identity and the matrix determinant lemma (:func:`marginal_gaussian_logp`,
a PyMC ``CustomDist``). β is drawn afterwards from β | y, θ
(:mod:`bayeslmm.engines.bayes.conditional`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bayeslmm.engines.bayes.basis import SpectralBasis
from bayeslmm.engines.bayes.fixed_effects import FixedEffectsPrior, fixed_effects_prior
from bayeslmm.priors import PriorSet
from bayeslmm.spec import ModelSpec


@dataclass(frozen=True, eq=False)
class MarginalFixedEffects:
    """What the spectral strategy needs when β is integrated out (``fixed_effects="marginal"``).

    In the eigenbasis, r = Uᵀy − Uᵀoffset = A β + ε with A = U ᵀ(design), β ~ N(μ, diag(sd²))
    and ε ~ N(0, D), D = diag(σ_g² s + σ_e²). So r | θ ~ N(Aμ, D + B Bᵀ) with B = A diag(sd),
    and β | y, θ is normal with precision diag(sd)⁻² + Aᵀ D⁻¹ A.

    Attributes
    ----------
    prior : FixedEffectsPrior
    rotated_design : ndarray, shape (n, p)
        A = Uᵀ design.
    rotated_offset : ndarray, shape (n,)
        Uᵀ offset (zeros without an offset).
    rotated_response : ndarray, shape (n,)
        Uᵀy, the observed vector.
    eigenvalues : ndarray, shape (n,)
        s, the eigenvalues of Z K Zᵀ.
    """

    prior: FixedEffectsPrior
    rotated_design: np.ndarray
    rotated_offset: np.ndarray
    rotated_response: np.ndarray
    eigenvalues: np.ndarray

    @property
    def prior_mean(self) -> np.ndarray:
        """E(Uᵀy | θ) = Uᵀoffset + A μ."""
        return self.rotated_offset + self.rotated_design @ self.prior.mu

    @property
    def scaled_design(self) -> np.ndarray:
        """B = A diag(sd), so that A Σ_β Aᵀ = B Bᵀ."""
        return self.rotated_design * self.prior.sd


def marginal_gaussian_logp(value, var_g, var_e, eigenvalues, mean, scaled_design):
    """log N(value; mean, D + B Bᵀ), D = diag(var_g · eigenvalues + var_e), B n × p.

    Woodbury and the matrix determinant lemma with C = I_p + Bᵀ D⁻¹ B = L Lᵀ:
    log|D + B Bᵀ| = Σ log d + 2 Σ log L_kk and, with γ̂ = C⁻¹ Bᵀ D⁻¹ r,
    rᵀ(D + B Bᵀ)⁻¹ r = (r − Bγ̂)ᵀ D⁻¹ (r − Bγ̂) + γ̂ᵀγ̂: a sum of two non-negative terms. (The
    textbook rᵀD⁻¹r − |L⁻¹BᵀD⁻¹r|² subtracts two numbers of size r₀²/σ_e² that cancel as
    σ_e → 0 and lets NUTS wander into spurious high-density regions.) O(n p²) per
    evaluation and gradient.
    Works on PyTensor tensors (the model's log-density); ``value`` may have leading batch
    axes when ``var_g`` and ``var_e`` are scalars.
    """
    import pytensor.tensor as pt
    from pytensor.tensor.slinalg import cholesky, solve_triangular

    d = var_g * eigenvalues + var_e
    resid = value - mean
    weighted = scaled_design / d[:, None]  # D⁻¹ B
    n = eigenvalues.shape[0]
    if scaled_design.type.shape[1] == 1:
        # one coefficient (the usual intercept-only model): C is a scalar, so the same
        # formulas need only elementwise operations (no linear-algebra Ops, which PyTensor's
        # C backend runs through Python)
        b = scaled_design[:, 0]
        capacitance = 1.0 + pt.sum(b * weighted[:, 0])
        gamma = pt.dot(resid, weighted[:, 0]) / capacitance
        fitted = pt.shape_padright(gamma) * b
        quad = pt.sum((resid - fitted) ** 2 / d, axis=-1) + gamma**2
        logdet = pt.sum(pt.log(d)) + pt.log(capacitance)
        return -0.5 * (n * np.log(2.0 * np.pi) + logdet + quad)
    p_static = scaled_design.type.shape[1]
    if p_static is not None and p_static <= MAX_UNROLLED_P:
        return _marginal_logp_unrolled(resid, d, scaled_design, weighted, p_static)
    p = scaled_design.shape[1]
    capacitance = pt.eye(p) + pt.dot(scaled_design.T, weighted)
    chol = cholesky(capacitance, lower=True)
    projected = solve_triangular(chol, pt.dot(resid, weighted).T, lower=True)
    gamma = solve_triangular(chol.T, projected, lower=False)  # (p, ...) = C⁻¹ Bᵀ D⁻¹ r
    fitted = pt.dot(scaled_design, gamma).T
    quad = pt.sum((resid - fitted) ** 2 / d, axis=-1) + pt.sum(gamma**2, axis=0)
    logdet = pt.sum(pt.log(d)) + 2.0 * pt.sum(pt.log(pt.diagonal(chol)))
    return -0.5 * (n * np.log(2.0 * np.pi) + logdet + quad)


#: Up to this many fixed effects the p × p Cholesky factor of the capacitance matrix is
#: written out entry by entry (elementwise Ops, compiled to C) instead of PyTensor's
#: Cholesky / SolveTriangular Ops, which run through Python and scipy at every gradient
#: evaluation (about half of the ~110 µs per evaluation with p = 2).
MAX_UNROLLED_P = 4


def _marginal_logp_unrolled(resid, d, scaled_design, weighted, p: int):
    """:func:`marginal_gaussian_logp` for a small static p: the same Cholesky factor L of
    C = I + Bᵀ D⁻¹ B, triangular solves and formulas, in scalar arithmetic."""
    import pytensor.tensor as pt

    n = d.shape[0]
    b = [scaled_design[:, k] for k in range(p)]
    w = [weighted[:, k] for k in range(p)]
    capacitance = [[(1.0 if i == j else 0.0) + pt.sum(b[i] * w[j]) for j in range(p)]
                   for i in range(p)]  # fmt: skip
    chol = [[None] * p for _ in range(p)]
    for j in range(p):
        chol[j][j] = pt.sqrt(capacitance[j][j] - sum(chol[j][k] ** 2 for k in range(j)))
        for i in range(j + 1, p):
            off = capacitance[i][j] - sum(chol[i][k] * chol[j][k] for k in range(j))
            chol[i][j] = off / chol[j][j]
    # Bᵀ D⁻¹ r, batch axes kept; sum(·) rather than dot, which is a Python Op without BLAS
    projected = [pt.sum(resid * w[k], axis=-1) for k in range(p)]
    forward = []
    for i in range(p):
        forward.append((projected[i] - sum(chol[i][k] * forward[k] for k in range(i))) / chol[i][i])
    gamma = [None] * p  # C⁻¹ Bᵀ D⁻¹ r
    for i in reversed(range(p)):
        later = sum(chol[k][i] * gamma[k] for k in range(i + 1, p))
        gamma[i] = (forward[i] - later) / chol[i][i]
    fitted = sum(pt.shape_padright(gamma[k]) * b[k] for k in range(p))
    quad = pt.sum((resid - fitted) ** 2 / d, axis=-1) + sum(g**2 for g in gamma)
    logdet = pt.sum(pt.log(d)) + 2.0 * sum(pt.log(chol[k][k]) for k in range(p))
    return -0.5 * (n * np.log(2.0 * np.pi) + logdet + quad)


def _data_input(values: np.ndarray, name: str):
    """A shared variable holding ``values``, its length (first axis) left unknown.

    Only trailing axes keep their static length (the number of fixed effects, which the
    log-density branches on), so one compiled module serves every data set of any size.
    """
    import pytensor

    values = np.asarray(values, dtype=float)
    return pytensor.shared(values, name=name, shape=(None, *values.shape[1:]))


def marginal_gaussian_random(var_g, var_e, eigenvalues, mean, scaled_design, rng=None, size=None):
    """Draw mean + B γ + √D ε, γ ~ N(0, I_p), ε ~ N(0, I_n) (prior predictive of Uᵀy)."""
    rng = np.random.default_rng() if rng is None else rng
    var_g, var_e = np.asarray(var_g, dtype=float), np.asarray(var_e, dtype=float)
    batch = np.broadcast_shapes(var_g.shape, var_e.shape) if size is None else tuple(size)
    d = var_g[..., None] * eigenvalues + var_e[..., None]
    gamma = rng.standard_normal((*batch, scaled_design.shape[1]))
    noise = rng.standard_normal((*batch, eigenvalues.shape[0]))
    return mean + gamma @ scaled_design.T + np.sqrt(d) * noise


def marginal_fixed_effects(
    spec: ModelSpec, priors: PriorSet, rotation: SpectralBasis
) -> MarginalFixedEffects | None:
    """The rotated design, offset and response of ``spec`` in ``rotation``'s eigenbasis,
    with the fixed effects' prior (None without fixed effects).

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes.basis import spectral_basis
    >>> from bayeslmm.priors import resolve_priors
    >>> K = bl.Kinship(np.eye(4) * 0.5 + 0.5, ["a", "b", "c", "d"])
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "id": ["a", "b", "c", "d"]})
    >>> spec = bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": K})
    >>> marginal = marginal_fixed_effects(spec, resolve_priors(spec), spectral_basis(spec.terms[0]))
    >>> marginal.rotated_design.shape
    (4, 1)
    """
    fe = fixed_effects_prior(spec, priors)
    if fe is None:
        return None
    offset = np.zeros(spec.n_obs) if spec.offset is None else np.asarray(spec.offset)
    return MarginalFixedEffects(
        prior=fe,
        rotated_design=rotation.rotate(fe.design),
        rotated_offset=rotation.rotate(offset),
        rotated_response=rotation.rotate(np.asarray(spec.y, dtype=float)),
        eigenvalues=np.asarray(rotation.values, dtype=float),
    )


def marginal_likelihood(name: str, var_g: Any, var_residual: Any, marginal: MarginalFixedEffects):
    """Register the observed Uᵀy | θ ~ N(Uᵀoffset + Aμ, D + A Σ_β Aᵀ) inside a model context
    (dims ``eigen``), β integrated out."""
    import pymc as pm

    # the data enter as shared variables of unknown length, not constants: PyTensor's compile
    # cache keys on constants' values and on static shapes, so constants would recompile the
    # C modules (~30 s) for every data set
    return pm.CustomDist(
        name,
        var_g,
        var_residual,
        _data_input(marginal.eigenvalues, "eigenvalues"),
        _data_input(marginal.prior_mean, "prior_mean"),
        _data_input(marginal.scaled_design, "scaled_design"),
        logp=marginal_gaussian_logp,
        random=marginal_gaussian_random,
        signature="(),(),(n),(n),(n,p)->(n)",
        observed=_data_input(marginal.rotated_response, f"{name}_data"),
        dims="eigen",
    )
