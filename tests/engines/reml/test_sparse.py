"""Sparse mixed-model equations for crossed/nested iid factors (route ``"ai-reml-sparse"``).

- the block-elimination factor (:mod:`bayeslmm.engines.sparse_cholesky`) against dense
  numpy: log-determinants, solves, the selected inverse, the Newton-matrix assembly, with
  one and two coefficients per level and covariates that cancel over a level;
- whole fits against the dense n × n route (``"ai-reml-dense"``, an independent evaluator)
  to 1e-6 in variance components, SEs, fixed effects, likelihoods and BLUPs/PEVs, for REML
  and ML, on crossed and nested simulated designs, a variance at 0 (both through the dense
  evaluator's exact boundary formulas and through the shifted limit used for large C);
- the automatic route choice and the refusal of models the route does not cover.
(The lme4 golden cases run through this route in test_reml_golden.py.)
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import bayeslmm.engines.reml.sparse as sparse_module
from bayeslmm import Kinship, specify
from bayeslmm.engines.reml import BoundaryFitWarning, fit_reml, sparse_preferred
from bayeslmm.engines.sparse_cholesky import EliminationPattern, GramPattern
from bayeslmm.errors import SpecificationError


def _crossed_design(m: int, seed: int) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray, int]:
    """Dense C = WᵀW + diag(I_Q, 0) for a lead factor with m coefficients, a crossed factor
    and fixed effects whose centred covariate sums to exactly 0 within each lead level."""
    rng = np.random.default_rng(seed)
    q1, per, q2 = 25, 8, 7
    n = q1 * per
    g1 = np.repeat(np.arange(q1), per)
    g2 = rng.integers(0, q2, n)
    x = np.tile(np.r_[np.full(per // 2, -1.0), np.full(per // 2, 1.0)], q1)  # Σ_level x = 0
    # coefficient-major: intercepts of the levels, then (m = 2) their slopes on x
    values = [np.ones(n), x][:m]
    cols = [sp.csr_matrix((v, (np.arange(n), g1)), shape=(n, q1)) for v in values]
    Z2 = sp.csr_matrix((np.ones(n), (np.arange(n), g2)), shape=(n, q2))
    X = np.c_[np.ones(n), x, rng.normal(size=n)]
    W = sp.hstack([*cols, Z2, sp.csr_matrix(X)]).tocsr()
    Q = m * q1 + q2
    C = (W.T @ W).toarray() + np.diag(np.r_[np.ones(Q), np.zeros(X.shape[1])])
    lead = (np.arange(m)[None, :] * q1 + np.arange(q1)[:, None]).ravel()  # level-major
    return C, W, lead, X.shape[1]


@pytest.mark.parametrize("m", [1, 2])
def test_elimination_factor_matches_dense_algebra(m: int) -> None:
    C, W, lead, p = _crossed_design(m, seed=m)
    structural = abs(W)
    pattern = EliminationPattern(structural.T @ structural + sp.identity(C.shape[0]), lead, m)
    fac = pattern.factor(sp.csr_matrix(C))
    inv = np.linalg.inv(C)
    assert fac.logdet == pytest.approx(np.linalg.slogdet(C)[1], rel=1e-12)
    # log|C / C_vv| from the trailing p pivots
    schur = C[-p:, -p:] - C[-p:, :-p] @ np.linalg.solve(C[:-p, :-p], C[:-p, -p:])
    assert fac.logdet_trailing(p) == pytest.approx(np.linalg.slogdet(schur)[1], rel=1e-10)
    rhs = np.random.default_rng(0).normal(size=(C.shape[0], 3))
    np.testing.assert_allclose(fac.solve(rhs), inv @ rhs, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fac.inverse_diagonal(), np.diag(inv), rtol=1e-10)
    blocks = fac.lead_inverse_blocks()
    for level in (0, 7, 24):
        rows = lead[level * m : (level + 1) * m]
        np.testing.assert_allclose(blocks[level], inv[np.ix_(rows, rows)], rtol=1e-10)


def test_gram_pattern_assembles_the_newton_matrix() -> None:
    _, W, lead, p = _crossed_design(1, seed=3)
    rng = np.random.default_rng(4)
    structural = abs(W)
    elim = EliminationPattern(structural.T @ structural + sp.identity(W.shape[1]), lead)
    gram = GramPattern(W, elim)
    w = rng.uniform(0.1, 2.0, W.shape[0])
    penalty = np.r_[np.ones(W.shape[1] - p), np.zeros(p)]
    H = (W.T @ sp.diags(w) @ W).toarray() + np.diag(penalty)
    fac = elim.factor(parts=gram.parts(gram.design.data, w, penalty))
    assert fac.logdet == pytest.approx(np.linalg.slogdet(H)[1], rel=1e-12)
    g = rng.normal(size=H.shape[0])
    np.testing.assert_allclose(fac.solve(g), np.linalg.solve(H, g), rtol=1e-9)


def _simulated(seed: int, nested: bool = False, zero_b: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_a, n_b, n = 30, 12, 240
    a = rng.integers(0, n_a, n)
    b = a % n_b if nested else rng.integers(0, n_b, n)
    x = rng.normal(size=n)
    sd_b = 0.0 if zero_b else 0.7
    y = (
        1.0
        + 0.5 * x
        + rng.normal(0, 0.8, n_a)[a]
        + rng.normal(0, sd_b, n_b)[b]
        + rng.normal(0, 1.0, n)
    )
    return pd.DataFrame({"y": y, "x": x, "a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b]})


def _assert_same_fit(a, b, tol: float = 1e-6) -> None:
    scale = float(a.parameters["estimate"].abs().max())
    np.testing.assert_allclose(b.parameters["estimate"], a.parameters["estimate"], atol=tol * scale)
    np.testing.assert_allclose(b.parameters["se"], a.parameters["se"], rtol=1e-4, atol=tol * scale)
    np.testing.assert_allclose(b.fixed_table.to_numpy(), a.fixed_table.to_numpy(), rtol=tol)
    assert b.loglik_reml == pytest.approx(a.loglik_reml, abs=tol)
    assert b.loglik_ml == pytest.approx(a.loglik_ml, abs=tol)
    for label, frame in a.blups.items():
        np.testing.assert_allclose(b.blups[label].to_numpy(), frame.to_numpy(), atol=1e-5)


@pytest.mark.parametrize("criterion", ["reml", "ml"])
@pytest.mark.parametrize(
    "formula", ["y ~ x + (1 | a) + (1 | b)", "y ~ x + (1 + x | a) + (1 | b)", "y ~ (x || a)"]
)
def test_sparse_route_equals_dense_route_on_crossed_designs(formula: str, criterion: str) -> None:
    spec = specify(formula, _simulated(1))
    dense = fit_reml(spec, "ai-reml-dense", criterion=criterion)
    fit = fit_reml(spec, "ai-reml-sparse", criterion=criterion)
    assert fit.method == "ai-reml-sparse" and fit.converged
    _assert_same_fit(dense, fit)


def test_sparse_route_equals_dense_route_on_nested_design() -> None:
    spec = specify("y ~ x + (1 | b) + (1 | a)", _simulated(2, nested=True))
    _assert_same_fit(fit_reml(spec, "ai-reml-dense"), fit_reml(spec, "ai-reml-sparse"))


@pytest.mark.parametrize("dense_at_singular", [2000, 0])
def test_sparse_route_at_a_zero_variance(monkeypatch, dense_at_singular: int) -> None:
    """Both ways of scoring a variance at 0: the dense evaluator (small C) and the limit at a
    shifted Σ (what large designs use) end at the dense route's estimate."""
    monkeypatch.setattr(sparse_module, "_DENSE_AT_SINGULAR", dense_at_singular)
    spec = specify("y ~ x + (1 | a) + (1 | b)", _simulated(6, zero_b=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryFitWarning)
        dense = fit_reml(spec, "ai-reml-dense")
        fit = fit_reml(spec, "ai-reml-sparse")
    assert dense.boundary and fit.boundary and fit.converged
    assert fit.parameters["estimate"].iloc[1] == 0.0
    scale = float(dense.parameters["estimate"].abs().max())
    np.testing.assert_allclose(
        fit.parameters["estimate"], dense.parameters["estimate"], atol=1e-6 * scale
    )
    np.testing.assert_allclose(
        fit.fixed_table["estimate"], dense.fixed_table["estimate"], rtol=1e-6
    )
    assert fit.loglik_reml == pytest.approx(dense.loglik_reml, abs=1e-6)


def test_auto_route_and_refusals() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    s_idx, d_idx = rng.integers(0, 600, n), rng.integers(0, 40, n)
    df = pd.DataFrame(
        {
            "y": rng.normal(size=600)[s_idx] + rng.normal(size=40)[d_idx] + rng.normal(size=n),
            "s": [f"s{i}" for i in s_idx],
            "d": [f"d{i}" for i in d_idx],
        }
    )
    spec = specify("y ~ 1 + (1 | s) + (1 | d)", df)
    assert sparse_preferred(spec)
    assert fit_reml(spec).method == "ai-reml-sparse"
    assert fit_reml(spec, "ai-reml").method == "ai-reml-sparse"
    small = specify("y ~ x + (1 | a) + (1 | b)", _simulated(1))
    assert not sparse_preferred(small) and fit_reml(small).method == "ai-reml-mme"
    ids = [f"i{k}" for k in range(20)]
    W = rng.normal(size=(20, 40))
    kin = Kinship(W @ W.T / 40 + 0.1 * np.eye(20), ids=ids)
    kdf = pd.DataFrame({"y": rng.normal(size=60), "id": np.repeat(ids, 3)})
    with pytest.raises(SpecificationError, match="ai-reml-sparse"):
        fit_reml(specify("y ~ 1 + (1 | id)", kdf, kinship={"id": kin}), "ai-reml-sparse")
