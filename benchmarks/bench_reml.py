"""Speed of the REML engine (a script that prints ratios, not a test).

1. Single kernel (spectral route) at several n: time of a whole fit as a ratio to one
   ``numpy.linalg.eigh`` of K measured in the same process, with BLAS pinned to one thread
   (threadpoolctl) so that the ratio does not depend on how busy the machine's cores are.
   ``build+fit`` = Kinship(K) (validation + the one cached eigh) + specify + fit_reml;
   ``fit`` = fit_reml on a spec whose Kinship already holds its eigendecomposition.
2. AI-REML on multi-component models: iterations, time, convergence, and which evaluator
   ran (``ai-reml-mme``: Henderson's mixed-model equations; ``ai-reml-dense``: n × n V).
3. The two AI-REML evaluators on the same repeated-records models (MME against dense n × n).
4. Against statsmodels MixedLM (REML), when statsmodels is installed (it is not a dependency).

Usage::

    python benchmarks/bench_reml.py [n ...]        # default: 1000 2000 5000
"""

from __future__ import annotations

import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_info, threadpool_limits

from bayeslmm import Kinship, specify
from bayeslmm.engines.reml import BoundaryFitWarning, fit_reml

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden" / "data"


def grm(n: int, n_snp: int, rng: np.random.Generator) -> np.ndarray:
    freq = rng.uniform(0.05, 0.95, n_snp)
    G = rng.binomial(2, freq, size=(n, n_snp)).astype(float)
    p = G.mean(0) / 2
    W = G - 2 * p
    K = W @ W.T / (2 * np.sum(p * (1 - p)))
    return 0.98 * K + 0.02 * np.eye(n)


def phenotype(K: np.ndarray, h2: float, rng: np.random.Generator) -> pd.DataFrame:
    n = K.shape[0]
    L = np.linalg.cholesky(K)
    g = L @ rng.normal(size=n)
    x = rng.normal(size=n)
    y = 1 + 0.3 * x + np.sqrt(h2) * g + np.sqrt(1 - h2) * rng.normal(size=n)
    return pd.DataFrame({"id": [f"i{k}" for k in range(n)], "x": x, "y": y})


def single_kernel(n: int, rng: np.random.Generator) -> dict:
    K = grm(n, 2 * n, rng)
    data = phenotype(K, 0.5, rng)
    ids = list(data["id"])
    reps = 3 if n <= 2000 else 1  # best of 3 where one run is short and noisy
    t_eigh = _best_time(lambda: np.linalg.eigh(K), reps)
    t = time.perf_counter()
    kin = Kinship(K, ids=ids, name="GRM")
    t_kin = time.perf_counter() - t
    t = time.perf_counter()
    spec = specify("y ~ x + (1 | id)", data, kinship={"id": kin})
    t_spec = time.perf_counter() - t
    fit = fit_reml(spec)  # first call: imports and caches warm
    t_fit = _best_time(lambda: fit_reml(spec), 2 * reps + 1)
    assert fit.method == "spectral" and fit.converged
    return {
        "n": n,
        "eigh_s": t_eigh,
        "kinship_s": t_kin,
        "specify_s": t_spec,
        "fit_s": t_fit,
        "fit/eigh": t_fit / t_eigh,
        "build+fit/eigh": (t_kin + t_spec + t_fit) / t_eigh,
        "n_eval": fit.n_iter,
        "h2": fit.heritability().loc["h2", "estimate"],
    }


def _best_time(func, reps: int) -> float:
    """Minimum over repeats: other jobs on a shared machine only ever add time."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        func()
        times.append(time.perf_counter() - t)
    return float(np.min(times))


def multi_component(rng: np.random.Generator) -> list[dict]:
    from pathlib import Path

    golden = Path(__file__).resolve().parents[1] / "tests" / "golden" / "data"
    rows = []
    cases = [
        ("sleepstudy", "Reaction ~ Days + (Days | Subject)", {}, None),
        ("sleepstudy", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", {}, None),
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", {}, None),
        ("het_env", "y ~ x + (1 | grp)", {}, "~ 0 + env"),
    ]
    for name, formula, kin, sigma in cases:
        data = pd.read_csv(golden / f"{name}.csv")
        rows.append(_time_fit(name, formula, data, kin, sigma))
    # simulated: two kernels (K, K∘K) + iid batch, n = 600 records of 300 individuals
    n = 300
    K = grm(n, 600, rng)
    kin = Kinship(K, ids=[f"i{k}" for k in range(n)], name="GRM")
    epi = kin.hadamard(name="GRMxGRM").normalized()
    data = phenotype(K, 0.4, rng)
    data = pd.concat([data, data.assign(y=data["y"] + rng.normal(size=n))], ignore_index=True)
    data["id2"] = data["id"]
    data["batch"] = rng.choice(list("ABCDEFGH"), size=len(data))
    rows.append(
        _time_fit(
            "sim n=600",
            "y ~ x + (1 | id) + (1 | id2) + (1 | batch)",
            data,
            {"id": kin, "id2": epi},
            None,
        )
    )
    data["env"] = np.tile(np.linspace(-1, 1, 4), len(data) // 4)
    rows.append(_time_fit("sim n=600", "y ~ x + (1 + env | id)", data, {"id": kin}, None))
    return rows


def _time_fit(name, formula, data, kin, sigma) -> dict:
    spec = specify(formula, data, kinship=kin or None, sigma=sigma)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryFitWarning)
        fit = fit_reml(spec, method="ai-reml")
    return {
        "data": name,
        "model": formula + (f", sigma {sigma}" if sigma else ""),
        "route": fit.method,
        "n_obs": spec.n_obs,
        "n_par": fit.parameters.shape[0],
        "n_iter": fit.n_iter,
        "converged": fit.converged,
        "boundary": fit.boundary,
        "time_s": time.perf_counter() - t,
    }


def iid_data(n_grp: int, per: int, rng: np.random.Generator) -> pd.DataFrame:
    """``per`` records in each of ``n_grp`` groups: random intercept and slope of x."""
    g = np.repeat(np.arange(n_grp), per)
    x = rng.normal(size=g.size)
    a, b = rng.normal(size=n_grp), 0.3 * rng.normal(size=n_grp)
    return pd.DataFrame(
        {"g": g.astype(str), "x": x, "y": 1 + 0.5 * x + a[g] + b[g] * x + rng.normal(size=g.size)}
    )


def routes(rng: np.random.Generator) -> list[dict]:
    """The same AI-REML fit with the MME evaluator and with the dense n × n one."""
    rows = []
    cases = [
        (200, 10, "y ~ x + (1 | g)"),
        (200, 10, "y ~ x + (x | g)"),
        (100, 20, "y ~ x + (x | g)"),
    ]
    for n_grp, per, formula in cases:
        spec = specify(formula, iid_data(n_grp, per, rng))
        fits, times = {}, {}
        for route in ("ai-reml-mme", "ai-reml-dense"):
            fit_reml(spec, method=route)
            times[route] = _best_time(lambda spec=spec, r=route: fit_reml(spec, method=r), 2)
            fits[route] = fit_reml(spec, method=route)
        mme, dense = fits["ai-reml-mme"], fits["ai-reml-dense"]
        est_m, est_d = mme.parameters["estimate"], dense.parameters["estimate"]
        rows.append(
            {
                "data": f"sim {n_grp}x{per}",
                "model": formula,
                "n_obs": spec.n_obs,
                "p+Q": spec.X.shape[1] + sum(t.n_coef * t.n_levels for t in spec.terms),
                "mme_s": times["ai-reml-mme"],
                "dense_s": times["ai-reml-dense"],
                "dense/mme": times["ai-reml-dense"] / times["ai-reml-mme"],
                "n_iter": f"{mme.n_iter}/{dense.n_iter}",
                "max_rel_diff_theta": float(np.max(np.abs(est_m - est_d) / np.abs(est_d))),
                "diff_loglik": abs(mme.loglik_reml - dense.loglik_reml),
            }
        )
    return rows


def versus_statsmodels(rng: np.random.Generator) -> list[dict]:
    """Same REML fits in statsmodels MixedLM and bayeslmm: time ratio and largest difference."""
    import statsmodels.formula.api as smf

    sleep = pd.read_csv(GOLDEN / "sleepstudy.csv")
    cases = [
        (
            "sleepstudy",
            sleep,
            "Reaction ~ Days + (Days | Subject)",
            "Reaction ~ Days",
            "Subject",
            "~Days",
        )
    ]
    for n_grp, per, formula, re_formula in [
        (200, 10, "y ~ x + (1 | g)", "~1"),
        (500, 20, "y ~ x + (1 | g)", "~1"),
        (1000, 10, "y ~ x + (1 | g)", "~1"),
        (200, 10, "y ~ x + (x | g)", "~x"),
        (500, 20, "y ~ x + (x | g)", "~x"),
    ]:
        data = iid_data(n_grp, per, rng)
        cases.append((f"sim {n_grp}x{per}", data, formula, "y ~ x", "g", re_formula))
    rows = []
    for name, data, formula, fixed, group, re_formula in cases:
        spec = specify(formula, data)
        fit_reml(spec)  # warm imports
        t_ours = _best_time(lambda spec=spec: fit_reml(spec), 3)
        ours = fit_reml(spec)

        def sm_fit(data=data, fixed=fixed, group=group, re_formula=re_formula):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = smf.mixedlm(fixed, data, groups=data[group], re_formula=re_formula)
                return model.fit(reml=True)

        t_sm = _best_time(sm_fit, 3)
        sm = sm_fit()
        vc = ours.variance_components()
        ours_cov = vc.loc[vc["grp"] != "Residual", "vcov"].to_numpy()
        theirs = np.asarray(sm.cov_re)
        theirs_cov = np.r_[np.diag(theirs), theirs[np.triu_indices_from(theirs, 1)]]
        rows.append(
            {
                "data": name,
                "model": formula,
                "n_obs": spec.n_obs,
                "route": ours.method,
                "bayeslmm_s": t_ours,
                "statsmodels_s": t_sm,
                "speedup": t_sm / t_ours,
                "max_rel_diff_vcov": float(
                    np.max(np.abs(ours_cov - theirs_cov) / np.abs(theirs_cov))
                ),
                "rel_diff_residual": abs(vc["vcov"].iloc[-1] - sm.scale) / sm.scale,
            }
        )
    return rows


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1000, 2000, 5000]
    rng = np.random.default_rng(2024)
    pd.set_option("display.width", 160)
    with threadpool_limits(limits=1, user_api="blas"):
        blas = [
            f"{i['internal_api']} {i.get('version')} threads={i['num_threads']}"
            for i in threadpool_info()
            if i["user_api"] == "blas"
        ]
        print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
        print(f"BLAS pinned to 1 thread with threadpoolctl: {blas}")
        print("\n== single kernel, spectral route: time relative to one numpy.linalg.eigh(K) ==")
        rows = [single_kernel(n, rng) for n in sizes]
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(
            "\nTimes are the best of 3 (eigh) and 7 (fit) runs for n <= 2000, of 1 and 3 above "
            "(the first fit_reml call, which pays one-off imports, is not timed)."
        )
        print(
            "fit/eigh: fit_reml with the kinship's eigendecomposition already cached (as it is "
            "after Kinship validation);\nbuild+fit/eigh: Kinship(K) (validation + its one eigh) "
            "+ specify + fit_reml, i.e. everything from a raw matrix."
        )
        print("\n== AI-REML on multi-component models ==")
        print(
            pd.DataFrame(multi_component(rng)).to_string(
                index=False, float_format=lambda v: f"{v:.4g}"
            )
        )
        print("\n== AI-REML evaluators: mixed-model equations vs dense n x n V (same optimiser) ==")
        print(pd.DataFrame(routes(rng)).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(
            "Times: best of 2. n_iter: MME/dense. The dense route costs O(n^3) per iteration, "
            "the MME O((p+Q)^3)."
        )
        try:
            import statsmodels  # noqa: F401
        except ImportError:
            print(
                "\nstatsmodels is not installed (pip install statsmodels): comparison with "
                "statsmodels MixedLM skipped."
            )
        else:
            print("\n== against statsmodels MixedLM (REML) on models it can fit ==")
            print(
                pd.DataFrame(versus_statsmodels(rng)).to_string(
                    index=False, float_format=lambda v: f"{v:.4g}"
                )
            )


if __name__ == "__main__":
    main(sys.argv[1:])
