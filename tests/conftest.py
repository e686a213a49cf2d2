"""Fixtures shared by the whole test tree.

Most tests need a small kinship matrix and a data frame to go with it. Their data differ from
file to file on purpose (sizes, seeds, columns that a test's assertions were written
against), so what is shared is how the kinship is made, as factories that draw from the
caller's random generator: a test keeps its own seed and the draws that follow, and gets
exactly the numbers it always had.

- :func:`random_kinship`: K = W Wᵀ / m (+ a ridge), W an n × m standard normal matrix: a
  dense, positive definite, GRM-like kernel without genotypes.
- :func:`snp_kinship`: the GRM of standardised 0/1/2 markers, K = Z Zᵀ / m (rows centred, so
  K is singular, as real GRMs are).
- :func:`tiny_files`: a CSV data file and a CSV kinship for the command line.

Fixtures that a single file uses stay in that file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl


def _random_matrix(
    rng: np.random.Generator, n: int, n_markers: int, ridge: float = 0.0
) -> np.ndarray:
    W = rng.normal(size=(n, n_markers))
    K = W @ W.T / n_markers
    return K + ridge * np.eye(n) if ridge else K


def _random_kinship(
    rng: np.random.Generator,
    n: int,
    n_markers: int,
    ridge: float = 0.0,
    ids: str = "i{k}",
    name: str | None = None,
) -> bl.Kinship:
    K = _random_matrix(rng, n, n_markers, ridge)
    ids_ = [ids.format(k=k) for k in range(n)]
    return bl.Kinship(K, ids_) if name is None else bl.Kinship(K, ids_, name=name)


def _snp_kinship(
    rng: np.random.Generator,
    n: int,
    n_snps: int,
    freq: float = 0.4,
    ids: str = "i{k}",
) -> bl.Kinship:
    snps = rng.binomial(2, freq, size=(n, n_snps)).astype(float)
    Zs = (snps - snps.mean(0)) / snps.std(0)
    return bl.Kinship(Zs @ Zs.T / n_snps, [ids.format(k=k) for k in range(n)])


@pytest.fixture(scope="session")
def random_kinship() -> Callable[..., bl.Kinship]:
    """Factory ``random_kinship(rng, n, n_markers, ridge=0.0, ids="i{k}", name=None)``.

    Draws an n × ``n_markers`` standard normal W from ``rng`` (one call, so the caller's
    later draws are unchanged by using it) and returns the Kinship K = W Wᵀ / n_markers
    + ridge · I, positive definite for ``n_markers ≥ n`` or ``ridge > 0``, with ids
    ``ids.format(k=k)``.

    Examples
    --------
    >>> K = _random_kinship(np.random.default_rng(7), 30, 50, ridge=0.05)  # what it returns
    >>> K.n, K.ids[:2], bool(np.linalg.eigvalsh(K.matrix).min() > 0.05)
    (30, ('i0', 'i1'), True)
    """
    return _random_kinship


@pytest.fixture(scope="session")
def snp_kinship() -> Callable[..., bl.Kinship]:
    """Factory ``snp_kinship(rng, n, n_snps, freq=0.4, ids="i{k}")``.

    The GRM of n individuals at ``n_snps`` markers drawn Binomial(2, freq) from ``rng``, each
    marker standardised to mean 0 and variance 1: K = Z Zᵀ / n_snps (mean diagonal 1, rows
    summing to 0, so K is singular).

    Examples
    --------
    >>> K = _snp_kinship(np.random.default_rng(2024), 60, 300, ids="m{k:02d}")
    >>> centred = bool(abs(K.matrix.sum(1)).max() < 1e-9)
    >>> K.ids[:2], round(float(np.mean(np.diag(K.matrix))), 6), centred
    (('m00', 'm01'), 1.0, True)
    """
    return _snp_kinship


@pytest.fixture
def tiny_files(tmp_path: Path) -> Path:
    """A folder with ``data.csv`` (40 individuals a0…a39, columns id, y, x; y = 5 + 0.5 x +
    g + e with g ~ N(0, K)) and ``kin.csv`` (K as a square table with ids on both axes),
    for the command line."""
    rng = np.random.default_rng(3)
    n = 40
    ids = [f"a{k}" for k in range(n)]
    K = _random_matrix(rng, n, 80)
    g = np.linalg.cholesky(K + 1e-9 * np.eye(n)) @ rng.normal(size=n)
    x = rng.normal(size=n)
    pd.DataFrame({"id": ids, "y": 5 + 0.5 * x + g + rng.normal(size=n), "x": x}).to_csv(
        tmp_path / "data.csv", index=False
    )
    pd.DataFrame(K, index=ids, columns=ids).to_csv(tmp_path / "kin.csv")
    return tmp_path
