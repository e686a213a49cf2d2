"""Simulated multi-trait data: Y = X Bᵀ + U + E with vec(U) ~ N(0, Σ_G ⊗ K), on a GRM-like
kinship (fixture ``multitrait_data``), a low-rank kinship W Wᵀ (``low_rank``) or the
dense A of a simulated pedigree (``pedigree_cases``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.kinship import PedigreeDensifyWarning
from bayeslmm.kinship.low_rank import LowRankKinship

#: Σ_G and Σ_E of the low-rank cases (their leading t × t blocks for t traits).
LOW_RANK_G = np.array([[1.0, 0.5, 0.1], [0.5, 0.8, -0.2], [0.1, -0.2, 0.6]])
LOW_RANK_E = np.array([[0.9, -0.3, 0.1], [-0.3, 1.0, 0.2], [0.1, 0.2, 0.7]])
#: Σ_G and Σ_E of the pedigree cases.
PEDIGREE_G = np.array([[1.0, 0.5], [0.5, 1.5]])
PEDIGREE_E = np.array([[1.0, -0.3], [-0.3, 0.8]])


def signed_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eigh`` with each eigenvector's largest entry made positive.

    LAPACK builds may return an eigenvector or its negative; effects simulated as
    Q √w z would then differ between machines for the same seed (and a test's data set with
    them), so the sign is fixed here.
    """
    w, Q = np.linalg.eigh(matrix)
    largest = Q[np.abs(Q).argmax(axis=0), np.arange(Q.shape[1])]
    return w, Q * np.where(largest < 0, -1.0, 1.0)


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
    s, Q = signed_eigh(K)
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


def low_rank_case(
    seed: int, n: int, p: int, t: int, centred: bool, missing: float | None = None
) -> tuple[pd.DataFrame, LowRankKinship, bl.Kinship]:
    """Data (y1..yt, x, id), a low-rank kinship and the dense kinship of the same W Wᵀ.

    ``centred``: W with rows centred (W 1 = 0, rank p − 1), else the GRM of random
    dosages. ``missing``: about that share of each trait absent, 12 individuals recording
    one trait only and (t = 3) two recording none; None: complete data.
    """
    rng = np.random.default_rng(seed)
    if centred:
        W = rng.normal(size=(n, p))
        W -= W.mean(axis=1, keepdims=True)  # W 1 = 0: rank p − 1
        K = LowRankKinship(W / np.sqrt(p), [f"i{k}" for k in range(n)])
    else:
        dosages = rng.binomial(2, rng.uniform(0.05, 0.5, p), size=(n, p)).astype(np.int8)
        K = bl.grm(dosages, low_rank=True)
    dense = bl.Kinship(K.markers @ K.markers.T, K.ids, name=K.name, check_psd=False)
    G, E = LOW_RANK_G[:t, :t], LOW_RANK_E[:t, :t]
    U = K.markers @ rng.normal(size=(K.n_markers, t)) @ np.linalg.cholesky(G).T
    x = rng.normal(size=n)
    Y = U + rng.normal(size=(n, t)) @ np.linalg.cholesky(E).T + np.arange(1.0, t + 1.0)
    Y[:, 0] += 0.5 * x
    if missing is not None:
        holes = rng.random(size=(n, t)) < missing
        holes[:12] = True  # 12 individuals record one trait only, each trait in turn
        holes[np.arange(12), np.arange(12) % t] = False
        if t >= 3:
            holes[12:14] = True  # and two record none (they add nothing to the likelihood)
        Y[holes] = np.nan
    df = pd.DataFrame({f"y{a + 1}": Y[:, a] for a in range(t)})
    df["x"] = x
    df["id"] = list(K.ids)
    return df, K, dense


def low_rank_formula(t: int, covariate: bool) -> str:
    """``mvbind(y1, …, yt) ~ x + (1 | id)`` (``~ 1 +`` without the covariate)."""
    traits = ", ".join(f"y{a + 1}" for a in range(t))
    return f"mvbind({traits}) ~ {'x' if covariate else '1'} + (1 | id)"


def pedigree_case(
    rng: np.random.Generator,
    n_animals: int,
    n_records: int,
    *,
    window: int,
    missing: float = 0.2,
    G: np.ndarray = PEDIGREE_G,
    E: np.ndarray = PEDIGREE_E,
) -> tuple[pd.DataFrame, pd.DataFrame, bl.Kinship]:
    """A pedigree, two traits recorded on ``n_records`` of its non-founders, and the dense A.

    The pedigree: overlapping generations from few parents (each animal's parents among the
    ``window`` before it: inbreeding), 10 % unknown parents, rows shuffled (offspring before
    parents), integer ids with 0 for unknown. The traits: U from the dense A of the whole
    pedigree, about ``missing`` of each trait's values absent (never both on one animal).
    """
    founders = 20
    sire = np.zeros(n_animals, dtype=int)
    dam = np.zeros(n_animals, dtype=int)
    for i in range(founders, n_animals):
        lo = max(0, i - window)
        sire[i] = rng.integers(lo, i) + 1
        dam[i] = rng.integers(lo, i) + 1
    sire[rng.random(n_animals) < 0.1] = 0
    dam[rng.random(n_animals) < 0.1] = 0
    ped = pd.DataFrame({"id": np.arange(1, n_animals + 1), "sire": sire, "dam": dam})
    ped = ped.sample(frac=1.0, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PedigreeDensifyWarning)
        A_dense = bl.pedigree_relationship(ped)
    n = len(A_dense.ids)
    w, Q = signed_eigh(A_dense.matrix)
    U = Q @ (np.sqrt(np.clip(w, 0, None))[:, None] * rng.normal(size=(n, 2)))
    U = U @ np.linalg.cholesky(G).T
    candidates = ped.loc[(ped["sire"] > 0) | (ped["dam"] > 0), "id"].astype(str).to_numpy()
    recorded = rng.choice(candidates, size=n_records, replace=False)
    index = pd.Index(A_dense.ids).get_indexer(recorded)
    x = rng.normal(size=n_records)
    Y = U[index] + rng.normal(size=(n_records, 2)) @ np.linalg.cholesky(E).T + [1.0, 2.0]
    Y[:, 0] += 0.5 * x
    holes = rng.random(size=(n_records, 2)) < missing
    holes[holes.all(axis=1), 0] = False
    Y[holes] = np.nan
    frame = pd.DataFrame({"id": recorded, "y1": Y[:, 0], "y2": Y[:, 1], "x": x})
    return ped, frame, A_dense


@pytest.fixture(scope="session")
def low_rank() -> SimpleNamespace:
    """The low-rank cases: ``low_rank.case(seed, n, p, t, centred, missing=None)`` (see
    :func:`low_rank_case`), ``low_rank.formula(t, covariate)``, and their Σ_G and Σ_E
    (``low_rank.G``, ``low_rank.E``)."""
    return SimpleNamespace(case=low_rank_case, formula=low_rank_formula, G=LOW_RANK_G, E=LOW_RANK_E)


@pytest.fixture(scope="session")
def pedigree_cases() -> Callable[..., tuple[pd.DataFrame, pd.DataFrame, bl.Kinship]]:
    """Factory: ``pedigree_cases(rng, n_animals, n_records, window=100, missing=0.2, G=...,
    E=...)`` → (pedigree, data, dense A); see :func:`pedigree_case`."""
    return pedigree_case
