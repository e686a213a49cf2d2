"""Start-up and parallel chains, as a user meets them (a script that prints figures, not a test).

Unlike the other benchmarks, nothing here pins BLAS: the point is what happens with **no
environment variable set**. The script removes ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS`` and ``NUMBA_NUM_THREADS`` from the environment of every process it starts
and measures in a child process started without them.

1. ``import bayeslmm``: seconds of ``python -c "import bayeslmm"`` less ``python -c pass``
   (best of 5), and which heavy modules it loaded (none of PyMC, PyTensor, ArviZ,
   matplotlib, formulae, numba should be).
2. Whole command line at n = 1,000 (Gaussian kinship model, default settings: 4 chains ×
   (1000 tune + 1000 draws), nutpie, spectral strategy): ``bayeslmm fit`` from process start
   to exit, summary.json, posterior.nc and h2_posterior.png written (best of 3; wall and CPU
   seconds), as a ratio to one ``numpy.linalg.eigh`` of the same K in the measuring process
   with the BLAS threads it starts with. Which heavy modules the call imported is read from
   the same command run in a probe process.
3. Two chains in parallel (``cores=2``) against the same two chains one after the other
   (``cores=1``), same seed, sampling seconds (``fit.timing["sample_s"]``, best of 3 after a
   warm-up fit): for the default Gaussian model (spectral closed form, n = 1,000 and 5,000,
   ``--chains-n``; nutpie calls its C callback, which needs no GIL) and for a
   Bernoulli kinship GLMM (closed-form latent density, whose gradient multiplies by the n × n
   eigenvector matrix: BLAS work in every step; ``--glmm-n``, default 500). The GLMM is also
   run in parallel with the package's per-chain BLAS pinning switched off (``unpinned``), to
   show what the pinning saves. ``speedup`` = sequential ÷ parallel seconds: 2 is the ceiling
   on two cores. A control row runs two GIL-free numba loops one after the other and then
   at the same time: the speed-up the machine allows at that moment.

Usage::

    python benchmarks/bench_startup.py [--n 1000] [--glmm-n 500] [--chains-n 1000,5000]
                                       [--reps 3] [--skip-cli] [--skip-chains]

Absolute seconds depend on the machine and its load (printed at the start and the end);
on a machine whose cores other jobs are using, parallel chains cannot reach 2×.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
HEAVY = ("pymc", "pytensor", "arviz", "matplotlib", "formulae", "numba", "nutpie")
FORMULA = "y ~ 1 + (1|id)"


def clean_env() -> dict[str, str]:
    """This process's environment without the thread-count variables."""
    return {k: v for k, v in os.environ.items() if k not in THREAD_VARS}


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def run_timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + sys of the child) and stdout of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def best(cmd: list[str], env: dict[str, str], reps: int) -> tuple[float, float, str]:
    runs = [run_timed(cmd, env) for _ in range(reps)]
    return min(runs, key=lambda r: r[0])


def import_time(reps: int) -> None:
    env = clean_env()
    py = sys.executable
    empty, _, _ = best([py, "-c", "pass"], env, reps)
    whole, cpu, _ = best([py, "-c", "import bayeslmm"], env, reps)
    probe = (
        f"import bayeslmm, sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    _, _, out = run_timed([py, "-c", probe], env)
    print("== import bayeslmm ==")
    print(f"python -c pass: {empty:.3f} s; python -c 'import bayeslmm': {whole:.3f} s wall")
    print(f"import bayeslmm alone: {whole - empty:.3f} s; heavy modules loaded: {out.strip()}")


def make_data(n: int, folder: Path):
    """An n-record Gaussian data set with its normalised GRM in GCTA format."""
    from bayeslmm.datasets import simulate
    from bayeslmm.io import write_gcta_grm

    sim = simulate(n_families=n // 10, family_size=10, n_snps=2000, h2=0.5, seed=1)
    sim.data.to_csv(folder / "pheno.csv", index=False)
    kinship = sim.kinship.normalized()
    write_gcta_grm(kinship, folder / "grm")
    return sim, kinship


def eigh_seconds(matrix, reps: int) -> float:
    import numpy as np

    times = []
    for _ in range(reps):
        start = time.perf_counter()
        np.linalg.eigh(matrix)
        times.append(time.perf_counter() - start)
    return min(times)


def whole_cli(n: int, reps: int, folder: Path, kinship) -> None:
    env = clean_env()
    out = folder / "out"
    # the installed console script, as a user runs it
    entry = shutil.which("bayeslmm")
    cmd = [
        *([entry] if entry else [sys.executable, "-m", "bayeslmm.cli"]),
        "fit",
        str(folder / "pheno.csv"),
        "--formula",
        FORMULA,
        "--kinship",
        f"id={folder / 'grm'}",
        "--seed",
        "1",
        "--out",
        str(out),
    ]
    run_timed(cmd, env)  # warm-up: file caches, numba's on-disk cache
    wall, cpu, stdout = best(cmd, env, reps)
    files = sorted(p.name for p in out.iterdir())
    summary = json.loads((out / "summary.json").read_text())
    # which heavy modules the call imported: the same command in a probe process
    argv = cmd[cmd.index("fit") :]
    probe = (
        "import json, sys; from bayeslmm.cli import main; "
        f"main({argv!r}); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    _, _, probe_out = run_timed([sys.executable, "-c", probe], env)
    heavy = json.loads(probe_out.strip().splitlines()[-1])
    t_eigh = eigh_seconds(kinship.matrix, reps)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        t_eigh_1 = eigh_seconds(kinship.matrix, reps)
    print(f"\n== whole command line, n = {n} (bayeslmm fit ... --seed 1: default settings) ==")
    print(f"wall {wall:.2f} s (best of {reps}), CPU {cpu:.2f} s; one eigh(K) here: {t_eigh:.3f} s")
    print(f"whole call / eigh: {wall / t_eigh:.1f}")
    print(
        f"eigh(K) on one BLAS thread: {t_eigh_1:.3f} s; with the threads BLAS starts with ÷ one "
        f"thread: {t_eigh / t_eigh_1:.2f}"
    )
    print(f"files: {', '.join(files)}")
    print(
        "fit timing (summary.json): "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["timing"].items())
    )
    print(f"heavy modules imported: {', '.join(heavy)} (of {', '.join(HEAVY)})")
    print("last lines: " + " | ".join(stdout.strip().splitlines()[-3:-1]))


CHAINS_CHILD = r"""
import json, sys, time, warnings
import nutpie
import bayeslmm as bl
from bayeslmm.engines.bayes import sampling, spectral_density
reps = int(sys.argv[1])
warnings.simplefilter("ignore")
sample_cpu = []
_nutpie_sample = nutpie.sample
def _timed_sample(*args, **kwargs):  # CPU seconds of the sampling call, all threads
    start = time.process_time()
    out = _nutpie_sample(*args, **kwargs)
    sample_cpu.append(time.process_time() - start)
    return out
nutpie.sample = _timed_sample
c_model = spectral_density.nutpie_model


def control():  # what the machine allows now: two GIL-free numba loops, one after the other
    import threading  # and at the same time (the ceiling for any two chains)
    import numba
    import numpy as np

    @numba.njit(nogil=True)
    def work(k):
        s = 0.0
        for i in range(k):
            s += np.sin(i * 1e-3)
        return s

    work(10)
    k = 20_000_000
    for label, threads in (("sequential", 1), ("parallel", 2)):
        def job(threads=threads):
            for _ in range(2 // threads):
                work(k)
        pool = [threading.Thread(target=job) for _ in range(threads)]
        wall, cpu = time.perf_counter(), time.process_time()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        row = {"model": "control: 2 GIL-free numba loops", "mode": label, "sample_s": wall,
               "cpu_s": cpu, "sample_cpu_s": cpu, "h2_mean": float("nan")}
        print(json.dumps(row), flush=True)


control()
runs = [("gaussian", int(n)) for n in sys.argv[2].split(",")]
runs += [("bernoulli", int(sys.argv[3]))] if int(sys.argv[3]) > 0 else []
for family, n in runs:
    sim = bl.datasets.simulate(n_families=n // 10, family_size=10, n_snps=2000, h2=0.5,
                               seed=1, family=family)
    model = bl.LMM("y ~ 1 + (1|id)", data=sim.data, kinship={"id": sim.kinship.normalized()},
                   family=family)
    kw = dict(draws=1000, tune=1000, chains=2, seed=1, progressbar=False, verbose=False)
    fit = model.fit(**{**kw, "draws": 50, "tune": 50})  # warm-up: caches, imports
    if family == "gaussian":  # the C callback, then the Python one (GIL held) for reference
        modes = [("sequential", 1, True, "C"), ("parallel", 2, True, "C"),
                 ("sequential", 1, True, "Python"), ("parallel", 2, True, "Python")]
    else:  # sequential chains let BLAS thread each product over both cores; "1 BLAS thread"
        # is the same run on one core, the baseline of "two cores instead of one"
        modes = [("sequential", 1, True, ""), ("sequential, 1 BLAS thread", 1, "one", ""),
                 ("parallel", 2, True, ""), ("parallel, unpinned", 2, False, "")]
    pinned_fn = sampling.blas_threads_per_chain
    from threadpoolctl import threadpool_limits
    for label, cores, pinned, callback in modes:
        sampling.blas_threads_per_chain = pinned_fn if pinned else (lambda *a, **k: None)
        spectral_density.nutpie_model = (
            spectral_density._nutpie_python_model if callback == "Python" else c_model
        )
        for built in model._built.values():  # compiled nutpie models are cached per build
            built.cache.pop("nutpie", None)
        times, cpu, scpu = [], [], []
        for _ in range(reps):
            start = time.process_time()
            if pinned == "one":
                with threadpool_limits(limits=1):
                    f = model.fit(cores=cores, **kw)
            else:
                f = model.fit(cores=cores, **kw)
            cpu.append(time.process_time() - start)
            times.append(f.timing["sample_s"])
            scpu.append(sample_cpu[-1])
        sampling.blas_threads_per_chain = pinned_fn
        best = min(range(reps), key=times.__getitem__)
        name = f"{family} n={n} ({f.strategy}{', ' + callback if callback else ''})"
        row = {"model": name, "mode": label, "sample_s": times[best], "cpu_s": min(cpu),
               "sample_cpu_s": scpu[best], "h2_mean": float(f.idata.posterior["h2"].mean())}
        print(json.dumps(row), flush=True)
    spectral_density.nutpie_model = c_model
"""


def chains(n: str, n_glmm: int, reps: int) -> None:
    env = clean_env()
    print("\n== two chains × (1000 tune + 1000 draws), no thread variables set ==")
    print(
        f"{'model':36s} {'mode':26s} {'sample_s':>9s} {'speedup':>8s} {'vs 1 core':>9s} "
        f"{'CPU/wall':>8s} {'fit CPU s':>9s} {'h2 mean':>8s}"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", CHAINS_CHILD, str(reps), n, str(n_glmm)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    sequential: dict[str, float] = {}
    one_core: dict[str, float] = {}
    for line in child.stdout:  # one row per mode, as it finishes
        r = json.loads(line)
        sequential.setdefault(r["model"], r["sample_s"])
        if r["mode"] == "sequential, 1 BLAS thread":
            one_core[r["model"]] = r["sample_s"]
        speedup = sequential[r["model"]] / r["sample_s"]
        vs_one = one_core[r["model"]] / r["sample_s"] if r["model"] in one_core else float("nan")
        print(
            f"{r['model']:36s} {r['mode']:26s} {r['sample_s']:9.3f} {speedup:8.2f} "
            f"{vs_one:9.2f} {r['sample_cpu_s'] / r['sample_s']:8.2f} {r['cpu_s']:9.2f} "
            f"{r['h2_mean']:8.3f}",
            flush=True,
        )
    if child.wait() != 0:
        raise RuntimeError("the chains child process failed (its error is above)")
    print(
        "speedup = sequential ÷ this row's sampling seconds (best of the runs); 2 is the "
        "ceiling with two chains. vs 1 core: the GLMM's sequential chains on one BLAS thread "
        "÷ this row (sequential chains with BLAS's own threads already use both cores for "
        "the eigenvector products, so against them parallel chains gain less). CPU/wall: CPU "
        "seconds of the sampling call (all threads) per wall second, in that run: above 1 "
        "only when threads run at the same time. The control "
        "row is the ceiling the machine allows at that moment: on a machine busy with other "
        "sessions' jobs the kernel shares the cores out per session, so even two GIL-free "
        "loops gain nothing, and no row can. fit CPU s: the "
        "process's CPU seconds for the whole fit (least of the runs): the same work, so more "
        "CPU means threads spinning"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--glmm-n", type=int, default=500, help="records of the GLMM (0: none)")
    parser.add_argument(
        "--chains-n",
        default="1000,5000",
        help="records of the Gaussian models sampled by parallel and sequential chains",
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--skip-chains", action="store_true")
    args = parser.parse_args()
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = [f"{i['internal_api']} threads={i['num_threads']}" for i in threadpool_info()]
    print(
        f"# command: python benchmarks/bench_startup.py --n {args.n} --glmm-n {args.glmm_n} "
        f"--chains-n {args.chains_n} --reps {args.reps}"
    )
    print(f"# {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}; load at start: {load()}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; BLAS as found (not pinned): {blas}"
    )
    print("thread variables removed for the measured processes: " + ", ".join(THREAD_VARS))
    import_time(max(args.reps, 5))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.skip_cli:
            _, kinship = make_data(args.n, folder)
            whole_cli(args.n, args.reps, folder, kinship)
    if not args.skip_chains:
        chains(args.chains_n, args.glmm_n, args.reps)
    print(f"\nload at the end: {load()}")


if __name__ == "__main__":
    main()
