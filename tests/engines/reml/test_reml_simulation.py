"""Simulation with known truth: REML h² is close to unbiased and its SE is calibrated.

Slow (600 fits, about a minute):
``python -m pytest -m slow tests/engines/reml/test_reml_simulation.py``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from bayeslmm import Kinship, specify
from bayeslmm.engines.reml import BoundaryFitWarning, fit_reml

pytestmark = pytest.mark.slow


def _kinship(n: int, rng: np.random.Generator) -> Kinship:
    freq = rng.uniform(0.1, 0.9, 2 * n)
    G = rng.binomial(2, freq, size=(n, 2 * n)).astype(float)
    for family in range(n // 10):  # families of 10 sharing half of a founder's genome
        founder = 10 * family
        for i in range(founder + 1, founder + 10):
            share = rng.random(G.shape[1]) < 0.5
            G[i, share] = G[founder, share]
    p = G.mean(0) / 2
    W = G - 2 * p
    K = W @ W.T / (2 * np.sum(p * (1 - p)))
    return Kinship(0.98 * K + 0.02 * np.eye(n), ids=[f"i{k}" for k in range(n)])


@pytest.mark.parametrize("true_h2", [0.3, 0.6])
def test_h2_unbiased_and_se_calibrated(true_h2: float) -> None:
    rng = np.random.default_rng(99)
    n, reps = 300, 300
    kin = _kinship(n, rng)
    root = kin.eigenvectors * np.sqrt(kin.eigenvalues)
    x = rng.normal(size=n)
    estimates, ses, covered = [], [], 0
    for _ in range(reps):
        g = root @ rng.normal(size=n)
        y = 1 + 0.5 * x + math.sqrt(true_h2) * g + math.sqrt(1 - true_h2) * rng.normal(size=n)
        data = pd.DataFrame({"id": list(kin.ids), "x": x, "y": y})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundaryFitWarning)
            fit = fit_reml(specify("y ~ x + (1 | id)", data, kinship={"id": kin}))
        est, se = fit.heritability().loc["h2", ["estimate", "se"]]
        estimates.append(est)
        ses.append(se)
        covered += abs(est - true_h2) <= 1.96 * se
    estimates, ses = np.array(estimates), np.array(ses)
    sd = estimates.std(ddof=1)
    # REML is nearly unbiased; the mean over 300 replicates has SE sd/√300 ≈ 0.01
    assert abs(estimates.mean() - true_h2) < 3.5 * sd / math.sqrt(reps)
    # the AI-based delta-method SE matches the spread of the estimates
    assert np.median(ses) == pytest.approx(sd, rel=0.15)
    assert 0.90 <= covered / reps <= 0.98
