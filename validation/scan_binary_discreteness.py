"""How far below α a binary scan's test must fall with few cases: exact sizes, no Monte Carlo.

With an intercept fitted, the score test of a marker asks which k of the n individuals are
the cases, not how many there are: under the null (equal case probabilities, no covariate,
no relatedness) the statistic S = Σ_cases g̃_i has the exact conditional distribution of a
k-subset drawn uniformly, a lattice with at most 2k + 1 values (g ∈ {0, 1, 2}). For each
marker this script enumerates that distribution (multivariate hypergeometric over the
genotype classes) and sums the probability of the outcomes each test rejects at α, giving
the test's exact size under that null for that marker. Tests:

- ``exact``: the conditional test itself, P(|S| ≥ |s|); valid (size ≤ α) but, on a
  coarse lattice, below α by the jump at the critical value;
- ``mid-p``: P(|S| > |s|) + ½ P(|S| = |s|);
- ``SPA``: the scan's p-value (:func:`bayeslmm.association.glmm.saddlepoint_pvalue`, the
  independent-outcome saddle point, used where |z| ≥ 2, else the normal p);
- ``double SPA``: Skovgaard's double saddle point of S given the intercept's score, a
  candidate fix (:func:`double_saddlepoint_pvalue`; not in the scan);
- ``normal``: 2 Φ̄(|s| / SD(S)), SD from the independent-outcome variance as in the scan.

Markers: MAF half from 0.005–0.05 and half from 0.05–0.5 as in
validation/scan_binary_calibration.py, genotype counts binomial (Hardy–Weinberg); those with
a minor allele count ≤ 10 (the scan's exact carrier test) are left out. Reported per MAF
class: mean size / α over the markers (its spread over markers is a property of the marker
mix, not sampling error).

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python validation/scan_binary_discreteness.py \
        > validation/results/scan_binary_discreteness.txt

Options: ``--cases 26,50``, ``--n 2004,5004`` (one per case count), ``--markers 200``
per setting, ``--seed 3``.
"""

from __future__ import annotations

import argparse
import platform
import time
from math import lgamma

import numpy as np
import pandas as pd
from scipy import special

import bayeslmm as bl
from bayeslmm.association.glmm import SPA_CUTOFF, saddlepoint_pvalue
from bayeslmm.families import Bernoulli

ALPHAS = (1e-3, 1e-4)

#: −(K(ζ) − t q) beyond which a tail is taken as 0 (Φ̄(38) ≈ 1e-316)
EMPTY_TAIL = 720.0


def double_saddlepoint_pvalue(
    q: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    eta: np.ndarray,
    family: Bernoulli,
    trials: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p-values P(|S| ≥ q | U = E U) by Skovgaard's double saddle point.

    S = Σ_i a_i (y_i − E y_i) as in :func:`saddlepoint_pvalue`, and U = Σ_i b_i (y_i − E y_i)
    the score of the null's fixed effects (``b`` = n × p, the covariates times h'/V), which
    the null fit sets to 0. Conditioning on it is what fitting the covariates does to the
    distribution of S: with an intercept and 26 cases, the test is about which 26 of the n
    individuals are the cases, not how many there are. The independent-outcome tail of
    :func:`saddlepoint_pvalue` also lets the number of cases vary; its extra fourth cumulant
    (k · E g̃⁴ against k · κ₄(g̃) for k cases) makes it conservative when cases are few.

    Each tail is Φ̄(w + log(v/w)/w) with, at the joint saddle point ζ̂ = (t̂, λ̂) of
    K(ζ) = Σ_i K_i(t a_i + λᵀb_i) − ζᵀ Σ_i b̄_i E y_i (b̄_i = (a_i, b_i)) solving
    ∇K(ζ̂) = (q, 0): w = √(2 (t̂ q − K(ζ̂))), v = t̂ √(det ∇²K(ζ̂) / det Σ_i Var(y_i) b_i b_iᵀ)
    (Skovgaard 1987, J. Appl. Probab. 24:875; the marginal saddle point of U is 0).

    Returns
    -------
    p : ndarray
        The two-sided p-values.
    ok : ndarray of bool
        Whether both joint saddle points were found; where not, ``p`` is NaN.
    """
    upper, ok_up = _conditional_tail(q, a, b, eta, family, trials)
    lower, ok_low = _conditional_tail(q, -a, b, eta, family, trials)
    ok = ok_up & ok_low
    return np.where(ok, np.minimum(upper + lower, 1.0), np.nan), ok


def _conditional_tail(q, a, b, eta, family, trials, max_iter: int = 100):
    """Upper tails P(S ≥ q | U = 0) for q > 0, each column of ``a`` one S."""
    n, m = a.shape
    p = b.shape[1]
    _, mean, var = family.response_cgf(np.zeros_like(eta), eta, trials)
    tr = None if trials is None else trials[:, None]
    var0 = np.einsum("ij,i,ij->j", a, var, a)
    h_u = (b * var[:, None]).T @ b  # Var U, the marginal Hessian at its saddle point 0
    logdet_u = np.linalg.slogdet(h_u)[1]
    mean_a, mean_b = mean @ a, mean @ b

    def objective(t, lam, cols):
        s = a[:, cols] * t[None, :] + b @ lam.T
        K, K1, K2 = family.response_cgf(s, eta[:, None], None if tr is None else tr)
        value = np.sum(K, axis=0) - t * mean_a[cols] - lam @ mean_b - t * q[cols]
        return value, K1, K2

    t = q / var0
    lam = np.zeros((m, p))
    done = np.zeros(m, dtype=bool)
    ok = np.zeros(m, dtype=bool)
    for _ in range(max_iter):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        value, K1, K2 = objective(t[act], lam[act], act)
        off = value < -EMPTY_TAIL  # w > 38: past any p-value of interest (or off the support)
        done[act[off]] = True
        act, value, K1, K2 = act[~off], value[~off], K1[:, ~off], K2[:, ~off]
        if act.size == 0:
            break
        aa = a[:, act]
        grad = np.column_stack([
            np.einsum("ij,ij->j", aa, K1) - mean_a[act] - q[act], (K1.T @ b) - mean_b
        ])  # fmt: skip
        hess = np.empty((act.size, p + 1, p + 1))
        hess[:, 0, 0] = np.einsum("ij,ij,ij->j", aa, K2, aa)
        cross = (aa * K2).T @ b
        hess[:, 0, 1:] = cross
        hess[:, 1:, 0] = cross
        hess[:, 1:, 1:] = np.einsum("ij,ip,iq->jpq", K2, b, b)
        scale = np.sqrt(np.maximum(var0[act], 1e-300))
        converged = np.abs(grad[:, 0]) <= 1e-10 * scale
        converged &= np.all(np.abs(grad[:, 1:]) <= 1e-10 * np.sqrt(np.diag(h_u)), axis=1)
        ok[act[converged]] = True
        done[act[converged]] = True
        go = ~converged
        if not go.any():
            break
        idx = act[go]
        try:
            step = -np.linalg.solve(hess[go], grad[go][:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            done[idx] = True  # singular Hessian: no saddle point here
            continue
        # K(ζ) − ζᵀ(q, 0) is convex: halve each step until it decreases
        frac = np.ones(idx.size)
        base = value[go]
        for _ in range(40):
            t_new = t[idx] + frac * step[:, 0]
            lam_new = lam[idx] + frac[:, None] * step[:, 1:]
            new_value = objective(t_new, lam_new, idx)[0]
            better = np.isfinite(new_value) & (new_value <= base + 1e-12 * np.abs(base))
            if better.all():
                break
            frac = np.where(better, frac, 0.5 * frac)
        t[idx], lam[idx] = t_new, lam_new
        stalled = np.max(np.abs(frac[:, None] * step), axis=1) <= 1e-14 * (1 + np.abs(t[idx]))
        done[idx[stalled]] = True  # no decrease possible short of the root: q off the support
    value, _, K2 = objective(t, lam, np.arange(m))
    # K(ζ) − t q unbounded below (q beyond the support given U): the tail is empty
    empty = value < -EMPTY_TAIL
    ok |= empty
    hess = np.empty((m, p + 1, p + 1))
    hess[:, 0, 0] = np.einsum("ij,ij,ij->j", a, K2, a)
    cross = (a * K2).T @ b
    hess[:, 0, 1:] = cross
    hess[:, 1:, 0] = cross
    hess[:, 1:, 1:] = np.einsum("ij,ip,iq->jpq", K2, b, b)
    sign, logdet = np.linalg.slogdet(hess)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        w = np.sqrt(np.maximum(-2.0 * value, 0.0))  # value = K(ζ̂) − t̂ q
        v = t * np.exp(0.5 * (logdet - logdet_u))
        tail = special.ndtr(-(w + np.log(v / w) / w))
    tail = np.where(empty, 0.0, tail)
    ok &= empty | ((sign > 0) & (t > 0) & np.isfinite(tail))
    return np.where(ok, tail, np.nan), ok


def log_choose(n: int, k: int) -> float:
    """log C(n, k)."""
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)


def conditional_distribution(counts: tuple[int, int, int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Values and probabilities of Σ_cases g − k ḡ for a uniform k-subset of the n individuals
    with ``counts`` = (n₀, n₁, n₂) of genotypes 0, 1, 2."""
    n0, n1, n2 = counts
    n = n0 + n1 + n2
    mean = (n1 + 2 * n2) / n
    total = log_choose(n, k)
    sums: dict[int, float] = {}
    for c1 in range(min(n1, k) + 1):
        for c2 in range(min(n2, k - c1) + 1):
            c0 = k - c1 - c2
            if c0 > n0:
                continue
            lp = log_choose(n1, c1) + log_choose(n2, c2) + log_choose(n0, c0) - total
            sums[c1 + 2 * c2] = sums.get(c1 + 2 * c2, 0.0) + np.exp(lp)
    values = np.array(sorted(sums), dtype=float)
    return values - k * mean, np.array([sums[int(v)] for v in values])


def marker_sizes(counts: tuple[int, int, int], k: int, family: Bernoulli) -> dict[str, list[float]]:
    """Exact size at each α of each test for one marker under the conditional null."""
    n = sum(counts)
    values, probs = conditional_distribution(counts, k)
    g = np.repeat([0.0, 1.0, 2.0], counts)
    a = g - g.mean()
    mu = k / n
    sd = np.sqrt(np.sum(a**2) * mu * (1 - mu))
    size = np.abs(values)
    tol = 1e-9 * max(1.0, float(size.max()))
    ge = np.array([probs[size >= s - tol].sum() for s in size])
    eq = np.array([probs[np.abs(size - s) <= tol].sum() for s in size])
    p = {"exact": np.minimum(ge, 1.0), "mid-p": np.minimum(ge - 0.5 * eq, 1.0)}
    z = size / sd
    p["normal"] = special.erfc(z / np.sqrt(2.0))
    spa = p["normal"].copy()
    # saddle points only where the decision at α ≥ 1e-4 can differ: outcomes with an exact p
    # below 1e-9 carry too little mass to move a size at 1e-4, those above 1e-2 get p ≫ 1e-3
    # from both saddle points (set to 1 here, rejected by neither)
    deep = p["exact"] < 1e-9
    tail = np.flatnonzero((z >= SPA_CUTOFF) & (size > tol) & ~deep & (p["exact"] <= 1e-2))
    if tail.size:
        eta = np.full(n, np.log(mu / (1 - mu)))
        A = np.repeat(a[:, None], tail.size, axis=1)
        p_spa, ok = saddlepoint_pvalue(size[tail], A, eta, family)
        spa[tail[ok]] = p_spa[ok]
    high = (z >= SPA_CUTOFF) & (p["exact"] > 1e-2)
    spa[deep], spa[high] = 0.0, 1.0
    p["SPA"] = spa
    double = p["normal"].copy()
    if tail.size:
        p_dbl, ok = double_saddlepoint_pvalue(size[tail], A, np.ones((n, 1)), eta, family)
        double[tail[ok]] = p_dbl[ok]
        double[tail[~ok]] = spa[tail[~ok]]
    double[deep], double[high] = 0.0, 1.0
    p["double SPA"] = double
    return {test: [float(probs[pv <= alpha].sum()) for alpha in ALPHAS] for test, pv in p.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="26,50")
    parser.add_argument("--n", default="2004,5004")
    parser.add_argument("--markers", type=int, default=200)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    cases = [int(v) for v in args.cases.split(",")]
    sizes_n = [int(v) for v in args.n.split(",")]
    if len(cases) != len(sizes_n):
        raise SystemExit("--cases and --n need one value each per setting")
    print(f"# {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}; command: python "
          f"validation/scan_binary_discreteness.py --cases {args.cases} --n {args.n} "
          f"--markers {args.markers} --seed {args.seed}")  # fmt: skip
    print(
        f"# python {platform.python_version()}, numpy {np.__version__}, bayeslmm {bl.__version__}"
    )
    family = Bernoulli()
    rows = []
    c0 = time.process_time()
    for k, n in zip(cases, sizes_n, strict=True):
        rng = np.random.default_rng(args.seed)
        per_class: dict[str, list[dict[str, list[float]]]] = {"MAF < 0.05": [], "MAF >= 0.05": []}
        while min(len(v) for v in per_class.values()) < args.markers // 2:
            rare = len(per_class["MAF < 0.05"]) < args.markers // 2 and rng.random() < 0.5
            f = rng.uniform(0.005, 0.05) if rare else rng.uniform(0.05, 0.5)
            g = rng.binomial(2, f, n)
            counts = tuple(int(np.sum(g == v)) for v in (0, 1, 2))
            minor = min(counts[1] + 2 * counts[2], counts[1] + 2 * counts[0])
            maf = minor / (2 * n)
            name = "MAF < 0.05" if maf < 0.05 else "MAF >= 0.05"
            if minor <= 10 or len(per_class[name]) >= args.markers // 2:
                continue
            per_class[name].append(marker_sizes(counts, k, family))
        for name, markers in [*per_class.items(), ("all", sum(per_class.values(), []))]:
            for test in ("exact", "mid-p", "SPA", "double SPA", "normal"):
                row = {"cases": k, "n": n, "markers": name, "test": test, "count": len(markers)}
                for j, alpha in enumerate(ALPHAS):
                    ratio = np.array([m[test][j] for m in markers]) / alpha
                    row[f"size / {alpha:g}"] = f"{ratio.mean():.2f}"
                rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"\n# CPU {time.process_time() - c0:.0f} s")


if __name__ == "__main__":
    main()
