"""Single-kernel REML by rotation: a one-dimensional search over δ = σ_e²/σ_g².

Model y = Xβ + Zu + e, u ~ N(0, σ_g² K), e ~ N(0, σ_e² I). With G = Z K Zᵀ = U S Uᵀ (for
one record per level in kinship order, G = K and the cached eigendecomposition of the
:class:`~bayeslmm.Kinship` is reused) the rotated data y* = Uᵀy, X* = UᵀX have
Var(y*) = diag(σ_g² s_i + σ_e²): the likelihood factorises and costs O(n p²) per evaluation.
The rotation is the only O(n²) step; V is never formed.

Write σ_g² = h² σ², σ_e² = (1 − h²) σ², d_i = h² s_i + 1 − h². Profiling σ² out of the
restricted likelihood (σ̂² = r*ᵀD⁻¹r*/(n − p), r* = y* − X*β̂(h²)) leaves

    −2ℓ_R(h²) = Σ log d_i + log|X*ᵀD⁻¹X*| + (n − p)(log σ̂² + 1 + log 2π),

a function of h² = 1/(1 + δ) alone. It is evaluated on a grid of log δ, every interior local
maximum is refined by bounded Brent search, the boundaries h² = 0 and h² = 1 are evaluated
exactly, and the best point is polished with Newton/AI steps in (σ_g², σ_e²) (whose score
and AI matrix are also O(n p) in the rotated basis) so that the estimate is accurate to the
gradient rather than to the square root of rounding in ℓ_R.

With ``criterion="ml"`` the full likelihood is profiled instead (σ̂² = r*ᵀD⁻¹r*/n, no
log|X*ᵀD⁻¹X*| term),

    −2ℓ(h²) = Σ log d_i + n (log σ̂² + 1 + log 2π),

and searched the same way.

A :class:`~bayeslmm.kinship.LowRankKinship` (K = W Wᵀ, W n × m with m < n) is rotated
by its thin SVD instead (route ``"spectral-low-rank"``): its r positive eigenvalues, k ≤ p + 1
rows of the data's part in K's null space (eigenvalue 0), and the multiplicity
n_null = n − r − k of the null-space rows whose data are exactly 0
(:meth:`~bayeslmm.kinship.LowRankKinship.rotation`). Those rows add n_null log d = n_null
log(1 − h²) to Σ log d_i, n_null/σ_e² to tr(V⁻¹) and nothing to any weighted product, so
each evaluation costs O(r p²) and no n × n matrix is formed.
"""

from __future__ import annotations

import math
import time

import numpy as np

from bayeslmm.engines.reml._common import (
    LOG_2PI,
    Criterion,
    RawFit,
    check_criterion,
    likelihoods,
    one_term_blups,
    safe_inverse,
)
from bayeslmm.engines.reml._structure import Structure
from bayeslmm.kinship.low_rank import LowRankKinship


class RotatedReml:
    """REML (or ML) pieces in the eigenbasis of G: everything is diagonal plus rank p.

    ``criterion="ml"`` makes :meth:`profile`, :meth:`scale_at` and :meth:`evaluate`'s
    ``loglik``, score and AI those of the full likelihood (β profiled out by GLS).
    ``n_null`` further rows with eigenvalue 0 and rotated data 0 are counted without being
    stored (a low-rank kinship's null space; ``n`` counts them).
    """

    def __init__(
        self,
        s: np.ndarray,
        Uy: np.ndarray,
        UX: np.ndarray,
        criterion: Criterion = "reml",
        n_null: int = 0,
    ) -> None:
        check_criterion(criterion)
        self.s = np.clip(np.asarray(s, dtype=float), 0.0, None)
        self.Uy = Uy
        self.UX = UX
        rows, self.p = UX.shape
        self.n_null = int(n_null)
        self.n = rows + self.n_null
        self.criterion = criterion
        # the residual degrees of freedom of the profiled scale: n − p (REML) or n (ML)
        self.dof = self.n - self.p if criterion == "reml" else self.n
        self.n_eval = 0

    def _gls(self, v: np.ndarray):
        w = 1.0 / v
        Xw = self.UX * w[:, None]
        xvx = self.UX.T @ Xw
        chol = np.linalg.cholesky(xvx)
        beta = np.linalg.solve(xvx, Xw.T @ self.Uy)
        r = self.Uy - self.UX @ beta
        return w, Xw, xvx, chol, beta, r

    def profile(self, h2: float) -> float:
        """−2ℓ_R (ML: −2ℓ) at heritability h² with σ² profiled out (+inf where undefined)."""
        self.n_eval += 1
        d = h2 * self.s + (1.0 - h2)
        if np.any(d <= 0) or (self.n_null and h2 >= 1.0):
            return math.inf
        try:
            w, _, _, chol, _, r = self._gls(d)
        except np.linalg.LinAlgError:
            return math.inf
        q = float(r @ (r * w))
        if q <= 0:
            return math.inf
        dof = self.dof
        logdet_xvx = 2.0 * np.sum(np.log(np.diag(chol))) if self.criterion == "reml" else 0.0
        logdet_d = float(np.sum(np.log(d)))
        if self.n_null:  # the null rows' d = 1 − h²
            logdet_d += self.n_null * math.log1p(-h2)
        return float(logdet_d + logdet_xvx + dof * (math.log(q / dof) + 1.0 + LOG_2PI))

    def profile_many(self, h2: np.ndarray) -> np.ndarray:
        """:meth:`profile` for a vector of h² at once (the grid), O(G n p²) in a few calls."""
        h2 = np.asarray(h2, dtype=float)
        self.n_eval += h2.size
        d = h2[:, None] * self.s[None, :] + (1.0 - h2)[:, None]  # G × n
        out = np.full(h2.size, math.inf)
        ok = np.all(d > 0, axis=1) & ((h2 < 1.0) if self.n_null else True)
        if not ok.any():
            return out
        w = 1.0 / d[ok]
        xvx = np.einsum("gn,ni,nj->gij", w, self.UX, self.UX)
        xvy = (w * self.Uy) @ self.UX  # G × p
        sign, logdet_xvx = np.linalg.slogdet(xvx)
        beta = np.linalg.solve(xvx, xvy[..., None])[..., 0]
        q = (w * self.Uy) @ self.Uy - np.einsum("gi,gi->g", xvy, beta)
        dof = self.dof
        if self.criterion == "ml":
            logdet_xvx = np.zeros_like(logdet_xvx)
        logdet_d = np.sum(np.log(d[ok]), axis=1)
        if self.n_null:
            logdet_d = logdet_d + self.n_null * np.log1p(-h2[ok])
        with np.errstate(divide="ignore", invalid="ignore"):
            val = logdet_d + logdet_xvx + dof * (np.log(q / dof) + 1.0 + LOG_2PI)
        val[(sign <= 0) | ~(q > 0)] = math.inf
        out[ok] = val
        return out

    def scale_at(self, h2: float) -> float:
        d = h2 * self.s + (1.0 - h2)
        w, *_, r = self._gls(d)
        return float(r @ (r * w)) / self.dof

    def evaluate(self, sg2: float, se2: float) -> dict:
        """ℓ_R (ML: ℓ), score, AI (2 × 2), β̂ and Cov(β̂) at (σ_g², σ_e²); O(n p²).

        ML replaces P by V⁻¹ in the trace and the AI matrix: score_i = −½ [tr(V⁻¹V_i) −
        yᵀPV_iPy], AI_ij = ½ (V_iPy)ᵀ V⁻¹ (V_jPy) (P y = V⁻¹(y − Xβ̂) either way).
        """
        v = sg2 * self.s + se2
        if np.any(v <= 0) or (self.n_null and se2 <= 0):
            raise np.linalg.LinAlgError("V is singular at this estimate")
        w, Xw, xvx, chol, beta, r = self._gls(v)
        xvx_inv = np.linalg.inv(xvx)
        Py = r * w  # P y in the rotated basis = V⁻¹ (y − Xβ̂)
        ypy = float(r @ Py)
        logdet_v = float(np.sum(np.log(v))) + (self.n_null * math.log(se2) if self.n_null else 0.0)
        logdet_xvx = 2.0 * float(np.sum(np.log(np.diag(chol))))
        # tr(P D_i) = Σ d_i w − tr((X*ᵀWX*)⁻¹ X*ᵀ W D_i W X*), D_1 = diag(s), D_2 = I
        mats = (self.s, np.ones(self.s.size))
        ml = self.criterion == "ml"
        trace = np.array(
            [
                float(m @ w) - (0.0 if ml else float(np.sum(xvx_inv * (Xw.T @ (Xw * m[:, None])))))
                for m in mats
            ]
        )
        if self.n_null:
            trace[1] += self.n_null / se2  # the null rows' 1/σ_e² in tr(P); Xw is 0 there
        A = np.column_stack([m * Py for m in mats])
        PA = A * w[:, None] - (0.0 if ml else Xw @ (xvx_inv @ (Xw.T @ A)))
        return self._state((logdet_v, logdet_xvx, ypy), trace, A, PA, Py, beta, xvx_inv, w=w, Xw=Xw)

    def _state(
        self,
        logdets_ypy: tuple[float, float, float],
        trace: np.ndarray,
        A: np.ndarray,
        PA: np.ndarray,
        Py: np.ndarray,
        beta: np.ndarray,
        xvx_inv: np.ndarray,
        **extra: np.ndarray,
    ) -> dict:
        """An evaluation's state from its pieces (shared with the subclasses' evaluate):
        the likelihoods from (log|V|, log|XᵀV⁻¹X|, yᵀPy), score −½ (tr(P V_i) − (V_i Py)ᵀ Py)
        and AI ½ Aᵀ P A (A = [V_i P y], PA its product with P, or V⁻¹ for ML), both
        symmetrised as β̂'s covariance (XᵀV⁻¹X)⁻¹, then P y and ``extra``."""
        logdet_v, logdet_xvx, ypy = logdets_ypy
        ai = 0.5 * (A.T @ PA)
        return {
            **likelihoods(self.criterion, logdet_v, logdet_xvx, ypy, self.n, self.p),
            "score": -0.5 * (trace - A.T @ Py),
            "ai": 0.5 * (ai + ai.T),
            "beta": beta,
            "beta_cov": 0.5 * (xvx_inv + xvx_inv.T),
            "Py": Py,
            **extra,
        }


def optimise_h2(model: RotatedReml, n_grid: int = 100, log_delta_range: float = 10.0) -> float:
    """Global maximiser of ℓ_R(h²) on [0, 1]: grid over log δ, Brent, exact boundaries."""
    # imported here: loading scipy.optimize slows `import bayeslmm` (~0.1 s)
    from scipy.optimize import minimize_scalar

    log_delta = np.linspace(-log_delta_range, log_delta_range, n_grid)

    def h2_of(ld: float) -> float:
        return 1.0 / (1.0 + math.exp(ld))

    values = model.profile_many(1.0 / (1.0 + np.exp(log_delta)))
    upper = 1.0
    at_one, near_one = model.profile(1.0), model.profile(1.0 - 1e-9)
    if not abs(at_one - near_one) <= 1e-4:
        # ℓ_R is continuous on [0, 1) and V is singular at h² = 1 when K is (σ_e² = 0; a
        # centred GRM has rank n − 1): a jump there, or no finite value, is that
        # singularity or its rounding, not a better optimum, so the edge is 1 − 1e-9
        upper, at_one = 1.0 - 1e-9, near_one
    candidates: list[tuple[float, float]] = [(model.profile(0.0), 0.0), (at_one, upper)]
    finite = np.isfinite(values)
    for k in range(n_grid):
        if not finite[k]:
            continue
        left = values[k - 1] if k > 0 else math.inf
        right = values[k + 1] if k < n_grid - 1 else math.inf
        if values[k] <= left and values[k] <= right:
            if 0 < k < n_grid - 1:
                res = minimize_scalar(
                    lambda ld: model.profile(h2_of(ld)),
                    bounds=(log_delta[k - 1], log_delta[k + 1]),
                    method="bounded",
                    options={"xatol": 1e-10},
                )
                candidates.append((float(res.fun), h2_of(float(res.x))))
            else:
                # minimum at the end of the grid: search in h² up to the exact boundary
                lo, hi = (
                    (0.0, h2_of(log_delta[-2])) if k == n_grid - 1 else (h2_of(log_delta[1]), 1.0)
                )
                res = minimize_scalar(
                    model.profile, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}
                )
                candidates.append((float(res.fun), float(res.x)))
            candidates.append((float(values[k]), h2_of(log_delta[k])))
    best_value, best_h2 = min(candidates)
    for value, h2 in candidates[:2]:
        # an optimum that Brent approaches within 1e-6 of a boundary, no better than the
        # boundary itself beyond rounding, is the boundary
        if abs(h2 - best_h2) < 1e-6 and value <= best_value + 1e-9:
            return h2
    return best_h2


def maximise_rotated(
    model: RotatedReml, n_grid: int = 100, max_polish: int = 20
) -> tuple[float, np.ndarray, dict, int]:
    """The REML (or ML, by ``model.criterion``) estimate of a rotated model: h² by
    :func:`optimise_h2` (grid, Brent, exact boundaries), then Newton/AI steps in
    θ = (σ_g², σ_e²) from the interior.

    Returns ``(h2, theta, state, n_polish)``: h² of the 1-D search, θ̂, the
    :meth:`RotatedReml.evaluate` state at θ̂ and the number of polishing steps taken.
    Shared by :func:`fit_spectral` and the association scan's null and exact fits.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> s = rng.uniform(0, 2, 50)
    >>> Uy = rng.normal(size=50) * np.sqrt(0.5 * s + 0.5)
    >>> h2, theta, state, _ = maximise_rotated(RotatedReml(s, Uy, np.ones((50, 1))))
    >>> theta.shape, bool(np.isclose(theta[0] / theta.sum(), h2, atol=1e-3))
    ((2,), True)
    """
    h2 = optimise_h2(model, n_grid=n_grid)
    sigma2 = model.scale_at(h2)
    theta = np.array([h2 * sigma2, (1.0 - h2) * sigma2])
    state = model.evaluate(*theta)
    n_polish = 0
    if 0.0 < h2 < 1.0:
        for _ in range(max_polish):
            step = np.linalg.lstsq(state["ai"], state["score"], rcond=None)[0]
            cand = theta + step
            if np.any(cand <= 0):
                break
            try:
                new = model.evaluate(*cand)
            except np.linalg.LinAlgError:
                break
            n_polish += 1
            if new["loglik"] < state["loglik"] - 1e-12 * abs(state["loglik"]):
                break
            rel = float(np.max(np.abs(step) / np.abs(cand)))
            theta, state = cand, new
            if rel < 1e-12:
                break
    return h2, theta, state, n_polish


def fit_spectral(
    structure: Structure,
    y: np.ndarray,
    X: np.ndarray,
    *,
    n_grid: int = 100,
    max_polish: int = 20,
    criterion: Criterion = "reml",
) -> RawFit:
    """REML (or ML) for one random term with one coefficient plus an iid residual, by rotation.

    Parameters
    ----------
    structure : Structure
        From :func:`bayeslmm.engines.reml._structure.build_structure`.
    y, X : ndarray
        Response (offset removed) and fixed-effect design.
    n_grid : int
        Grid points over log δ ∈ [−10, 10].
    max_polish : int
        Newton/AI steps after the 1-D search.
    criterion : {"reml", "ml"}
        Maximise the restricted or the full likelihood.

    Returns
    -------
    RawFit

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from bayeslmm import specify
    >>> from bayeslmm.engines.reml._structure import build_structure
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5, 3.0, 2.5], "g": list("aabbcc")})
    >>> spec = specify("y ~ 1 + (1 | g)", df)
    >>> raw = fit_spectral(build_structure(spec), spec.y, spec.X)
    >>> raw.theta.shape
    (2,)
    """
    t0 = time.perf_counter()
    term = structure.terms[0]
    Z = term.z(0)
    direct = (
        term.kinship is not None
        and term.is_identity_incidence
        and bool(np.all(term.design[:, 0] == 1.0))
    )
    low_rank = isinstance(term.kinship, LowRankKinship) and bool(np.all(term.design[:, 0] == 1.0))
    n_null = 0
    if low_rank:
        # Z K Zᵀ = F Fᵀ with F = Z W: the observations' markers (W itself when Z = I)
        observed = term.kinship.expand(term.index)
        _ = observed.rank  # the thin SVD of F (cached on the kinship when Z = I)
    elif direct:
        s, U = term.kinship.eigenvalues, term.kinship.eigenvectors  # cached on the Kinship
    else:
        s, U = np.linalg.eigh(structure.matrix(0))
    t_eigh = time.perf_counter() - t0
    if low_rank:
        # U = [U₁, Q] (n × (r + k)); the other n_null rotated rows of [X, y] are 0
        rotation = observed.rotation(np.column_stack([X, y]))
        s, n_null = rotation.values, rotation.n_null
        Uy, UX = rotation.rotated[:, -1], rotation.rotated[:, :-1]
    else:
        Uy = U.T @ y
        UX = U.T @ X
    t_rot = time.perf_counter() - t0 - t_eigh
    model = RotatedReml(s, Uy, UX, criterion=criterion, n_null=n_null)
    h2, theta, state, n_polish = maximise_rotated(model, n_grid=n_grid, max_polish=max_polish)
    messages: list[str] = []
    interior = 0.0 < h2 < 1.0
    theta_cov = safe_inverse(state["ai"])
    t_opt = time.perf_counter() - t0 - t_eigh - t_rot

    # BLUP: û = σ_g² K Zᵀ P y. With G = K (Z = I) K U = U S, so û = σ_g² U (s ∘ P*y*).
    sg2 = theta[0]
    Py_rot, w, Xw = state["Py"], state["w"], state["Xw"]
    M = state["beta_cov"]
    if low_rank:
        # K Zᵀ U = W Fᵀ [U₁, Q] = [W V S^½, 0] with F = U₁ S^½ Vᵀ (Q ⊥ range F): the levels'
        # covariance with the rotated rows, A = W V S^½ (q × r, 2 q p r flops; never n × n)
        r = observed.rank
        A = term.kinship.markers @ (observed.right_vectors * np.sqrt(observed.positive_eigenvalues))
        blup = sg2 * (A @ Py_rot[:r])
        B = A @ Xw[:r]
        quad = np.empty(A.shape[0])
        for start in range(0, A.shape[0], 4096):
            rows = A[start : start + 4096]
            quad[start : start + 4096] = (rows * rows) @ w[:r]
        quad -= np.einsum("ij,jk,ik->i", B, M, B)
        prior = term.kinship.diagonal()
    elif direct:
        blup = sg2 * (U @ (model.s * Py_rot))
        # diag(K Zᵀ P Z K) = diag(U S P* S Uᵀ), P* = W − W X* M X*ᵀ W
        B = U @ (Xw * model.s[:, None])  # n × p
        weights = model.s**2 * w
        quad = np.empty(U.shape[0])
        for start in range(0, U.shape[0], 512):  # row blocks: no n × n temporary
            rows = U[start : start + 512]
            quad[start : start + 512] = (rows * rows) @ weights
        quad -= np.einsum("ij,jk,ik->i", B, M, B)
        prior = term.kinship.diagonal()
    else:
        K = term.kinship.matrix if term.kinship is not None else None
        Zt = Z.T.tocsr()
        KZt = Zt.toarray() if K is None else K @ Zt.toarray()  # q × n
        W = KZt @ U  # q × n: Cov(u, y*) / σ_g²
        blup = sg2 * (W @ Py_rot)
        B = W @ Xw
        quad = (W**2) @ w - np.einsum("ij,jk,ik->i", B, M, B)
        prior = np.ones(term.n_levels) if K is None else np.diag(K)
    pev = sg2 * prior - sg2**2 * quad
    blups = one_term_blups(structure, blup, pev, term.levels)
    if not interior:
        messages.append(f"h² estimated at the boundary {h2:g}")
    return RawFit.from_state(
        state,
        theta=theta,
        theta_cov=theta_cov,
        blups=blups,
        n_iter=model.n_eval + n_polish,
        converged=bool(np.isfinite(state["loglik"])),
        messages=messages,
        timing={
            "eigh_s": t_eigh,
            "rotate_s": t_rot,
            "optimize_s": t_opt,
            "blup_s": time.perf_counter() - t0 - t_eigh - t_rot - t_opt,
        },
    )
