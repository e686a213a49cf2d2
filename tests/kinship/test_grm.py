"""GRM from dosages: against a dense, straightforward NumPy VanRaden / standardised GRM."""

import warnings

import numpy as np
import pandas as pd
import pytest

from bayeslmm.errors import DataError, KinshipError
from bayeslmm.kinship import grm, snp_factor
from bayeslmm.kinship.grm import grm_with_counts

# Random small samples can hold monomorphic SNPs; the warning itself is tested below.
pytestmark = pytest.mark.filterwarnings("ignore:GRM. dropped:UserWarning")


def dense_grm(X, maf=0.0, standardize=False):
    """Reference: impute each SNP's mean, keep polymorphic SNPs with MAF >= maf, one product."""
    X = np.array(X, dtype=float)
    p = np.nanmean(X, axis=0) / 2
    keep = (p > 0) & (p < 1) & (np.minimum(p, 1 - p) >= maf)
    X, p = X[:, keep], p[keep]
    X = np.where(np.isnan(X), 2 * p, X)
    Z = X - 2 * p
    if standardize:
        Z = Z / np.sqrt(2 * p * (1 - p))
        return Z @ Z.T / Z.shape[1]
    return Z @ Z.T / (2 * np.sum(p * (1 - p)))


def make_dosages(n=37, m=123, missing=0.1, seed=0):
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.02, 0.98, size=m)
    X = rng.binomial(2, freq, size=(n, m)).astype(float)
    X[rng.random((n, m)) < missing] = np.nan
    return X


def polymorphic(X):
    p = np.nanmean(X, axis=0) / 2
    return X[:, (p > 0) & (p < 1)]


def test_hand_computed_example():
    # p = (0.5, 0.5); Z = X - 1 = [[-1, 1], [1, -1], [0, 0]]; 2 Σ p(1-p) = 1, so K = Z Zᵀ.
    K = grm(np.array([[0.0, 2.0], [2.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(K.matrix, [[2, -2, 0], [-2, 2, 0], [0, 0, 0]], atol=1e-15)
    # Standardised: each SNP divided by √(2·0.25) then by m = 2: K = Z Zᵀ / (0.5 · 2).
    Ks = grm(np.array([[0.0, 2.0], [2.0, 0.0], [1.0, 1.0]]), standardize=True)
    np.testing.assert_allclose(Ks.matrix, [[2, -2, 0], [-2, 2, 0], [0, 0, 0]], atol=1e-15)


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("maf", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("block_size", [1, 7, 50, 2000])
def test_matches_dense_reference(standardize, maf, block_size):
    X = make_dosages()
    before = X.copy()
    K = grm(X, maf=maf, standardize=standardize, block_size=block_size)
    np.testing.assert_allclose(K.matrix, dense_grm(X, maf, standardize), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(X, before)  # the caller's dosages are not modified


def test_fractional_dosages_and_dataframe_ids():
    rng = np.random.default_rng(3)
    X = np.clip(make_dosages(n=20, m=60, seed=3) + rng.normal(0, 0.1, (20, 60)), 0, 2)
    ids = [f"ind{k:03d}" for k in range(20)]
    K = grm(pd.DataFrame(X, index=ids), block_size=16)
    assert K.ids == tuple(ids)
    np.testing.assert_allclose(K.matrix, dense_grm(X), atol=1e-10)


def test_nullable_integer_dataframe():
    X = make_dosages(n=15, m=40, seed=12)
    frame = pd.DataFrame(X).astype("Int64")  # NaN becomes pd.NA
    assert frame.isna().to_numpy().sum() == np.isnan(X).sum()
    np.testing.assert_allclose(grm(frame).matrix, dense_grm(X), atol=1e-10)


def test_allele_coding_does_not_matter():
    X = make_dosages(seed=4)
    np.testing.assert_allclose(grm(2 - X).matrix, grm(X).matrix, atol=1e-12)


def test_unrelated_hwe_sample_has_unit_diagonal_and_zero_relationships():
    rng = np.random.default_rng(5)
    n, m = 60, 20_000
    X = rng.binomial(2, rng.uniform(0.1, 0.9, m), size=(n, m)).astype(float)
    K = grm(X, block_size=5000)
    off = K.matrix[~np.eye(n, dtype=bool)]
    # Sample-centred: E[diag] = 1 - 1/n, E[off] = -1/n; sd of entries ~ 1/√m-ish.
    assert abs(K.mean_diagonal - (1 - 1 / n)) < 0.01
    assert abs(off.mean() + 1 / n) < 0.002
    np.testing.assert_allclose(K.matrix.sum(axis=1), 0.0, atol=1e-9)  # rows sum to 0


def test_parent_offspring_relationship_is_one_half_after_sample_centring():
    rng = np.random.default_rng(6)
    m = 20_000
    freq = rng.uniform(0.1, 0.9, m)
    parents = rng.binomial(1, freq, size=(4, 2, m))  # 4 unrelated parents, 2 haplotypes each
    pick = rng.integers(0, 2, size=(2, m))
    child = parents[0, pick[0], np.arange(m)] + parents[1, pick[1], np.arange(m)]
    X = np.vstack([parents.sum(axis=1), child]).astype(float)
    X = np.vstack([X, rng.binomial(2, freq, size=(40, m))])  # unrelated background sample
    n = X.shape[0]
    A = np.eye(n)
    A[4, [0, 1]] = A[[0, 1], 4] = 0.5
    # Sample allele frequencies centre the GRM: E[K] ~ (I - J/n) A (I - J/n), which moves the
    # parent-offspring value from 0.5 to about 0.446 here.
    C = np.eye(n) - 1.0 / n
    expected = C @ A @ C
    K = grm(X).matrix
    assert abs(expected[4, 0] - 0.446) < 0.001
    off = ~np.eye(n, dtype=bool)
    np.testing.assert_allclose(K[off], expected[off], atol=0.03)
    np.testing.assert_allclose(np.diag(K), np.diag(expected), atol=0.06)  # noisier diagonal
    assert abs(K[4, 0] - expected[4, 0]) < 0.02 and abs(K[4, 1] - expected[4, 1]) < 0.02


def test_monomorphic_and_all_missing_snps_are_dropped_with_warning():
    X = polymorphic(make_dosages(n=15, m=30, seed=7))
    X_extra = np.column_stack([X, np.zeros(15), np.full(15, 2.0), np.full(15, np.nan)])
    with pytest.warns(UserWarning, match=r"2 monomorphic SNP\(s\) and 1 SNP\(s\) with no called"):
        K = grm(X_extra)
    np.testing.assert_allclose(K.matrix, grm(X).matrix, atol=1e-12)
    with pytest.warns(UserWarning), pytest.raises(KinshipError, match="No SNP is left"):
        grm(np.zeros((5, 3)))


def test_zero_variance_snps_are_dropped_and_counted():
    """All-heterozygous markers (p = 0.5, Z = 0) would add 0.5 each to VanRaden's divisor."""
    X = polymorphic(make_dosages(n=20, m=60, missing=0.05, seed=12))
    het = np.ones((20, 400))
    het[::3, :5] = np.nan  # missing calls do not make a marker informative
    with pytest.warns(UserWarning, match=r"400 SNP\(s\) with zero genotype variance"):
        K = grm(np.column_stack([X, het]))
    np.testing.assert_allclose(K.matrix, grm(X).matrix, atol=1e-12)
    np.testing.assert_allclose(K.matrix, dense_grm(X), atol=1e-10)
    with pytest.warns(UserWarning, match="zero genotype variance"):
        W, _ = snp_factor(np.column_stack([X, het]), standardize=True)
    assert W.shape[1] == X.shape[1]
    with pytest.warns(UserWarning), pytest.raises(KinshipError, match="400 have zero genotype"):
        grm(het)


def test_zero_variance_snps_are_dropped_from_dask_input():
    da = pytest.importorskip("dask.array")
    X = polymorphic(make_dosages(n=20, m=40, seed=13))
    Xd = da.from_array(np.column_stack([X, np.ones((20, 7))]), chunks=(7, 11))
    with pytest.warns(UserWarning, match=r"7 SNP\(s\) with zero genotype variance"):
        K = grm(Xd)
    np.testing.assert_allclose(K.matrix, dense_grm(X), atol=1e-10)


def test_no_warning_when_nothing_dropped():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grm(make_dosages(seed=8))


def test_maf_threshold_is_inclusive():
    # Minor allele frequencies: SNP0 = 0.25, SNP1 = 0.5 (4 individuals, 8 alleles).
    X = np.array([[1, 1], [1, 1], [0, 1], [0, 1]], dtype=float)
    X[:, 1] = [2, 0, 1, 1]
    np.testing.assert_allclose(grm(X, maf=0.25).matrix, dense_grm(X), atol=1e-12)
    np.testing.assert_allclose(grm(X, maf=0.26).matrix, dense_grm(X[:, [1]]), atol=1e-12)


@pytest.mark.parametrize("standardize", [False, True])
def test_snp_factor_reproduces_grm(standardize):
    X = make_dosages(seed=9)
    W, ids = snp_factor(X, maf=0.05, standardize=standardize, block_size=10)
    assert ids == tuple(str(k) for k in range(X.shape[0]))
    np.testing.assert_allclose(W @ W.T, dense_grm(X, 0.05, standardize), atol=1e-10)
    assert W.shape[1] == np.sum(np.minimum(np.nanmean(X, 0) / 2, 1 - np.nanmean(X, 0) / 2) >= 0.05)


def test_pair_counts_count_snps_typed_in_both():
    X = polymorphic(make_dosages(n=12, m=40, missing=0.2, seed=10))
    K, N, m_used = grm_with_counts(np.column_stack([X, np.zeros(12)]), block_size=9)
    observed = (~np.isnan(X)).astype(float)  # the monomorphic SNP is not counted
    np.testing.assert_array_equal(N, observed @ observed.T)
    assert m_used == X.shape[1]
    np.testing.assert_allclose(K.matrix, dense_grm(X), atol=1e-10)


def test_dask_input_matches_numpy():
    da = pytest.importorskip("dask.array")
    X = polymorphic(make_dosages(n=30, m=90, seed=11))
    Xd = da.from_array(X, chunks=(13, 20))
    for standardize in (False, True):
        K = grm(Xd, maf=0.05, standardize=standardize)
        np.testing.assert_allclose(K.matrix, dense_grm(X, 0.05, standardize), atol=1e-10)
    W, _ = snp_factor(Xd)
    np.testing.assert_allclose(np.asarray(W @ W.T), dense_grm(X), atol=1e-10)
    _, N, _ = grm_with_counts(Xd)
    observed = (~np.isnan(X)).astype(float)
    np.testing.assert_array_equal(N, observed @ observed.T)


@pytest.mark.parametrize(
    ("X", "kwargs", "error", "message"),
    [
        (np.array([[0.0, 3.0], [1.0, 2.0]]), {}, DataError, r"must lie in \[0, 2\].*3"),
        (np.array([[0.0, -1.0], [1.0, 2.0]]), {}, DataError, r"must lie in \[0, 2\]"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), {}, DataError, "infinite"),
        (np.zeros(4), {}, DataError, "2-D matrix"),
        (np.zeros((2, 2)), {"ids": ["a"]}, DataError, "Got 1 ids"),
        (np.array([[0.0, 1.0], [1.0, 2.0]]), {"ids": ["a", "a"]}, KinshipError, "Duplicate"),
        (np.array([[0.0, 1.0], [1.0, 2.0]]), {"maf": 0.5}, ValueError, r"maf must lie"),
        (np.array([[0.0, 1.0], [1.0, 2.0]]), {"block_size": 0}, ValueError, "block_size"),
        (np.array([["0", "1"], ["1", "2"]]), {}, DataError, "numeric"),
    ],
)
def test_input_errors(X, kwargs, error, message):
    with pytest.raises(error, match=message):
        grm(X, **kwargs)


def test_dataframe_errors():
    frame = pd.DataFrame({"id": ["a", "b"], "s1": [0, 1]})
    with pytest.raises(DataError, match=r"\['id'\] are not numeric.*index"):
        grm(frame)
    with pytest.raises(DataError, match="differ"):
        grm(pd.DataFrame({"s1": [0, 1]}, index=["a", "b"]), ids=["b", "a"])
