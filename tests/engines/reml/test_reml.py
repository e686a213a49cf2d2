"""REML engine against independent computations.

- the restricted likelihood written with the full V and maximised by scipy.optimize
  (single kernel, two kernels, kinship random slopes, residual variances by environment);
- Henderson's mixed-model equations for BLUPs and prediction error variances;
- the AI matrix written densely, for the standard errors of the spectral route;
- the spectral route and AI-REML agree on single-kernel models, boundary h² = 0 included.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from bayeslmm import Kinship, specify
from bayeslmm.engines.reml import (
    BoundaryFitWarning,
    RemlConvergenceWarning,
    boundary_lrt,
    fit_reml,
    spectral_applicable,
)
from bayeslmm.engines.reml._structure import build_structure
from bayeslmm.engines.reml.aireml import _Projector
from bayeslmm.errors import SpecificationError

LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------------------
# independent dense reference
# ---------------------------------------------------------------------------------------
def dense_neg2_reml(V: np.ndarray, y: np.ndarray, X: np.ndarray) -> float:
    """−2 ℓ_R written out with the full V (no tricks)."""
    n, p = X.shape
    Vi = np.linalg.inv(V)
    XVX = X.T @ Vi @ X
    P = Vi - Vi @ X @ np.linalg.inv(XVX) @ X.T @ Vi
    return float(
        np.linalg.slogdet(V)[1] + np.linalg.slogdet(XVX)[1] + y @ P @ y + (n - p) * LOG_2PI
    )


def maximise_dense(build_v, n_par: int, y, X, x0=None) -> tuple[np.ndarray, float]:
    """Maximise ℓ_R over an unconstrained parametrisation; returns (argmin, −2ℓ_R)."""
    x0 = np.zeros(n_par) if x0 is None else x0

    def objective(z):
        try:
            return dense_neg2_reml(build_v(z), y, X)
        except np.linalg.LinAlgError:
            return 1e300

    best = optimize.minimize(objective, x0, method="Nelder-Mead", options={"maxiter": 20000})
    best = optimize.minimize(
        objective,
        best.x,
        method="BFGS",
        options={"gtol": 1e-9, "maxiter": 5000},
    )
    return best.x, float(best.fun)


def simulated_kinship(n: int, seed: int, n_snp: int = 400) -> Kinship:
    """VanRaden GRM of simulated genotypes with family structure, slightly ridged."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.1, 0.9, n_snp)
    G = rng.binomial(2, freq, size=(n, n_snp)).astype(float)
    for i in range(1, n // 3):  # one large family sharing half of a founder's genome
        share = rng.random(n_snp) < 0.5
        G[i, share] = G[0, share]
    p = G.mean(0) / 2
    keep = (p > 0) & (p < 1)
    W = G[:, keep] - 2 * p[keep]
    K = W @ W.T / (2 * np.sum(p[keep] * (1 - p[keep])))
    K = 0.95 * K + 0.05 * np.eye(n)  # the centred GRM has rank n − 1; keep it invertible
    return Kinship(K, ids=[f"i{k:03d}" for k in range(n)], name="GRM")


def simulate(K: Kinship, h2: float, seed: int, reps: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    s, U = K.eigenvalues, K.eigenvectors
    g = U @ (np.sqrt(s) * rng.normal(size=K.n))
    ids = np.repeat(np.array(K.ids), reps)
    x = rng.normal(size=ids.size)
    y = (
        1.0
        + 0.5 * x
        + math.sqrt(h2) * np.repeat(g, reps)
        + math.sqrt(1 - h2) * rng.normal(size=ids.size)
    )
    return pd.DataFrame({"id": ids, "x": x, "y": y})


def incidence(ids, levels) -> np.ndarray:
    pos = {lvl: k for k, lvl in enumerate(levels)}
    Z = np.zeros((len(ids), len(levels)))
    Z[np.arange(len(ids)), [pos[i] for i in ids]] = 1.0
    return Z


@pytest.fixture(scope="module")
def kin60() -> Kinship:
    return simulated_kinship(60, seed=11)


# ---------------------------------------------------------------------------------------
# single kernel
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reps", [1, 2])
def test_single_kernel_matches_dense_optimisation(kin60: Kinship, reps: int) -> None:
    data = simulate(kin60, h2=0.6, seed=3, reps=reps)
    spec = specify("y ~ x + (1 | id)", data, kinship={"id": kin60})
    y, X = spec.y, spec.X
    Z = incidence(data["id"], kin60.ids)
    ZKZ = Z @ kin60.matrix @ Z.T
    z, neg2 = maximise_dense(
        lambda z: math.exp(z[0]) * ZKZ + math.exp(z[1]) * np.eye(len(y)), 2, y, X
    )
    dense_theta = np.exp(z)
    for method in ("spectral", "ai-reml-dense", "ai-reml-mme"):
        fit = fit_reml(spec, method=method)
        est = fit.parameters["estimate"].to_numpy()
        np.testing.assert_allclose(est, dense_theta, rtol=1e-4)
        # ours is the optimum: never worse than the generic optimiser, and equal to it
        assert fit.reml_criterion <= neg2 + 1e-7
        assert fit.reml_criterion == pytest.approx(neg2, abs=1e-6)
        # and the criterion is the dense one evaluated at our estimate
        V = est[0] * ZKZ + est[1] * np.eye(len(y))
        assert fit.reml_criterion == pytest.approx(dense_neg2_reml(V, y, X), rel=1e-10)


def test_spectral_and_ai_reml_agree(kin60: Kinship) -> None:
    for reps, h2 in [(1, 0.3), (3, 0.5), (2, 0.8)]:
        data = simulate(kin60, h2=h2, seed=reps, reps=reps)
        spec = specify("y ~ x + (1 | id)", data, kinship={"id": kin60})
        assert spectral_applicable(spec)
        a = fit_reml(spec, method="spectral")
        for route in ("ai-reml-dense", "ai-reml-mme"):
            b = fit_reml(spec, method=route)
            assert b.method == route
            _assert_fits_agree(a, b)
        # auto: the cached eigh with one record per id, the MME once p + q < n / 2
        assert fit_reml(spec).method == ("ai-reml-mme" if reps == 3 else "spectral")


def _assert_fits_agree(a, b) -> None:
    assert not a.boundary and not b.boundary
    np.testing.assert_allclose(a.parameters["estimate"], b.parameters["estimate"], rtol=2e-6)
    np.testing.assert_allclose(a.parameter_cov, b.parameter_cov, rtol=1e-4)
    np.testing.assert_allclose(a.fixed_effects(), b.fixed_effects(), rtol=1e-6)
    assert a.loglik_reml == pytest.approx(b.loglik_reml, abs=1e-8)
    assert a.loglik_ml == pytest.approx(b.loglik_ml, abs=1e-6)
    pd.testing.assert_frame_equal(a.heritability(), b.heritability(), rtol=1e-4)
    pd.testing.assert_frame_equal(a.blups["id"], b.blups["id"], rtol=1e-5, atol=1e-8)


def test_boundary_h2_one_agrees_between_routes(kin60: Kinship) -> None:
    """One record per id and a full-rank K: σ_e² = 0 (h² = 1) is reachable and found."""
    data = simulate(kin60, h2=0.9, seed=1)
    spec = specify("y ~ x + (1 | id)", data, kinship={"id": kin60})
    fits = []
    for method in ("spectral", "ai-reml-dense", "ai-reml-mme"):
        with pytest.warns(BoundaryFitWarning, match="residual variance is estimated at 0"):
            fits.append(fit_reml(spec, method=method))
    a = fits[0]
    assert a.parameters["estimate"].iloc[1] == 0.0
    assert a.heritability().loc["h2", "estimate"] == 1.0
    # σ_e² → 0 makes the mixed-model equations ill-conditioned: the MME route hands over
    assert fits[2].method == "ai-reml-dense"
    assert "finished with the dense route" in fits[2].messages[0]
    for b in fits[1:]:
        np.testing.assert_allclose(a.parameters["estimate"], b.parameters["estimate"], atol=1e-8)
        assert a.loglik_reml == pytest.approx(b.loglik_reml, abs=1e-8)
    # interior points are worse: the maximum is on the boundary
    y, X = spec.y, spec.X
    sg2 = a.parameters["estimate"].iloc[0]
    at_one = dense_neg2_reml(sg2 * kin60.matrix, y, X)
    for se2 in (1e-3, 1e-2):
        assert dense_neg2_reml(sg2 * kin60.matrix + se2 * np.eye(len(y)), y, X) > at_one


def _boundary_dataset(kin: Kinship) -> pd.DataFrame:
    """Pure noise: the REML estimate of σ_g² sits at 0 for this seed."""
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {"id": list(kin.ids), "x": rng.normal(size=kin.n), "y": rng.normal(size=kin.n)}
    )


def test_boundary_h2_zero_is_exact_and_reported(kin60: Kinship) -> None:
    data = _boundary_dataset(kin60)
    spec = specify("y ~ x + (1 | id)", data, kinship={"id": kin60})
    fits = {}
    for method in ("spectral", "ai-reml-dense", "ai-reml-mme"):
        with pytest.warns(BoundaryFitWarning, match="variance of id"):
            fits[method] = fit_reml(spec, method=method)
        fit = fits[method]
        assert fit.boundary and fit.parameters["estimate"].iloc[0] == 0.0
        assert fit.heritability().loc["h2", "estimate"] == 0.0
    for route in ("ai-reml-dense", "ai-reml-mme"):
        assert fits["spectral"].loglik_reml == pytest.approx(fits[route].loglik_reml, abs=1e-9)
    # the likelihood does decrease into the interior: h² = 0 is a true boundary maximum
    y, X = spec.y, spec.X
    se2 = fits["spectral"].parameters["estimate"].iloc[1]
    at_zero = dense_neg2_reml(se2 * np.eye(len(y)), y, X)
    for sg2 in (1e-3, 1e-2, 1e-1):
        assert dense_neg2_reml(sg2 * kin60.matrix + se2 * np.eye(len(y)), y, X) > at_zero
    # σ_e² at h² = 0 is the OLS REML variance
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    assert se2 == pytest.approx(resid @ resid / (len(y) - X.shape[1]), rel=1e-10)
    summary = fits["spectral"].to_summary()
    json.dumps(summary, allow_nan=False)
    assert summary["diagnostics"]["boundary"] is True


# ---------------------------------------------------------------------------------------
# several components (AI-REML)
# ---------------------------------------------------------------------------------------
def test_two_kernels_and_iid_term_match_dense_optimisation(kin60: Kinship) -> None:
    epi = kin60.hadamard(name="GRMxGRM").normalized()
    rng = np.random.default_rng(8)
    data = simulate(kin60, h2=0.5, seed=9, reps=2)
    data["id2"] = data["id"]
    data["batch"] = rng.choice(list("ABCDEF"), size=len(data))
    data["y"] += data["batch"].map(dict(zip("ABCDEF", rng.normal(size=6), strict=True)))
    spec = specify(
        "y ~ x + (1 | id) + (1 | id2) + (1 | batch)", data, kinship={"id": kin60, "id2": epi}
    )
    fit = fit_reml(spec)
    assert fit.method == "ai-reml-dense" and fit.converged and not fit.boundary
    Z = incidence(data["id"], kin60.ids)
    B = incidence(data["batch"], sorted(set(data["batch"])))
    mats = [Z @ kin60.matrix @ Z.T, Z @ epi.matrix @ Z.T, B @ B.T, np.eye(len(data))]
    z, neg2 = maximise_dense(
        lambda z: sum(math.exp(v) * M for v, M in zip(z, mats, strict=True)),
        4,
        spec.y,
        spec.X,
        x0=np.log(fit.parameters["estimate"].to_numpy() * 1.5),
    )
    assert fit.reml_criterion <= neg2 + 1e-7
    np.testing.assert_allclose(fit.parameters["estimate"], np.exp(z), rtol=2e-3)
    assert list(fit.variance_components()["grp"]) == ["id", "id2", "batch", "Residual"]
    h2 = fit.heritability()
    assert "h2" not in h2.index  # two kinship terms: no single narrow-sense h²
    assert h2["estimate"].sum() < 1


def test_kinship_random_slopes_match_dense_optimisation() -> None:
    kin = simulated_kinship(40, seed=21)
    rng = np.random.default_rng(4)
    reps = 4
    ids = np.repeat(np.array(kin.ids), reps)
    env = np.tile(np.linspace(-1, 1, reps), kin.n)
    L = np.linalg.cholesky(kin.matrix)
    Sigma = np.array([[1.0, 0.3], [0.3, 0.5]])
    u = L @ rng.normal(size=(kin.n, 2)) @ np.linalg.cholesky(Sigma).T
    idx = np.repeat(np.arange(kin.n), reps)
    y = 2 + 0.7 * env + u[idx, 0] + u[idx, 1] * env + rng.normal(scale=0.6, size=ids.size)
    data = pd.DataFrame({"id": ids, "env": env, "y": y})
    spec = specify("y ~ env + (1 + env | id)", data, kinship={"id": kin})
    fit = fit_reml(spec)
    vc = fit.variance_components()
    assert list(zip(vc["var1"], vc["var2"], strict=True)) == [
        ("(Intercept)", None),
        ("env", None),
        ("(Intercept)", "env"),
        (None, None),
    ]
    Z = incidence(ids, kin.ids)
    Z0, Z1 = Z, Z * env[:, None]
    K = kin.matrix

    def build(z):
        Lz = np.array([[math.exp(z[0]), 0.0], [z[1], math.exp(z[2])]])
        S = Lz @ Lz.T
        V = S[0, 0] * Z0 @ K @ Z0.T + S[1, 1] * Z1 @ K @ Z1.T
        V += S[0, 1] * (Z0 @ K @ Z1.T + Z1 @ K @ Z0.T)
        return V + math.exp(z[3]) * np.eye(len(y))

    z, neg2 = maximise_dense(build, 4, spec.y, spec.X)
    Lz = np.array([[math.exp(z[0]), 0.0], [z[1], math.exp(z[2])]])
    S = Lz @ Lz.T
    dense = [S[0, 0], S[1, 1], S[0, 1], math.exp(z[3])]
    assert fit.reml_criterion <= neg2 + 1e-7
    np.testing.assert_allclose(vc["vcov"], dense, rtol=1e-3)
    assert vc["sdcor"].iloc[2] == pytest.approx(S[0, 1] / math.sqrt(S[0, 0] * S[1, 1]), rel=1e-3)


def test_residual_by_environment_matches_dense_optimisation(kin60: Kinship) -> None:
    rng = np.random.default_rng(12)
    data = simulate(kin60, h2=0.5, seed=13, reps=3)
    data["env"] = np.tile(["dry", "wet", "hot"], kin60.n)
    sd = data["env"].map({"dry": 0.5, "wet": 1.0, "hot": 1.6}).to_numpy()
    data["y"] += sd * rng.normal(size=len(data))
    spec = specify("y ~ x + (1 | id)", data, kinship={"id": kin60}, sigma="~ 0 + env")
    assert not spectral_applicable(spec)
    fit = fit_reml(spec)
    vc = fit.variance_components()
    assert list(vc["var1"].iloc[1:]) == ["env[dry]", "env[hot]", "env[wet]"]
    Z = incidence(data["id"], kin60.ids)
    G = Z @ kin60.matrix @ Z.T
    masks = [(data["env"] == e).to_numpy(float) for e in ("dry", "hot", "wet")]
    z, neg2 = maximise_dense(
        lambda z: (
            math.exp(z[0]) * G
            + np.diag(sum(math.exp(v) * m for v, m in zip(z[1:], masks, strict=True)))
        ),
        4,
        spec.y,
        spec.X,
    )
    assert fit.reml_criterion <= neg2 + 1e-7
    np.testing.assert_allclose(vc["vcov"], np.exp(z), rtol=1e-3)
    # V_p for the proportions averages the residual variances over observations
    # GCTA's convention (σ_g² at K_ii = 1); h2 itself is at the sample's kinship scale
    h2 = fit.heritability().loc["h2_gcta", "estimate"]
    theta = vc["vcov"].to_numpy()
    assert h2 == pytest.approx(theta[0] / (theta[0] + theta[1:].mean()), rel=1e-12)
    with pytest.raises(SpecificationError, match="one variance per level"):
        fit_reml(specify("y ~ x + (1 | id)", data, kinship={"id": kin60}, sigma="~ x"))


# ---------------------------------------------------------------------------------------
# BLUPs, standard errors, heritability
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["spectral", "ai-reml-dense", "ai-reml-mme"])
def test_blups_and_pev_match_henderson_equations(kin60: Kinship, method: str) -> None:
    data = simulate(kin60, h2=0.5, seed=17, reps=2).iloc[:100]  # unbalanced: 20 ids once
    spec = specify("y ~ x + (1 | id)", data, kinship={"id": kin60})
    fit = fit_reml(spec, method=method)
    sg2, se2 = fit.parameters["estimate"]
    levels = fit.blups["id"].index
    K = kin60.subset(levels).matrix
    Z = incidence(data["id"], levels)
    X, y = spec.X, spec.y
    # Henderson: [[XᵀX, XᵀZ], [ZᵀX, ZᵀZ + K⁻¹ σ_e²/σ_g²]] [β; u] = [Xᵀy; Zᵀy]
    lhs = np.block([[X.T @ X, X.T @ Z], [Z.T @ X, Z.T @ Z + np.linalg.inv(K) * se2 / sg2]])
    rhs = np.concatenate([X.T @ y, Z.T @ y])
    sol = np.linalg.solve(lhs, rhs)
    C = np.linalg.inv(lhs) * se2
    p = X.shape[1]
    np.testing.assert_allclose(fit.fixed_effects()["estimate"], sol[:p], rtol=1e-8)
    np.testing.assert_allclose(fit.blups["id"]["(Intercept)"], sol[p:], atol=1e-8)
    np.testing.assert_allclose(fit.blups["id"]["pev:(Intercept)"], np.diag(C)[p:], rtol=1e-7)
    np.testing.assert_allclose(fit.fixed_cov, C[:p, :p], rtol=1e-7)


@pytest.mark.parametrize("method", ["spectral", "ai-reml-dense", "ai-reml-mme"])
def test_standard_errors_are_inverse_ai_and_delta_method(kin60: Kinship, method: str) -> None:
    data = simulate(kin60, h2=0.4, seed=23, reps=2)
    spec = specify("y ~ x + (1 | id)", data, kinship={"id": kin60})
    fit = fit_reml(spec, method=method)
    theta = fit.parameters["estimate"].to_numpy()
    Z = incidence(data["id"], kin60.ids)
    mats = [Z @ kin60.matrix @ Z.T, np.eye(len(data))]
    V = theta[0] * mats[0] + theta[1] * mats[1]
    X, y = spec.X, spec.y
    Vi = np.linalg.inv(V)
    P = Vi - Vi @ X @ np.linalg.inv(X.T @ Vi @ X) @ X.T @ Vi
    Py = P @ y
    ai = np.array([[0.5 * Py @ Mi @ P @ Mj @ Py for Mj in mats] for Mi in mats])
    np.testing.assert_allclose(fit.parameter_cov, np.linalg.inv(ai), rtol=1e-6)
    np.testing.assert_allclose(fit.parameters["se"], np.sqrt(np.diag(np.linalg.inv(ai))), rtol=1e-6)
    # h² = θ_g/(θ_g + θ_e): delta method with a numerical gradient
    cov = np.linalg.inv(ai)
    eps = 1e-6 * theta

    def h2_of(t):
        return t[0] / t.sum()

    grad = np.array([(h2_of(theta + e) - h2_of(theta - e)) / (2 * e.sum()) for e in np.diag(eps)])
    h2 = fit.heritability()  # GCTA's convention (σ_g² at K_ii = 1) is the h2_gcta row
    assert h2.loc["h2_gcta", "estimate"] == pytest.approx(h2_of(theta), rel=1e-12)
    assert h2.loc["h2_gcta", "se"] == pytest.approx(math.sqrt(grad @ cov @ grad), rel=1e-6)
    assert h2.loc["id"].tolist() == h2.loc["h2"].tolist()


# ---------------------------------------------------------------------------------------
# likelihood-ratio test, summary contract, errors, projection
# ---------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::bayeslmm.engines.reml.BoundaryFitWarning")
def test_boundary_lrt(kin60: Kinship) -> None:
    data = simulate(kin60, h2=0.6, seed=31, reps=2)
    data["plot"] = np.tile(list("abcdefghij"), len(data) // 10)
    full = fit_reml(specify("y ~ x + (1 | id) + (1 | plot)", data, kinship={"id": kin60}))
    reduced = fit_reml(specify("y ~ x + (1 | plot)", data))
    test = boundary_lrt(full, reduced)
    stat = 2 * (full.loglik_reml - reduced.loglik_reml)
    assert test["lrt"] == pytest.approx(stat) and stat > 10
    assert test["p_value"] == pytest.approx(0.5 * stats.chi2.sf(stat, 1))
    assert full.lrt(reduced) == test
    no_random = fit_reml(specify("y ~ x", data))
    assert no_random.parameters["kind"].tolist() == ["residual"]
    with pytest.raises(ValueError, match="exactly one more"):
        boundary_lrt(full, no_random)
    other_fixed = fit_reml(specify("y ~ 1 + (1 | plot)", data))
    with pytest.raises(ValueError, match="same fixed effects"):
        boundary_lrt(full, other_fixed)


def test_to_summary_follows_contract(kin60: Kinship) -> None:
    data = simulate(kin60, h2=0.5, seed=41, reps=2)
    fit = fit_reml(specify("y ~ x + (1 | id)", data, kinship={"id": kin60}))
    summary = fit.to_summary()
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary
    assert summary["method"] == "reml" and summary["strategy"] == "spectral"
    assert summary["n_obs"] == 120 and summary["formula"] == "y ~ x + (1 | id)"
    assert set(summary["heritability"]) == {"id", "h2", "h2_gcta", "residual"}
    assert set(summary["heritability"]["h2"]) >= {"estimate", "se"}
    rows = summary["variance_components"]
    assert [r["grp"] for r in rows] == ["id", "Residual"]
    assert set(rows[0]) >= {"grp", "var1", "var2", "vcov", "sdcor", "se"}
    assert rows[1]["var1"] is None and rows[1]["var2"] is None
    assert set(summary["fixed_effects"]) == {"Intercept", "x"}
    assert set(summary["diagnostics"]) >= {"converged", "n_iter", "boundary"}
    assert set(summary["loglik"]) == {"reml", "ml"}
    assert summary["aic"] == pytest.approx(-2 * summary["loglik"]["reml"] + 2 * 4)
    assert summary["timing"]["total_s"] > 0


def test_errors_are_clear(kin60: Kinship) -> None:
    data = simulate(kin60, h2=0.5, seed=1, reps=2)
    data["count"] = np.random.default_rng(0).poisson(2.0, len(data))
    with pytest.raises(SpecificationError, match="Gaussian"):
        fit_reml(specify("count ~ x + (1 | id)", data, family="poisson"))
    data["plot"] = np.tile(list("abcd"), len(data) // 4)
    spec = specify("y ~ x + (1 | id) + (1 | plot)", data, kinship={"id": kin60})
    with pytest.raises(SpecificationError, match="method='ai-reml'"):
        fit_reml(spec, method="spectral")
    with pytest.raises(SpecificationError, match="method must be one of"):
        fit_reml(spec, method="newton")


def test_projection_onto_parameter_space() -> None:
    df = pd.DataFrame(
        {
            "y": np.arange(12.0) % 5,
            "x": np.tile([0.0, 1.0, 2.0], 4),
            "g": np.repeat(list("abcd"), 3),
        }
    )
    structure = build_structure(specify("y ~ x + (1 + x | g)", df))
    project = _Projector(structure, floor=1e-9)
    # Σ = [[1, 2], [2, 1]] has eigenvalues 3 and −1: nearest PSD is 1.5·[[1, 1], [1, 1]]
    out = project(np.array([1.0, 1.0, 2.0, -5.0]))
    np.testing.assert_allclose(out, [1.5, 1.5, 1.5, 1e-9])
    assert project.at_bound(np.array([0.0, 1.0, 0.0, 1e-9]), np.array([-1.0, 0, 0, -1.0]))[3]


@pytest.mark.filterwarnings("ignore::bayeslmm.engines.reml.BoundaryFitWarning")
def test_nonconvergence_is_reported(kin60: Kinship) -> None:
    data = simulate(kin60, h2=0.5, seed=2, reps=2)
    data["plot"] = np.tile(list("abcdef"), len(data) // 6)
    spec = specify("y ~ x + (1 | id) + (1 | plot)", data, kinship={"id": kin60})
    with pytest.warns(RemlConvergenceWarning):
        fit = fit_reml(spec, max_iter=1, em_steps=0)
    assert not fit.converged and fit.to_summary()["diagnostics"]["converged"] is False
    full = fit_reml(spec)
    assert full.converged and full.n_iter > 1
