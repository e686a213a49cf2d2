"""Sparse-pedigree REML (A⁻¹ mixed-model equations) against dense REML with A, and its
breeding values against dense BLUP algebra."""

import sys

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.errors import SpecificationError


def _population(n_animals: int, seed: int, per_gen: int = 100, n_sires: int = 10):
    """Generations of ``per_gen`` animals from ``n_sires`` sires and random dams, some
    unknown parents; records on the later generations with a covariate; h² ≈ 0.4."""
    rng = np.random.default_rng(seed)
    ids, sires, dams = [], [], []
    gens = n_animals // per_gen
    for g in range(gens):
        names = [f"a{g}_{i}" for i in range(per_gen)]
        if g == 0:
            s = d = [None] * per_gen
        else:
            prev = ids[-per_gen:]
            males = rng.choice(prev[: per_gen // 2], n_sires, replace=False)
            s = [str(x) if rng.random() > 0.05 else None for x in rng.choice(males, per_gen)]
            d = [
                str(x) if rng.random() > 0.05 else None
                for x in rng.choice(prev[per_gen // 2 :], per_gen)
            ]
        ids += names
        sires += list(s)
        dams += list(d)
    ped = pd.DataFrame({"id": ids, "sire": sires, "dam": dams})
    A = bl.pedigree_relationship(ped)
    a = np.linalg.cholesky(A.matrix + 1e-12 * np.eye(A.n)) @ rng.normal(size=A.n) * np.sqrt(0.4)
    recorded = np.arange(per_gen, A.n)[rng.random(A.n - per_gen) < 0.7]
    x = rng.normal(size=recorded.size)
    data = pd.DataFrame(
        {
            "id": [A.ids[k] for k in recorded],
            "x": x,
            "y": 3.0 + 0.5 * x + a[recorded] + rng.normal(size=recorded.size) * np.sqrt(0.6),
        }
    )
    return ped.sample(frac=1.0, random_state=seed), data


def _compare(ped, data, atol):
    dense_A = bl.pedigree_relationship(ped)
    sparse_A = bl.pedigree_relationship(ped, sparse=True)
    dense = bl.LMM("y ~ x + (1 | id)", data, kinship={"id": dense_A}).fit(method="reml")
    sparse = bl.LMM("y ~ x + (1 | id)", data, kinship={"id": sparse_A}).fit(method="reml")
    assert sparse.method == "sparse-pedigree" and dense.method != "sparse-pedigree"
    np.testing.assert_allclose(
        sparse.parameters["estimate"], dense.parameters["estimate"], rtol=atol, atol=atol
    )
    np.testing.assert_allclose(
        sparse.fixed_table["estimate"], dense.fixed_table["estimate"], rtol=atol, atol=atol
    )
    np.testing.assert_allclose(sparse.fixed_table["se"], dense.fixed_table["se"], rtol=1e-5)
    assert sparse.loglik_reml == pytest.approx(dense.loglik_reml, abs=atol)
    assert sparse.loglik_ml == pytest.approx(dense.loglik_ml, abs=atol)
    h2s, h2d = sparse.heritability(), dense.heritability()
    np.testing.assert_allclose(h2s["estimate"], h2d["estimate"], atol=atol)
    # standard errors: observed (sparse) vs average information (dense): close, not equal
    np.testing.assert_allclose(sparse.parameters["se"], dense.parameters["se"], rtol=0.1)
    # EBVs of the recorded animals: dense BLUP's
    label = "id"
    common = dense.blups[label].index
    np.testing.assert_allclose(
        sparse.blups[label].loc[common, "(Intercept)"],
        dense.blups[label]["(Intercept)"],
        atol=1e-5,
    )
    np.testing.assert_allclose(
        sparse.blups[label].loc[common, "pev:(Intercept)"],
        dense.blups[label]["pev:(Intercept)"],
        rtol=1e-5,
    )
    return sparse, dense_A


@pytest.fixture(params=["default", "superlu"])
def backend(request, monkeypatch):
    """The factorisation: CHOLMOD when scikit-sparse is installed, and SciPy's SuperLU."""
    if request.param == "superlu":
        monkeypatch.setitem(sys.modules, "sksparse.cholmod", None)  # import fails
    return request.param


def test_sparse_equals_dense_reml_500(backend):
    ped, data = _population(500, seed=3)
    sparse, dense_A = _compare(ped, data, atol=1e-6)
    assert sparse.to_summary()["strategy"] == "sparse-pedigree"
    # every animal of the pedigree, ancestors without records included, gets an EBV: dense
    # BLUP algebra at the sparse fit's variances, â = σ_a² A Zᵀ P y and
    # PEV = σ_a² diag(A) − σ_a⁴ diag(A Zᵀ P Z A)
    sa2, se2 = sparse.parameters["estimate"].to_numpy()
    pos = {i: k for k, i in enumerate(dense_A.ids)}
    Z = np.zeros((len(data), dense_A.n))
    Z[np.arange(len(data)), [pos[i] for i in data["id"]]] = 1.0
    X = np.column_stack([np.ones(len(data)), data["x"]])
    V = sa2 * Z @ dense_A.matrix @ Z.T + se2 * np.eye(len(data))
    Vi = np.linalg.inv(V)
    P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi)
    G = sa2 * dense_A.matrix @ Z.T
    ebv = G @ P @ data["y"].to_numpy()
    pev = sa2 * np.diag(dense_A.matrix) - np.einsum("ij,ij->i", G @ P, G)
    table = sparse.blups["id"].loc[list(dense_A.ids)]
    np.testing.assert_allclose(table["(Intercept)"], ebv, atol=1e-8)
    np.testing.assert_allclose(table["pev:(Intercept)"], pev, rtol=1e-7, atol=1e-10)
    assert set(data["id"]) < set(table.index)


@pytest.mark.slow
def test_sparse_equals_dense_reml_2000():
    ped, data = _population(2000, seed=4, per_gen=200, n_sires=20)
    _compare(ped, data, atol=1e-6)


def test_ml_criterion_matches_dense():
    ped, data = _population(300, seed=5)
    dense = bl.LMM("y ~ x + (1 | id)", data, kinship={"id": bl.pedigree_relationship(ped)})
    sparse = bl.LMM(
        "y ~ x + (1 | id)", data, kinship={"id": bl.pedigree_relationship(ped, sparse=True)}
    )
    fd, fs = dense.fit(method="ml"), sparse.fit(method="ml")
    assert fs.method == "sparse-pedigree"
    np.testing.assert_allclose(fs.parameters["estimate"], fd.parameters["estimate"], rtol=1e-5)
    assert fs.loglik_ml == pytest.approx(fd.loglik_ml, abs=1e-6)


def test_other_structures_refused_clearly():
    ped, data = _population(300, seed=6)
    data["env"] = np.where(np.arange(len(data)) % 2 == 0, "a", "b")
    A = bl.pedigree_relationship(ped, sparse=True)
    with pytest.raises(SpecificationError, match="one term with one coefficient"):
        bl.LMM("y ~ x + (1 | id) + (1 | env)", data, kinship={"id": A}).fit(method="reml")


def test_breeding_values_for_requested_animals(monkeypatch):
    """Above PEV_LIMIT the fit holds no PEVs; breeding_values() computes them per animal,
    equal to those of a fit below the limit; accuracies from PEV, F and σ_a²."""
    from bayeslmm.engines.reml import sparse_pedigree

    ped, data = _population(300, seed=8)
    A = bl.pedigree_relationship(ped, sparse=True)
    model = bl.LMM("y ~ x + (1 | id)", data, kinship={"id": A})
    full = model.fit(method="reml")
    monkeypatch.setattr(sparse_pedigree, "PEV_LIMIT", 10)
    large = model.fit(method="reml")
    assert large.blups["id"]["pev:(Intercept)"].isna().all()
    assert any("prediction error variances not computed" in m for m in large.messages)
    some = [A.ids[0], A.ids[150], A.ids[-1]]
    table = sparse_pedigree.breeding_values(large, some)
    np.testing.assert_allclose(
        table["pev"], full.blups["id"].loc[some, "pev:(Intercept)"], rtol=1e-8
    )
    np.testing.assert_allclose(table["ebv"], full.blups["id"].loc[some, "(Intercept)"])
    sa2 = full.parameters["estimate"].iloc[0]
    F = A.inbreeding[[A.pedigree_ids.index(i) for i in some]]
    np.testing.assert_allclose(table["accuracy"], np.sqrt(1 - table["pev"] / ((1 + F) * sa2)))
    assert list(sparse_pedigree.breeding_values(full).index) == list(A.pedigree_ids)
    with pytest.raises(SpecificationError, match="sparse pedigree route"):
        sparse_pedigree.breeding_values(
            bl.LMM("y ~ x + (1 | id)", data, kinship={"id": bl.pedigree_relationship(ped)}).fit(
                method="reml"
            )
        )


def test_saved_fit_reads_back_with_the_sparse_factors(tmp_path):
    """fit.save stores a sparse pedigree kinship as its factors (never the dense A), and
    bl.load_fit(folder) rebuilds the same fit from them, ancestors' EBVs included."""
    ped, data = _population(300, seed=6)
    kinship = bl.pedigree_relationship(ped, sparse=True)
    fit = bl.LMM("y ~ x + (1 | id)", data, kinship={"id": kinship}).fit(method="reml")
    fit.save(tmp_path / "out")
    stored = list((tmp_path / "out" / "inputs").glob("kinship_*.npz"))
    assert len(stored) == 1
    with np.load(stored[0]) as arrays:
        assert "matrix" not in arrays and arrays["pedigree_ids"].size == kinship.n_pedigree
    back = bl.load_fit(tmp_path / "out")
    assert back.method == "sparse-pedigree"
    pd.testing.assert_frame_equal(back.variance_components(), fit.variance_components())
    pd.testing.assert_frame_equal(back.blups["id"], fit.blups["id"])
