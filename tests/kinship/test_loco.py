"""LOCO GRMs against a direct grm() on the SNPs of the remaining chromosomes."""

import numpy as np
import pandas as pd
import pytest

from bayeslmm.errors import DataError, KinshipError
from bayeslmm.kinship import grm, loco_grms

pytestmark = pytest.mark.filterwarnings("ignore:GRM. dropped:UserWarning")


def dosages(n=25, m=160, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.binomial(2, rng.uniform(0.03, 0.97, m), size=(n, m)).astype(float)
    X[rng.random((n, m)) < 0.1] = np.nan
    return X


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("block_size", [3, 1000])
def test_loco_equals_grm_of_remaining_snps(standardize, block_size):
    X = dosages()
    rng = np.random.default_rng(1)
    chrom = rng.choice(["1", "2", "X", "10"], size=X.shape[1])  # interleaved, unsorted
    ids = [f"s{k}" for k in range(X.shape[0])]
    loco = loco_grms(X, chrom, ids=ids, maf=0.05, standardize=standardize, block_size=block_size)
    assert list(loco) == list(dict.fromkeys(chrom))
    for c, K in loco.items():
        direct = grm(X[:, chrom != c], ids=ids, maf=0.05, standardize=standardize)
        np.testing.assert_allclose(K.matrix, direct.matrix, rtol=0, atol=1e-10)
        assert K.ids == tuple(ids) and K.name == f"GRM-loco{c}"


def test_numeric_labels_and_dataframe():
    X = dosages(seed=2)
    frame = pd.DataFrame(X, index=[f"a{k}" for k in range(X.shape[0])])
    chrom = np.repeat([1.0, 2.0, 3.0, 4.0], 40)  # float labels, as read from a file
    loco = loco_grms(frame, chrom)
    assert list(loco) == ["1", "2", "3", "4"]
    np.testing.assert_allclose(loco["3"].matrix, grm(frame.iloc[:, chrom != 3]).matrix, atol=1e-10)


def test_chromosome_without_usable_snps_gets_whole_genome_grm():
    X = dosages(seed=3)
    X[:, :10] = 0.0  # chromosome "m" is monomorphic
    chrom = np.array(["m"] * 10 + ["1"] * 75 + ["2"] * 75)
    loco = loco_grms(X, chrom)
    np.testing.assert_allclose(loco["m"].matrix, grm(X).matrix, atol=1e-10)


def test_dask_matches_numpy():
    da = pytest.importorskip("dask.array")
    X = dosages(seed=4)
    chrom = np.repeat(["1", "2", "3", "4"], 40)
    lazy = loco_grms(da.from_array(X, chunks=(10, 30)), chrom)
    eager = loco_grms(X, chrom)
    for c in eager:
        np.testing.assert_allclose(lazy[c].matrix, eager[c].matrix, atol=1e-10)


def test_errors():
    X = dosages()
    with pytest.raises(DataError, match="Got 3 chromosome labels for 160 SNP columns"):
        loco_grms(X, ["1", "2", "3"])
    with pytest.raises(DataError, match="at least two chromosomes"):
        loco_grms(X, ["1"] * 160)
    X2 = X.copy()
    X2[:, 80:] = 2.0  # chromosome 2 monomorphic: leaving out 1 leaves nothing
    with pytest.raises(KinshipError, match="Leaving out chromosome '1' leaves no usable SNP"):
        loco_grms(X2, ["1"] * 80 + ["2"] * 80)
