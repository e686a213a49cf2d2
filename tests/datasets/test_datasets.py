"""Bundled hyper data and the simulator (distributional checks against the stated truth)."""

import numpy as np
import pandas as pd
import pytest

from bayeslmm.datasets import load_hyper, simulate
from bayeslmm.kinship import grm, pedigree_relationship


# -- hyper -------------------------------------------------------------------------------------
def test_hyper_shapes_and_coding():
    hyper = load_hyper()
    assert hyper.pheno.shape == (250, 3) and list(hyper.pheno.columns) == ["id", "bp", "sex"]
    assert hyper.genotypes.shape == (250, 174)
    assert hyper.genotypes.index.tolist() == hyper.pheno["id"].tolist()
    assert hyper.map["marker"].tolist() == hyper.genotypes.columns.tolist()
    assert set(hyper.map["chr"]) == {str(c) for c in range(1, 20)} | {"X"}
    assert (hyper.map["chr"] == "X").sum() == 4
    assert (hyper.pheno["sex"] == "male").all()
    values = hyper.genotypes.to_numpy()
    assert set(np.unique(values[~np.isnan(values)])) == {0.0, 1.0}  # backcross code - 1
    # R/qtl's summary(hyper): 47.7% of genotypes typed; one marker never typed.
    assert 1 - np.isnan(values).mean() == pytest.approx(0.477, abs=0.001)
    assert hyper.genotypes.columns[hyper.genotypes.isna().all()].tolist() == ["D14Mit48"]
    assert hyper.pheno["bp"].between(80, 130).all()


def test_hyper_codes_match_the_bundled_file():
    from importlib import resources

    path = resources.files("bayeslmm.datasets") / "data" / "hyper" / "genotypes.csv"
    with resources.as_file(path) as file:
        raw = pd.read_csv(file, index_col=0)
    np.testing.assert_array_equal(load_hyper().genotypes.to_numpy() + 1, raw.to_numpy())


def test_hyper_grm_drops_the_untyped_marker():
    hyper = load_hyper()
    with pytest.warns(UserWarning, match="1 SNP.s. with no called genotype"):
        K = grm(hyper.genotypes)
    assert K.n == 250 and K.ids == tuple(hyper.pheno["id"])
    # Backcross 0/1 coding breaks the Hardy-Weinberg scaling and half the genotypes are
    # mean-imputed, so the mean diagonal is well below 1; normalized() restores 1.
    assert 0.2 < K.mean_diagonal < 0.67
    assert K.normalized().mean_diagonal == pytest.approx(1.0)


# -- simulate ----------------------------------------------------------------------------------
def test_same_seed_same_data_and_other_seed_differs():
    a = simulate(n_families=6, family_size=4, n_snps=300, seed=11, family="poisson", repeats=2)
    b = simulate(n_families=6, family_size=4, n_snps=300, seed=11, family="poisson", repeats=2)
    c = simulate(n_families=6, family_size=4, n_snps=300, seed=12, family="poisson", repeats=2)
    pd.testing.assert_frame_equal(a.data, b.data)
    pd.testing.assert_frame_equal(a.genotypes, b.genotypes)
    np.testing.assert_array_equal(a.kinship.matrix, b.kinship.matrix)
    assert not a.genotypes.equals(c.genotypes)


@pytest.mark.parametrize("family", ["gaussian", "poisson", "bernoulli"])
def test_layout_and_support(family):
    sim = simulate(n_families=5, family_size=6, n_snps=400, family=family, repeats=3, seed=2)
    data = sim.data
    assert len(data) == 5 * 6 * 3
    assert list(data.columns) == ["id", "family", "sire", "dam", "record", "y"]
    assert data.groupby("id")["record"].apply(list).map(lambda r: r == [1, 2, 3]).all()
    assert data["id"].unique().tolist() == list(sim.kinship.ids) == sim.genotypes.index.tolist()
    assert data.groupby("family")["id"].nunique().eq(6).all()
    assert data.groupby("sire")["family"].nunique().max() == 2  # half-sib families
    y = data["y"].to_numpy()
    if family == "gaussian":
        assert y.dtype == float and len(np.unique(y)) == len(y)
    elif family == "poisson":
        assert np.issubdtype(y.dtype, np.integer) and y.min() >= 0
    else:
        assert set(np.unique(y)) <= {0, 1}
    g = sim.genotypes.to_numpy()
    assert set(np.unique(g)) <= {0.0, 1.0, 2.0}
    assert sim.truth["family"] == family


def test_breeding_values_have_covariance_v_a_k():
    """Whitened by K's eigenbasis, u must be iid N(0, 1); u has no component in K's null space."""
    sim = simulate(n_families=60, family_size=10, n_snps=2000, h2=0.3, seed=3)
    K, u = sim.kinship, sim.truth["breeding_values"].to_numpy()
    assert sim.truth["V_A"] == pytest.approx(0.3) and sim.truth["V_e"] == pytest.approx(0.7)
    s, U = K.eigenvalues, K.eigenvectors
    pos = s > 1e-8 * s.max()
    z = U[:, pos].T @ u / np.sqrt(sim.truth["V_A"] * s[pos])
    r = pos.sum()
    assert abs(np.mean(z**2) - 1) < 4 * np.sqrt(2 / r)  # chi²_r / r, 4 sd
    assert abs(np.mean(z)) < 4 / np.sqrt(r)
    np.testing.assert_allclose(U[:, ~pos].T @ u, 0.0, atol=1e-6)
    # Mean square of u is V_A · mean diag(K) in expectation, with sd V_A·√(2 Σ s²)/n.
    sd = sim.truth["V_A"] * np.sqrt(2 * np.sum(s**2)) / K.n
    assert abs(np.mean(u**2) - sim.truth["V_A"] * sim.truth["mean_diagonal"]) < 4 * sd


def test_gaussian_phenotypic_variance():
    sim = simulate(n_families=80, family_size=10, n_snps=1000, h2=0.6, seed=4, intercept=5.0)
    y, n = sim.data["y"].to_numpy(), sim.kinship.n
    V_A, V_e, s = sim.truth["V_A"], sim.truth["V_e"], sim.kinship.eigenvalues
    # E[mean square of y - mu] = V_A · mean diag(K) + V_e; sd from the eigenvalues of V_A K + V_e I.
    sd = np.sqrt(2 * np.sum((V_A * s + V_e) ** 2)) / n
    assert abs(np.mean((y - 5.0) ** 2) - (V_A * sim.truth["mean_diagonal"] + V_e)) < 4 * sd
    assert abs(y.mean() - 5.0) < 4 * np.sqrt(V_e / n)  # 1ᵀK1 = 0: u adds nothing to the mean
    resid = y - 5.0 - sim.truth["breeding_values"].to_numpy()
    assert abs(np.mean(resid**2) - V_e) < 4 * V_e * np.sqrt(2 / n)


def test_poisson_and_bernoulli_truth_definitions():
    pois = simulate(n_families=40, family_size=10, n_snps=500, h2=0.4, family="poisson", seed=5)
    t = pois.truth
    assert (t["V_A"], t["V_e"], t["intercept"]) == pytest.approx((0.4, 0.6, 1.0))
    # E[y] = E exp(mu + u + e) with u + e ~ N(0, V_A·diag(K) + V_e), averaged over individuals.
    d = np.diag(pois.kinship.matrix)
    expected_mean = np.mean(np.exp(t["intercept"] + (t["V_A"] * d + t["V_e"]) / 2))
    assert pois.data["y"].mean() == pytest.approx(expected_mean, rel=0.15)

    bern = simulate(n_families=40, family_size=10, n_snps=500, h2=0.2, family="bernoulli", seed=6)
    t = bern.truth
    assert t["V_e"] == 0.0
    assert t["V_A"] / (t["V_A"] + np.pi**2 / 3) == pytest.approx(0.2)  # latent (logit) h²
    eta = t["intercept"] + t["breeding_values"].to_numpy()
    prob = 1 / (1 + np.exp(-eta))
    sd = np.sqrt(np.sum(prob * (1 - prob))) / len(prob)
    assert abs(bern.data["y"].mean() - prob.mean()) < 4 * sd


def test_grm_follows_the_pedigree():
    """Mean GRM by relationship class matches the centred pedigree expectation."""
    sim = simulate(n_families=30, family_size=8, n_snps=3000, seed=7)
    ids = list(sim.kinship.ids)
    A = pedigree_relationship(sim.pedigree).subset(ids).matrix
    n = len(ids)
    C = np.eye(n) - 1.0 / n
    expected = C @ A @ C  # the GRM is centred on the sample's allele frequencies
    K = sim.kinship.matrix
    off = ~np.eye(n, dtype=bool)
    # Loose: the GRM is relative to the 45 founders' realised genomes (their sampled
    # heterozygosity and self-relationships), which shifts class means by up to ~0.01.
    for value in (0.5, 0.25, 0.0):  # full sibs, half sibs, unrelated
        pairs = off & np.isclose(A, value)
        assert pairs.sum() > 50
        assert K[pairs].mean() == pytest.approx(expected[pairs].mean(), abs=0.025)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": "gamma"}, r"family must be one of \['bernoulli', 'gaussian', 'poisson'\]"),
        ({"h2": 1.2}, r"h2 must lie in \[0, 1\]"),
        ({"h2": 1.0, "family": "bernoulli"}, r"h2 must lie in \[0, 1\) for family 'bernoulli'"),
        ({"repeats": 0}, "repeats must be an integer >= 1"),
        ({"n_snps": 1}, "n_snps must be an integer >= 2"),
        ({"n_families": 1, "family_size": 1}, "at least two offspring"),
        ({"total_variance": 0.0}, "total_variance must be positive"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate(**kwargs)
