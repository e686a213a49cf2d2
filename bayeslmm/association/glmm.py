"""Association scans of binary and count traits: score tests with saddle-point p-values.

For every chromosome, as SAIGE's two steps (Zhou et al. 2018, Nat. Genet. 50:1335):

1. **The null GLMM** on the chromosome's (LOCO) kinship K: η = offset + Xβ + u,
   u ~ N(0, τ K) (plus an observation-level effect for an overdispersed Poisson trait),
   y | η from the family. τ (and the observation-level variance) maximise the Laplace
   approximation of the likelihood with β and u at their joint mode: the criterion of the
   first stage of ``glmer`` (``nAGQ = 0``, :meth:`LaplaceProblem.deviance_nagq0
   <bayeslmm.engines.laplace.LaplaceProblem.deviance_nagq0>`), computed here in the
   observation space so that one Newton step costs one n × n Cholesky factor:
   with W the Fisher weights at η, V = τK (+ σ²_olre I) and B = I + W^½ V W^½,

       d₀(τ) = −2 log p(y | η̂) + âᵀ V â + log det B,     û = V â,

   and (β̂, â) solve the mixed-model equations of the working response z = η + s/W (s the
   score d log p / dη): β̂ = (XᵀΣ⁻¹X)⁻¹XᵀΣ⁻¹z, â = Σ⁻¹(z − Xβ̂), Σ = W⁻¹ + V, with
   Σ⁻¹ = W^½ B⁻¹ W^½ (defined where some W_i are 0, and B is well conditioned).
2. **Score tests** of every marker g of the chromosome with the null's μ̂ (random effects at
   their mode): T = g̃ᵀ s with g̃ = g − X(XᵀWX)⁻¹XᵀWg (s = y − μ̂ for a canonical link), and
   its exact variance Var(T) = g̃ᵀ P g̃, P = Σ⁻¹ − Σ⁻¹X(XᵀΣ⁻¹X)⁻¹XᵀΣ⁻¹, from the dense
   Cholesky factor of B (one triangular solve per block of markers: BLAS-3) instead of
   SAIGE's variance-ratio approximation. The normal p-value of T/SD(T) is ``p_normal``.
   Where |T|/SD(T) ≥ :data:`SPA_CUTOFF` the p-value is the saddle-point approximation
   (Lugannani–Rice, Barndorff-Nielsen's form) of the tail of S = Σ_i a_i (y_i − μ̂_i),
   a_i = g̃_i h'(η̂_i)/V(η̂_i), for independent y_i of the family with means μ̂_i, at the
   observed T rescaled by √(Var_indep(S) / Var(T)) (SAIGE's SPA: Dey et al. 2017,
   Am. J. Hum. Genet. 101:37; Zhou et al. 2018). The two tails are computed separately.
   Markers with a minor allele count of at most ``rare_mac`` (default :data:`RARE_MAC`, the
   scan's option) instead get the exact tail
   of their carriers' outcomes given everyone else's (:func:`carrier_pvalue`,
   :meth:`ScoreTester.leave_out`): the rescaled statistic of a marker with one or two copies
   lands beyond the last atom of a discrete distribution, where the SPA is far too small.
3. Markers with p below ``wald_threshold``: one refit of the model with the marker as a
   fixed effect (τ held at the null's, β and u at their joint mode), giving the Wald
   estimate ``beta`` and its ``se`` from (X̃ᵀΣ⁻¹X̃)⁻¹ at that mode; NaN for both where the
   refit has no finite mode (separation: a rare allele carried by cases only).

The family supplies every distribution-specific formula (mean, Fisher weight, score,
cumulant-generating function: :meth:`bayeslmm.families.Family.response_cgf`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg as la
from scipy import special

from bayeslmm.association.driver import scan_chromosomes
from bayeslmm.association.stats import chi2_pvalue
from bayeslmm.errors import DataError, SpecificationError
from bayeslmm.families import Family
from bayeslmm.kinship.grm import _centred_blocks, _Dosages, _SnpSelection

#: |T| / SD(T) from which the saddle-point approximation replaces the normal p-value (SAIGE
#: uses 2): below it the two agree to a few per cent.
SPA_CUTOFF = 2.0

#: Default ``wald_threshold``: markers with p below it get a Wald refit (genome-wide
#: significance; each refit costs a few n × n Cholesky factors).
WALD_THRESHOLD = 5e-8

#: Upper bound of each standard deviation θ in the null fit's search (link scale).
THETA_MAX = 10.0

#: Columns of the table of a non-Gaussian scan, in order (A1/A2 only when known).
GLMM_COLUMNS = (
    "SNP", "chr", "bp", "A1", "A2", "freq", "n", "mac", "score", "score_se", "beta", "se",
    "chi2", "p", "p_normal", "spa",
)  # fmt: skip

#: A marker whose g̃ᵀPg̃ is below this share of g̃ᵀWg̃ lies in the span of the covariates.
COLLINEAR_RTOL = 1e-10

#: Markers whose minor allele count (over the carriers, see :func:`carrier_pvalue`) is at most
#: this get the exact tail of the carriers' outcomes instead of the saddle-point p-value.
RARE_MAC = 10

#: A carrier holds at least this many copies of the minor allele (imputed means below it are
#: not carriers).
CARRIER_DOSAGE = 0.5

#: |β̂| (link scale, per allele) beyond which a Wald refit is taken as separated: the
#: estimate runs off to infinity (quasi-complete separation) rather than converging.
WALD_BETA_MAX = 15.0


# -- checks ---------------------------------------------------------------------------------
def check_family(family: Family, y: np.ndarray, trials: np.ndarray | None) -> None:
    """Refuse a family the score test cannot take and a response with no variation.

    Examples
    --------
    >>> from bayeslmm.families import Bernoulli
    >>> check_family(Bernoulli(), np.array([0.0, 0.0]), None)
    Traceback (most recent call last):
    ...
    bayeslmm.errors.DataError: The response has no cases: every value is 0. ...
    """
    try:
        family.response_cgf(np.zeros(1), np.zeros(1), None if trials is None else trials[:1])
    except NotImplementedError as err:
        raise SpecificationError(
            f"The association scan takes Gaussian, Bernoulli, binomial and Poisson traits; the "
            f"{family.name} family has no cumulant-generating function for the saddle-point "
            f"p-values ({err}); define {type(family).__name__}.response_cgf to scan it."
        ) from None
    if np.all(y == 0):
        what = "cases" if family.binary_trials else "counts above 0"
        raise DataError(
            f"The response has no {what}: every value is 0. A scan needs both outcomes; check "
            "the coding (cases 1, controls 0) and which individuals were kept."
        )
    if family.binary_trials:
        n = np.ones_like(y) if trials is None else trials
        if np.all(y == n):
            raise DataError(
                "The response has no failures (controls): every trial is a success. A scan "
                "needs both outcomes; check the coding (cases 1, controls 0) and the trials."
            )


# -- the null model -------------------------------------------------------------------------
@dataclasses.dataclass
class Mode:
    """The joint mode of (β, u) at fixed variances, and what the tests need from it."""

    theta: np.ndarray  # standard deviations: the kinship term's, then the olre's
    beta: np.ndarray
    a: np.ndarray  # u = V a
    eta: np.ndarray
    weight: np.ndarray  # Fisher weights W
    score: np.ndarray  # d log p / dη
    chol: np.ndarray  # upper Cholesky factor of B = I + W^½ V W^½
    deviance: float  # d₀: −2 log p(y | η) + aᵀVa + log det B
    xtsx_inv: np.ndarray  # (XᵀΣ⁻¹X)⁻¹
    steps: int

    @property
    def root_weight(self) -> np.ndarray:
        return np.sqrt(self.weight)


class NullProblem:
    """The GLMM η = offset + Xβ + u, u ~ N(0, τK) (+ iid), as a function of its SDs θ.

    Parameters
    ----------
    y, X : ndarray
        Response (n) and fixed-effect design (n × p).
    K : ndarray
        The kinship (n × n), positive semi-definite.
    family : Family
        A non-Gaussian family; with an observation-level effect
        (``Family.has_observation_level_effect``) V = τK + σ²_olre I.
    trials, offset : ndarray, optional

    Examples
    --------
    >>> from bayeslmm.families import Bernoulli
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 30).astype(float)
    >>> problem = NullProblem(y, np.ones((30, 1)), np.eye(30), Bernoulli())
    >>> mode = problem.mode(np.array([0.0]))  # no random effect: the logistic regression
    >>> bool(np.isclose(mode.beta[0], np.log(y.mean() / (1 - y.mean()))))
    True
    """

    def __init__(
        self,
        y: np.ndarray,
        X: np.ndarray,
        K: np.ndarray,
        family: Family,
        trials: np.ndarray | None = None,
        offset: np.ndarray | None = None,
    ) -> None:
        self.y, self.X, self.K = y, X, K
        self.family, self.trials = family, trials
        self.offset = np.zeros(y.size) if offset is None else offset
        self.n_theta = 2 if family.has_observation_level_effect else 1
        self.n_evals = 0
        self._start: tuple[np.ndarray, np.ndarray] | None = None
        self._buffer: np.ndarray | None = None

    def variance(self, theta: np.ndarray) -> np.ndarray:
        """V = θ₀² K (+ θ₁² I), a new n × n array."""
        V = self.K * theta[0] ** 2
        if self.n_theta > 1:
            V[np.diag_indices_from(V)] += theta[1] ** 2
        return V

    def _times_variance(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """V v without forming V."""
        out = theta[0] ** 2 * (self.K @ v)
        if self.n_theta > 1:
            out += theta[1] ** 2 * v
        return out

    def _cholesky(self, theta: np.ndarray, sw: np.ndarray, buffer: np.ndarray | None):
        """Upper Cholesky factor of B = I + W^½ V W^½, built in ``buffer`` when given (two
        passes over K, no V formed)."""
        B = np.multiply(self.K, sw[:, None], out=buffer)
        B *= (theta[0] ** 2 * sw)[None, :]
        diag = np.diag_indices_from(B)
        B[diag] += 1.0
        if self.n_theta > 1:
            B[diag] += theta[1] ** 2 * sw**2
        # B is symmetric: its C-ordered buffer is the Fortran one of Bᵀ = B
        return la.cholesky(B.T, lower=False, overwrite_a=True, check_finite=False)

    def _pen(self, eta: np.ndarray, a: np.ndarray, u: np.ndarray) -> float:
        return float(-2.0 * np.sum(self.family.loglik(self.y, eta, self.trials)) + a @ u)

    def mode(
        self,
        theta: np.ndarray,
        X: np.ndarray | None = None,
        start: tuple[np.ndarray, np.ndarray] | None = None,
        tol: float = 1e-9,
        scratch: bool = False,
    ) -> Mode:
        """The joint mode of (β, u) at the SDs ``theta`` (Newton steps with Fisher weights,
        step halving on the penalised deviance), for the design ``X`` (the null's by default).

        ``scratch``: build the Cholesky factor in a buffer that the next call with
        ``scratch=True`` overwrites (the search over θ, which keeps only the deviance).
        """
        self.n_evals += 1
        theta = np.abs(np.asarray(theta, dtype=float))
        X = self.X if X is None else X
        fam, y, trials = self.family, self.y, self.trials
        if scratch and self._buffer is None:
            self._buffer = np.empty_like(self.K)
        buffer = self._buffer if scratch else None
        if scratch:  # only the deviance is kept: its error is of order tol²
            tol = max(tol, 1e-6)
        if start is None:
            start = self._start if X is self.X and self._start is not None else None
        if start is None:
            beta, a = np.zeros(X.shape[1]), np.zeros(y.size)
            beta = _glm_start(self, X)
        else:
            beta, a = start[0].copy(), start[1].copy()
        u = self._times_variance(theta, a)
        eta = self.offset + X @ beta + u
        pen = self._pen(eta, a, u)
        steps = 0
        while steps < 100:
            steps += 1
            w = fam.fisher_weight(eta, trials)
            s = fam.score(y, eta, trials)
            sw = np.sqrt(w)
            chol = self._cholesky(theta, sw, buffer)
            # Σ⁻¹ v = W^½ B⁻¹ W^½ v; the working response z = η − offset + s / W
            r = sw * (eta - self.offset) + np.divide(s, sw, out=np.zeros_like(s), where=sw > 0)
            rhs = np.column_stack([r, sw[:, None] * X])
            sol = la.cho_solve((chol, False), rhs, check_finite=False) * sw[:, None]
            siz, six = sol[:, 0], sol[:, 1:]
            xtsx_inv = np.linalg.inv(X.T @ six)
            beta_new = xtsx_inv @ (X.T @ siz)
            a_new = siz - six @ beta_new
            d_beta, d_a = beta_new - beta, a_new - a
            d_u = self._times_variance(theta, d_a)
            d_eta = X @ d_beta + d_u
            if np.max(np.abs(d_eta)) < tol * (1.0 + np.max(np.abs(eta))):
                break
            step = 1.0
            while True:
                a_try = a + step * d_a
                u_try = u + step * d_u
                eta_try = eta + step * d_eta
                pen_try = self._pen(eta_try, a_try, u_try)
                if pen_try <= pen + 1e-13 * abs(pen) or step < 1e-8:
                    break
                step *= 0.5
            if step < 1e-8:  # no further decrease at machine precision: at the mode
                break
            beta, a, u, eta, pen = beta + step * d_beta, a_try, u_try, eta_try, pen_try
        logdet = 2.0 * float(np.sum(np.log(np.diag(chol))))
        if X is self.X:
            self._start = (beta, a)
        return Mode(
            theta=theta,
            beta=beta,
            a=a,
            eta=eta,
            weight=w,
            score=s,
            chol=chol,
            deviance=pen + logdet,
            xtsx_inv=xtsx_inv,
            steps=steps,
        )

    def deviance(self, theta: np.ndarray) -> float:
        """d₀(θ): the Laplace deviance with β and u at their joint mode (glmer's nAGQ = 0)."""
        return self.mode(np.atleast_1d(theta), scratch=True).deviance

    def fit(self, theta_start: np.ndarray | None = None) -> Mode:
        """The SDs θ minimising d₀, and the mode there.

        One SD: Brent's method on [0, :data:`THETA_MAX`]; from a ``theta_start`` (the previous
        chromosome's), a parabola through three points around it, or 0 again where d₀ rises
        from 0, with Brent's method only when the optimum is not nearby. Two (an
        observation-level effect): L-BFGS-B with central-difference gradients from
        ``theta_start`` (or 0.5 each).
        """
        if self.n_theta == 1 and theta_start is not None and theta_start[0] <= 0.05:
            # the previous chromosome's τ̂ was (near) 0: keep 0 while d₀ rises away from it
            # (d₀ is even in θ, so 0 is a stationary point)
            if self.deviance(np.array([0.05])) >= self.deviance(np.zeros(1)):
                self._buffer = None
                return self.mode(np.zeros(1))
        if self.n_theta == 1 and theta_start is not None and theta_start[0] > 0.05:
            # warm start (the previous chromosome's θ̂): a parabola through three points
            near = _parabola_vertex(lambda t: self.deviance(np.array([t])), theta_start[0])
            if near is not None:
                self._buffer = None
                vertex, best_theta, best_deviance = near
                mode = self.mode(np.array([vertex]))
                if mode.deviance <= best_deviance + 1e-8:
                    return mode
                return self.mode(np.array([best_theta]))
        from scipy import optimize  # imported here: loading it slows `import bayeslmm`

        if self.n_theta == 1:
            res = optimize.minimize_scalar(
                lambda t: self.deviance(np.array([t])),
                bounds=(0.0, THETA_MAX),
                method="bounded",
                options={"xatol": 1e-3},
            )
            theta = np.array([float(res.x)])
            # Brent never evaluates the bound: a variance at 0 is taken there exactly
            if theta[0] < 1e-3 and self.deviance(np.zeros(1)) <= float(res.fun):
                theta = np.zeros(1)
        else:
            x0 = np.full(2, 0.5) if theta_start is None else np.asarray(theta_start, float)
            res = optimize.minimize(
                self.deviance,
                np.clip(x0, 0.05, THETA_MAX),
                method="L-BFGS-B",
                bounds=[(0.0, THETA_MAX)] * 2,
                options={"eps": 1e-5, "ftol": 1e-10, "gtol": 1e-4},
            )
            theta = np.asarray(res.x, dtype=float)
        self._buffer = None
        return self.mode(theta)


def _parabola_vertex(f, centre: float, rel: float = 0.05) -> tuple[float, float, float] | None:
    """The vertex of the parabola through ``f`` at centre × (1 − rel, 1, 1 + rel), and the
    best of those three points with its value; None where the parabola opens downwards or
    its vertex lies beyond ±4 × rel (then a full search is due).

    Examples
    --------
    >>> vertex, best, value = _parabola_vertex(lambda t: (t - 1.03) ** 2, 1.0)
    >>> round(vertex, 6), best
    (1.03, 1.05)
    """
    h = rel * centre
    xs = np.array([centre - h, centre, centre + h])
    fs = np.array([f(x) for x in xs])
    curvature = fs[0] - 2.0 * fs[1] + fs[2]
    if not curvature > 0:
        return None
    vertex = centre - h * (fs[2] - fs[0]) / (2.0 * curvature)
    if abs(vertex - centre) > 4.0 * h:
        return None
    best = int(np.argmin(fs))
    return float(vertex), float(xs[best]), float(fs[best])


def _glm_start(problem: NullProblem, X: np.ndarray) -> np.ndarray:
    """β of the GLM without random effects (Fisher scoring from the link of the mean)."""
    fam, y, trials = problem.family, problem.y, problem.trials
    beta = np.zeros(X.shape[1])
    eta = problem.offset + X @ beta
    for _ in range(50):
        w = fam.fisher_weight(eta, trials)
        s = fam.score(y, eta, trials)
        step = np.linalg.lstsq(X.T @ (w[:, None] * X), X.T @ s, rcond=None)[0]
        beta = beta + step
        eta = problem.offset + X @ beta
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta if np.all(np.isfinite(beta)) else np.zeros(X.shape[1])


# -- the tests --------------------------------------------------------------------------------
@dataclasses.dataclass
class MarkerTests:
    """Score tests of a block of markers (one value per marker)."""

    score: np.ndarray
    score_se: np.ndarray
    p: np.ndarray
    p_normal: np.ndarray
    spa: np.ndarray  # whether the saddle-point approximation gave p
    mac: np.ndarray  # minor allele count over the carriers; p exact where ≤ RARE_MAC


class ScoreTester:
    """Score statistics, exact variances and SPA p-values against one null fit.

    Examples
    --------
    >>> from bayeslmm.families import Bernoulli
    >>> rng = np.random.default_rng(1)
    >>> n = 40
    >>> y = (rng.uniform(size=n) < 0.3).astype(float)
    >>> problem = NullProblem(y, np.ones((n, 1)), np.eye(n), Bernoulli())
    >>> tester = ScoreTester(problem, problem.mode(np.array([0.5])))
    >>> out = tester.test(rng.binomial(2, 0.3, size=(n, 3)).astype(float))
    >>> out.p.shape
    (3,)
    """

    def __init__(
        self,
        problem: NullProblem,
        mode: Mode,
        spa_cutoff: float = SPA_CUTOFF,
        rare_mac: float = RARE_MAC,
    ) -> None:
        self.problem, self.mode = problem, mode
        self.family, self.trials = problem.family, problem.trials
        self.spa_cutoff = float(spa_cutoff)
        self.rare_mac = float(rare_mac)
        X, w, sw = problem.X, mode.weight, mode.root_weight
        self.X = X
        # g̃ = g − X (XᵀWX)⁻¹ XᵀW g: SAIGE's projection of the covariates
        self._wx_solve = np.linalg.pinv(X.T @ (w[:, None] * X)) @ (w[:, None] * X).T
        C = la.solve_triangular(mode.chol, sw[:, None] * X, trans="T", check_finite=False)
        self._Q = np.linalg.qr(C)[0]
        # S = Σ a_i (y_i − μ_i) with a_i = g̃_i c_i, c = h'/V: the score per unit of y
        eta = mode.eta
        self._c = self.family.d_inverse_link(eta) / self.family.variance_function(eta)
        _, mean, var = self.family.response_cgf(np.zeros_like(eta), eta, self.trials)
        self._mean, self._var = mean, var
        self._sigma_inv: np.ndarray | None = None
        self._six: np.ndarray | None = None

    def leave_out(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of the linear predictors η_C of the individuals ``rows`` given
        every other individual's outcome, in the null's working (linearised) model.

        The working response z = η̂ + s/W is N(Xβ, Σ) with β profiled out: the residual of
        z_C from its prediction by the others is P_CC⁻¹ (P z)_C = P_CC⁻¹ s_C (at the mode
        P z = â = s) with variance P_CC⁻¹. Hence E[η_C | others] = η̂_C + s_C / W_C −
        P_CC⁻¹ s_C and Var(η_i | others) = (P_CC⁻¹)_ii − 1/W_i: the fit η̂_C leans towards
        the carriers' own outcomes (by their leverage), this does not.
        Σ⁻¹ is formed once per null fit (an n × n inverse from B's Cholesky factor, about two
        Cholesky factors' work), when a rare marker first needs it.
        """
        if self._sigma_inv is None:
            sw = self.mode.root_weight
            # B⁻¹ from B's Cholesky factor (LAPACK potri: 2n³/3 flops), upper triangle
            Si, info = la.lapack.dpotri(self.mode.chol, lower=0)
            if info != 0:
                raise np.linalg.LinAlgError(f"dpotri failed ({info})")
            for start in range(0, Si.shape[0], 512):  # mirror it, a column block at a time
                stop = start + 512
                Si[stop:, start:stop] = Si[start:stop, stop:].T
                square = Si[start:stop, start:stop]
                square[:] = np.triu(square) + np.triu(square, 1).T
            Si *= sw[:, None]
            Si *= sw[None, :]
            self._sigma_inv = Si
            self._six = Si @ self.X
        Si, six, M = self._sigma_inv, self._six, self.mode.xtsx_inv
        P = Si[np.ix_(rows, rows)] - six[rows] @ M @ six[rows].T
        s, w = self.mode.score[rows], self.mode.weight[rows]
        P_inv = np.linalg.pinv(P)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = self.mode.eta[rows] + np.where(w > 0, s / w, 0.0) - P_inv @ s
            var = np.maximum(np.diag(P_inv) - np.where(w > 0, 1.0 / w, 0.0), 0.0)
        return mean, var

    def residualise(self, G: np.ndarray) -> np.ndarray:
        """g̃ for each column of ``G``."""
        return G - self.X @ (self._wx_solve @ G)

    def variance(self, Gt: np.ndarray) -> np.ndarray:
        """g̃ᵀ P g̃ per column, through the Cholesky factor of B."""
        A = la.solve_triangular(
            self.mode.chol, self.mode.root_weight[:, None] * Gt, trans="T", check_finite=False
        )
        proj = self._Q.T @ A
        return np.einsum("ij,ij->j", A, A) - np.einsum("ij,ij->j", proj, proj)

    def test(self, G: np.ndarray) -> MarkerTests:
        """Score tests of the markers in the columns of ``G`` (allele counts, n × m)."""
        Gt = self.residualise(G)
        T = Gt.T @ self.mode.score
        var = self.variance(Gt)
        scale = np.einsum("ij,i,ij->j", Gt, self.mode.weight, Gt)
        var = np.where(var > COLLINEAR_RTOL * scale, var, np.nan)
        se = np.sqrt(var)
        z = T / se
        p_normal = chi2_pvalue(z**2)
        p = p_normal.copy()
        tail = np.flatnonzero(np.abs(z) >= self.spa_cutoff)
        spa = np.zeros(T.size, dtype=bool)
        if tail.size:
            a = Gt[:, tail] * self._c[:, None]
            indep = np.einsum("ij,i,ij->j", a, self._var, a)
            q = np.abs(T[tail]) * np.sqrt(indep / var[tail])
            p_spa, ok = saddlepoint_pvalue(q, a, self.mode.eta, self.family, self.trials)
            p[tail[ok]] = p_spa[ok]
            spa[tail[ok]] = True
        # very rare markers: the exact tail of the carriers' outcomes given everyone else's
        minor = minor_allele_counts(G)
        carrier = minor >= CARRIER_DOSAGE
        mac = np.sum(np.where(carrier, minor, 0.0), axis=0)
        for j in np.flatnonzero((mac <= self.rare_mac) & (mac > 0) & np.isfinite(var)):
            rows = np.flatnonzero(carrier[:, j])
            eta_mean, eta_var = self.leave_out(rows)
            exact = carrier_pvalue(
                minor[rows, j],
                self.problem.y[rows],
                eta_mean,
                eta_var,
                self.family,
                None if self.trials is None else self.trials[rows],
            )
            if np.isfinite(exact):
                p[j], spa[j] = exact, False
        return MarkerTests(score=T, score_se=se, p=p, p_normal=p_normal, spa=spa, mac=mac)

    def wald(self, g: np.ndarray) -> tuple[float, float]:
        """β and SE of one marker as a fixed effect, τ held at the null's (joint mode).

        NaN, NaN where the refit has no finite mode: with quasi-complete separation (e.g. the
        only carrier of a rare allele is a case) β̂ runs off to infinity, the carriers' Fisher
        weights vanish and the information matrix turns singular.
        """
        problem, mode = self.problem, self.mode
        X1 = np.column_stack([problem.X, g])
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                fit = problem.mode(mode.theta, X=X1, start=(np.r_[mode.beta, 0.0], mode.a))
        except (np.linalg.LinAlgError, la.LinAlgError, ValueError):
            return np.nan, np.nan
        beta, var = float(fit.beta[-1]), float(fit.xtsx_inv[-1, -1])
        settled = fit.steps < 100 and np.isfinite(beta) and np.isfinite(var) and var > 0
        if not settled or abs(beta) > WALD_BETA_MAX:
            return np.nan, np.nan
        return beta, float(np.sqrt(var))


def minor_allele_counts(G: np.ndarray) -> np.ndarray:
    """Copies of each column's minor allele per individual: G, or 2 − G where the counted
    allele is the major one (mean of the column above 1).

    Examples
    --------
    >>> minor_allele_counts(np.array([[0.0, 2.0], [1.0, 2.0], [0.0, 1.0]])).tolist()
    [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    """
    flip = np.mean(G, axis=0) > 1.0
    return np.where(flip[None, :], 2.0 - G, G)


def carrier_pvalue(
    dose: np.ndarray,
    y: np.ndarray,
    eta_mean: np.ndarray,
    eta_var: np.ndarray,
    family: Family,
    trials: np.ndarray | None = None,
    max_atoms: int = 1_000_000,
    nodes: int = 32,
) -> float:
    """Exact two-sided p-value P(|S| ≥ |s_obs|) of the carriers' outcomes of a rare marker.

    S = Σ_i d_i (y_i − E y_i) over the carriers i (``dose`` d_i copies of the minor allele),
    each y_i independent with η_i ~ N(``eta_mean``_i, ``eta_var``_i) (the carrier's linear
    predictor given everyone else's outcomes, :meth:`ScoreTester.leave_out`) and y_i | η_i
    from the family; s_obs is S at the observed ``y``. Each carrier's distribution is its
    family's probabilities averaged over η_i (Gauss–Hermite, ``nodes`` points), on 0 or 1
    for a Bernoulli trait, 0 … n_i for a binomial one and the counts holding all but 1e-12
    of the mass for a Poisson one; the distribution of S is enumerated over the carriers'
    outcomes, equal sums merged.

    Returns NaN where the enumeration would exceed ``max_atoms`` distinct sums or the
    family's support is not a set of counts (then the saddle point is used).

    Examples
    --------
    One carrier, a case whose probability given the others is 0.13: the tail is
    P(y = 1) = 0.13 (a control's is 1: no outcome is more extreme).

    >>> from bayeslmm.families import Bernoulli
    >>> from scipy.special import logit
    >>> eta = logit(np.array([0.13]))
    >>> round(carrier_pvalue(np.ones(1), np.ones(1), eta, np.zeros(1), Bernoulli()), 6)
    0.13
    >>> carrier_pvalue(np.ones(1), np.zeros(1), eta, np.zeros(1), Bernoulli())
    1.0
    """
    x, wq = special.roots_hermitenorm(nodes)
    wq = wq / wq.sum()
    values, probs = np.zeros(1), np.ones(1)
    s_obs = 0.0
    scale = 0.0
    for k in range(dose.size):
        etas = eta_mean[k] + np.sqrt(max(float(eta_var[k]), 0.0)) * x
        n_k = None if trials is None else float(trials[k])
        if family.binary_trials:
            support = np.arange(int(1 if n_k is None else n_k) + 1, dtype=float)
        else:
            tr = None if n_k is None else np.full(nodes, n_k)
            _, mean, var = family.response_cgf(np.zeros(nodes), etas, tr)
            top = float(np.max(mean + 12.0 * np.sqrt(var)) + 12.0)
            if not np.isfinite(top) or top > 1e5:
                return np.nan
            support = np.arange(int(np.ceil(top)) + 1, dtype=float)
        grid_y = np.broadcast_to(support[:, None], (support.size, nodes))
        grid_eta = np.broadcast_to(etas[None, :], grid_y.shape)
        grid_n = None if n_k is None else np.full(grid_y.shape, n_k)
        with np.errstate(over="ignore", under="ignore"):
            pmf = np.exp(family.loglik(grid_y, grid_eta, grid_n)) @ wq
        if not abs(pmf.sum() - 1.0) < 1e-9:  # not a distribution on these counts
            return np.nan
        expected = float(support @ pmf)
        s_obs += dose[k] * (y[k] - expected)
        keep = pmf > 1e-16
        step = dose[k] * (support[keep] - expected)
        scale = max(scale, float(np.max(np.abs(step))))
        values = (values[:, None] + step[None, :]).ravel()
        probs = (probs[:, None] * pmf[keep][None, :]).ravel()
        # equal sums merged (whole dosages: a lattice), so the support stays small
        grid = max(scale, 1e-300) * 1e-10
        merged, which = np.unique(np.round(values / grid), return_inverse=True)
        if merged.size > max_atoms:
            return np.nan
        probs = np.bincount(which.ravel(), weights=probs)
        values = merged * grid
    edge = abs(s_obs) - 1e-8 * max(scale, 1e-300)
    return float(min(np.sum(probs[np.abs(values) >= edge]), 1.0))


def saddlepoint_pvalue(
    q: np.ndarray,
    a: np.ndarray,
    eta: np.ndarray,
    family: Family,
    trials: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided saddle-point p-values P(|S| ≥ q) of S = Σ_i a_i (y_i − E y_i).

    The y_i are independent, from ``family`` at the linear predictors ``eta``; each column
    of ``a`` (n × m) is one statistic, ``q`` (m, ≥ 0) its observed value. Each tail is
    Lugannani–Rice's approximation in Barndorff-Nielsen's form, Φ̄(w + log(v/w)/w), with the
    saddle point ζ solving K'(ζ) = ±q by safeguarded Newton steps.

    Returns
    -------
    p : ndarray
        The two-sided p-values.
    ok : ndarray of bool
        Whether both saddle points were found (the observed value lies inside the support of
        S); where not, ``p`` is NaN.

    Examples
    --------
    >>> from bayeslmm.families import Poisson
    >>> a = np.ones((50, 1))  # S + 50 = Σ y_i ~ Poisson(50), on the integers
    >>> family = Poisson(overdispersion=False)
    >>> p, ok = saddlepoint_pvalue(np.array([19.5]), a, np.zeros(50), family)
    >>> from scipy import stats
    >>> exact = stats.poisson.sf(69, 50) + stats.poisson.cdf(30, 50)  # P(|S| ≥ 20)
    >>> bool(abs(p[0] / exact - 1) < 0.01)
    True
    """
    upper, ok_up = _tail(q, a, eta, family, trials)
    lower, ok_low = _tail(q, -a, eta, family, trials)
    ok = ok_up & ok_low
    return np.where(ok, np.minimum(upper + lower, 1.0), np.nan), ok


def _cgf_sum(t: np.ndarray, a: np.ndarray, eta: np.ndarray, family: Family, trials, mean):
    """K, K', K'' of S = Σ a_i (y_i − mean_i) at t (one t per column of a)."""
    ta = a * t[None, :]
    eta_b = np.broadcast_to(eta[:, None], ta.shape)
    tr = None if trials is None else np.broadcast_to(trials[:, None], ta.shape)
    K, K1, K2 = family.response_cgf(ta, eta_b, tr)
    value = np.sum(K, axis=0) - t * (mean @ a)
    first = np.einsum("ij,ij->j", a, K1) - mean @ a
    second = np.einsum("ij,ij->j", a * a, K2)
    return value, first, second


def _tail(q, a, eta, family, trials, max_iter: int = 100):
    """Upper tails P(S ≥ q) for q > 0, each column of ``a`` one S."""
    _, mean, var = family.response_cgf(np.zeros_like(eta), eta, trials)
    var0 = np.einsum("ij,i,ij->j", a, var, a)
    t = q / var0  # the normal's saddle point
    lo, hi = np.zeros_like(q), np.full_like(q, np.inf)
    # past t·max|a| of this size every tilted observation sits at its support's edge
    t_limit = 700.0 / np.maximum(np.max(np.abs(a), axis=0), 1e-300)
    done = np.zeros(q.size, dtype=bool)
    ok = np.ones(q.size, dtype=bool)
    for _ in range(max_iter):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        _, first, second = _cgf_sum(t[act], a[:, act], eta, family, trials, mean)
        f = first - q[act]
        above = f > 0
        hi[act] = np.where(above, np.minimum(hi[act], t[act]), hi[act])
        lo[act] = np.where(above, lo[act], np.maximum(lo[act], t[act]))
        t_new = t[act] - f / second
        outside = ~((t_new > lo[act]) & (t_new < hi[act])) | ~np.isfinite(t_new)
        expand = outside & ~np.isfinite(hi[act])
        t_new = np.where(outside, np.where(expand, 2.0 * t[act], 0.5 * (lo[act] + hi[act])), t_new)
        # a flat stretch of K' can throw Newton far out: no further than the limit, and no
        # root when K' is still below q there
        no_root = lo[act] >= t_limit[act]
        t_new = np.minimum(t_new, t_limit[act])
        at_root = np.abs(f) <= 1e-12 * np.sqrt(var0[act])
        t_new = np.where(at_root, t[act], t_new)  # (f = 0 sets lo = t: no bisection then)
        converged = at_root | (np.abs(t_new - t[act]) <= 1e-10 * (1.0 + np.abs(t[act])))
        t[act] = t_new
        ok[act[no_root]] = False
        done[act[converged | no_root]] = True
    ok &= done
    value, _, second = _cgf_sum(t, a, eta, family, trials, mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.sqrt(np.maximum(2.0 * (t * q - value), 0.0))
        v = t * np.sqrt(second)
        tail = special.ndtr(-(w + np.log(v / w) / w))
    ok &= np.isfinite(tail)
    return np.where(ok, tail, np.nan), ok


# -- the scan ---------------------------------------------------------------------------------
def run(
    spec: Any,
    dos: _Dosages,
    sel: _SnpSelection,
    chrom: np.ndarray,
    order: list[str],
    kinships: Any,
    wald_threshold: float,
    block_size: int,
    show_progress: bool,
    notes: list[str],
    rare_mac: float = RARE_MAC,
) -> dict[str, Any]:
    """Null fits and score tests of every chromosome (see the module docstring); markers with
    a minor allele count up to ``rare_mac`` get the exact carrier test."""
    family: Family = spec.family
    y = np.asarray(spec.y, dtype=float)
    X = np.asarray(spec.X, dtype=float)
    trials = None if spec.trials is None else np.asarray(spec.trials, dtype=float)
    offset = None if spec.offset is None else np.asarray(spec.offset, dtype=float)
    check_family(family, y, trials)
    tests = _ScoreTests(
        y, X, family, trials, offset, dos, sel, chrom.size, wald_threshold, rare_mac
    )
    null_rows, timing, caught = scan_chromosomes(
        order, kinships, dos, block_size, show_progress, tests
    )
    arrays, separated, no_fit = tests.arrays, tests.separated, tests.no_fit
    with np.errstate(divide="ignore"):
        arrays["chi2"] = np.where(np.isfinite(arrays["p"]), special.chdtri(1, arrays["p"]), np.nan)
    if no_fit:
        notes.append(
            "the null model's Newton iterations did not settle for chromosomes " + ", ".join(no_fit)
        )
    untestable = int(np.isnan(arrays["p"][sel.keep]).sum())
    if untestable:
        notes.append(
            f"{untestable} markers are collinear with the covariates and have no test (NaN)"
        )
    if separated:
        notes.append(
            f"{len(separated)} markers below wald_threshold have no Wald estimate (beta and se "
            "NaN): the refit with the marker has no finite mode, as when the carriers of a rare "
            "allele are all cases or all controls (separation); their score-test p stands"
        )
    return {"arrays": arrays, "null_rows": null_rows, "_timing": timing, "_caught": caught}


class _ScoreTests:
    """A binary or count scan's null GLMM, score tests and Wald refits per chromosome (for
    :func:`~bayeslmm.association.driver.scan_chromosomes`)."""

    stages = ("null_s", "markers_s", "wald_s")
    refit_stage = "wald_s"

    def __init__(
        self,
        y: np.ndarray,
        X: np.ndarray,
        family: Family,
        trials: np.ndarray | None,
        offset: np.ndarray | None,
        dos: _Dosages,
        sel: _SnpSelection,
        n_markers: int,
        wald_threshold: float,
        rare_mac: float,
    ) -> None:
        self.y, self.X, self.family, self.trials, self.offset = y, X, family, trials, offset
        self.dos, self.sel = dos, sel
        self.wald_threshold, self.rare_mac = wald_threshold, rare_mac
        names = ("score", "score_se", "beta", "se", "chi2", "p", "p_normal")
        self.arrays = {k: np.full(n_markers, np.nan) for k in names}
        self.arrays["spa"] = np.zeros(n_markers, dtype=bool)
        self.arrays["mac"] = np.full(n_markers, np.nan)
        self.separated: list[str] = []
        self.no_fit: list[str] = []
        self.tester: ScoreTester | None = None
        self.theta_start: np.ndarray | None = None

    def release(self) -> None:
        self.tester = None

    def fit_null(self, K: Any, label: str, times: dict[str, float]) -> dict[str, Any]:
        t0 = time.perf_counter()
        matrix = K.matrix
        problem = NullProblem(self.y, self.X, matrix, self.family, self.trials, self.offset)
        mode = problem.fit(self.theta_start)
        self.theta_start = mode.theta  # the next chromosome's kinship is much the same
        self.tester = ScoreTester(problem, mode, rare_mac=self.rare_mac)
        scale = float(np.mean(np.diag(matrix)) - np.mean(matrix))
        summary = _null_summary(problem, mode, scale)
        if not summary["converged"]:
            self.no_fit.append(str(label))
        times["null_s"] = time.perf_counter() - t0
        return summary

    def test_block(self, cols: np.ndarray, Z: np.ndarray) -> None:
        G = Z + 2.0 * self.sel.freq[cols]  # allele counts, missing at the mean
        out = self.tester.test(G)
        for name in ("score", "score_se", "p", "p_normal", "spa", "mac"):
            self.arrays[name][cols] = getattr(out, name)

    def refit(self, label: str, sub: _SnpSelection) -> dict[str, Any]:
        arrays, sel = self.arrays, self.sel
        hits = sub.keep[arrays["p"][sub.keep] < self.wald_threshold]
        for j in hits:
            single = dataclasses.replace(sel, keep=np.array([j]))
            _, Z, _ = next(_centred_blocks(self.dos, single, False, 1))
            arrays["beta"][j], arrays["se"][j] = self.tester.wald(Z[:, 0] + 2.0 * sel.freq[j])
            if np.isnan(arrays["beta"][j]):
                self.separated.append(str(j))
        return {"n_wald": int(hits.size)}


def _null_summary(problem: NullProblem, mode: Mode, scale: float) -> dict[str, Any]:
    """One row of ``null_models``: variances, latent-scale h², deviance, β."""
    tau = float(mode.theta[0] ** 2)
    olre = float(mode.theta[1] ** 2) if problem.n_theta > 1 else 0.0
    fixed = problem.offset + problem.X @ mode.beta
    residual = float(np.mean(problem.family.latent_residual_variance(fixed, scale * tau, olre)))
    row: dict[str, Any] = {
        "tau": tau,
        "h2_latent": scale * tau / (scale * tau + residual),
    }
    if problem.n_theta > 1:
        row["sigma_olre2"] = olre
    row.update(
        deviance=mode.deviance,
        boundary=bool(mode.theta[0] < 1e-6),
        converged=bool(mode.steps < 100),
        n_evals=problem.n_evals,
    )
    return row


def table(snp_map: pd.DataFrame, sel: _SnpSelection, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """The marker table of a non-Gaussian scan (:data:`GLMM_COLUMNS`)."""
    keep = sel.keep
    part = snp_map.iloc[keep].reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "SNP": part["SNP"],
            "chr": part["chr"],
            "bp": part["bp"],
            **{a: part[a] for a in ("A1", "A2") if a in part.columns},
            "freq": sel.freq[keep],
            "n": sel.called[keep].astype(np.int64),
            "mac": np.round(arrays["mac"][keep], 6),
            **{name: arrays[name][keep] for name in GLMM_COLUMNS[8:]},
        }
    )
    return frame[[c for c in GLMM_COLUMNS if c in frame.columns]]
