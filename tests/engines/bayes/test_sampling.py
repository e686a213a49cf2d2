"""Convergence diagnostics of a fit (``bayeslmm.engines.bayes.sampling.diagnose``)."""

from __future__ import annotations

import arviz as az
import numpy as np

from bayeslmm.engines.bayes.sampling import diagnose


def test_min_ess_ignores_constant_quantities():
    """A binary trait's latent residual variance is the constant π²/3 in every draw: ArviZ
    gives it an ESS equal to the number of draws, which must not stand in for the minimum
    over the quantities that move (NUTS often gives those more, antithetic draws)."""
    rng = np.random.default_rng(0)
    antithetic = np.zeros((2, 500))
    for t in range(1, 500):  # AR(1) with φ = −0.6: ESS ≈ 4 × the number of draws
        antithetic[:, t] = -0.6 * antithetic[:, t - 1] + rng.normal(size=2)
    idata = az.from_dict(
        posterior={"var_id": antithetic, "var_residual": np.full((2, 500), np.pi**2 / 3)}
    )
    diag, _ = diagnose(idata)
    expected = float(az.ess(idata, var_names=["var_id"], method="bulk")["var_id"])
    assert expected > 1000  # more than the draws: the constant's 1000 would be the minimum
    assert diag["min_ess_bulk"] == expected
