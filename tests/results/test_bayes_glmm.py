"""A Poisson kinship GLMM end to end: heritability scales and posterior predictive checks."""

import numpy as np
import pytest

import bayeslmm as bl
from bayeslmm.results import tables
from bayeslmm.results.scales import heritability_scales


@pytest.fixture(scope="module")
def poisson_fit():
    sim = bl.datasets.simulate(
        n_families=12, family_size=5, n_snps=300, h2=0.5, family="poisson", seed=3
    )
    model = bl.LMM("y ~ 1 + (1|id)", data=sim.data, kinship={"id": sim.kinship}, family="poisson")
    return model.fit(draws=300, tune=300, chains=2, cores=1, seed=1, sampler="pymc", verbose=False)


def test_scales_table_matches_the_draw_by_draw_formula(poisson_fit):
    fit = poisson_fit
    table = fit.heritability_scales()
    assert list(table.index) == ["h2_latent", "h2_link", "h2_observed"]
    post = fit.posterior
    # Recompute the posterior mean of the observed-scale h² from the variance draws with the
    # point formula, independently of posterior_heritability_scales' vectorisation.
    # the genetic variance at the sample's kinship scale (Legarra 2016), as the tables use
    va = post["var_id"].values.ravel() * fit.spec.terms[0].variance_weights()[0, 0]
    olre = post["var_olre"].values.ravel()
    beta = post["beta"].values.reshape(va.size, -1)
    eta = beta @ fit.spec.X.T
    obs = [
        heritability_scales(va[k], olre[k], eta[k], family="poisson")["observed"]
        for k in range(0, va.size, 25)
    ]
    names, draws = tables.scale_quantity(fit.estimate())
    sub = draws.values[..., names.index("h2_observed")].ravel()[::25]
    np.testing.assert_allclose(sub, np.asarray(obs, dtype=float).ravel(), rtol=1e-8)
    assert 0 < table.loc["h2_observed", "mean"] < table.loc["h2_latent", "mean"] < 1
    summary = fit.summary()
    assert summary["heritability"]["h2_observed"]["mean"] == pytest.approx(
        table.loc["h2_observed", "mean"]
    )


def test_posterior_predictive_check(poisson_fit):
    fit = poisson_fit
    y_rep = fit.posterior_predictive(seed=2)
    assert y_rep.shape == (2, 300, fit.spec.n_obs)
    assert np.all(y_rep >= 0) and np.all(y_rep == np.round(y_rep))
    table = fit.ppc(seed=2)
    assert "mean" in table.index
    # The model fits its own data: the observed mean is not extreme among replicates.
    assert 0.01 < table.loc["mean", "p_value"] < 0.99


def test_gaussian_fit_has_no_scales(poisson_fit):
    rng = np.random.default_rng(0)
    K = bl.Kinship(np.eye(10) * 0.5 + 0.5, [f"i{k}" for k in range(10)])
    import pandas as pd

    df = pd.DataFrame({"y": rng.normal(size=10), "id": list(K.ids)})
    fit = bl.LMM("y ~ 1 + (1|id)", df, kinship={"id": K}).fit(
        draws=50, tune=50, chains=1, cores=1, sampler="pymc", verbose=False, seed=1
    )
    with pytest.raises(ValueError, match="GLMMs"):
        fit.heritability_scales()
    # a spectral fit draws its replicates from u | y, θ (tests/results/test_ppc_strategies.py)
    assert fit.posterior_predictive(seed=1).shape == (1, 50, 10)
