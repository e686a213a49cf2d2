"""Type-I error of the binary-trait scan (score test with saddle-point p-values) under the null.

Simulated data: families of two unrelated parents and four full sibs; markers independent, each
with its own allele frequency (half rare, MAF 0.005–0.05; half common, 0.05–0.5), children's
genotypes by Mendelian transmission. Chromosomes 1–2 (2,500 markers each) carry the polygenic
background: every marker a small effect, latent-scale h² = 0.3 on the logit scale (genetic
variance 0.3/0.7 × π²/3). Chromosomes 3–14 carry no effect: their markers are the null tests,
correlated with the trait only through relatedness, which the LOCO kinship (built from all
other chromosomes, the causal ones included) accounts for. Two binary traits from the same
genetic values and one covariate (x ~ N(0, 1), log-odds 0.2 per unit): prevalence 5% and 1%
(intercept solved on the realised values). Each is scanned once with
``bl.scan("case ~ x + (1 | id)", ..., family="bernoulli")``.

Reported per prevalence, on the null chromosomes, by MAF class (and for the markers with a
minor allele count of 10 or less, whose ``p`` is the exact conditional tail of the carriers'
outcomes rather than the saddle point): the share of p-values below α = 1e-3 and 1e-4 for the
scan's test (``p``, labelled SPA) and for the normal test without it (``p_normal``), the
ratio to α and its binomial standard error (√(α(1 − α)/m) / α).

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 \
        python validation/scan_binary_calibration.py \
        > validation/results/scan_binary_calibration.txt

Options: ``--families 334`` (6 individuals each), ``--markers 12500`` per null chromosome,
``--chromosomes 12`` null chromosomes, ``--seed 11``, ``--prevalences 0.05,0.01`` (which of the
two simulated traits to scan; both are always simulated, so the data do not depend on it),
``--workdir DIR`` (the PLINK fileset; default a temporary folder).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, special
from threadpoolctl import threadpool_info, threadpool_limits

import bayeslmm as bl

CAUSAL_CHROMS, CAUSAL_MARKERS = (1, 2), 2500
H2_LATENT = 0.3
PREVALENCES = (0.05, 0.01)
ALPHAS = (1e-3, 1e-4)
CHUNK = 5000


def family_genotypes(rng: np.random.Generator, families: int, freq: np.ndarray) -> np.ndarray:
    """Genotypes (int8, individuals × markers) of ``families`` × (2 parents + 4 sibs)."""
    m = freq.size
    parents = rng.random((families, 2, 2, m)) < freq  # family, parent, haplotype, marker
    out = np.empty((families, 6, m), dtype=np.int8)
    out[:, :2] = parents.sum(axis=2)
    for child in range(4):
        pick = rng.integers(0, 2, size=(families, 2, m))  # which haplotype each parent passes
        passed = np.take_along_axis(parents, pick[:, :, None, :], axis=2)[:, :, 0, :]
        out[:, 2 + child] = passed.sum(axis=1)
    return out.reshape(families * 6, m)


def simulate(args: argparse.Namespace, workdir: Path) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """Write the PLINK fileset; return its prefix, the phenotypes and the null markers' MAF."""
    from bed_reader import to_bed

    rng = np.random.default_rng(args.seed)
    n = 6 * args.families
    chroms = [*CAUSAL_CHROMS, *range(3, 3 + args.chromosomes)]
    sizes = [CAUSAL_MARKERS] * len(CAUSAL_CHROMS) + [args.markers] * args.chromosomes
    m = sum(sizes)
    freq = np.where(rng.random(m) < 0.5, rng.uniform(0.005, 0.05, m), rng.uniform(0.05, 0.5, m))
    G = np.empty((n, m), dtype=np.int8)
    for start in range(0, m, CHUNK):
        stop = min(start + CHUNK, m)
        G[:, start:stop] = family_genotypes(rng, args.families, freq[start:stop])
    n_causal = CAUSAL_MARKERS * len(CAUSAL_CHROMS)
    Zc = G[:, :n_causal].astype(float)
    sd = Zc.std(axis=0)
    Zc = (Zc - Zc.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    genetic = Zc @ rng.normal(size=n_causal)
    genetic *= np.sqrt(H2_LATENT / (1 - H2_LATENT) * np.pi**2 / 3) / genetic.std()
    x = rng.normal(size=n)
    ids = [f"f{k // 6:04d}_{k % 6}" for k in range(n)]
    prefix = workdir / "binary_null"
    to_bed(
        prefix.with_suffix(".bed"),
        G,
        properties={
            "iid": ids,
            "sid": [f"m{j}" for j in range(m)],
            "chromosome": np.repeat(np.array(chroms).astype(str), sizes),
            "bp_position": np.concatenate([100 * np.arange(1, s + 1) for s in sizes]),
        },
    )
    pheno = pd.DataFrame({"id": ids, "x": x})
    for prevalence in PREVALENCES:
        offset = genetic + 0.2 * x

        def gap(mu0: float, offset: np.ndarray = offset, prevalence: float = prevalence) -> float:
            return float(np.mean(special.expit(mu0 + offset))) - prevalence

        mu0 = optimize.brentq(gap, -20.0, 10.0)
        pheno[f"case{round(prevalence * 100)}"] = (
            rng.random(n) < special.expit(mu0 + offset)
        ).astype(int)
    return prefix, pheno, freq


def rates(p: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(share below α, share / α, binomial SE of share / α)."""
    share = float(np.mean(p < alpha))
    return share, share / alpha, float(np.sqrt(alpha * (1 - alpha) / p.size) / alpha)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=334)
    parser.add_argument("--markers", type=int, default=12_500)
    parser.add_argument("--chromosomes", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--prevalences", default="0.05,0.01")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="scan_binary_"))
    workdir.mkdir(parents=True, exist_ok=True)
    load = " ".join(f"{v:.2f}" for v in __import__("os").getloadavg())
    print(f"# machine: {platform.machine()}, load average at start {load}; "
          f"{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}")  # fmt: skip
    print("# command: python validation/scan_binary_calibration.py "
          f"--families {args.families} --markers {args.markers} "
          f"--chromosomes {args.chromosomes} --seed {args.seed} "
          f"--prevalences {args.prevalences}")  # fmt: skip
    blas = sorted({f"{i['internal_api']} {i.get('version')}" for i in threadpool_info()
                   if i.get("user_api") == "blas"})  # fmt: skip
    print(f"python {platform.python_version()}, numpy {np.__version__}, bayeslmm "
          f"{bl.__version__}; BLAS {blas} pinned to 1 thread")  # fmt: skip
    t0 = time.perf_counter()
    prefix, pheno, freq = simulate(args, workdir)
    n = pheno.shape[0]
    null_tests = args.markers * args.chromosomes
    print(
        f"\ndata: {n} individuals ({args.families} families: 2 parents + 4 full sibs); "
        f"chromosomes 1-2 causal ({CAUSAL_MARKERS} markers each, latent h² = {H2_LATENT}, "
        f"logit), {args.chromosomes} null chromosomes x {args.markers} markers = {null_tests} "
        f"null tests per trait (half MAF 0.005-0.05, half 0.05-0.5); simulated in "
        f"{time.perf_counter() - t0:.0f} s"
    )
    rows = []
    scanned = [float(v) for v in args.prevalences.split(",")]
    for prevalence in scanned:
        if prevalence not in PREVALENCES:
            raise SystemExit(f"--prevalences: {prevalence} is not one of {PREVALENCES}")
        column = f"case{round(prevalence * 100)}"
        t0, c0 = time.perf_counter(), time.process_time()
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # monomorphic rare markers dropped
            res = bl.scan(
                f"{column} ~ x + (1 | id)", pheno, str(prefix), family="bernoulli",
                progressbar=False,
            )  # fmt: skip
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        table = res.table
        null = table[~table["chr"].isin([str(c) for c in CAUSAL_CHROMS])]
        maf = np.minimum(null["freq"], 1 - null["freq"]).to_numpy()
        nulls = res.null_models
        print(
            f"\n== prevalence {prevalence:.0%}: {int(pheno[column].sum())} cases of {n}; scan "
            f"in {seconds:.0f} s wall, {cpu:.0f} s CPU (null fits {res.timing['null_s']:.0f} s, "
            f"markers {res.timing['markers_s']:.0f} s); {null.shape[0]} null tests "
            f"({int(null['spa'].sum())} with the saddle point); latent h² of the null fits "
            f"{nulls['h2_latent'].min():.3f}-{nulls['h2_latent'].max():.3f}; "
            f"λ_GC {res.lambda_gc():.3f} =="
        )
        mac = null["mac"].to_numpy(dtype=float)
        classes = {
            "MAC <= 10": mac <= 10,
            "MAF < 0.05": maf < 0.05,
            "MAF >= 0.05": maf >= 0.05,
            "all": maf >= 0,
        }
        for name, mask in classes.items():
            for test, col in (("SPA", "p"), ("normal", "p_normal")):
                p = null.loc[mask, col].to_numpy(dtype=float)
                p = p[np.isfinite(p)]
                if p.size == 0:  # e.g. no marker with MAC <= 10 among 5,000 individuals
                    continue
                row = {"prevalence": f"{prevalence:.0%}", "markers": name, "test": test,
                       "tests": p.size}  # fmt: skip
                for alpha in ALPHAS:
                    share, ratio, se = rates(p, alpha)
                    row[f"P(p<{alpha:g})"] = f"{share:.2e}"
                    row[f"/ {alpha:g}"] = f"{ratio:.2f} ± {se:.2f}"
                rows.append(row)
        mine = [r for r in rows if r["prevalence"] == f"{prevalence:.0%}"]
        print(pd.DataFrame(mine).to_string(index=False))
    frame = pd.DataFrame(rows)
    spa_all = frame[(frame["test"] == "SPA") & (frame["markers"] == "all")]
    ok = all(0.7 <= float(v.split(" ")[0]) <= 1.3 for v in spa_all["/ 0.001"])
    print(
        f"\nSPA type-I error at α = 1e-3 within 0.7-1.3 × α at every scanned prevalence (all null "
        f"markers): {ok}"
    )


if __name__ == "__main__":
    main()
