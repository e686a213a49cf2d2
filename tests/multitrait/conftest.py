"""Simulated multi-trait data: Y = X Bᵀ + U + E with vec(U) ~ N(0, Σ_G ⊗ K)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl


def simulate(
    rng: np.random.Generator,
    n: int,
    G: np.ndarray,
    E: np.ndarray,
    n_markers: int = 400,
    missing: float = 0.0,
) -> tuple[pd.DataFrame, bl.Kinship]:
    """Data frame (y1..yt, x, id) and a GRM-like kinship of standardised random markers."""
    t = G.shape[0]
    ids = [f"i{k}" for k in range(n)]
    W = rng.normal(size=(n, n_markers))
    W = (W - W.mean(axis=0)) / W.std(axis=0)
    K = W @ W.T / n_markers + 1e-3 * np.eye(n)
    s, Q = np.linalg.eigh(K)
    U = Q @ (np.sqrt(np.clip(s, 0, None))[:, None] * rng.normal(size=(n, t)))
    U = U @ np.linalg.cholesky(G).T
    x = rng.normal(size=n)
    Y = U + rng.normal(size=(n, t)) @ np.linalg.cholesky(E).T + np.arange(1.0, t + 1.0)
    Y[:, 0] += 0.5 * x
    if missing:
        holes = rng.random(size=(n, t)) < missing
        holes[holes.all(axis=1), 0] = False  # every individual keeps a record
        Y[holes] = np.nan
    frame = pd.DataFrame({f"y{a + 1}": Y[:, a] for a in range(t)})
    frame["x"] = x
    frame["id"] = ids
    return frame, bl.Kinship(K, ids)


@pytest.fixture
def multitrait_data() -> Callable[..., tuple[pd.DataFrame, bl.Kinship]]:
    """Factory: ``multitrait_data(rng, n, G, E, missing=0.2)``."""
    return simulate
