"""Calibration of the association scan under the null, and proximal contamination.

Simulated data: families (two parents, four full sibs), 10 chromosomes of markers in linkage
disequilibrium (founder haplotypes from a Markov chain along the chromosome; one crossover per
chromosome and meiosis). The trait has h² = 0.5: a polygenic background on chromosomes 1–5
(every marker a small effect, 40% of the variance) plus 10 QTL there (1% each); chromosomes
6–10 carry no effect. The genotypes are drawn once; each replicate draws new effects and a new
phenotype, and is scanned three ways with the same kinships (built once, their
eigendecompositions cached):

- ``LOCO wald``: the default (each chromosome's kinship from the other nine);
- ``all-marker wald``: ``loco=False``, one GRM from every marker, the tested one included;
- ``LOCO lrt``: the likelihood-ratio test at the null's h².

Reported per scan: on the null chromosomes 6–10, the mean χ² (1 for a calibrated test, with its
standard error across replicates) and the genomic-control λ; on the causal chromosomes 1–5, the
mean χ² (above 1: real signal) and at the QTL the mean χ² and how many reach p < 1e-5.
Proximal contamination shows as a smaller mean χ² on causal chromosomes and at the QTL with
the all-marker kinship, which already holds the tested marker and its LD neighbours.

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python validation/scan_calibration.py \
        > validation/scan_calibration.txt

Options: ``--families 250`` (6 individuals each), ``--markers 1000`` per chromosome,
``--replicates 20``, ``--seed 7``, ``--figure docs/img/scan_loco.png`` (QQ plots of the last
replicate's two Wald scans, null and causal chromosomes apart: the picture in docs/scan.md).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_info, threadpool_limits

import bayeslmm as bl
from bayeslmm.results.scan_result import genomic_control

N_CHROM, CAUSAL_CHROMS, N_QTL = 10, (1, 2, 3, 4, 5), 10


def founder_haplotypes(
    rng: np.random.Generator, k: int, m: int, freq: np.ndarray, keep: float
) -> np.ndarray:
    """k haplotypes at m markers; marker j copies marker j − 1 with probability ``keep``."""
    H = np.empty((k, m), dtype=np.int8)
    H[:, 0] = rng.random(k) < freq[0]
    for j in range(1, m):
        fresh = rng.random(k) < freq[j]
        H[:, j] = np.where(rng.random(k) < keep, H[:, j - 1], fresh)
    return H


def gamete(rng: np.random.Generator, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """One recombinant haplotype per row: h1 up to a crossover point, h2 after it (or reverse)."""
    k, m = h1.shape
    cut = rng.integers(0, m + 1, size=k)
    left = np.arange(m)[None, :] < cut[:, None]
    swap = rng.random(k) < 0.5
    a, b = np.where(swap[:, None], h2, h1), np.where(swap[:, None], h1, h2)
    return np.where(left, a, b)


def simulate_genotypes(
    rng: np.random.Generator, n_fam: int, m: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dosages (parents then children of each family) and the SNP map."""
    blocks = []
    for _ in range(N_CHROM):
        freq = rng.uniform(0.05, 0.95, m)
        founders = founder_haplotypes(rng, 4 * n_fam, m, freq, keep=0.9).reshape(n_fam, 2, 2, m)
        parents = founders.sum(axis=2)  # family × parent × marker
        kids = []
        for _ in range(4):
            from_mum = gamete(rng, founders[:, 0, 0], founders[:, 0, 1])
            from_dad = gamete(rng, founders[:, 1, 0], founders[:, 1, 1])
            kids.append(from_mum + from_dad)
        family = np.concatenate([parents, np.stack(kids, axis=1)], axis=1)  # family × 6 × m
        blocks.append(family.reshape(-1, m))
    G = np.concatenate(blocks, axis=1).astype(float)
    ids = [f"f{k // 6:03d}_{k % 6}" for k in range(G.shape[0])]
    snps = [f"c{c}_{j}" for c in range(1, N_CHROM + 1) for j in range(m)]
    snp_map = pd.DataFrame(
        {
            "snp": snps,
            "chr": np.repeat(np.arange(1, N_CHROM + 1), m),
            "bp": np.tile(1000 * np.arange(1, m + 1), N_CHROM),
        }
    )
    return pd.DataFrame(G, index=ids, columns=snps), snp_map


def simulate_trait(
    rng: np.random.Generator, Zs: np.ndarray, causal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """y with h² = 0.5 (polygenic 0.4 + QTL 0.1) from the causal chromosomes' markers."""
    n = Zs.shape[0]
    cols = np.flatnonzero(causal)
    poly = Zs[:, cols] @ rng.normal(size=cols.size)
    poly *= np.sqrt(0.4) / poly.std()
    qtl = rng.choice(cols, N_QTL, replace=False)
    effects = Zs[:, qtl] * (np.sqrt(0.01) * rng.choice([-1.0, 1.0], N_QTL))
    y = poly + effects.sum(axis=1) + rng.normal(0.0, np.sqrt(0.5), n)
    return y, qtl


def qq_figure(tables: dict[str, pd.DataFrame], path: str) -> None:
    """QQ plots of the LOCO and all-marker Wald scans, null and causal chromosomes apart."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, causal, title in zip(
        axes, (False, True), ("null chromosomes 6-10", "causal chromosomes 1-5"), strict=True
    ):
        for name, colour in (("LOCO wald", "C0"), ("all-marker wald", "C3")):
            t = tables[name]
            on = t["chr"].astype(int).isin(CAUSAL_CHROMS).to_numpy() == causal
            p = np.sort(t["p"].to_numpy()[on])
            expected = -np.log10(np.arange(1, p.size + 1) / (p.size + 1))
            label = f"{'LOCO' if name.startswith('LOCO') else 'all markers'} (λ = "
            label += f"{genomic_control(p):.2f})"
            ax.scatter(expected, -np.log10(p), s=5, color=colour, label=label, rasterized=True)
        top = -np.log10(1.0 / (p.size + 1))
        ax.plot([0, top], [0, top], color="0.4", lw=1)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("expected −log10 p")
        ax.legend(frameon=False, fontsize="small", loc="upper left")
    axes[0].set_ylabel("observed −log10 p")
    fig.suptitle("Kinship from all markers vs leave-one-chromosome-out (one replicate)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=250)
    parser.add_argument("--markers", type=int, default=1000, help="per chromosome")
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--figure", default=None, help="PNG of the last replicate's QQ plots")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    with threadpool_limits(1):
        blas = [
            f"{i['internal_api']} {i.get('version')} threads={i['num_threads']}"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
        print(f"# command: {' '.join(['python', *sys.argv])}")
        print(
            f"python {platform.python_version()}, numpy {np.__version__}, bayeslmm {bl.__version__}"
        )
        print("BLAS pinned to 1 thread with threadpoolctl:", blas)
        rng = np.random.default_rng(args.seed)
        t0 = time.perf_counter()
        dos, snp_map = simulate_genotypes(rng, args.families, args.markers)
        n, m = dos.shape
        chrom = snp_map["chr"].to_numpy()
        causal = np.isin(chrom, CAUSAL_CHROMS)
        G = dos.to_numpy()
        sd = G.std(axis=0)
        poly = sd > 0
        Zs = np.zeros_like(G)
        Zs[:, poly] = (G[:, poly] - G[:, poly].mean(0)) / sd[poly]
        adjacent = np.array(
            [np.corrcoef(G[:, j], G[:, j + 1])[0, 1] ** 2 for j in range(0, args.markers - 1, 7)
             if sd[j] > 0 and sd[j + 1] > 0]
        )  # fmt: skip
        loco = bl.loco_grms(dos, snp_map["chr"])
        whole = bl.grm(dos)
        for K in [*loco.values(), whole]:
            K.eigenvectors  # noqa: B018 - one eigendecomposition each, cached for all replicates
        t_setup = time.perf_counter() - t0
        print(
            f"\ndata: {n} individuals ({args.families} families: 2 parents + 4 full sibs), "
            f"{m} markers on {N_CHROM} chromosomes ({args.markers} each; mean r² of adjacent "
            f"markers {adjacent.mean():.2f}); h² = 0.5 = polygenic 0.4 on chromosomes 1-5 + "
            f"{N_QTL} QTL of 1% there; chromosomes 6-10 null. {args.replicates} phenotype "
            f"replicates on the same genotypes; setup (genotypes, 11 GRMs and their "
            f"eigendecompositions) {t_setup:.0f} s."
        )
        scans = {
            "LOCO wald": {"kinship": loco, "loco": True, "test": "wald"},
            "all-marker wald": {"kinship": whole, "loco": False, "test": "wald"},
            "LOCO lrt": {"kinship": loco, "loco": True, "test": "lrt"},
        }
        last: dict[str, pd.DataFrame] = {}
        rows = {name: [] for name in scans}
        h2 = {name: [] for name in scans}
        t0 = time.perf_counter()
        for _ in range(args.replicates):
            y, qtl = simulate_trait(rng, Zs, causal)
            pheno = pd.DataFrame({"id": dos.index, "y": y})
            qtl_names = set(snp_map["snp"].to_numpy()[qtl])
            for name, options in scans.items():
                res = bl.scan("y ~ 1 + (1 | id)", pheno, dos, snp_map, progressbar=False, **options)
                t = res.table
                chi2 = stats.chi2.isf(t["p"].to_numpy(), 1)
                null = ~t["chr"].astype(int).isin(CAUSAL_CHROMS).to_numpy()
                at_qtl = t["SNP"].isin(qtl_names).to_numpy()
                rows[name].append(
                    {
                        "mean_chi2_null": chi2[null].mean(),
                        "lambda_null": genomic_control(t["p"][null]),
                        "mean_chi2_causal": chi2[~null].mean(),
                        "mean_chi2_qtl": chi2[at_qtl].mean(),
                        "qtl_hits": int((t["p"].to_numpy()[at_qtl] < 1e-5).sum()),
                        "typeI_1e-3": float((t["p"].to_numpy()[null] < 1e-3).mean()),
                    }
                )
                h2[name].append(res.null_models["h2"].to_numpy())
                last[name] = t
        t_scans = time.perf_counter() - t0
        print(f"{3 * args.replicates} scans in {t_scans:.0f} s")

        print("\n== calibration and proximal contamination (mean over replicates ± SE) ==")
        out = []
        for name in scans:
            frame = pd.DataFrame(rows[name])
            mean, se = frame.mean(), frame.std(ddof=1) / np.sqrt(len(frame))

            def cell(key: str, digits: int, mean=mean, se=se) -> str:
                return f"{mean[key]:.{digits}f} ± {se[key]:.{digits}f}"

            out.append(
                {
                    "scan": name,
                    "mean χ² null chr": cell("mean_chi2_null", 4),
                    "λ null chr": cell("lambda_null", 4),
                    "type I @1e-3 / 1e-3": f"{mean['typeI_1e-3'] / 1e-3:.2f}",
                    "mean χ² causal chr": cell("mean_chi2_causal", 3),
                    "mean χ² at QTL": cell("mean_chi2_qtl", 2),
                    f"QTL p<1e-5 (of {N_QTL * args.replicates})": int(frame["qtl_hits"].sum()),
                }
            )
        print(pd.DataFrame(out).to_string(index=False))
        print("\n== null h² by kinship (mean over replicates and chromosomes) ==")
        for name in ("LOCO wald", "all-marker wald"):
            values = np.concatenate(h2[name])
            by_chrom = np.mean(h2[name], axis=0) if name.startswith("LOCO") else None
            line = f"{name:>16}: {values.mean():.3f}"
            if by_chrom is not None:
                causal_h2 = by_chrom[: len(CAUSAL_CHROMS)].mean()
                null_h2 = by_chrom[len(CAUSAL_CHROMS) :].mean()
                line += (
                    f" (leaving out a causal chromosome {causal_h2:.3f}, a null one {null_h2:.3f})"
                )
            print(line)
        if args.figure:
            qq_figure(last, args.figure)
            print(f"figure: {args.figure}")
        loco_scans = [name for name in scans if name.startswith("LOCO")]
        chi = {name: pd.DataFrame(rows[name])["mean_chi2_null"].mean() for name in loco_scans}
        lam = {name: pd.DataFrame(rows[name])["lambda_null"].mean() for name in loco_scans}
        loco_gain = (
            pd.DataFrame(rows["LOCO wald"])["mean_chi2_causal"].mean()
            - pd.DataFrame(rows["all-marker wald"])["mean_chi2_causal"].mean()
        )
        print(
            "\nLOCO scans on the null chromosomes: mean χ² within 1.00 ± 0.02: "
            f"{all(abs(v - 1.0) <= 0.02 for v in chi.values())}; λ in [0.98, 1.03]: "
            f"{all(0.98 <= v <= 1.03 for v in lam.values())}. On the causal chromosomes LOCO's "
            f"mean χ² exceeds the all-marker kinship's by {loco_gain:.3f}."
        )


if __name__ == "__main__":
    main()
