"""Additive + epistatic kernels: σ²_A, σ²_AA, h² and H² for both engines."""

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayeslmm as bl
from bayeslmm.datasets import simulate
from bayeslmm.engines.reml import fit_reml
from bayeslmm.results.epistasis import epistasis_table


def _exact_draw(K: np.ndarray, rng) -> np.ndarray:
    values, vectors = np.linalg.eigh(K)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ rng.normal(size=K.shape[0])


def simulate_epistasis(
    seed: int, var_a: float, var_aa: float, var_e: float = 1.0, reps: int = 2, n_families=100
):
    """Family genotypes; g = u_A + u_AA with u_A ~ N(0, σ²_A K), u_AA ~ N(0, σ²_AA K∘K)."""
    sim = simulate(n_families=n_families, family_size=6, n_snps=2000, seed=seed)
    K = sim.kinship
    KK = K.hadamard()
    rng = np.random.default_rng(seed + 1000)
    g = np.sqrt(var_a) * _exact_draw(K.matrix, rng) + np.sqrt(var_aa) * _exact_draw(KK.matrix, rng)
    df = pd.DataFrame({"id": np.repeat(list(K.ids), reps)})
    df["y"] = 5.0 + np.repeat(g, reps) + rng.normal(0.0, np.sqrt(var_e), len(df))
    df["id_epi"] = df["id"]
    return df, K, KK


@pytest.fixture(scope="module")
def reml_fits():
    out = {}
    for var_aa in (0.0, 0.5):
        df, K, KK = simulate_epistasis(seed=1, var_a=0.5, var_aa=var_aa)
        spec = bl.specify("y ~ 1 + (1 | id) + (1 | id_epi)", df, kinship={"id": K, "id_epi": KK})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a boundary fit (σ²_AA = 0) warns, as it should
            out[var_aa] = (fit_reml(spec), spec)
    return out


def test_reml_table_is_the_delta_method_of_the_variance_components(reml_fits):
    fit, spec = reml_fits[0.5]
    table = epistasis_table(fit, spec=spec)  # auto-detects id_epi as epistatic
    par = fit.parameters
    theta = par["estimate"].to_numpy()
    C = fit.parameter_cov
    ia = par.index[par["grp"] == "id"][0]
    iaa = par.index[par["grp"] == "id_epi"][0]
    ie = par.index[par["kind"] == "residual"][0]

    # variances at the sample's kinship scale: σ² (mean diag K - mean K) (Legarra 2016)
    ca, caa = (t.variance_weights()[0, 0] for t in spec.terms)

    def quantities(th):
        va, vaa = ca * th[ia], caa * th[iaa]
        vp = va + vaa + th[ie]
        return {"h2": va / vp, "H2": (va + vaa) / vp, "epistatic_share": vaa / vp}

    est = quantities(theta)
    for name, value in est.items():
        np.testing.assert_allclose(table.loc[name, "estimate"], value, rtol=1e-12)
        eps = 1e-7
        grad = np.array(
            [
                (quantities(theta + eps * e)[name] - quantities(theta - eps * e)[name]) / (2 * eps)
                for e in np.eye(theta.size)
            ]
        )
        np.testing.assert_allclose(table.loc[name, "se"], np.sqrt(grad @ C @ grad), rtol=1e-5)
    np.testing.assert_allclose(table.loc["var_additive", "estimate"], ca * theta[ia])
    np.testing.assert_allclose(table.loc["var_epistatic", "se"], caa * par.loc[iaa, "se"])
    # the engine's own h2 table agrees on the additive share
    h2 = fit.heritability()
    np.testing.assert_allclose(table.loc["h2", "estimate"], h2.loc["id", "estimate"], rtol=1e-10)


def test_reml_recovers_epistasis_and_its_absence(reml_fits):
    """Truth σ²_A = 0.5, σ²_E = 1: σ²_AA = 0.5 is recovered within 3 SE; with σ²_AA = 0 the
    epistatic estimate is small and H² ≈ h²."""
    fit, spec = reml_fits[0.5]
    t = epistasis_table(fit, "id", "id_epi", spec=spec)
    for name, truth in (("var_additive", 0.5), ("var_epistatic", 0.5), ("var_residual", 1.0)):
        assert abs(t.loc[name, "estimate"] - truth) < 3 * t.loc[name, "se"], name
    h2_true, H2_true = 0.5 / 2.0, 1.0 / 2.0
    assert abs(t.loc["H2", "estimate"] - H2_true) < 3 * t.loc["H2", "se"]
    assert abs(t.loc["h2", "estimate"] - h2_true) < 3 * t.loc["h2", "se"]
    fit0, spec0 = reml_fits[0.0]
    t0 = epistasis_table(fit0, spec=spec0)
    assert t0.loc["var_epistatic", "estimate"] < 2 * t0.loc["var_epistatic", "se"]
    assert t0.loc["epistatic_share", "estimate"] < 0.15
    assert abs(t0.loc["H2", "estimate"] - t0.loc["h2", "estimate"]) < 0.15


def test_bayes_draws_give_h2_and_H2_per_draw():
    df, K, KK = simulate_epistasis(seed=2, var_a=0.5, var_aa=0.2, reps=1, n_families=10)
    df["block"] = np.tile(["b1", "b2", "b3"], len(df) // 3 + 1)[: len(df)]
    spec = bl.specify(
        "y ~ 1 + (1 | id) + (1 | id_epi) + (1 | block)", df, kinship={"id": K, "id_epi": KK}
    )
    rng = np.random.default_rng(3)
    sd_a, sd_aa, sd_b, ve = (rng.uniform(0.2, 1.0, size=(2, 30)) for _ in range(4))
    post = xr.Dataset(
        {
            "sd_id": (("chain", "draw"), sd_a),
            "sd_id_epi": (("chain", "draw"), sd_aa),
            "sd_block": (("chain", "draw"), sd_b),
            "var_residual": (("chain", "draw"), ve),
        }
    )
    fit = SimpleNamespace(spec=spec, idata=object(), posterior=post, hdi_prob=0.9)
    table = epistasis_table(fit)
    # kinship variances at the sample's scale (Legarra 2016); the iid block's as they are
    ca, caa = (t.variance_weights()[0, 0] for t in spec.terms[:2])
    va, vaa = ca * sd_a**2, caa * sd_aa**2
    vp = va + vaa + sd_b**2 + ve
    np.testing.assert_allclose(table.loc["h2", "mean"], np.mean(va / vp))
    np.testing.assert_allclose(table.loc["H2", "mean"], np.mean((va + vaa) / vp))
    np.testing.assert_allclose(table.loc["var_other", "mean"], np.mean(sd_b**2))
    np.testing.assert_allclose(table.loc["H2", "median"], np.median((va + vaa) / vp))
    assert table.loc["h2", "hdi_prob"] == 0.9
    assert (table.loc["H2", "hdi_low"] >= 0) and (table.loc["H2", "hdi_high"] <= 1)


def test_roles_must_be_clear():
    df, K, KK = simulate_epistasis(seed=3, var_a=0.5, var_aa=0.0, reps=1, n_families=10)
    df["other"] = df["id"]
    spec = bl.specify(
        "y ~ 1 + (1 | id) + (1 | other)",
        df,
        # K∘K under a name that does not say so (the same K twice is refused: unidentifiable)
        kinship={"id": K, "other": bl.Kinship(KK.matrix, KK.ids, name="K2")},
    )
    post = xr.Dataset(
        {v: (("chain", "draw"), np.ones((1, 3))) for v in ("sd_id", "sd_other", "var_residual")}
    )
    fit = SimpleNamespace(spec=spec, idata=object(), posterior=post, hdi_prob=0.95)
    with pytest.raises(ValueError, match="Name the epistatic"):
        epistasis_table(fit)
    table = epistasis_table(fit, additive="id", epistatic="other")
    w = [t.variance_weights()[0, 0] for t in spec.terms]  # each SD is 1
    np.testing.assert_allclose(table.loc["H2", "mean"], sum(w) / (sum(w) + 1))
    with pytest.raises(ValueError, match="both the additive"):
        epistasis_table(fit, additive="id", epistatic=["id"])
