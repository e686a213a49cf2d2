"""bayeslmm's association scan against FaST-LMM's ``single_snp`` on the same data and kinships.

Simulated data: n individuals in families (founders, then full sibships), markers on three
chromosomes, a covariate, a polygenic background and a few causal markers. Both programs get
the same LOCO kinships (``bl.loco_grms``, rescaled to mean diagonal 1) and the same covariate.

What is compared:

1. the null h² of each chromosome (both by REML; FaST-LMM projects the covariates out of
   K, which is REML, and searches h² on a grid plus Brent in [0, 0.99999]);
2. p-values. The statistics are not the same formula, so the comparison converts: bayeslmm
   reports GCTA's Wald test, χ²_W = (xᵀPy)²/xᵀPx with the variance components fixed at
   the null's REML values and a χ²₁ reference. FaST-LMM keeps h² at the null's value but
   re-estimates the residual scale with the marker in the model and uses an F(1, n − p − 1)
   reference. With t = χ²_W / (n − p) (yᵀPy = n − p at the REML estimate, in V's units),
   FaST-LMM's statistic is F = (n − p − 1) t / (1 − t): an exact function of bayeslmm's.
   The run prints max |relative difference| of the p-values (and of −log10 p) both with
   FaST-LMM's own h² search and with FaST-LMM given bayeslmm's h² per chromosome
   (``h2=``, one chromosome at a time), where the variance components agree exactly.

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python validation/scan_vs_fastlmm.py \
        > validation/scan_vs_fastlmm.txt

FaST-LMM is not a dependency of bayeslmm (``pip install fastlmm``); without it the script
says so and stops.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_info, threadpool_limits

import bayeslmm as bl


def simulate(
    n: int, m_per_chrom: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Families of full sibs; dosages, SNP map and phenotypes with a covariate."""
    rng = np.random.default_rng(seed)
    n_chrom = 3
    m = n_chrom * m_per_chrom
    freq = rng.uniform(0.05, 0.95, m)
    n_fam = n // 4
    # two founders per family, two children each: children share half their genome
    hap_f = rng.binomial(1, freq, size=(n_fam, 2, 2, m))  # family, parent, haplotype, marker
    kids = np.empty((n_fam, 2, m))
    for child in range(2):
        pick = rng.integers(0, 2, size=(n_fam, 2, m))
        from_parents = np.take_along_axis(hap_f, pick[:, :, None, :], axis=2)[:, :, 0, :]
        kids[:, child] = from_parents.sum(axis=1)
    parents = hap_f.sum(axis=2)
    G = np.concatenate([parents.reshape(-1, m), kids.reshape(-1, m)]).astype(float)
    G[rng.random(G.shape) < 0.01] = np.nan
    n = G.shape[0]
    ids = [f"ind{k:04d}" for k in range(n)]
    snps = [f"rs{j}" for j in range(m)]
    dos = pd.DataFrame(G, index=ids, columns=snps)
    snp_map = pd.DataFrame(
        {
            "snp": snps,
            "chr": np.repeat(np.arange(1, n_chrom + 1), m_per_chrom),
            "bp": np.tile(1000 * np.arange(1, m_per_chrom + 1), n_chrom),
        }
    )
    Z = np.nan_to_num(G - np.nanmean(G, 0))
    Zs = Z / np.nanstd(G, 0)
    polygenic = Zs @ rng.normal(0.0, np.sqrt(0.5 / m), m)
    causal = rng.choice(m, 5, replace=False)
    effect = Zs[:, causal] @ rng.normal(0.0, 0.12, causal.size)
    sex = rng.integers(0, 2, n).astype(float)
    y = 1.0 + 0.3 * sex + polygenic + effect + rng.normal(0.0, np.sqrt(0.5), n)
    pheno = pd.DataFrame({"id": ids, "sex": sex, "y": y})
    return dos, snp_map, pheno


def convert_to_f(table: pd.DataFrame, n: int, p: int) -> np.ndarray:
    """FaST-LMM's p-value from bayeslmm's Wald χ² (see the module docstring)."""
    t = table["chi2"].to_numpy() / (n - p)
    F = (n - p - 1) * t / (1.0 - t)
    return stats.f.sf(F, 1, n - p - 1)


def compare(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    rel = np.abs(ours - theirs) / theirs
    logs = np.abs(np.log10(ours) - np.log10(theirs)) / np.maximum(1.0, -np.log10(theirs))
    return {
        "max_rel_diff_p": float(rel.max()),
        "median_rel_diff_p": float(np.median(rel)),
        "max_rel_diff_log10p": float(logs.max()),
        "min_p": float(theirs.min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=800, help="individuals (multiple of 4)")
    parser.add_argument("--markers", type=int, default=1500, help="markers per chromosome")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    try:
        from fastlmm.association import single_snp
        from pysnptools.kernelreader import KernelData
        from pysnptools.snpreader import SnpData
    except ImportError as exc:
        print(f"FaST-LMM is not importable ({exc}); pip install fastlmm to run this comparison.")
        return
    from importlib.metadata import version

    logging.disable(logging.INFO)  # FaST-LMM logs every block at INFO
    warnings.filterwarnings("ignore", category=FutureWarning)
    with threadpool_limits(1):
        blas = [
            f"{i['internal_api']} {i.get('version')} threads={i['num_threads']}"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
        print(f"# command: {' '.join(['python', *sys.argv])}")
        print(
            f"python {platform.python_version()}, numpy {np.__version__}, bayeslmm "
            f"{bl.__version__}, fastlmm {version('fastlmm')}"
        )
        if blas:
            print("BLAS pinned to 1 thread with threadpoolctl:", blas)
        dos, snp_map, pheno = simulate(args.n, args.markers, args.seed)
        n = dos.shape[0]
        p = 2  # intercept and sex
        print(
            f"\ndata: n = {n} (families of 2 parents + 2 full sibs), {dos.shape[1]} markers "
            f"on 3 chromosomes, 1% missing genotypes, covariate sex, 5 causal markers"
        )

        t0 = time.perf_counter()
        loco = {c: K.normalized() for c, K in bl.loco_grms(dos, snp_map["chr"]).items()}
        t_grm = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ours = bl.scan(
                "y ~ sex + (1 | id)", pheno, dos, snp_map, kinship=loco, progressbar=False
            )
        t_ours = time.perf_counter() - t0

        iid = np.array([[i, i] for i in dos.index], dtype=str)
        test_snps = SnpData(
            iid=iid,
            sid=np.array(dos.columns, dtype=str),
            val=dos.to_numpy(),
            pos=np.column_stack([snp_map["chr"], np.zeros(len(snp_map)), snp_map["bp"]]),
        )
        pheno_data = SnpData(iid=iid, sid=np.array(["y"]), val=pheno[["y"]].to_numpy())
        covar = SnpData(iid=iid, sid=np.array(["sex"]), val=pheno[["sex"]].to_numpy())
        kernels = {int(c): KernelData(iid=iid, val=K.matrix) for c, K in loco.items()}
        t0 = time.perf_counter()
        theirs = single_snp(test_snps, pheno_data, K0=kernels, covar=covar, count_A1=True)
        t_theirs = time.perf_counter() - t0
        theirs = theirs.set_index("SNP").loc[ours.table["SNP"]]

        print(f"\nseconds: LOCO GRMs {t_grm:.2f}; bayeslmm scan {t_ours:.2f}; "
              f"fastlmm single_snp {t_theirs:.2f} (both given the same kinships)")  # fmt: skip

        # yᵀPy = n − p at the REML estimate: the conversion's premise, checked directly
        from bayeslmm.association.stats import RotatedNull

        worst_q0 = 0.0
        for c, K in loco.items():
            row = ours.null_models.set_index("chr").loc[c]
            s, U = K.eigenvalues, K.eigenvectors
            X = np.column_stack([np.ones(n), pheno["sex"]])
            null = RotatedNull(s, U.T @ pheno["y"].to_numpy(), U.T @ X, row.sigma_g2, row.sigma_e2)
            worst_q0 = max(worst_q0, abs(null.q0 / (n - p) - 1.0))
        print(f"max |yᵀPy / (n − p) − 1| over chromosomes at bayeslmm's REML estimates: "
              f"{worst_q0:.2e}")  # fmt: skip

        print("\n== null h² per chromosome (kinships at mean diagonal 1) ==")
        h2_ours = ours.null_models.set_index("chr")
        h2_ours = h2_ours["sigma_g2"] / (h2_ours["sigma_g2"] + h2_ours["sigma_e2"])
        h2_theirs = theirs.groupby(theirs["Chr"].astype(int).astype(str))["Nullh2"].first()
        frame = pd.DataFrame({"bayeslmm_h2": h2_ours, "fastlmm_h2": h2_theirs})
        frame["abs_diff"] = (frame["bayeslmm_h2"] - frame["fastlmm_h2"]).abs()
        print(frame.to_string(float_format=lambda v: f"{v:.8f}"))

        print("\n== p-values: bayeslmm's Wald χ² converted to FaST-LMM's F test ==")
        converted = convert_to_f(ours.table, n, p)
        rows = [
            {"fastlmm h2": "its own REML search", **compare(converted, theirs["PValue"].to_numpy())}
        ]

        # FaST-LMM given bayeslmm's h² chromosome by chromosome: variance components agree
        fixed = []
        for c, K in loco.items():
            cols = np.flatnonzero(snp_map["chr"].astype(str).to_numpy() == c)
            res = single_snp(
                test_snps[:, cols], pheno_data, K0=KernelData(iid=iid, val=K.matrix),
                covar=covar, leave_out_one_chrom=False, h2=float(h2_ours.loc[c]), count_A1=True,
            )  # fmt: skip
            fixed.append(res)
        fixed = pd.concat(fixed).set_index("SNP").loc[ours.table["SNP"]]
        rows.append(
            {"fastlmm h2": "bayeslmm's, given", **compare(converted, fixed["PValue"].to_numpy())}
        )
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        unconverted = compare(ours.table["p"].to_numpy(), fixed["PValue"].to_numpy())
        print(
            f"\n(without the conversion, GCTA's χ²₁ p-values differ from FaST-LMM's by up to "
            f"{unconverted['max_rel_diff_p']:.3g} relative: χ² vs F reference, n = {n})"
        )
        beta = ours.table["beta"].to_numpy()
        sd = np.nanstd(dos.to_numpy(), axis=0)
        # FaST-LMM's SnpWeight is per standardised marker: β × sd(x)
        rel_beta = np.abs(beta * sd - fixed["SnpWeight"].to_numpy()) / np.abs(
            fixed["SnpWeight"].to_numpy()
        )
        print(f"effects: max |β·sd(x) − SnpWeight| / |SnpWeight| = {np.max(rel_beta):.3g} "
              f"(median {np.median(rel_beta):.3g})")  # fmt: skip


if __name__ == "__main__":
    main()
