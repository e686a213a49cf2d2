"""The per-chromosome loop shared by the Gaussian scan and the binary/count scan.

For each chromosome: its kinship (LOCO, or the one whole-genome kinship fitted once), the
null model on it, every marker block by block, then the chromosome's refits (exact refits
of a Gaussian scan, Wald refits of a score-tested one), with the seconds of each stage and
one row of ``ScanResult.null_models``. What differs between the families lives in a
:class:`ChromosomeTests`.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from bayeslmm.kinship._kinship import Kinship
from bayeslmm.kinship.grm import _centred_blocks, _Dosages, _SnpSelection


class ChromosomeTests(Protocol):
    """What one family's scan does per chromosome.

    ``stages`` names the timed stages after ``grm_s`` (the driver times ``markers_s`` and
    ``refit_stage``; :meth:`fit_null` fills its own stages in ``times``).
    """

    stages: tuple[str, ...]
    refit_stage: str

    def release(self) -> None:
        """Drop the previous null model (its n × n matrices) before the next kinship."""

    def fit_null(self, K: Kinship, label: str, times: dict[str, float]) -> dict[str, Any]:
        """Fit the null model on ``K``; return its row of ``null_models``."""

    def test_block(self, cols: np.ndarray, Z: np.ndarray) -> None:
        """Test a block of centred markers (columns ``cols`` of the marker map)."""

    def refit(self, label: str, sub: _SnpSelection) -> dict[str, Any]:
        """The chromosome's refits; extra entries for its ``null_models`` row."""


def scan_chromosomes(
    order: list[str],
    kinships: Any,
    dos: _Dosages,
    block_size: int,
    show_progress: bool,
    tests: ChromosomeTests,
) -> tuple[list[dict[str, Any]], dict[str, float], list[warnings.WarningMessage]]:
    """Run ``tests`` over every chromosome of ``order``.

    Returns the ``null_models`` rows, the seconds per stage summed over chromosomes, and the
    warnings raised meanwhile (collected so that the caller says each once).
    """
    timing = dict.fromkeys(tests.stages, 0.0)
    null_rows: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    with warnings.catch_warnings(record=True) as caught, tqdm(
        total=len(order), desc="scan", unit="chr", leave=False, disable=not show_progress
    ) as bar:  # fmt: skip
        warnings.simplefilter("always")
        for c, label in enumerate(order):
            bar.set_postfix_str(f"chr {label}")
            times = dict.fromkeys(("grm_s", *tests.stages), 0.0)
            if summary is None or kinships.loco:
                tests.release()  # free the previous chromosome's n × n matrices first
                before = kinships.timing["grm_s"]
                K = kinships.kinship(c)
                times["grm_s"] = kinships.timing["grm_s"] - before
                summary = tests.fit_null(K, label, times)
                del K
            sub = kinships.subset(c)
            t0 = time.perf_counter()
            for pos, Z, _ in _centred_blocks(dos, sub, False, block_size):
                tests.test_block(sub.keep[pos], Z)
            times["markers_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            extra = tests.refit(label, sub)
            times[tests.refit_stage] = time.perf_counter() - t0
            for name in tests.stages:
                timing[name] += times[name]
            null_rows.append(
                {"chr": label, "n_markers": int(sub.keep.size), **summary, **extra, **times}
            )
            bar.update(1)
    return null_rows, timing, list(caught)
