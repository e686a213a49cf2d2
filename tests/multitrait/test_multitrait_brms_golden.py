"""The bivariate animal model's posterior against brms's (golden files, issue #19).

tests/golden/brms_multitrait/: generate.py writes a 300-animal half-sib/full-sib pedigree,
its relationship matrix A and two traits (h² 0.4, r_g 0.5, r_e −0.2); brms_multitrait.R fits

    brm(bf(mvbind(y1, y2) ~ x + (1 | p | gr(id, cov = A))) + set_rescor(TRUE))

with bayeslmm's default priors written out as numbers (half-t(3, 2.5 s_a) SDs, LKJ(2)
correlations, the same normal priors on the centred intercepts and slopes), 4 × (500 + 1000)
draws, and stores each quantity's posterior mean, SD and Monte Carlo SE in
brms_multitrait.json (no divergences, R-hat ≤ 1.01, bulk ESS 239–755 for the variance
parameters, 278 CPU s). bayeslmm fits the same CSV and A with its defaults, 4 × (1000 + 1000);
the two are the same posterior, so each posterior mean must agree within 4 combined Monte
Carlo SEs (no extra tolerance: the prior densities are identical, only the samplers'
parametrisations differ), and each posterior SD within 4 combined relative SEs of an SD,
√(1/(2 ESS₁) + 1/(2 ESS₂)). The check fails with a wrong prior in bayeslmm: sd_id ~
half-t(3, 0.5) instead of half-t(3, 2.66) / half-t(3, 4.64) moves σ_g of y2 by 8.7 combined MC
SEs (and σ_e, h² of y2); half-t(3, 0.1) fails 10 checks (h² of y2 by 22 SEs); LKJ(1) instead
of LKJ(2) on both correlation matrices moves r_g by 11 SEs and r_e by 7.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "brms_multitrait"


def _read_inputs() -> tuple[pd.DataFrame, bl.Kinship]:
    data = pd.read_csv(GOLDEN / "data.csv", dtype={"id": str})
    A = pd.read_csv(GOLDEN / "A.csv", index_col=0)
    kinship = bl.Kinship(A.to_numpy(), tuple(A.index.astype(str)), name="A")
    return data, kinship


def test_golden_relationship_matrix_is_the_pedigree_one() -> None:
    # A.csv (what brms used) is the tabular-method A of pedigree.csv, and its structure is
    # the one designed: founders unrelated, half sibs 1/4, full sibs 1/2, parent-offspring 1/2
    _, kinship = _read_inputs()
    pedigree = pd.read_csv(GOLDEN / "pedigree.csv", dtype=str, keep_default_na=False)
    rebuilt = bl.pedigree_relationship(pedigree)
    np.testing.assert_array_equal(rebuilt.matrix, kinship.matrix)
    index = {name: i for i, name in enumerate(kinship.ids)}
    A = kinship.matrix
    assert A[index["s01"], index["d01"]] == 0.0
    assert A[index["o01_1"], index["o01_2"]] == 0.5  # full sibs (dam d01, sire s01)
    assert A[index["o01_1"], index["o02_1"]] == 0.25  # paternal half sibs (sire s01)
    assert A[index["o01_1"], index["o05_1"]] == 0.0  # different sires and dams
    assert A[index["o01_1"], index["s01"]] == 0.5
    np.testing.assert_array_equal(np.diag(A), 1.0)


def _bayeslmm_draws(priors: dict | None = None) -> dict[str, np.ndarray]:
    data, kinship = _read_inputs()
    model = bl.LMM(
        "mvbind(y1, y2) ~ x + (1 | id)", data, kinship={"id": kinship}, priors=priors or {}
    )
    fit = model.fit(draws=1000, tune=1000, chains=4, cores=1, seed=2026, progressbar=False)
    assert fit.divergences == 0
    post = fit.posterior
    gsd, esd = post["genetic_sd"], post["residual_sd"]
    h2 = post["heritability"]
    beta = post["beta"]
    named = {
        "sigma_g_y1": gsd.sel(trait="y1"),
        "sigma_g_y2": gsd.sel(trait="y2"),
        "r_g": post["genetic_correlation"].sel(trait="y1", trait_="y2"),
        "sigma_e_y1": esd.sel(trait="y1"),
        "sigma_e_y2": esd.sel(trait="y2"),
        "r_e": post["residual_correlation"].sel(trait="y1", trait_="y2"),
        "h2_y1": h2.sel(trait="y1"),
        "h2_y2": h2.sel(trait="y2"),
        "b_y1_Intercept": beta.sel(trait="y1", term="Intercept"),
        "b_y1_x": beta.sel(trait="y1", term="x"),
        "b_y2_Intercept": beta.sel(trait="y2", term="Intercept"),
        "b_y2_x": beta.sel(trait="y2", term="x"),
    }
    # (chain, draw) arrays
    return {
        name: np.asarray(draws.transpose("chain", "draw").values) for name, draws in named.items()
    }


def _disagreements(draws: dict[str, np.ndarray], golden: dict) -> list[str]:
    import arviz as az

    failures = []
    for name, values in draws.items():
        ref = golden["posterior"][name]
        mean = float(values.mean())
        # arviz returns a length-1 array for one (chain, draw) array
        mcse = float(np.ravel(az.mcse(values, method="mean"))[0])
        allowed = 4.0 * float(np.hypot(mcse, ref["mcse_mean"]))
        if abs(mean - ref["mean"]) > allowed:
            failures.append(
                f"{name}: mean bayeslmm {mean:.4f} vs brms {ref['mean']:.4f} "
                f"(|diff| {abs(mean - ref['mean']):.4f} > 4 combined MC SEs {allowed:.4f})"
            )
        # an SD estimated from ESS effective draws has relative SE ≈ 1 / sqrt(2 ESS)
        sd = float(values.std())
        ess = float(np.ravel(az.ess(values, method="bulk"))[0])
        allowed_rel = 4.0 * float(np.sqrt(0.5 / ess + 0.5 / ref["ess_bulk"]))
        if abs(sd / ref["sd"] - 1.0) > allowed_rel:
            failures.append(
                f"{name}: posterior SD bayeslmm {sd:.4f} vs brms {ref['sd']:.4f} "
                f"(relative difference > {allowed_rel:.3f})"
            )
    return failures


@pytest.mark.slow
def test_posterior_agrees_with_brms() -> None:
    golden = json.loads((GOLDEN / "brms_multitrait.json").read_text())
    # the reference itself converged, or its MC SEs mean nothing
    assert golden["sampler"]["divergent"] == 0
    for name in ("sigma_g_y1", "sigma_g_y2", "r_g", "sigma_e_y1", "sigma_e_y2", "r_e"):
        assert golden["posterior"][name]["rhat"] < 1.01, name
        assert golden["posterior"][name]["ess_bulk"] > 200, name
    # bayeslmm's h² uses the sample-scale c = mean diag A − mean A; the golden's does too
    _, kinship = _read_inputs()
    c = float(np.mean(np.diag(kinship.matrix)) - np.mean(kinship.matrix))
    assert golden["kinship_scale"] == pytest.approx(c, rel=1e-12)
    failures = _disagreements(_bayeslmm_draws(), golden)
    assert not failures, "\n".join(failures)
