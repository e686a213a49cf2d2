"""Posterior variance shares of a scan's top markers (``ScanResult.posterior_shares``).

Checked against the simulated truth (the HDI of a large QTL's share covers the share it was
simulated with) and against independent arithmetic on the refit's draws: the LOCO kinship
rebuilt with NumPy from the other chromosomes' markers, its sample scale, and the share
formula applied draw by draw.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.errors import SpecificationError
from bayeslmm.results.scan_result import ScanResult

QTL = 7  # on chromosome 1


def _qtl_data(seed: int = 11):
    """300 individuals, 600 markers on 3 chromosomes; a QTL holding 25% of the phenotypic
    variance, a polygenic part (chromosomes 2–3) holding 40% and noise 35%."""
    rng = np.random.default_rng(seed)
    n, m = 300, 600
    G = rng.binomial(2, rng.uniform(0.1, 0.5, m), size=(n, m)).astype(float)
    ids = [f"i{k}" for k in range(n)]
    snps = pd.DataFrame({"chr": np.repeat([1, 2, 3], m // 3), "bp": np.tile(np.arange(m // 3), 3)})
    Z = (G - G.mean(0)) / G.std(0)
    poly = Z[:, 200:] @ rng.normal(size=m - 200)
    poly *= np.sqrt(0.4 / poly.var())
    effect = np.sqrt(0.25 / G[:, QTL].var())
    y = effect * G[:, QTL] + poly + rng.normal(0.0, np.sqrt(0.35), n)
    return pd.DataFrame({"id": ids, "y": y}), pd.DataFrame(G, index=ids), snps


def test_posterior_share_of_a_large_qtl_covers_the_simulated_share_and_is_the_formula():
    pheno, G, snps = _qtl_data()
    res = bl.scan("y ~ 1 + (1 | id)", pheno, G, snps, progressbar=False)
    assert res.top(1)["SNP"].item() == str(QTL)
    captured = []
    refit = res.posterior_refit

    def keep(names, **options):
        out = refit(names, **options)
        captured.extend(out)
        return out

    res.posterior_refit = keep
    table = res.posterior_shares(top=1, draws=500, tune=500, chains=2, seed=3)
    row = table.iloc[0]
    assert row["SNP"] == str(QTL) and row["chr"] == "1"
    assert row["share_low"] <= 0.25 <= row["share_high"]
    assert row["share_high"] - row["share_low"] < 0.3
    assert row["r_hat"] < 1.05 and row["ess"] > 100
    # the share, draw by draw, from the fit's draws and a kinship rebuilt here
    fit, g = captured[0]
    np.testing.assert_allclose(g, G.iloc[:, QTL].to_numpy())
    other = G.iloc[:, 200:].to_numpy()  # the LOCO kinship of chromosome 1: VanRaden's GRM
    p = other.mean(0) / 2
    W = other - 2 * p
    K = W @ W.T / (2 * np.sum(p * (1 - p)))
    np.testing.assert_allclose(fit.spec.terms[0].kinship.matrix, K, rtol=1e-8, atol=1e-10)
    post = fit.posterior
    beta = post["beta"].sel(fixed="scan_marker").values
    genetic = post["var_id"].values * (np.mean(np.diag(K)) - np.mean(K))
    marker = beta**2 * np.mean((g - g.mean()) ** 2)
    share = marker / (marker + genetic + post["var_residual"].values)
    assert row["share"] == pytest.approx(share.mean(), rel=1e-10)
    assert row["beta"] == pytest.approx(beta.mean(), rel=1e-10)
    h2 = genetic / (genetic + post["var_residual"].values)
    assert row["h2"] == pytest.approx(h2.mean(), rel=1e-6)


def test_posterior_shares_refuses_a_binary_scan_and_a_result_without_data():
    pheno, G, snps = _qtl_data()
    pheno["case"] = (pheno["y"] > pheno["y"].quantile(0.8)).astype(float)
    res = bl.scan("case ~ 1 + (1 | id)", pheno, G, snps, family="bernoulli", progressbar=False)
    with pytest.raises(SpecificationError, match=re.escape("refits markers of a Gaussian")):
        res.posterior_shares()
    bare = ScanResult(pd.DataFrame({"SNP": ["a"], "p": [0.1]}), pd.DataFrame(), "y ~ (1|id)",
                      "wald", True, 10)  # fmt: skip
    with pytest.raises(SpecificationError, match="holds no data to refit"):
        bare.posterior_shares()
