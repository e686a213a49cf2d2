"""The Gaussian animal model's posterior on a sparse pedigree, with every animal integrated out.

For y = Xβ + Z a + e, a ~ N(0, σ_a² A) over the whole pedigree, e ~ N(0, σ_e² I) and the
package's priors, the posterior of the two variances is known in closed form up to one
sparse factorisation per value of λ = σ_e²/σ_a². With H = I + Z A Zᵀ/λ,

    H⁻¹ = I − Z C⁻¹ Zᵀ,    log|H| = log|A| − N log λ + log|C|,    C = ZᵀZ + λ A⁻¹

(Woodbury; C is the animal block of Henderson's equations, as sparse as A⁻¹, and
log|A| = Σ log d_i), and with β = μ + diag(sd) γ, γ ~ N(0, I), B = X diag(sd),
r₀ = y − offset − Xμ, the marginal V = σ_e² H + B Bᵀ needs only the (p + 1)² numbers
W ᵀ H⁻¹ W of W = [B, r₀] (one factorisation and p + 1 solves per λ):

    log|V| = n log σ_e² + log|H| + log|I + G/σ_e²|,
    r₀ᵀ V⁻¹ r₀ = q/σ_e² − bᵀ (σ_e² I + G)⁻¹ b / σ_e²,    G = BᵀH⁻¹B, b = BᵀH⁻¹r₀, q = r₀ᵀH⁻¹r₀.

So for fixed λ the likelihood is an explicit function of σ_e². The posterior is computed on
the coordinates of :mod:`~bayeslmm.engines.bayes.spectral_density`, t = (logit h, log σ²_P),
whose prior densities and Jacobians it reuses (every prior parametrisation of
:mod:`bayeslmm.priors`); logit h is a function of λ alone. The algorithm:

1. the marginal log posterior of t₁ (t₂ integrated numerically on a grid of ±12
   conditional SDs) is maximised by a coarse grid and Brent's method (one factorisation per
   evaluation); its curvature gives the posterior SD s of t₁;
2. *nodes* are placed every s/2 on both sides until the density has fallen 20 nats below
   its maximum; the per-λ numbers (log|H|, G, b, q) are interpolated between the nodes by
   cubic splines (they are smooth in log λ) on rows every s/20;
3. the posterior on that two-dimensional grid (every row with its own t₂ grid of 161
   points) is normalised and sampled: a cell by its mass, then a uniform point within it.
   The cells are a twentieth of a posterior SD wide in t₁ (at most :data:`MAX_ROWS` rows)
   and at most about a third of the conditional SD in t₂ (at least 40 cells across the
   points within 20 nats of a row's maximum), so the draws' variance is inflated by under
   1 % (width²/12).

The draws are independent: the effective sample size of h² is the number of draws. β is
drawn from β | y, θ (p-variate normal) for every draw, and the breeding values on request
from u | y, β, θ ~ N(C⁻¹Zᵀ(r₀ − Bγ), σ_e² C⁻¹) by one factorisation per draw (exact).
This is the ``"sparse-pedigree"`` strategy; the Mendelian-sampling NUTS density
(:mod:`~bayeslmm.engines.bayes.pedigree_density`, strategy ``"sparse-pedigree-nuts"``) has
the same posterior but mixed poorly for h² (docs/animal_model.md gives the numbers).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from bayeslmm.engines.bayes.spectral_density import SpectralDensity, prior_density

LOG_2PI = math.log(2.0 * math.pi)

#: Bounds of t₁ = logit h: h from about 2·10⁻⁹ to 1 − 2·10⁻⁹.
T1_BOUNDS = (-20.0, 20.0)
#: Nats below the maximum at which the grid stops (in t₁ and in t₂).
TAIL_NATS = 20.0
#: Points of each row's t₂ grid.
T2_POINTS = 161
#: Most rows of the t₁ grid.
MAX_ROWS = 600

__all__ = ["PedigreeMarginal", "draw_posterior", "pedigree_marginal"]


def _expit(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(t, dtype=float)))


class PedigreeMarginal:
    """The per-λ pieces of the animal model's marginal likelihood, and the posterior.

    Build it with :func:`pedigree_marginal`. :meth:`node` evaluates one λ (one sparse
    factorisation); :meth:`log_posterior` evaluates the log posterior density of
    t = (logit h, log σ²_P) from a node's numbers.
    """

    def __init__(
        self,
        Z: sp.csr_matrix,
        inverse: sp.spmatrix,
        logdet_A: float,
        resid: np.ndarray,
        design: np.ndarray,
        prior: SpectralDensity,
        variance_scale: float,
    ) -> None:
        from bayeslmm.engines.reml.sparse_pedigree import _SparseCholesky

        self.Z = Z.tocsr()
        Zt = self.Z.T.tocsr()
        self.ZtZ = (Zt @ self.Z).tocsc()
        self.inverse = sp.csc_matrix(inverse)
        self.logdet_A = float(logdet_A)
        self.resid = np.asarray(resid, dtype=float)
        self.design = np.asarray(design, dtype=float)
        W = np.column_stack([self.design, self.resid])
        self.WtW = W.T @ W
        self.ZtW = np.asarray(Zt @ W)
        self.n, self.p = self.resid.size, self.design.shape[1]
        self.N = self.inverse.shape[0]
        self.prior = prior
        self.variance_scale = float(variance_scale)
        self.chol = _SparseCholesky(self._C(1.0))
        self.n_factorizations = 0

    def _C(self, lam: float) -> sp.csc_matrix:
        C = (self.ZtZ + lam * self.inverse).tocsc()
        C.sort_indices()
        return C

    def log_lambda(self, t1: float) -> float:
        """log λ = log(σ_e²/σ_a²) at t₁ = logit h (σ_a² = scale · h σ²_P)."""
        return -float(t1) - math.log(self.variance_scale)

    def node(self, t1: float) -> np.ndarray:
        """(log|H|, q, b (p), G (p × p) flattened) at t₁: one factorisation."""
        u = self.log_lambda(t1)
        self.chol.factor(self._C(math.exp(u)))
        self.n_factorizations += 1
        sol = self.chol.solve(self.ZtW)
        Q = self.WtW - self.ZtW.T @ sol
        Q = 0.5 * (Q + Q.T)
        p = self.p
        logdet_H = self.logdet_A - self.N * u + self.chol.logdet()
        return np.concatenate([[logdet_H, Q[p, p]], Q[:p, p], Q[:p, :p].ravel()])

    def loglik(self, values: np.ndarray, var_e: np.ndarray) -> np.ndarray:
        """log p(y | θ) for one node's ``values`` (or one per row) at σ_e² ``var_e``
        (broadcast: values (..., k), var_e (..., m) → (..., m))."""
        p, n = self.p, self.n
        values = np.asarray(values, dtype=float)
        var_e = np.asarray(var_e, dtype=float)
        logdet_H, q = values[..., 0:1], values[..., 1:2]
        logdet = n * np.log(var_e) + logdet_H
        quad = q / var_e
        if p:
            b = values[..., 2 : 2 + p]
            G = values[..., 2 + p :].reshape(*values.shape[:-1], p, p)
            # eigen-decomposition of G: log|I + G/σ²| and bᵀ(σ² I + G)⁻¹ b for every σ²
            ev, vec = np.linalg.eigh(G)
            ev = np.clip(ev, 0.0, None)
            proj = np.einsum("...ij,...i->...j", vec, b) ** 2  # (..., p)
            s2 = var_e[..., :, None]
            logdet = logdet + np.log1p(ev[..., None, :] / s2).sum(-1)
            quad = quad - (proj[..., None, :] / (s2 + ev[..., None, :])).sum(-1) / var_e
        return -0.5 * (n * LOG_2PI + logdet + quad)

    def log_prior(self, t1: float, t2: np.ndarray) -> np.ndarray:
        """log prior density of t (Jacobians included) at one t₁ and many t₂: the value of
        :meth:`SpectralDensity.logp <bayeslmm.engines.bayes.spectral_density.
        SpectralDensity.logp>` without its likelihood (the same formulas; the tests check
        the sum against it), written out because a grid needs ~10⁵ values and no gradient."""
        prior = self.prior
        t2 = np.ravel(np.asarray(t2, dtype=float))
        log_h = -math.log1p(math.exp(-t1)) if t1 >= 0 else t1 - math.log1p(math.exp(t1))
        log_1mh = log_h - t1
        if prior.parametrisation == "sd":
            # priors on log σ_g = (log h + t₂)/2, log σ_e = (log(1−h) + t₂)/2; Jacobian σ_g σ_e/4
            fa, fb = prior.prior_a, prior.prior_b
            out = np.array([fa(0.5 * (log_h + v))[0] + fb(0.5 * (log_1mh + v))[0] for v in t2])
            return out + 0.5 * (log_h + log_1mh) + t2 - math.log(4.0)
        from scipy import special

        a, b = prior.beta
        base = (a - 1.0) * log_h + (b - 1.0) * log_1mh - special.betaln(a, b)
        base += log_h + log_1mh  # Jacobian of t₁ → h
        fb = prior.prior_b
        if prior.parametrisation == "share_sd":
            out = np.array([fb(0.5 * v)[0] for v in t2])
            return out + base + 0.5 * t2 - math.log(2.0)
        return np.array([fb(v)[0] for v in t2]) + base + t2

    def row(self, t1: float, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The t₂ grid of one row and the log posterior on it: it covers every point within
        :data:`TAIL_NATS` of the row's maximum with at least 40 of its cells."""
        h = float(_expit(t1))
        q = float(values[1])
        # σ_e² ≈ q/n at the conditional mode; log σ_e² has SD ≈ √(2/n) there
        centre = math.log(max(q / self.n, 1e-300) / max(1.0 - h, 1e-300))
        half = 12.0 * math.sqrt(2.0 / max(self.n, 1))
        refined = False
        for _ in range(40):
            t2 = centre + np.linspace(-half, half, T2_POINTS)
            lp = self.loglik(values, (1.0 - h) * np.exp(t2)) + self.log_prior(t1, t2)
            top = int(np.argmax(lp))
            if not np.isfinite(lp[top]):
                return t2, lp
            if lp[top] - max(lp[0], lp[-1]) < TAIL_NATS:
                # the mass reaches an end of the grid: move to the maximum, widen
                centre, half = float(t2[top]), 2.0 * half
                continue
            inside = np.flatnonzero(lp > lp[top] - TAIL_NATS)
            if refined or inside[-1] - inside[0] >= 40:
                return t2, lp
            # too few cells across the mass: spread the grid over it
            centre = 0.5 * float(t2[inside[0]] + t2[inside[-1]])
            half = 0.5 * float(t2[min(inside[-1] + 1, T2_POINTS - 1)] - t2[max(inside[0] - 1, 0)])
            refined = True
        return t2, lp

    def marginal_t1(self, t1: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """log ∫ p(t₁, t₂ | y) dt₂ (unnormalised), with the node's values and its row."""
        values = self.node(t1)
        t2, lp = self.row(t1, values)
        top = float(lp.max())
        mass = top + math.log(float(np.exp(lp - top).sum()) * (t2[1] - t2[0]))
        return mass, values, t2, lp


def pedigree_marginal(built: Any) -> PedigreeMarginal:
    """The marginal posterior's pieces for a built sparse-pedigree animal model.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> ped = pd.DataFrame({"id": list("abcde"), "sire": [None, None, "a", "a", "c"],
    ...                     "dam": [None, None, "b", "b", "d"]})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> df = pd.DataFrame({"id": list("cde"), "y": [1.0, 0.5, 2.0]})
    >>> marginal = pedigree_marginal(build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": A})))
    >>> marginal.N, marginal.n, marginal.p
    (5, 3, 1)
    """
    from bayeslmm.engines.bayes.fixed_effects import fixed_effects_prior

    spec, priors = built.spec, built.priors
    term = spec.terms[0]
    kin = term.kinship
    cols = np.asarray(kin.positions, dtype=np.int64)[np.asarray(term.index, dtype=np.int64)]
    n = spec.n_obs
    Z = sp.csr_matrix(
        (np.asarray(term.design[:, 0], dtype=float), (np.arange(n), cols)),
        shape=(n, kin.n_pedigree),
    )
    y = np.asarray(spec.y, dtype=float)
    if spec.offset is not None:
        y = y - np.asarray(spec.offset, dtype=float)
    fe = fixed_effects_prior(spec, priors)
    if fe is None:
        design = np.zeros((n, 0))
    else:
        y = y - fe.design @ np.asarray(fe.mu, float)
        design = fe.design * np.asarray(fe.sd, float)
    prior = prior_density(built)
    parametrisation, share_weight = prior.parametrisation, prior.share_weight
    return PedigreeMarginal(
        Z=Z,
        inverse=kin.inverse,
        logdet_A=float(np.sum(np.log(kin.mendelian_variances))),
        resid=y,
        design=design,
        prior=prior,
        variance_scale=1.0 if parametrisation == "sd" else 1.0 / share_weight,
    )


def _nodes(marginal: PedigreeMarginal) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Nodes of t₁ covering the posterior: (t₁ nodes, their values, log masses, SD of t₁)."""
    from scipy import optimize

    cache: dict[float, tuple[float, np.ndarray]] = {}

    def evaluate(t1: float) -> float:
        t1 = float(t1)
        if t1 not in cache:
            mass, values, _, _ = marginal.marginal_t1(t1)
            cache[t1] = (mass, values)
        return cache[t1][0]

    lo, hi = T1_BOUNDS
    coarse = np.linspace(-10.0, 10.0, 11)
    masses = [evaluate(t) for t in coarse]
    k = int(np.argmax(masses))
    left = coarse[k - 1] if k > 0 else lo
    right = coarse[k + 1] if k < coarse.size - 1 else hi
    res = optimize.minimize_scalar(
        lambda t: -evaluate(t), bounds=(left, right), method="bounded", options={"xatol": 1e-3}
    )
    mode = float(res.x)
    top = evaluate(mode)
    step = 0.02
    curvature = (evaluate(mode + step) - 2.0 * top + evaluate(mode - step)) / step**2
    sd = 1.0 / math.sqrt(-curvature) if curvature < 0 else 1.0
    sd = min(max(sd, 1e-3), 2.0)
    spacing = sd / 2.0
    nodes = [mode]
    for direction in (-1.0, 1.0):
        t = mode
        while True:
            t = t + direction * spacing
            if not lo <= t <= hi:
                break
            nodes.append(t)
            if evaluate(t) < top - TAIL_NATS or len(nodes) > 400:
                break
    nodes = np.sort(np.array(nodes))
    values = np.array([cache[float(t)][1] for t in nodes])
    mass = np.array([cache[float(t)][0] for t in nodes])
    return nodes, values, mass, sd


def draw_posterior(
    marginal: PedigreeMarginal, n_draws: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Independent draws of t = (logit h, log σ²_P) with their per-λ values (for β).

    Returns
    -------
    dict
        ``t`` (n_draws, 2), ``values`` (n_draws, k) the interpolated per-λ numbers at each
        draw's t₁, ``n_nodes`` and ``sd_t1``.

    Examples
    --------
    >>> import pandas as pd, bayeslmm as bl
    >>> from bayeslmm.engines.bayes import build
    >>> ped = pd.DataFrame({"id": list("abcdef"), "sire": [None, None, "a", "a", "c", "c"],
    ...                     "dam": [None, None, "b", "b", "d", "b"]})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> df = pd.DataFrame({"id": list("cdef"), "y": [1.0, 0.5, 2.0, 1.5]})
    >>> marginal = pedigree_marginal(build(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": A})))
    >>> draw_posterior(marginal, 10, np.random.default_rng(1))["t"].shape
    (10, 2)
    """
    from scipy.interpolate import CubicSpline

    nodes, values, _, sd = _nodes(marginal)
    if nodes.size >= 2:
        spline = CubicSpline(nodes, values, axis=0)
        # rows every s/20, at most MAX_ROWS (long flat tails: the far rows hold little mass)
        rows = np.linspace(
            nodes[0], nodes[-1], min(MAX_ROWS, int((nodes[-1] - nodes[0]) / (sd / 20.0)) + 2)
        )
        row_values = spline(rows)
    else:
        rows, row_values = nodes, values
    width1 = rows[1] - rows[0] if rows.size > 1 else 1e-3
    grids, lps = [], []
    for t1, v in zip(rows, row_values, strict=True):
        t2, lp = marginal.row(float(t1), v)
        grids.append(t2)
        lps.append(lp + math.log(t2[1] - t2[0]))
    grid = np.array(grids)
    logmass = np.array(lps)
    logmass -= logmass.max()
    prob = np.exp(logmass).ravel()
    prob /= prob.sum()
    cell = rng.choice(prob.size, size=n_draws, p=prob)
    i, j = np.divmod(cell, grid.shape[1])
    width2 = grid[:, 1] - grid[:, 0]
    t1 = rows[i] + (rng.random(n_draws) - 0.5) * width1
    t2 = grid[i, j] + (rng.random(n_draws) - 0.5) * width2[i]
    draw_values = spline(t1) if nodes.size >= 2 else row_values[i]
    return {
        "t": np.column_stack([t1, t2]),
        "values": draw_values,
        "n_nodes": np.array(nodes.size),
        "sd_t1": np.array(sd),
    }


def draw_fixed(
    marginal: PedigreeMarginal, values: np.ndarray, var_e: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """γ | y, θ ~ N(M⁻¹ b/σ_e², M⁻¹), M = I + G/σ_e², one per draw (shape (draws, p)).

    Examples
    --------
    >>> # gamma = draw_fixed(marginal, out["values"], var_e, rng), out from draw_posterior
    """
    p = marginal.p
    b = values[:, 2 : 2 + p]
    G = values[:, 2 + p :].reshape(-1, p, p)
    M = np.eye(p)[None] + G / var_e[:, None, None]
    L = np.linalg.cholesky(M)
    mean = np.linalg.solve(M, (b / var_e[:, None])[..., None])[..., 0]
    eps = rng.standard_normal((var_e.size, p))
    # M = L Lᵀ: L⁻ᵀ ε has covariance M⁻¹
    noise = np.linalg.solve(np.swapaxes(L, -1, -2), eps[..., None])[..., 0]
    return mean + noise


def _normal_from_factor(chol: Any, eps: np.ndarray) -> np.ndarray:
    """A draw of N(0, C⁻¹) from the current factor of C (CHOLMOD or SuperLU), linear in the
    standard normal ``eps`` (N, or N × k for k draws)."""
    if chol.backend == "cholmod":
        factor = chol._current
        return factor.apply_Pt(factor.solve_Lt(eps, use_LDLt_decomposition=False))
    from scipy.sparse.linalg import spsolve_triangular

    lu = chol._current
    U = lu.U.tocsr()
    # C[p][:, p] = L D Lᵀ with U = D Lᵀ: U⁻¹ √D ε ~ N(0, (C[p][:, p])⁻¹)
    scale = np.sqrt(U.diagonal())
    x = spsolve_triangular(U, scale[:, None] * eps if eps.ndim == 2 else scale * eps, lower=False)
    out = np.empty_like(x)
    out[chol._perm] = x
    return out


def draw_breeding_values(
    marginal: PedigreeMarginal,
    log_lambda: np.ndarray,
    var_e: np.ndarray,
    gamma: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """u | y, β, θ of every animal of the pedigree, one per draw: (draws, N).

    u ~ N(C⁻¹ Zᵀ (r₀ − Bγ), σ_e² C⁻¹), C = ZᵀZ + λ A⁻¹: one factorisation per draw.

    Examples
    --------
    >>> # u = draw_breeding_values(marginal, log_lambda, var_e, gamma, rng)  # (draws, N)
    """
    Zt = marginal.Z.T.tocsr()
    out = np.empty((log_lambda.size, marginal.N))
    for k in range(log_lambda.size):
        marginal.chol.factor(marginal._C(math.exp(float(log_lambda[k]))))
        r = marginal.resid - (marginal.design @ gamma[k] if marginal.p else 0.0)
        mean = marginal.chol.solve(np.asarray(Zt @ r))
        noise = _normal_from_factor(marginal.chol, rng.standard_normal(marginal.N))
        out[k] = mean + math.sqrt(float(var_e[k])) * noise
    return out
