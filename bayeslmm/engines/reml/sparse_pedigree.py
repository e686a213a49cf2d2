"""REML of the animal model through the sparse mixed-model equations with A⁻¹.

For y = X β + Z a + e, a ~ N(0, σ_a² A) over every animal of the pedigree (ancestors without
records included), e ~ N(0, σ_e² I), and λ = σ_e²/σ_a², Henderson's equations have the
coefficient matrix

    C = [ XᵀX   XᵀZ           ]
        [ ZᵀX   ZᵀZ + λ A⁻¹   ],

whose animal block C_aa = ZᵀZ + λA⁻¹ is as sparse as A⁻¹ (about 5 non-zeros per animal).
With S = XᵀX − XᵀZ C_aa⁻¹ ZᵀX (p × p) and r = yᵀy − β̂ᵀXᵀy − âᵀZᵀy (the residual sum of
squares of the equations' solution), the restricted likelihood is (Meyer 1989, DF-REML)

    −2ℓ_R = (n − p) log σ_e² + log|A| − N log λ + log|C_aa| + log|S| + r/σ_e² + (n − p) log 2π,

log|A| = Σ log d_i in closed form (A = L D Lᵀ, |L| = 1). σ_e² is profiled out
(σ̂_e² = r/(n − p)), leaving a function of log λ alone, maximised by a coarse grid and Brent's
method. Every evaluation is one numeric sparse Cholesky factorisation of C_aa, on a
fill-reducing ordering computed once: CHOLMOD (scikit-sparse, when installed: AMD ordering,
symbolic analysis reused) or else SciPy's SuperLU with the ordering of its first
factorisation (MMD on Aᵀ + A) fixed and no pivoting. Standard errors come from the observed
information of the likelihood in (log λ, log σ_e²), by finite differences of the profile's
two λ-dependent parts, carried to (σ_a², σ_e²) by the delta method.

Breeding values â of every animal of the pedigree come from the equations' solution;
prediction error variances PEV = σ_e² [C⁻¹]_aa are computed exactly for pedigrees of at most
:data:`PEV_LIMIT` animals (the diagonal of C⁻¹ by blocked solves; no selected inversion),
and are NaN above it (with a note in the fit's messages): :func:`breeding_values` then gives
EBVs, PEVs and accuracies of the animals asked for (one factorisation, one solve each).

The factor's fill depends on the pedigree: populations with few sires per generation (as in
livestock) keep it sparse; random mating among thousands of sires per generation gives a
moral graph without small separators and a nearly dense factor (see docs/animal_model.md).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.sparse import linalg as spla

from bayeslmm.engines.reml._common import (
    Criterion,
    RawFit,
    likelihoods,
    one_term_blups,
)
from bayeslmm.engines.reml._structure import Structure
from bayeslmm.errors import SpecificationError
from bayeslmm.kinship.pedigree_inverse import SparsePedigreeKinship
from bayeslmm.spec import ModelSpec

__all__ = [
    "PEV_LIMIT",
    "ROUTE",
    "breeding_values",
    "fit_sparse_pedigree",
    "resolve_sparse_pedigree",
    "sparse_pedigree_applicable",
    "uses_sparse_pedigree",
]

#: The route's name in ``RemlFit.method`` (summary.json's ``strategy``).
ROUTE = "sparse-pedigree"

#: Pedigrees (animals) up to which the fit holds PEVs of every animal (one sparse solve per
#: animal); above it :func:`breeding_values` computes them for the animals asked for.
PEV_LIMIT = 5_000

#: Search range of log λ = log(σ_e²/σ_a²): h² from about 6·10⁻⁶ to 1 − 6·10⁻⁶.
LOG_LAMBDA_BOUNDS = (-12.0, 12.0)


def uses_sparse_pedigree(spec: ModelSpec) -> bool:
    """True when a random term's kinship is a :class:`SparsePedigreeKinship`."""
    return any(isinstance(t.kinship, SparsePedigreeKinship) for t in spec.terms)


def sparse_pedigree_applicable(spec: ModelSpec) -> bool:
    """True for the animal model: one single-coefficient term with a sparse pedigree kinship
    and one residual variance (fixed effects free).

    Examples
    --------
    >>> import pandas as pd
    >>> import bayeslmm as bl
    >>> ped = pd.DataFrame({"id": list("abcdef"), "sire": [None, None, "a", "a", "c", "c"],
    ...                     "dam": [None, None, "b", "b", "d", "b"]})
    >>> df = pd.DataFrame({"id": list("cdef"), "y": [1.0, 0.5, 2.0, 1.5]})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> sparse_pedigree_applicable(bl.specify("y ~ 1 + (1 | id)", df, kinship={"id": A}))
    True
    """
    return (
        len(spec.terms) == 1
        and spec.terms[0].n_coef == 1
        and isinstance(spec.terms[0].kinship, SparsePedigreeKinship)
        and spec.sigma_X is None
    )


def resolve_sparse_pedigree(spec: ModelSpec, method: str) -> str | None:
    """The route for a model with a sparse pedigree kinship: ``"sparse-pedigree"``, or None
    when the model has none (or ``method`` forces another route).

    Raises a :class:`~bayeslmm.errors.SpecificationError` for other structures: only the
    animal model has sparse equations here.
    """
    if method not in ("auto", "ai-reml", ROUTE) or not uses_sparse_pedigree(spec):
        if method == ROUTE:
            raise SpecificationError(
                "method='sparse-pedigree' needs a kinship from "
                "bayeslmm.pedigree_relationship(pedigree, sparse=True); this model has none."
            )
        return None
    if not sparse_pedigree_applicable(spec):
        raise SpecificationError(
            "A sparse pedigree kinship (pedigree_relationship(..., sparse=True)) is fitted by "
            "REML through the animal model's sparse equations: one term with one coefficient, "
            "e.g. (1 | id), and one residual variance. This model has "
            f"{[t.label for t in spec.terms]}"
            + (" and residual variances by group" if spec.sigma_X is not None else "")
            + ". Drop the other terms, or give a dense kinship "
            "(pedigree_relationship(pedigree)) for small pedigrees."
        )
    return ROUTE


class _SparseCholesky:
    """Numeric factorisations of matrices with one sparsity pattern, ordering computed once."""

    def __init__(self, first: sp.csc_matrix) -> None:
        try:
            from sksparse.cholmod import analyze
        except ImportError:
            analyze = None
        if analyze is not None:
            self.backend = "cholmod"
            self._symbolic = analyze(first, ordering_method="amd")
            self._perm = None
        else:
            self.backend = "superlu"
            lu = spla.splu(
                first,
                permc_spec="MMD_AT_PLUS_A",
                diag_pivot_thresh=0.0,
                options={"SymmetricMode": True},
            )
            # perm_c[i] is the row of C that lands at position i: C[p][:, p] with p its
            # inverse is the matrix SuperLU factored
            self._perm = np.argsort(lu.perm_c)
        self._current = None

    def factor(self, C: sp.csc_matrix) -> None:
        if self.backend == "cholmod":
            self._symbolic.cholesky_inplace(C)
            self._current = self._symbolic
            return
        p = self._perm
        # the symmetric permutation fixed by the first factorisation; no pivoting, so the
        # factor is the Cholesky factor's (LDLᵀ) pattern and log|C| is Σ log U_ii
        self._current = spla.splu(
            C[p][:, p].tocsc(),
            permc_spec="NATURAL",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )

    def logdet(self) -> float:
        if self.backend == "cholmod":
            return float(self._current.logdet())
        u = self._current.U.diagonal()
        if np.any(u <= 0.0):
            raise np.linalg.LinAlgError("the mixed-model equations are not positive definite")
        return float(np.sum(np.log(u)))

    def solve(self, B: np.ndarray) -> np.ndarray:
        if self.backend == "cholmod":
            return self._current(B)
        p = self._perm
        out = np.empty_like(B)
        out[p] = self._current.solve(np.ascontiguousarray(B[p]))
        return out


class _AnimalModel:
    """The equations' pieces that do not depend on λ, and one evaluation per λ."""

    def __init__(self, structure: Structure, y: np.ndarray, X: np.ndarray, criterion: str):
        term = structure.terms[0]
        kin: SparsePedigreeKinship = term.kinship
        self.kinship = kin
        n, N = y.size, kin.n_pedigree
        cols = kin.positions[np.asarray(term.index)]
        Z = sp.csr_matrix(
            (np.asarray(term.design[:, 0], float), (np.arange(n), cols)), shape=(n, N)
        )
        Zt = Z.T.tocsr()
        self.ZtZ = (Zt @ Z).tocsc()
        self.Ainv = kin.inverse.tocsc()
        self.ZtX = np.asarray(Zt @ X)
        self.Zty = np.asarray(Zt @ y)
        self.XtX, self.Xty, self.yty = X.T @ X, X.T @ y, float(y @ y)
        self.n, self.p, self.N = n, X.shape[1], N
        self.logdet_A = float(np.sum(np.log(kin.mendelian_variances)))
        self.criterion = criterion
        self.chol = _SparseCholesky(self._C(1.0))
        self.n_eval = 0

    def _C(self, lam: float) -> sp.csc_matrix:
        C = (self.ZtZ + lam * self.Ainv).tocsc()
        C.sort_indices()
        return C

    def evaluate(self, u: float, keep: bool = False) -> dict:
        """Everything at log λ = u with σ_e² profiled out; ``keep`` adds the solution."""
        lam = math.exp(u)
        self.chol.factor(self._C(lam))
        self.n_eval += 1
        logdet_caa = self.chol.logdet()
        sol = self.chol.solve(np.column_stack([self.ZtX, self.Zty]))
        M, m = sol[:, : self.p], sol[:, self.p]
        S = self.XtX - self.ZtX.T @ M
        S = 0.5 * (S + S.T)
        S_chol = sla.cho_factor(S, lower=True)
        beta = sla.cho_solve(S_chol, self.Xty - self.ZtX.T @ m)
        a = m - M @ beta
        r = self.yty - float(beta @ self.Xty) - float(a @ self.Zty)
        logdet_s = 2.0 * float(np.sum(np.log(np.diag(S_chol[0]))))
        # g: the λ-dependent part of −2ℓ apart from r/σ_e²; REML adds log|S| (see module)
        g = self.logdet_A - self.N * u + logdet_caa
        if self.criterion == "reml":
            g += logdet_s
            dof = self.n - self.p
        else:
            dof = self.n
        sigma_e2 = r / dof
        out = {"u": u, "g": g, "r": r, "sigma_e2": sigma_e2, "f": dof * math.log(sigma_e2) + g}
        if keep:
            out.update(beta=beta, a=a, M=M, S_chol=S_chol, logdet_caa=logdet_caa, logdet_s=logdet_s)
        return out

    def profile(self, u: float) -> float:
        try:
            return self.evaluate(u)["f"]
        except (np.linalg.LinAlgError, ValueError):
            return math.inf


def fit_sparse_pedigree(
    structure: Structure,
    y: np.ndarray,
    X: np.ndarray,
    criterion: Criterion = "reml",
    xtol: float = 1e-7,
) -> RawFit:
    """REML (or ML) of the animal model y = Xβ + Za + e, a ~ N(0, σ_a² A), A from a pedigree.

    Parameters
    ----------
    structure : Structure
        One term with one coefficient whose kinship is a :class:`SparsePedigreeKinship`,
        and one residual variance (:func:`sparse_pedigree_applicable`).
    y, X : ndarray
        Response and fixed-effect design (as ``fit_reml`` prepares them).
    criterion : {"reml", "ml"}
    xtol : float
        Tolerance of Brent's method in log λ.

    Returns
    -------
    RawFit
        θ = (σ_a², σ_e²); BLUPs (EBVs) and PEVs of every animal of the pedigree.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> rng = np.random.default_rng(0)
    >>> ped = pd.DataFrame({"id": range(1, 201), "sire": [0] * 20 + list(rng.integers(1, 11, 180)),
    ...                     "dam": [0] * 20 + list(rng.integers(11, 21, 180))})
    >>> df = pd.DataFrame({"id": range(21, 201), "y": rng.normal(size=180)})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> fit = bl.LMM("y ~ 1 + (1 | id)", df, kinship={"id": A}).fit(method="reml")
    >>> fit.method, fit.blups["id"].shape
    ('sparse-pedigree', (200, 2))
    """
    from scipy import optimize  # imported here: loading it slows `import bayeslmm`

    t0 = time.perf_counter()
    model = _AnimalModel(structure, y, X, criterion)
    t_setup = time.perf_counter() - t0
    lo, hi = LOG_LAMBDA_BOUNDS
    grid = np.linspace(-6.0, 6.0, 7)
    values = [model.profile(u) for u in grid]
    k = int(np.argmin(values))
    left = grid[k - 1] if k > 0 else lo
    right = grid[k + 1] if k < grid.size - 1 else hi
    res = optimize.minimize_scalar(
        model.profile, bounds=(left, right), method="bounded", options={"xatol": xtol}
    )
    u_hat = float(res.x)
    messages: list[str] = []
    t_opt = time.perf_counter() - t0 - t_setup
    at = model.evaluate(u_hat, keep=True)
    sigma_e2 = at["sigma_e2"]
    lam = math.exp(u_hat)
    sigma_a2 = sigma_e2 / lam
    boundary = u_hat > hi - 1e-3 or u_hat < lo + 1e-3
    if boundary:
        messages.append(
            "the additive variance is estimated at 0 (λ at the search bound)"
            if u_hat > 0
            else "the residual variance is estimated at 0 (λ at the search bound)"
        )
    theta = np.array([sigma_a2, sigma_e2])
    t_blup = time.perf_counter()
    # PEVs first: they solve with the factor at λ̂, which the information's steps replace
    pev = _pev(model, at, sigma_e2, messages)
    t_blup = time.perf_counter() - t_blup
    theta_cov = _theta_cov(model, at, boundary)
    n, p = model.n, model.p
    # likelihoods from their parts: log|V| = n log σ_e² + log|A| − N log λ + log|C_aa|,
    # log|XᵀV⁻¹X| = log|S| − p log σ_e², yᵀPy = r/σ_e²
    logdet_v = n * math.log(sigma_e2) + model.logdet_A - model.N * u_hat + at["logdet_caa"]
    logdet_xvx = at["logdet_s"] - p * math.log(sigma_e2)
    ypy = at["r"] / sigma_e2
    logliks = likelihoods(criterion, logdet_v, logdet_xvx, ypy, n, p)
    beta_cov = sigma_e2 * sla.cho_solve(at["S_chol"], np.eye(p))
    blups = one_term_blups(structure, at["a"], pev, model.kinship.pedigree_ids)
    return RawFit(
        theta=theta,
        theta_cov=theta_cov,
        beta=at["beta"],
        beta_cov=0.5 * (beta_cov + beta_cov.T),
        loglik_reml=logliks["loglik_reml"],
        loglik_ml=logliks["loglik_ml"],
        blups=blups,
        n_iter=model.n_eval,
        converged=bool(res.success) and math.isfinite(at["f"]),
        messages=messages,
        timing={
            "setup_s": t_setup,
            "optimize_s": t_opt,
            "pev_s": t_blup,
            "n_factorizations": float(model.n_eval),
        },
        route=model.chol.backend,
    )


def _theta_cov(model: _AnimalModel, at: dict, boundary: bool) -> np.ndarray:
    """Cov(σ_a², σ_e²) from the observed information in (u, v) = (log λ, log σ_e²).

    −2ℓ(u, v) = dof · v + g(u) + r(u) e^{−v}; its Hessian needs g'', r', r'' (central
    differences in u) and r; the inverse of half of it is carried to θ = (e^{v−u}, e^{v}).
    """
    if boundary:
        return np.full((2, 2), np.nan)
    u, h = at["u"], 1e-3
    try:
        plus, minus = model.evaluate(u + h), model.evaluate(u - h)
    except (np.linalg.LinAlgError, ValueError):
        return np.full((2, 2), np.nan)
    r, e = at["r"], math.exp(-math.log(at["sigma_e2"]))
    g2 = (plus["g"] - 2.0 * at["g"] + minus["g"]) / h**2
    r1 = (plus["r"] - minus["r"]) / (2.0 * h)
    r2 = (plus["r"] - 2.0 * r + minus["r"]) / h**2
    hess = np.array([[g2 + r2 * e, -r1 * e], [-r1 * e, r * e]])
    info = 0.5 * hess
    try:
        cov_uv = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return np.full((2, 2), np.nan)
    sigma_e2 = at["sigma_e2"]
    sigma_a2 = sigma_e2 / math.exp(u)
    J = np.array([[-sigma_a2, sigma_a2], [0.0, sigma_e2]])
    cov = J @ cov_uv @ J.T
    return 0.5 * (cov + cov.T)


def _pev(model: _AnimalModel, at: dict, sigma_e2: float, messages: list[str]) -> np.ndarray:
    """σ_e² diag([C⁻¹]_aa) = σ_e² [diag(C_aa⁻¹) + rowsum((M S⁻¹) ∘ M)], M = C_aa⁻¹ZᵀX."""
    N = model.N
    if N > PEV_LIMIT:
        messages.append(
            f"prediction error variances not computed: the pedigree has {N} animals, above "
            f"{PEV_LIMIT} (the diagonal of C⁻¹ takes one sparse solve per animal); "
            "bayeslmm.engines.reml.sparse_pedigree.breeding_values(fit, ids) computes them "
            "for the animals asked for"
        )
        return np.full(N, np.nan)
    return sigma_e2 * _inverse_diagonal(model, at, np.arange(N))


def _inverse_diagonal(model: _AnimalModel, at: dict, rows: np.ndarray) -> np.ndarray:
    """[C⁻¹]_aa at ``rows``: diag(C_aa⁻¹) + rowsum((M S⁻¹) ∘ M), M = C_aa⁻¹ZᵀX, by blocks of
    unit-vector solves (the factor must be the one at the estimate)."""
    N = model.N
    diag = np.empty(rows.size)
    block = 256
    for start in range(0, rows.size, block):
        part = rows[start : start + block]
        E = np.zeros((N, part.size))
        E[part, np.arange(part.size)] = 1.0
        diag[start : start + part.size] = model.chol.solve(E)[part, np.arange(part.size)]
    M = at["M"][rows]
    MS = sla.cho_solve(at["S_chol"], M.T).T
    return diag + np.einsum("ij,ij->i", MS, M)


def breeding_values(fit, ids=None) -> pd.DataFrame:
    """EBVs with their prediction error variances and accuracies, for the animals asked for.

    For a fit by the ``"sparse-pedigree"`` route: the EBV â_i from the fit, PEV_i =
    σ_e² [C⁻¹]_ii at the estimate (one factorisation of the equations, one solve per animal)
    and the accuracy r_i = √(1 − PEV_i / ((1 + F_i) σ_a²)), the correlation of â_i with the
    true value.

    Parameters
    ----------
    fit : RemlFit
        A REML/ML fit whose ``method`` is ``"sparse-pedigree"``.
    ids : sequence of str, optional
        Animals of the pedigree (ancestors without records included); all by default.

    Returns
    -------
    pandas.DataFrame
        Indexed by animal: ``ebv``, ``pev``, ``accuracy``, ``F``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, bayeslmm as bl
    >>> rng = np.random.default_rng(0)
    >>> ped = pd.DataFrame({"id": range(1, 201), "sire": [0] * 20 + list(rng.integers(1, 11, 180)),
    ...                     "dam": [0] * 20 + list(rng.integers(11, 21, 180))})
    >>> df = pd.DataFrame({"id": range(21, 201), "y": rng.normal(size=180) + np.arange(180) / 90})
    >>> A = bl.pedigree_relationship(ped, sparse=True)
    >>> fit = bl.LMM("y ~ 1 + (1 | id)", df, kinship={"id": A}).fit(method="reml")
    >>> list(breeding_values(fit, ["1", "200"]).columns)
    ['ebv', 'pev', 'accuracy', 'F']
    """
    if getattr(fit, "method", None) != ROUTE or fit.spec is None:
        raise SpecificationError(
            "breeding_values() reads a fit of the sparse pedigree route (method "
            "'sparse-pedigree': a kinship from pedigree_relationship(pedigree, sparse=True) "
            "fitted with method='reml' or 'ml'); this fit's route is "
            f"{getattr(fit, 'method', None)!r}. Use fit.blups for the other routes."
        )
    from bayeslmm.engines.reml._structure import build_structure, response

    spec = fit.spec
    structure = build_structure(spec)
    kin: SparsePedigreeKinship = spec.terms[0].kinship
    label = structure.term_labels[0]
    table = fit.blups[label]
    all_ids = list(kin.pedigree_ids) if ids is None else [str(i) for i in ids]
    index = {i: k for k, i in enumerate(kin.pedigree_ids)}
    missing = [i for i in all_ids if i not in index]
    if missing:
        raise SpecificationError(
            f"{len(missing)} ids are not in the pedigree: {missing[:5]}; give animals of "
            f"pedigree kinship '{kin.name}'."
        )
    rows = np.fromiter((index[i] for i in all_ids), dtype=np.int64, count=len(all_ids))
    sigma_a2, sigma_e2 = fit.parameters["estimate"].to_numpy(dtype=float)
    coef = table.columns[0]
    pev = table[f"pev:{coef}"].to_numpy()[rows]
    if np.isnan(pev).any():
        # [C⁻¹]_aa does not depend on y, and not on how X is centred: the original X will do
        model = _AnimalModel(structure, response(spec), np.asarray(spec.X, float), fit.criterion)
        at = model.evaluate(math.log(sigma_e2 / sigma_a2), keep=True)
        pev = sigma_e2 * _inverse_diagonal(model, at, rows)
    F = kin.inbreeding[rows]
    accuracy = np.sqrt(np.clip(1.0 - pev / ((1.0 + F) * sigma_a2), 0.0, 1.0))
    return pd.DataFrame(
        {"ebv": table[coef].to_numpy()[rows], "pev": pev, "accuracy": accuracy, "F": F},
        index=pd.Index(all_ids, name=spec.terms[0].group),
    )
