"""Average-information REML over a linear covariance structure V = Σ_i θ_i V_i.

For any number of kinship kernels, iid grouping factors, correlated random slopes and
residual variances by environment. Two evaluators of ℓ_R, score and AI share the optimiser
below: :class:`DenseReml` (dense n × n V, O(n³) per iteration) and
:class:`~bayeslmm.engines.reml.mme.MmeReml` (Henderson's mixed-model equations, O((p + Q)³)
with Q random effects; chosen when p + Q is well below n).

Per iteration, with P = V⁻¹ − V⁻¹X(XᵀV⁻¹X)⁻¹XᵀV⁻¹:

    score_i = ∂ℓ_R/∂θ_i = −½ [tr(P V_i) − yᵀP V_i P y]
    AI_ij   = ½ yᵀP V_i P V_j P y           (average of observed and expected information)
    θ ← Π(θ + t · AI⁻¹ score)              (t halved until ℓ_R does not decrease)

Π projects onto the parameter space (variances ≥ 0, each correlated Σ positive semi-definite
by clipping its eigenvalues at 0). Variances held at 0 with a score pointing outwards are
kept fixed for the step (active set), so a boundary estimate is exactly 0. A few EM-REML
steps, θ_i ← θ_i + θ_i²/r_i (yᵀPV_iPy − tr(PV_i)) (r_i: number of levels, or of observations
for a residual), give a starting point inside the parameter space (Gilmour, Thompson &
Cullis 1995; Yang et al. 2011, GCTA).

Maximum likelihood (``criterion="ml"``) runs the same optimiser on the full likelihood
ℓ = −½ [log|V| + rᵀV⁻¹r + n log 2π] (r = y − Xβ̂, β̂ by GLS): P becomes V⁻¹ in the trace and
between the working variates, score_i = −½ [tr(V⁻¹V_i) − yᵀPV_iPy] and
AI_ij = ½ (V_iPy)ᵀ V⁻¹ (V_jPy). With V⁻¹ = P + V⁻¹X(XᵀV⁻¹X)⁻¹XᵀV⁻¹ both are the REML
quantities plus a rank-p correction, which is how the MME route computes them.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.linalg as sla

from bayeslmm.engines.reml._common import (
    CachedFactorReml,
    Criterion,
    RawFit,
    likelihoods,
    ml_loglik,
    reml_loglik,
    safe_inverse,
)
from bayeslmm.engines.reml._structure import COVARIANCE, RESIDUAL, Structure
from bayeslmm.engines.reml.mme import MmeReml

# largest n for which the MME route may hand a near-zero residual variance to the dense route
DENSE_FALLBACK_MAX_N = 6000


class RemlEvaluator(Protocol):
    """What the optimiser needs from a route: ℓ_R alone (step halving) and the full state.

    ``evaluate`` returns a dict with at least ``loglik`` (the criterion's: restricted or
    full), ``loglik_reml``, ``loglik_ml``, ``score``, ``ai``,
    ``trace`` (tr(P V_i)), ``quad`` (yᵀP V_i P y), ``beta`` and ``beta_cov``; ``blups`` turns
    that state into the per-term BLUP/PEV tables. Implemented by :class:`DenseReml` and
    :class:`~bayeslmm.engines.reml.mme.MmeReml`.
    """

    def loglik(self, theta: np.ndarray) -> float: ...

    def evaluate(self, theta: np.ndarray) -> dict: ...

    def blups(self, theta: np.ndarray, state: dict) -> dict[str, pd.DataFrame]: ...


class DenseReml(CachedFactorReml):
    """REML (or ML) likelihood, score and AI matrix for V = Σ θ_i V_i, all dense."""

    def __init__(
        self, structure: Structure, y: np.ndarray, X: np.ndarray, criterion: Criterion = "reml"
    ) -> None:
        super().__init__(structure, y, X, criterion)
        self.mats = [structure.matrix(i) for i in range(len(structure.params))]

    # -- building blocks ------------------------------------------------------------------
    def covariance(self, theta: np.ndarray) -> np.ndarray:
        V = np.zeros((self.n, self.n))
        diag = np.zeros(self.n)
        for value, M in zip(theta, self.mats, strict=True):
            if value == 0.0:
                continue
            if M.ndim == 1:
                diag += value * M
            else:
                V += value * M
        V[np.diag_indices(self.n)] += diag
        return V

    def _factor_uncached(self, theta: np.ndarray):
        V = self.covariance(theta)
        try:
            chol = sla.cho_factor(V, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.diag(chol[0]) > 0):
            return None
        vix = sla.cho_solve(chol, self.X, check_finite=False)
        viy = sla.cho_solve(chol, self.y, check_finite=False)
        xvx = self.X.T @ vix
        try:
            xchol = sla.cho_factor(xvx, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        beta = sla.cho_solve(xchol, self.X.T @ viy, check_finite=False)
        ypy = float(self.y @ viy - (self.X.T @ viy) @ beta)
        logdet_v = 2.0 * float(np.sum(np.log(np.diag(chol[0]))))
        logdet_xvx = 2.0 * float(np.sum(np.log(np.diag(xchol[0]))))
        return chol, vix, xvx, xchol, beta, ypy, logdet_v, logdet_xvx

    def loglik(self, theta: np.ndarray) -> float:
        """Restricted (ML: full) log-likelihood; −inf where V or XᵀV⁻¹X is not positive
        definite."""
        f = self._factor(theta)
        if f is None:
            return -math.inf
        *_, ypy, logdet_v, logdet_xvx = f
        if ypy <= 0:
            return -math.inf
        if self.criterion == "ml":
            return ml_loglik(logdet_v, ypy, self.n)
        return reml_loglik(logdet_v, logdet_xvx, ypy, self.n, self.p)

    def evaluate(self, theta: np.ndarray) -> dict:
        """ℓ_R (ML: ℓ), score, AI matrix, P, Py, β̂ and its covariance at θ (one n³
        inversion)."""
        f = self._factor(theta)
        if f is None:
            raise np.linalg.LinAlgError("V is not positive definite at the current estimate")
        chol, vix, xvx, xchol, beta, ypy, logdet_v, logdet_xvx = f
        # V⁻¹ from the Cholesky factor (LAPACK potri: a third of the flops of solving for I)
        vinv, info = sla.lapack.dpotri(chol[0], lower=True)
        if info != 0:
            raise np.linalg.LinAlgError("V is singular at the current estimate")
        vinv = np.tril(vinv) + np.tril(vinv, -1).T
        xvx_inv = sla.cho_solve(xchol, np.eye(self.p), check_finite=False)
        P = vinv - vix @ xvx_inv @ vix.T
        P = 0.5 * (P + P.T)
        Py = P @ self.y
        k = len(self.mats)
        A = np.empty((self.n, k))
        trace = np.empty(k)
        # the matrix of the trace and of the AI form: P (REML) or V⁻¹ (ML)
        middle = vinv if self.criterion == "ml" else P
        diag_middle = np.diag(middle)
        for i, M in enumerate(self.mats):
            if M.ndim == 1:
                A[:, i] = M * Py
                trace[i] = float(diag_middle @ M)
            else:
                A[:, i] = M @ Py
                trace[i] = float(np.einsum("ij,ij->", middle, M))
        score = -0.5 * (trace - A.T @ Py)
        ai = 0.5 * (A.T @ (middle @ A))
        ai = 0.5 * (ai + ai.T)
        return {
            "theta": theta.copy(),
            **likelihoods(self.criterion, logdet_v, logdet_xvx, ypy, self.n, self.p),
            "score": score,
            "ai": ai,
            "trace": trace,
            "P": P,
            "Py": Py,
            "beta": beta,
            "beta_cov": xvx_inv,
            "quad": A.T @ Py,
        }

    def blups(self, theta: np.ndarray, state: dict) -> dict[str, pd.DataFrame]:
        """BLUPs and prediction error variances from P (see :func:`dense_blups`)."""
        return dense_blups(self.structure, theta, state["P"], state["Py"])


def _start(structure: Structure, y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """GCTA-like start: OLS residual variance split equally over the variance parameters."""
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    s2 = float(resid @ resid) / max(len(y) - X.shape[1], 1)
    params = structure.params
    n_var = sum(p.kind != COVARIANCE and p.kind != RESIDUAL for p in params) + 1
    theta = np.zeros(len(params))
    for i, p in enumerate(params):
        if p.kind == COVARIANCE:
            continue
        scale = 1.0 if p.kind == RESIDUAL else structure.mean_diagonal(i)
        theta[i] = s2 / n_var / max(scale, 1e-12)
    return theta


class _Projector:
    """Projection onto {variances ≥ 0, residual variances ≥ floor, each Σ PSD}."""

    def __init__(self, structure: Structure, floor: float) -> None:
        self.structure = structure
        self.floor = floor
        self.blocks = []
        for idx in structure.blocks():
            m = structure.terms[structure.params[idx[0]].term].n_coef
            pos = {(structure.params[i].j, structure.params[i].k): i for i in idx}
            self.blocks.append((m, pos))
        in_block = {i for _, pos in self.blocks for i in pos.values()}
        self.simple = [
            i for i, p in enumerate(structure.params) if i not in in_block and p.kind != COVARIANCE
        ]
        self.lower = np.array(
            [floor if p.kind == RESIDUAL else 0.0 for p in structure.params], dtype=float
        )

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        out = theta.copy()
        for i in self.simple:
            out[i] = max(out[i], self.lower[i])
        for m, pos in self.blocks:
            S = np.zeros((m, m))
            for (j, k), i in pos.items():
                S[j, k] = S[k, j] = theta[i]
            w, U = np.linalg.eigh(S)
            if w[0] < 0:
                S = (U * np.clip(w, 0.0, None)) @ U.T
                for (j, k), i in pos.items():
                    out[i] = S[j, k]
        return out

    def at_bound(self, theta: np.ndarray, score: np.ndarray) -> np.ndarray:
        """Simple variances sitting on their bound whose score points out of the space."""
        fixed = np.zeros(theta.size, bool)
        for i in self.simple:
            if theta[i] <= self.lower[i] and score[i] <= 0:
                fixed[i] = True
        return fixed


def fit_ai_reml(
    structure: Structure,
    y: np.ndarray,
    X: np.ndarray,
    *,
    max_iter: int = 200,
    em_steps: int = 3,
    tol_loglik: float = 1e-8,
    tol_param: float = 1e-6,
    theta0: np.ndarray | None = None,
    route: str = "dense",
    criterion: Criterion = "reml",
) -> RawFit:
    """Maximise the restricted (or full) likelihood by AI-REML with an EM-REML warm start.

    Converged when, between successive iterates, |Δℓ_R| < ``tol_loglik`` and
    max_i |Δθ_i| / (|θ_i| + 10⁻⁶·Σ variances) < ``tol_param``. A singular correlated Σ at
    the end is finished by L-BFGS-B in its Cholesky factor.

    Parameters
    ----------
    structure : Structure
        From :func:`bayeslmm.engines.reml._structure.build_structure`.
    y, X : ndarray
        Response (offset removed) and fixed-effect design.
    max_iter, em_steps, tol_loglik, tol_param
        See :func:`bayeslmm.engines.reml.fit_reml`.
    theta0 : ndarray, optional
        Starting values (default: GCTA-like equal split of the OLS residual variance).
    route : {"dense", "mme", "sparse"}
        Evaluate ℓ_R, score and AI with the dense n × n V (:class:`DenseReml`), through
        Henderson's mixed-model equations (:class:`~bayeslmm.engines.reml.mme.MmeReml`), or
        through sparse ones for iid terms
        (:class:`~bayeslmm.engines.reml.sparse.SparseMmeReml`).
        The optimiser is the same; only the cost per iteration differs.
    criterion : {"reml", "ml"}
        Maximise the restricted likelihood or the full one (maximum likelihood).

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
    >>> raw = fit_ai_reml(build_structure(spec), spec.y, spec.X)
    >>> raw.converged
    True
    """
    t0 = time.perf_counter()
    if route == "dense":
        model: RemlEvaluator = DenseReml(structure, y, X, criterion=criterion)
    elif route == "mme":
        model = MmeReml(structure, y, X, criterion=criterion)
    elif route == "sparse":
        from bayeslmm.engines.reml.sparse import SparseMmeReml

        model = SparseMmeReml(structure, y, X, criterion=criterion)
    else:
        raise ValueError(f"route must be 'dense', 'mme' or 'sparse'; got {route!r}")
    t_setup = time.perf_counter() - t0
    s2 = float(np.var(y))
    project = _Projector(structure, floor=1e-10 * s2)
    theta = _start(structure, model.y, model.X) if theta0 is None else theta0.copy()
    theta = project(theta)
    ranks = np.array([max(p.rank, 1) for p in structure.params], dtype=float)
    is_cov = np.array([p.kind == COVARIANCE for p in structure.params])
    n_iter = 0
    messages: list[str] = []

    state = model.evaluate(theta)
    for _ in range(em_steps):
        delta = theta**2 / ranks * (state["quad"] - state["trace"])
        cand = project(np.where(is_cov, theta, theta + delta))
        if model.loglik(cand) < state["loglik"]:
            break  # EM never decreases ℓ_R in exact arithmetic; stop the warm start if it does
        theta = cand
        state = model.evaluate(theta)
        n_iter += 1

    converged = False
    for _ in range(max_iter):
        score, ai = state["score"], state["ai"]
        fixed = project.at_bound(theta, score)
        free = ~fixed
        step = np.zeros_like(theta)
        sub = ai[np.ix_(free, free)]
        try:
            step[free] = np.linalg.solve(sub, score[free])
        except np.linalg.LinAlgError:
            step[free] = np.linalg.lstsq(sub, score[free], rcond=None)[0]
        decrement = float(score[free] @ step[free])
        if not np.isfinite(decrement) or decrement < 0:
            # AI not positive definite here: fall back to a scaled gradient step
            step = np.where(free, score / np.maximum(np.diag(ai), 1e-300), 0.0)
        t, ll_old = 1.0, state["loglik"]
        while True:
            cand = project(theta + t * step)
            ll = model.loglik(cand)
            if ll >= ll_old - 1e-12 * abs(ll_old):
                break
            t *= 0.5
            if t < 1e-12:
                cand, ll = theta, ll_old
                break
        d_theta = cand - theta
        scale = float(np.sum(cand[~is_cov])) * 1e-6 + 1e-300
        rel = float(np.max(np.abs(d_theta) / (np.abs(cand) + scale))) if cand.size else 0.0
        theta = cand
        n_iter += 1
        state = model.evaluate(theta)
        if abs(ll - ll_old) < tol_loglik and rel < tol_param:
            converged = True
            break
        if t < 1e-12:
            # no step improves ℓ_R: optimum up to rounding if the Newton decrement is tiny
            converged = abs(decrement) < 1e-6
            if not converged:
                which = "full" if criterion == "ml" else "restricted"
                messages.append(f"step halving failed to increase the {which} likelihood")
            break
    if not converged and n_iter >= max_iter + em_steps:
        messages.append(f"AI-REML did not converge in {max_iter} iterations")
    if _singular_blocks(structure, theta):
        # Projected AI steps crawl along the edge of the PSD cone; finish with a quasi-Newton
        # search in the Cholesky factors of the singular Σ (lme4's parametrisation).
        theta, n_polish, polished = _cholesky_polish(model, structure, project, theta)
        n_iter += n_polish
        state = model.evaluate(theta)
        converged = polished
        if not polished:
            messages.append("the Cholesky-parametrised search at a singular Σ did not converge")
    t_opt = time.perf_counter() - t0 - t_setup
    if route in ("mme", "sparse") and _residual_near_zero(structure, theta):
        # With σ_e² → 0 the MME carry R⁻¹ → ∞: yᵀPy and tr(P D_e) become differences of
        # huge numbers. Finish from here with the dense route, whose V stays well-posed.
        if structure.n_obs <= DENSE_FALLBACK_MAX_N:
            raw = fit_ai_reml(
                structure,
                y,
                X,
                max_iter=max_iter,
                em_steps=0,
                tol_loglik=tol_loglik,
                tol_param=tol_param,
                theta0=theta,
                route="dense",
                criterion=criterion,
            )
            raw.messages.insert(
                0,
                "a residual variance is near 0, where the mixed-model equations are "
                "ill-conditioned: finished with the dense route",
            )
            raw.n_iter += n_iter
            raw.timing["optimize_s"] += t_opt
            raw.timing["setup_s"] += t_setup
            return raw
        messages.append(
            "a residual variance is near 0, where the mixed-model equations lose precision; "
            "check with method='ai-reml-dense' if n_obs allows"
        )

    theta_cov = safe_inverse(state["ai"])
    blups = model.blups(theta, state)
    return RawFit.from_state(
        state,
        theta=theta,
        theta_cov=theta_cov,
        blups=blups,
        n_iter=n_iter,
        converged=converged,
        messages=messages,
        route=route,
        timing={
            "setup_s": t_setup,
            "optimize_s": t_opt,
            "blup_s": time.perf_counter() - t0 - t_setup - t_opt,
        },
    )


def _residual_near_zero(structure: Structure, theta: np.ndarray) -> bool:
    total = sum(v for v, p in zip(theta, structure.params, strict=True) if p.kind != COVARIANCE)
    return any(
        v <= 1e-9 * total for v, p in zip(theta, structure.params, strict=True) if p.is_residual
    )


def _singular_blocks(structure: Structure, theta: np.ndarray) -> bool:
    for idx in structure.blocks():
        t = structure.params[idx[0]].term
        w = np.linalg.eigvalsh(term_sigma(structure, theta, t))
        if w[-1] <= 0 or w[0] <= 1e-6 * w[-1]:
            return True
    return False


def _cholesky_polish(
    model: RemlEvaluator, structure: Structure, project: _Projector, theta: np.ndarray
) -> tuple[np.ndarray, int, bool]:
    """Maximise ℓ_R with each correlated Σ written as L Lᵀ (always PSD, no constraint).

    Other variances keep their bounds. L-BFGS-B with the exact gradient
    ∂ℓ_R/∂φ = Jᵀ score(θ), J = ∂θ/∂φ, (dΣ_jk/dL_ab = δ_ja L_kb + L_jb δ_ka).
    """
    from scipy.optimize import minimize

    simple = project.simple
    blocks = []  # (m, {(j, k): θ index}, offset of its L entries in φ)
    offset = len(simple)
    for m, pos in project.blocks:
        blocks.append((m, pos, offset))
        offset += m * (m + 1) // 2
    tril = {m: np.tril_indices(m) for m, _, _ in blocks}
    phi0 = np.empty(offset)
    phi0[: len(simple)] = theta[simple]
    for m, pos, off in blocks:
        S = np.zeros((m, m))
        for (j, k), i in pos.items():
            S[j, k] = S[k, j] = theta[i]
        w, U = np.linalg.eigh(S)
        # any square root of Σ, made lower triangular by QR (Σ = R̃ᵀR̃ = L Lᵀ, L = R̃ᵀ)
        root = (U * np.sqrt(np.clip(w, 0.0, None))).T
        L = np.linalg.qr(root, mode="r").T
        phi0[off : off + m * (m + 1) // 2] = L[tril[m]]

    def unpack(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        th = theta.copy()
        J = np.zeros((theta.size, phi.size))
        for a, i in enumerate(simple):
            th[i] = phi[a]
            J[i, a] = 1.0
        for m, pos, off in blocks:
            L = np.zeros((m, m))
            L[tril[m]] = phi[off : off + m * (m + 1) // 2]
            S = L @ L.T
            for (j, k), i in pos.items():
                th[i] = S[j, k]
                for c, (a, b) in enumerate(zip(*tril[m], strict=True)):
                    J[i, off + c] = (L[k, b] if j == a else 0.0) + (L[j, b] if k == a else 0.0)
        return th, J

    n_eval = 0

    def objective(phi: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal n_eval
        n_eval += 1
        th, J = unpack(phi)
        try:
            state = model.evaluate(th)
        except np.linalg.LinAlgError:
            return 1e300, np.zeros_like(phi)
        return -state["loglik"], -(J.T @ state["score"])

    bounds = [(project.lower[i], None) for i in simple] + [(None, None)] * (offset - len(simple))
    res = minimize(
        objective,
        phi0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-9, "maxcor": 20},
    )
    th, _ = unpack(res.x)
    if model.loglik(th) < model.loglik(theta):
        return theta, n_eval, False
    return th, n_eval, bool(res.success) or res.status == 2  # 2: no further progress possible


def term_sigma(structure: Structure, theta: np.ndarray, t: int) -> np.ndarray:
    """The m × m covariance Σ of random term ``t`` (zeros off-diagonal if uncorrelated)."""
    m = structure.terms[t].n_coef
    S = np.zeros((m, m))
    for value, p in zip(theta, structure.params, strict=True):
        if p.term == t:
            S[p.j, p.k] = S[p.k, p.j] = value
    return S


def dense_blups(
    structure: Structure, theta: np.ndarray, P: np.ndarray, Py: np.ndarray
) -> dict[str, pd.DataFrame]:
    """BLUPs û_j = Σ_k Σ_jk K Z_kᵀ P y and PEV_j = diag(Σ_jj K − G_jᵀ P G_j), G_j = Cov(y, u_j).

    P (not V⁻¹) makes the PEV include the uncertainty of β̂ (Henderson's C²² block).
    """
    out = {}
    for t, (term, label) in enumerate(zip(structure.terms, structure.term_labels, strict=True)):
        S = term_sigma(structure, theta, t)
        K = term.kinship.matrix if term.kinship is not None else None
        zs = [term.z(j) for j in range(term.n_coef)]
        cols: dict[str, np.ndarray] = {}
        pevs: dict[str, np.ndarray] = {}
        for j, name in enumerate(term.covariates):
            G = np.zeros((structure.n_obs, term.n_levels))
            for k in range(term.n_coef):
                if S[j, k] != 0.0:
                    zk = zs[k] if K is None else np.asarray(zs[k] @ K)
                    G += S[j, k] * (zk.toarray() if hasattr(zk, "toarray") else zk)
            label_j = "(Intercept)" if name == "Intercept" else name
            cols[label_j] = G.T @ Py
            prior = S[j, j] * (np.ones(term.n_levels) if K is None else np.diag(K))
            pevs[f"pev:{label_j}"] = prior - np.einsum("ij,ij->j", G, P @ G)
        frame = pd.DataFrame({**cols, **pevs}, index=pd.Index(term.levels, name=term.group))
        out[label] = frame
    return out
