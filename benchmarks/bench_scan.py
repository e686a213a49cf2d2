"""Speed and memory of the LOCO association scan, beside FaST-LMM's ``single_snp``.

A simulated PLINK fileset (n individuals, m markers on 10 chromosomes, 1% missing, a sex
covariate, a polygenic trait) is written once to a work folder; then each program scans it in
a fresh child process (so that each peak memory is its own, not the simulation's), with BLAS
pinned by threadpoolctl:

- bayeslmm: ``bl.scan("y ~ sex + (1 | id)", pheno, PREFIX)``: per chromosome the LOCO GRM
  (streamed from the .bed), its tridiagonal reduction, the null REML fit, the Cholesky factor
  of V and the markers whitened a block at a time. Reported: the whole time, the CPU time,
  peak resident memory (``ru_maxrss``) and the seconds in each stage, with their shares;
- FaST-LMM: ``single_snp(Bed(PREFIX), pheno, covar=sex, leave_out_one_chrom=True)``, its own
  LOCO kernels from the same .bed; skipped (with a note) when FaST-LMM is not installed.

The two programs' kernels differ (VanRaden here, standardised markers in FaST-LMM), so the run
prints the correlation of their −log10 p rather than an agreement to rounding (for that, see
``validation/scan_vs_fastlmm.py``).

``--compare-routes`` scans the same fileset twice with bayeslmm instead, in SNP space
(``low_rank=True``: each LOCO kinship held as its markers, thin SVD from the Gram matrix, no
n × n matrix) and dense (``low_rank=False``: the n × n LOCO GRMs, their tridiagonal reductions
and Cholesky factors), each in its own child process, and prints both with their CPU time,
peak memory, stages, the ratios, and how far apart their p-values and null h² are. Use it
where the LOCO markers are fewer than the individuals, e.g.::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 python benchmarks/bench_scan.py \
        --n 10000 --markers 5000 --compare-routes --no-fastlmm

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_scan.py \
        > benchmarks/results/bench_scan.txt

Options: ``--n 5000``, ``--markers 100000``, ``--threads 1`` (BLAS threads in the scans),
``--workdir DIR`` (default: a temporary folder; an existing fileset of the same size is
reused), ``--no-fastlmm``, ``--low-rank {auto,yes,no}`` (bayeslmm's route, default auto:
the cheaper one), ``--compare-routes`` (above), ``--family bernoulli`` (the binary trait
``case``, 10% prevalence from a logistic model on the same genetic values:
``bl.scan(..., family="bernoulli")``, null GLMM fits and score tests with saddle-point
p-values; no FaST-LMM comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_CHROM = 10


def simulate(workdir: Path, n: int, m: int, seed: int = 1) -> Path:
    """Write PREFIX.bed/.bim/.fam and pheno.csv (unless a fileset of this size is there)."""
    from bed_reader import open_bed, to_bed

    prefix = workdir / f"sim_{n}_{m}"
    if (prefix.with_suffix(".bed")).exists():
        with open_bed(prefix.with_suffix(".bed")) as bed:
            same = bed.iid_count == n and bed.sid_count == m
        if same and "case" in pd.read_csv(workdir / "pheno.csv", nrows=1).columns:
            return prefix
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.95, m)
    G = np.empty((n, m), dtype=np.int8)
    missing = np.empty((n, m), dtype=bool)
    for start in range(0, m, 10_000):  # in slices: no n × m float64 matrix
        stop = min(start + 10_000, m)
        G[:, start:stop] = rng.binomial(2, freq[start:stop], size=(n, stop - start))
        missing[:, start:stop] = rng.random((n, stop - start), dtype=np.float32) < 0.01
    causal = rng.choice(m, n_causal(m), replace=False)
    Zc = G[:, causal].astype(float)
    Zc = (Zc - Zc.mean(0)) / Zc.std(0)
    g = Zc @ rng.normal(size=causal.size)
    g *= np.sqrt(0.5) / g.std()
    sex = rng.integers(0, 2, n)
    G[missing] = -127
    ids = [f"ind{k:05d}" for k in range(n)]
    to_bed(
        prefix.with_suffix(".bed"),
        G,
        properties={
            "iid": ids,
            "sid": [f"rs{j}" for j in range(m)],
            "chromosome": np.repeat(np.arange(1, N_CHROM + 1), m // N_CHROM).astype(str),
            "bp_position": np.tile(100 * np.arange(1, m // N_CHROM + 1), N_CHROM),
        },
    )
    y = 0.2 * sex + g + rng.normal(0.0, np.sqrt(0.5), n)
    # binary trait: logit(P) = c + 0.2 sex + 1.5 g (latent h² ≈ 0.25), 10% prevalence
    case = (rng.random(n) < 1.0 / (1.0 + np.exp(-(-2.6 + 0.2 * sex + 1.5 * g)))).astype(int)
    pheno = pd.DataFrame({"id": ids, "sex": sex, "y": y, "case": case})
    pheno.to_csv(workdir / "pheno.csv", index=False)
    return prefix


def n_causal(m: int) -> int:
    """Markers carrying the polygenic effect: 1000, or half of fewer than 2000."""
    return min(1000, m // 2)


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


#: ``--low-rank`` values and the ``low_rank=`` each gives ``bl.scan``.
ROUTES = {"auto": None, "yes": True, "no": False}


def child_bayeslmm(
    prefix: str, pheno_path: str, threads: int, family: str = "gaussian", route: str = "auto"
) -> dict:
    from threadpoolctl import threadpool_limits

    import bayeslmm as bl

    pheno = pd.read_csv(pheno_path, dtype={"id": str})
    before = peak_gib()
    response = "y" if family == "gaussian" else "case"
    with threadpool_limits(threads):
        t0, cpu0 = time.perf_counter(), time.process_time()
        res = bl.scan(
            f"{response} ~ sex + (1 | id)", pheno, prefix, family=family, progressbar=False,
            low_rank=ROUTES[route] if family == "gaussian" else None,
        )  # fmt: skip
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    res.table[["SNP", "p"]].to_csv(p_file(pheno_path, route), index=False)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_gib": peak_gib(),
        "peak_before_gib": before,
        "timing": res.timing,
        "lambda_gc": res.lambda_gc(),
        "h2": res.null_models["h2" if family == "gaussian" else "h2_latent"].round(4).tolist(),
        "n_spa": int(res.table["spa"].sum()) if "spa" in res.table else 0,
        "route": str(res.null_models["route"].iloc[0]) if "route" in res.null_models else "",
        "h2_full": res.null_models["h2" if family == "gaussian" else "h2_latent"].tolist(),
    }


def p_file(pheno_path: str | Path, route: str) -> Path:
    """Where a bayeslmm child writes its p-values (one file per route)."""
    suffix = "" if route == "auto" else f"_{route}"
    return Path(pheno_path).parent / f"bayeslmm_p{suffix}.csv"


def child_fastlmm(prefix: str, pheno_path: str, threads: int) -> dict:
    import logging

    from fastlmm.association import single_snp
    from pysnptools.snpreader import Bed, SnpData
    from threadpoolctl import threadpool_limits

    logging.disable(logging.INFO)
    pheno = pd.read_csv(pheno_path, dtype={"id": str})
    bed = Bed(str(prefix), count_A1=True)
    fid = dict(zip(bed.iid[:, 1], bed.iid[:, 0], strict=True))  # the .fam's FID of each IID
    iid = np.array([[fid[i], i] for i in pheno["id"]], dtype=str)
    y = SnpData(iid=iid, sid=np.array(["y"]), val=pheno[["y"]].to_numpy(dtype=float))
    covar = SnpData(iid=iid, sid=np.array(["sex"]), val=pheno[["sex"]].to_numpy(dtype=float))
    bed = bed[bed.iid_to_index(iid), :]
    with threadpool_limits(threads):
        t0 = time.perf_counter()
        out = single_snp(bed, y, covar=covar, leave_out_one_chrom=True, count_A1=True)
        seconds = time.perf_counter() - t0
    out[["SNP", "PValue"]].to_csv(Path(pheno_path).parent / "fastlmm_p.csv", index=False)
    return {"seconds": seconds, "peak_gib": peak_gib()}


def run_child(
    which: str,
    prefix: Path,
    pheno: Path,
    threads: int,
    family: str = "gaussian",
    route: str = "auto",
) -> dict:
    """Run one program in a fresh interpreter; return its JSON report."""
    cmd = [sys.executable, __file__, "--child", which, "--prefix", str(prefix),
           "--pheno", str(pheno), "--threads", str(threads), "--family", family,
           "--low-rank", route]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--markers", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--no-fastlmm", action="store_true")
    parser.add_argument("--family", choices=("gaussian", "bernoulli"), default="gaussian")
    parser.add_argument("--low-rank", choices=tuple(ROUTES), default="auto")
    parser.add_argument("--compare-routes", action="store_true")
    parser.add_argument("--child", choices=("bayeslmm", "fastlmm"), help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--pheno", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "bayeslmm":
            report = child_bayeslmm(
                args.prefix, args.pheno, args.threads, args.family, args.low_rank
            )
        else:
            report = child_fastlmm(args.prefix, args.pheno, args.threads)
        print(json.dumps(report))
        return

    from threadpoolctl import threadpool_info

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scan_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"# command: {' '.join(['python', *sys.argv])}")
    print(
        f"# machine: {os.cpu_count()}-core {platform.machine()}, load average at start "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )
    blas = sorted({f"{i['internal_api']} {i.get('version')}" for i in threadpool_info()
                   if i.get("user_api") == "blas"})  # fmt: skip
    print(f"# BLAS {blas}, pinned to {args.threads} thread(s) with threadpoolctl in each run")
    t0 = time.perf_counter()
    prefix = simulate(workdir, args.n, args.markers)
    size_mib = prefix.with_suffix(".bed").stat().st_size / 2**20
    print(
        f"\ndata: n = {args.n}, {args.markers} markers on {N_CHROM} chromosomes "
        f"({args.markers // N_CHROM} each), 1% missing, covariate sex, h² = 0.5 from "
        f"{n_causal(args.markers)} markers; PLINK fileset {prefix}.bed ({size_mib:.0f} MiB), "
        f"simulated or reused in {time.perf_counter() - t0:.0f} s"
    )
    pheno = workdir / "pheno.csv"
    if args.family != "gaussian":
        binary_scan(prefix, pheno, args)
        return
    if args.compare_routes:
        compare_routes(prefix, pheno, args)
        return
    ours = run_child("bayeslmm", prefix, pheno, args.threads, route=args.low_rank)
    if "error" in ours:
        print(f"bayeslmm failed: {ours['error']}")
        return
    print_gaussian(ours, "LOCO, Wald")
    total = ours["seconds"]

    if args.no_fastlmm:
        print("\nFaST-LMM: skipped (--no-fastlmm)")
        return
    try:
        import fastlmm  # noqa: F401
    except ImportError:
        print("\nFaST-LMM: not installed (pip install fastlmm); no comparison in this run")
        return
    theirs = run_child("fastlmm", prefix, pheno, args.threads)
    if "error" in theirs:
        print(f"\nFaST-LMM single_snp failed: {theirs['error']}")
        return
    print(f"\n== FaST-LMM single_snp, LOCO: {theirs['seconds']:.1f} s, peak memory "
          f"{theirs['peak_gib']:.2f} GiB ==")  # fmt: skip
    print(f"  bayeslmm / FaST-LMM time: {total / theirs['seconds']:.2f}; "
          f"peak memory: {ours['peak_gib'] / theirs['peak_gib']:.2f}")  # fmt: skip
    a = pd.read_csv(p_file(pheno, args.low_rank)).set_index("SNP")["p"]
    b = pd.read_csv(workdir / "fastlmm_p.csv").set_index("SNP")["PValue"].loc[a.index]
    r = np.corrcoef(-np.log10(a.to_numpy()), -np.log10(b.to_numpy()))[0, 1]
    print(f"  correlation of −log10 p (different kernels: VanRaden vs standardised): {r:.4f}")


def print_gaussian(ours: dict, title: str) -> None:
    """A Gaussian scan's time, CPU time, peak memory and stages."""
    t, total, peak = ours["timing"], ours["seconds"], ours["peak_gib"]
    low_rank = ours["route"].startswith("low-rank")
    print(f"\n== bayeslmm bl.scan, {title}: {total:.1f} s, peak memory {peak:.2f} GiB ==")
    print(f"  CPU time of the process {ours['cpu_seconds']:.1f} s; null models: {ours['route']}")
    if low_rank:
        stages = [
            ("allele frequencies (one pass over the .bed)", "select_s"),
            ("markers Z and their Gram ZᵀZ; LOCO copies", "grm_s"),
            (f"thin SVDs (eigh of {N_CHROM} LOCO Gram blocks)", "reduce_s"),
            ("null REML fits (low-rank rotation)", "null_s"),
            ("U₁ᵀ[y, X] for the tests", "whiten_s"),
            ("markers: U₁ᵀG through W, tests", "markers_s"),
        ]
    else:
        stages = [
            ("allele frequencies (one pass over the .bed)", "select_s"),
            ("GRM crossproducts (T, then each chromosome's)", "grm_s"),
            (f"tridiagonal reductions ({N_CHROM} LOCO kinships)", "reduce_s"),
            ("null REML fits (O(n) per evaluation)", "null_s"),
            (f"Cholesky factors of V ({N_CHROM})", "whiten_s"),
            ("marker whitening R⁻ᵀG and tests", "markers_s"),
        ]
    for label, key in stages:
        print(f"  {label:<48} {t.get(key, 0.0):8.1f} s  {100 * t.get(key, 0.0) / total:5.1f}%")
    rest = total - sum(t.get(k, 0.0) for _, k in stages)
    label = "other (reading phenotypes, table, checks)"
    print(f"  {label:<48} {rest:8.1f} s  {100 * rest / total:5.1f}%")
    print(f"  lambda_gc {ours['lambda_gc']:.4f}; null h² per chromosome {ours['h2']}")


def compare_routes(prefix: Path, pheno: Path, args: argparse.Namespace) -> None:
    """The same scan in SNP space and dense, one child process each."""
    runs = {}
    for route, title in (("yes", "SNP space (low_rank=True)"), ("no", "dense (low_rank=False)")):
        runs[route] = run_child("bayeslmm", prefix, pheno, args.threads, route=route)
        if "error" in runs[route]:
            print(f"\nbayeslmm, {title}, failed: {runs[route]['error']}")
            return
        print_gaussian(runs[route], f"LOCO, Wald, {title}")
        sys.stdout.flush()
    low, dense = runs["yes"], runs["no"]
    print(
        f"\n  SNP space / dense: CPU time {low['cpu_seconds'] / dense['cpu_seconds']:.3f}, "
        f"wall time {low['seconds'] / dense['seconds']:.3f}, "
        f"peak memory {low['peak_gib'] / dense['peak_gib']:.3f}"
    )
    a = pd.read_csv(p_file(pheno, "yes")).set_index("SNP")["p"]
    b = pd.read_csv(p_file(pheno, "no")).set_index("SNP")["p"].loc[a.index]
    rel_p = float(np.max(np.abs(a.to_numpy() / b.to_numpy() - 1.0)))
    h2_low, h2_dense = np.array(low["h2_full"]), np.array(dense["h2_full"])
    rel_h2 = float(np.max(np.abs(h2_low / h2_dense - 1.0)))
    print(
        f"  largest relative difference: p {rel_p:.2e} (over {a.size} markers), "
        f"null h² {rel_h2:.2e}"
    )
    if args.no_fastlmm:
        print("\nFaST-LMM: skipped (--no-fastlmm)")


def binary_scan(prefix: Path, pheno: Path, args: argparse.Namespace) -> None:
    """The binary trait: null GLMM per chromosome, score tests, saddle-point p-values."""
    cases = int(pd.read_csv(pheno)["case"].sum())
    ours = run_child("bayeslmm", prefix, pheno, args.threads, args.family)
    if "error" in ours:
        print(f"bayeslmm failed: {ours['error']}")
        return
    t, total = ours["timing"], ours["seconds"]
    print(
        f"\n== bayeslmm bl.scan, LOCO, {args.family} ({cases} cases of {args.n}), score tests "
        f"with SPA: {total:.1f} s, peak memory {ours['peak_gib']:.2f} GiB =="
    )
    print(
        f"  CPU time of the process {ours['cpu_seconds']:.1f} s (equal to the wall time on an "
        "idle machine with one BLAS thread; wall time beyond it is time other jobs held the cores)"
    )
    stages = [
        ("allele frequencies (one pass over the .bed)", "select_s"),
        ("GRM crossproducts (T, then each chromosome's)", "grm_s"),
        (f"null GLMM fits ({N_CHROM} LOCO kinships)", "null_s"),
        ("score tests (variance, SPA)", "markers_s"),
        ("Wald refits (p < 5e-8)", "wald_s"),
    ]
    for label, key in stages:
        print(f"  {label:<48} {t.get(key, 0.0):8.1f} s  {100 * t.get(key, 0.0) / total:5.1f}%")
    rest = total - sum(t.get(k, 0.0) for _, k in stages)
    label = "other (reading phenotypes, table, checks)"
    print(f"  {label:<48} {rest:8.1f} s  {100 * rest / total:5.1f}%")
    per_chrom = t.get("null_s", 0.0) / N_CHROM
    per_marker = t.get("markers_s", 0.0) / args.markers
    print(
        f"  per chromosome: null fit {per_chrom:.1f} s; per marker {1e3 * per_marker:.2f} ms; "
        f"{ours['n_spa']} markers with the saddle point; lambda_gc {ours['lambda_gc']:.4f}; "
        f"latent h² per chromosome {ours['h2']}"
    )


if __name__ == "__main__":
    main()
