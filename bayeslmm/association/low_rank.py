"""The scan's SNP-space route: a LOCO kinship held as its markers, never as an n × n matrix.

A LOCO kinship K_c = W_c W_cᵀ built from p_c markers (W_c the n × p_c centred, scaled LOCO
markers) has rank r ≤ p_c. When p_c is well below n, working with W_c costs less than the
dense route's O(n³) reduction of K_c and needs no n × n matrix:

1. **the kinship**: a :class:`~bayeslmm.kinship.LowRankKinship` of W_c whose thin SVD
   W_c = U₁ S^½ Vᵀ comes from the eigendecomposition of the Gram matrix W_cᵀW_c, a
   p_c × p_c sub-block of one Gram matrix of all markers (computed once per scan, O(n p²));
   O(p_c³) per chromosome;
2. **the null model** by REML through the REML engine's low-rank route
   (:meth:`~bayeslmm.kinship.LowRankKinship.rotation`: the r eigen-rows, k ≤ p + 1 rows of
   the data's part in K's null space and the multiplicity n − r − k of the rows whose data
   are 0; :class:`~bayeslmm.engines.reml.spectral.RotatedReml` with ``n_null``), the same
   optimiser as every other route: O(r p²) per evaluation;
3. **the markers** with V = σ_g² K_c + σ_e² I held at the null's estimate. With
   Λ = diag(σ_g² s / (σ_g² s + σ_e²)),

       V⁻¹ = σ_e⁻² (I − U₁ Λ U₁ᵀ),   so   xᵀV⁻¹z = σ_e⁻² (xᵀz − (U₁ᵀx)ᵀ Λ (U₁ᵀz))

   for any x, z. A block of b markers G needs U₁ᵀG (:meth:`LowRankKinship.project`,
   S^-½ Vᵀ (W_cᵀG): O(n p_c b), U₁ never formed), XᵀG and rᵀG; the GLS estimate, SE, Wald
   and likelihood-ratio statistics then follow exactly as in the dense route
   (:func:`~bayeslmm.association.stats.gls_marker_stats`).
4. **exact refits** (``exact=``): the marker joins the covariates in a new rotation
   (O(n p_c (p + 2))) and REML (or ML) is maximised over h² as in the dense route.

Nothing is approximated: the eigenvalues of W_c Wᵀ_c at or below 1e-10 of the largest (a
centred W's zero, markers in perfect LD) are the only ones set to 0, as the REML engine's
low-rank route does.

:func:`low_rank_cheaper` decides when the scan takes this route by itself (``low_rank=None``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import linalg

from bayeslmm.association.stats import (
    ExactFit,
    MarkerStats,
    exact_marker,
    gls_marker_stats,
    ml_profile_minimum,
)
from bayeslmm.engines.reml.spectral import RotatedReml, maximise_rotated
from bayeslmm.kinship.low_rank import LowRankKinship, LowRankRotation

#: How the null models of this route are computed (``ScanResult.null_models['route']``).
LOW_RANK_ROUTE = "low-rank REML (thin SVD of the kinship's markers), low-rank V⁻¹ tests"

#: Flops of a symmetric eigendecomposition with vectors (numpy's ``eigh``, divide and
#: conquer) per k³, relative to the dense route's reduction: measured at k = 5,000 on one core,
#: ``eigh`` 22.1 s against ``dsytrd`` (4/3 k³ flops) 10.7 s, so about 2 × 4/3.
EIGH_FLOPS_PER_CUBE = 8.0 / 3.0


def low_rank_cheaper(n: int, markers_per_chromosome: Sequence[int], loco: bool = True) -> bool:
    """Whether the SNP-space route costs fewer flops than the dense one for this scan.

    Dense route (per kinship: its tridiagonal reduction and Cholesky factor, 5/3 n³; the
    GRM crossproducts, n² p; the whitening of every marker, n² p) against the SNP-space route
    (the Gram matrix of all markers, n p²; per kinship of p_c markers an eigendecomposition,
    :data:`EIGH_FLOPS_PER_CUBE` · p_c³, and the projection of its m_c tested markers,
    2 m_c (n p_c + p_c²)). The SNP-space route wins roughly when every LOCO kinship has fewer
    than 0.8 n markers (0.78 n with 5 chromosomes, 0.84 n with 22), or when one whole-genome
    kinship (``loco=False``) has fewer than 0.7 n; memory never decides, but it follows:
    O(n p) against O(n²).

    Parameters
    ----------
    n : int
        Individuals.
    markers_per_chromosome : sequence of int
        Markers in the kinships (and tested) per chromosome.
    loco : bool
        One kinship per chromosome (its markers: all the others'), or one of all markers.

    Returns
    -------
    bool

    Examples
    --------
    >>> low_rank_cheaper(10_000, [500] * 10)      # 4,500 LOCO markers for 10,000 people
    True
    >>> low_rank_cheaper(5_000, [10_000] * 10)    # 90,000 LOCO markers for 5,000 people
    False
    """
    m = np.asarray(markers_per_chromosome, dtype=float)
    p = float(m.sum())
    n = float(n)
    kernels, tested = (p - m, m) if loco else (np.array([p]), np.array([p]))
    dense = 2.0 * n * n * p + kernels.size * (5.0 / 3.0) * n**3
    low = n * p * p + float(
        np.sum(EIGH_FLOPS_PER_CUBE * kernels**3 + 2.0 * tested * (n * kernels + kernels**2))
    )
    return bool(low < dense)


def fit_null(
    kinship: LowRankKinship, y: np.ndarray, X: np.ndarray
) -> tuple[np.ndarray, dict, LowRankRotation]:
    """The REML estimate θ̂ = (σ_g², σ_e²) of y = Xβ + g + e, g ~ N(0, σ_g² K), the
    :meth:`RotatedReml.evaluate` state there, and the rotation of [X, y] it used (whose
    first r rows are U₁ᵀ[X, y], which :class:`LowRankNull` takes), by the REML engine's
    low-rank rotation.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> K = LowRankKinship(rng.normal(size=(80, 20)) / np.sqrt(20), [str(i) for i in range(80)])
    >>> theta, state, rotation = fit_null(K, rng.normal(size=80), np.ones((80, 1)))
    >>> theta.shape, sorted(state)[:2], rotation.rotated.shape  # 20 eigen-rows, 2 outside
    ((2,), ['Py', 'Xw'], (22, 2))
    """
    rotation = kinship.rotation(np.column_stack([X, y]))
    model = RotatedReml(
        rotation.values,
        rotation.rotated[:, -1],
        rotation.rotated[:, :-1],
        n_null=rotation.n_null,
    )
    _, theta, state, _ = maximise_rotated(model)
    return theta, state, rotation


class LowRankNull:
    """One chromosome's null model at fixed variance components, with a low-rank kinship.

    Parameters
    ----------
    kinship : LowRankKinship
        K = W Wᵀ, rows in the order of ``y``.
    y : ndarray, shape (n,)
    X : ndarray, shape (n, p)
        Covariates.
    sigma_g2, sigma_e2 : float
        The null's variance components (σ_e² > 0).
    rotation : LowRankRotation, optional
        ``kinship.rotation([X, y])`` (:func:`fit_null`'s), whose first r rows are U₁ᵀ[X, y];
        without it they are projected afresh (O(n p_c (p + 1))).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> W = rng.normal(size=(60, 15)) / np.sqrt(15)
    >>> K = LowRankKinship(W, [str(i) for i in range(60)])
    >>> y, X = rng.normal(size=60), np.ones((60, 1))
    >>> null = LowRankNull(K, y, X, 0.5, 1.0)
    >>> x = rng.normal(size=60)
    >>> V = 0.5 * W @ W.T + np.eye(60)          # the dense GLS it equals
    >>> Xx = np.column_stack([X, x])
    >>> cov = np.linalg.inv(Xx.T @ np.linalg.solve(V, Xx))
    >>> b = cov @ Xx.T @ np.linalg.solve(V, y)
    >>> out = null.marker_stats(x[:, None])
    >>> bool(np.isclose(out.beta[0], b[-1])), bool(np.isclose(out.se[0], np.sqrt(cov[-1, -1])))
    (True, True)
    """

    def __init__(
        self,
        kinship: LowRankKinship,
        y: np.ndarray,
        X: np.ndarray,
        sigma_g2: float,
        sigma_e2: float,
        rotation: LowRankRotation | None = None,
    ) -> None:
        if not sigma_e2 > 0:
            raise np.linalg.LinAlgError(
                "V is singular under the null (σ_e² = 0 with a low-rank kinship); no GLS test "
                "exists"
            )
        s = kinship.positive_eigenvalues
        self.kinship = kinship
        self.n = int(y.size)
        self.lam = sigma_g2 * s / (sigma_g2 * s + sigma_e2)  # Λ: V⁻¹ = σ_e⁻²(I − U₁ΛU₁ᵀ)
        self.inv_e = 1.0 / sigma_e2
        self.X = X
        # U₁ᵀ[X, y], r × (p + 1)
        projected = (
            kinship.project(np.column_stack([X, y]))
            if rotation is None
            else rotation.rotated[: s.size]
        )
        self.aX = projected[:, :-1]
        xvx = self._inner(X, self.aX, X, self.aX)
        self.chol = linalg.cholesky(0.5 * (xvx + xvx.T), lower=True)
        beta = linalg.cho_solve((self.chol, True), self._inner(X, self.aX, y, projected[:, -1]))
        self.resid = y - X @ beta
        self.a_resid = projected[:, -1] - self.aX @ beta
        self.q0 = float(self._inner(self.resid, self.a_resid, self.resid, self.a_resid))
        self._null_ml: float | None = None

    def _inner(self, M: np.ndarray, aM: np.ndarray, N: np.ndarray, aN: np.ndarray):
        """Mᵀ V⁻¹ N from M, N and their projections aM = U₁ᵀM, aN = U₁ᵀN."""
        lam_aN = self.lam * aN if aN.ndim == 1 else self.lam[:, None] * aN
        return (M.T @ N - aM.T @ lam_aN) * self.inv_e

    def marker_stats(self, G: np.ndarray, test: str = "wald") -> MarkerStats:
        """b̂, SE, the statistic of ``test`` and its p-value of the markers in the columns of
        ``G`` (n × m, the rows of ``y``): the GLS fit of each with V held at the null's."""
        aG = self.kinship.project(G)  # U₁ᵀG through W: O(n p b), U₁ never formed
        lam_aG = self.lam[:, None] * aG
        xwx = (np.einsum("ij,ij->j", G, G) - np.einsum("ij,ij->j", aG, lam_aG)) * self.inv_e
        xvg = (self.X.T @ G - self.aX.T @ lam_aG) * self.inv_e  # XᵀV⁻¹G, p × m
        A = linalg.solve_triangular(self.chol, xvg, lower=True)
        xpx = xwx - np.einsum("ij,ij->j", A, A)
        xpy = (G.T @ self.resid - lam_aG.T @ self.a_resid) * self.inv_e  # GᵀV⁻¹(y − Xβ̂)
        return gls_marker_stats(xwx, xpx, xpy, self.q0, self.n, test)

    def refit_marker(self, y: np.ndarray, x: np.ndarray, test: str = "wald") -> ExactFit:
        """The marker ``x`` refitted with its own variance components (REML for the Wald
        test; ML under both models for the likelihood ratio), in the rotation of
        [X, x, y] by the kinship's thin SVD (:func:`~bayeslmm.association.stats.exact_marker`).
        """
        p = self.X.shape[1]
        rotation = self.kinship.rotation(np.column_stack([self.X, x, y]))
        values, n_null = rotation.values, rotation.n_null

        def factory(Uy: np.ndarray, UX: np.ndarray, criterion: str) -> RotatedReml:
            return RotatedReml(values, Uy, UX, criterion=criterion, n_null=n_null)  # type: ignore[arg-type]

        Uy, UX, g = rotation.rotated[:, -1], rotation.rotated[:, :p], rotation.rotated[:, p]
        if test == "lrt" and self._null_ml is None:  # once per chromosome
            self._null_ml = ml_profile_minimum(factory, Uy, UX)
        return exact_marker(factory, Uy, UX, g, test=test, null_ml=self._null_ml)
