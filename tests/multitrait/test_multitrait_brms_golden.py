"""The bivariate posterior against brms's multivariate animal model (golden files).

tests/golden/brms/multitrait.R simulates n = 150 individuals with a GRM and two traits and
fits ``brm(bf(mvbind(y1, y2) ~ x + (1 | p | gr(id, cov = K))) + set_rescor(TRUE))`` with
brms's default priors, 4 × 2000 draws; multitrait.json holds each quantity's posterior mean,
SD and Monte Carlo SE. The same model is fitted here with brms's priors on the SDs
(half student_t(3, 0, 2.5)) and correlations (LKJ(1)); the fixed effects' priors differ
(brms: flat slopes, student_t intercept; here weakly informative normals), which moves the
variance posteriors far less than their MC error at this n. Posterior means must agree within
4 combined Monte Carlo SEs plus 5 % of the posterior SD (the priors' difference).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "brms"


@pytest.mark.slow
@pytest.mark.skipif(
    not (GOLDEN / "multitrait.json").exists(),
    reason="tests/golden/brms/multitrait.json not generated (run tests/golden/brms/multitrait.R)",
)
def test_posterior_means_agree_with_brms() -> None:
    import arviz as az

    golden = json.loads((GOLDEN / "multitrait.json").read_text())
    data = pd.read_csv(GOLDEN / "multitrait_data.csv", dtype={"id": str})
    K = bl.Kinship.from_dataframe(
        pd.read_csv(GOLDEN / "multitrait_K.csv", index_col=0, dtype={0: str})
    )
    priors = {
        "sd_id": ("halfstudentt", 3.0, 2.5),
        "sigma": ("halfstudentt", 3.0, 2.5),
        "cor_id": ("lkj", 1.0),
        "rescor": ("lkj", 1.0),
    }
    model = bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", data, kinship={"id": K}, priors=priors)
    fit = model.fit(draws=2000, tune=1000, chains=4, seed=2026, progressbar=False)
    post = fit.posterior
    gsd, esd = post["genetic_sd"], post["residual_sd"]
    ours = {
        "sd_id__y1_Intercept": gsd.isel(trait=0),
        "sd_id__y2_Intercept": gsd.isel(trait=1),
        "sigma_y1": esd.isel(trait=0),
        "sigma_y2": esd.isel(trait=1),
        "cor_id__y1_Intercept__y2_Intercept": post["genetic_correlation"].isel(trait=0, trait_=1),
        "rescor__y1__y2": post["residual_correlation"].isel(trait=0, trait_=1),
        # brms's h2: G_tt / (G_tt + E_tt) at K's own scale
        "h2_y1": gsd.isel(trait=0) ** 2 / (gsd.isel(trait=0) ** 2 + esd.isel(trait=0) ** 2),
        "h2_y2": gsd.isel(trait=1) ** 2 / (gsd.isel(trait=1) ** 2 + esd.isel(trait=1) ** 2),
        "b_y1_x": post["beta"].sel(trait="y1", term="x"),
        "b_y2_x": post["beta"].sel(trait="y2", term="x"),
    }
    failures = []
    for name, draws in ours.items():
        ref = golden["posterior"][name]
        mean = float(draws.mean())
        mcse = float(np.ravel(az.mcse(draws.values, method="mean"))[0])
        allowed = 4.0 * np.hypot(mcse, ref["mcse_mean"]) + 0.05 * ref["sd"]
        if abs(mean - ref["mean"]) > allowed:
            failures.append(
                f"{name}: bayeslmm {mean:.4f} vs brms {ref['mean']:.4f} (±{allowed:.4f})"
            )
        # the posterior spread agrees too (within 15 %)
        assert float(draws.std()) == pytest.approx(ref["sd"], rel=0.15), name
    assert not failures, "\n".join(failures)
