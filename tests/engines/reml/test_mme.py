"""AI-REML through Henderson's mixed-model equations against the dense n × n route.

- evaluator level: at points away from the optimum (and at singular Σ, zero variances and a
  rank-deficient kinship) ℓ_R, tr(P V_i), yᵀP V_i P y, score, AI matrix, β̂ and Cov(β̂) of
  :class:`MmeReml` equal those of :class:`DenseReml`; the MME score is also checked against
  a finite-difference derivative of the MME likelihood itself;
- fit level: estimates, SEs, logLik, fixed effects and BLUPs/PEVs agree to 1e-6 on
  sleepstudy (Days | Subject), Penicillin (crossed), a kinship model with repeated records
  and random slopes, and residual variances by environment;
- the automatic route choice.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayeslmm import Kinship, specify
from bayeslmm.engines.reml import BoundaryFitWarning, fit_reml, mme_preferred
from bayeslmm.engines.reml._structure import build_structure, response
from bayeslmm.engines.reml.aireml import DenseReml
from bayeslmm.engines.reml.mme import MmeReml, mme_size

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "data"


def _kinship(n: int, seed: int, rank: int | None = None) -> Kinship:
    """A GRM-like kernel; with ``rank`` it is singular (rank-deficient, PSD)."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n, rank or 3 * n))
    K = W @ W.T / W.shape[1]
    if rank is None:
        K = 0.9 * K + 0.1 * np.eye(n)
    return Kinship(K, ids=[f"i{k:02d}" for k in range(n)], name="K")


def _kinship_rep_data(kin: Kinship, reps: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = kin.n
    g = kin.eigenvectors @ (np.sqrt(np.clip(kin.eigenvalues, 0, None)) * rng.normal(size=n))
    ids = np.repeat(np.arange(n), reps)
    env = np.tile(np.linspace(-1, 1, reps), n)
    y = 1 + 0.5 * env + g[ids] * (1 + 0.3 * env) + rng.normal(size=ids.size)
    return pd.DataFrame(
        {
            "id": np.array(kin.ids)[ids],
            "env": env,
            "site": np.tile(list("ABC"), ids.size // 3 + 1)[: ids.size],
            "y": y,
        }
    )


@pytest.fixture(scope="module")
def specs() -> dict:
    sleep = pd.read_csv(GOLDEN / "sleepstudy.csv")
    pen = pd.read_csv(GOLDEN / "Penicillin.csv")
    het = pd.read_csv(GOLDEN / "het_env.csv")
    kin = _kinship(40, seed=1)
    kin_data = _kinship_rep_data(kin, reps=4, seed=2)
    epi = kin.hadamard(name="KxK").normalized()
    kin_data["id2"] = kin_data["id"]
    return {
        "sleepstudy": specify("Reaction ~ Days + (Days | Subject)", sleep),
        "penicillin": specify("diameter ~ 1 + (1 | plate) + (1 | sample)", pen),
        "het_env": specify("y ~ x + (1 | grp)", het, sigma="~ 0 + env"),
        "kinship_rep": specify("y ~ env + (1 | id)", kin_data, kinship={"id": kin}),
        # slope ∝ intercept in the simulation: a singular Σ (correlation 1), site variance 0
        "kinship_slopes": specify(
            "y ~ env + (1 + env | id) + (1 | site)", kin_data, kinship={"id": kin}
        ),
        "two_kernels_by_site": specify(
            "y ~ env + (1 | id) + (1 | id2)",
            kin_data,
            kinship={"id": kin, "id2": epi},
            sigma="~ 0 + site",
        ),
    }


def _evaluators(spec):
    structure = build_structure(spec)
    y, X = response(spec), np.asarray(spec.X, dtype=float)
    return structure, DenseReml(structure, y, X), MmeReml(structure, y, X)


def _points(structure, rng) -> list[np.ndarray]:
    """Random interior points, plus one with each variance set to 0 / each Σ made singular."""
    out = []
    base = np.array([0.0 if p.kind == "covariance" else 1.0 for p in structure.params])
    for _ in range(2):
        theta = base * rng.uniform(0.2, 3.0, base.size)
        for idx in structure.blocks():  # a small covariance keeps Σ positive definite
            for i in idx:
                if structure.params[i].kind == "covariance":
                    theta[i] = 0.1
        out.append(theta)
    singular = out[0].copy()
    for idx in structure.blocks():
        var = [i for i in idx if structure.params[i].kind == "variance"]
        cov = [i for i in idx if structure.params[i].kind == "covariance"]
        if len(var) == 2 and len(cov) == 1:
            singular[cov[0]] = np.sqrt(singular[var[0]] * singular[var[1]])  # correlation 1
    first_var = next(i for i, p in enumerate(structure.params) if p.kind == "variance")
    if not structure.blocks():
        singular[first_var] = 0.0
    out.append(singular)
    return out


@pytest.mark.parametrize(
    "name",
    ["sleepstudy", "penicillin", "het_env", "kinship_rep", "kinship_slopes", "two_kernels_by_site"],
)
def test_evaluator_matches_dense(specs: dict, name: str) -> None:
    structure, dense, mme = _evaluators(specs[name])
    rng = np.random.default_rng(7)
    scale = float(np.var(dense.y))
    for theta in _points(structure, rng):
        theta = theta * scale
        a, b = dense.evaluate(theta), mme.evaluate(theta)
        assert b["loglik"] == pytest.approx(a["loglik"], rel=1e-10, abs=1e-8)
        assert b["loglik_ml"] == pytest.approx(a["loglik_ml"], rel=1e-10, abs=1e-8)
        assert mme.loglik(theta) == pytest.approx(a["loglik"], rel=1e-10, abs=1e-8)
        for key in ("trace", "quad", "score", "ai", "beta", "beta_cov"):
            ref = np.asarray(a[key])
            tol = 1e-8 * max(float(np.max(np.abs(ref))), 1e-300)
            np.testing.assert_allclose(b[key], ref, rtol=1e-7, atol=tol, err_msg=key)
        np.testing.assert_allclose(b["Py"], a["Py"], rtol=1e-7, atol=1e-10)


def test_score_is_the_gradient_of_the_mme_likelihood(specs: dict) -> None:
    structure, _, mme = _evaluators(specs["kinship_slopes"])
    theta = _points(structure, np.random.default_rng(3))[0]
    score = mme.evaluate(theta)["score"]
    for i in range(theta.size):
        h = 1e-5 * max(abs(theta[i]), 1e-2)
        e = np.zeros_like(theta)
        e[i] = h
        numeric = (mme.loglik(theta + e) - mme.loglik(theta - e)) / (2 * h)
        assert score[i] == pytest.approx(numeric, rel=1e-5, abs=1e-7)


def test_singular_kinship_is_handled_without_inverting_it() -> None:
    kin = _kinship(30, seed=4, rank=12)  # K has 18 zero eigenvalues: K⁻¹ does not exist
    assert np.sum(kin.eigenvalues > 1e-8 * kin.eigenvalues.max()) == 12
    data = _kinship_rep_data(kin, reps=3, seed=5)
    spec = specify("y ~ env + (1 | id)", data, kinship={"id": kin})
    structure, dense, mme = _evaluators(spec)
    theta = np.array([0.8, 1.3])
    a, b = dense.evaluate(theta), mme.evaluate(theta)
    assert b["loglik"] == pytest.approx(a["loglik"], rel=1e-10)
    np.testing.assert_allclose(b["ai"], a["ai"], rtol=1e-7)
    np.testing.assert_allclose(b["score"], a["score"], rtol=1e-7, atol=1e-9)
    _assert_same_fit(fit_reml(spec, method="ai-reml-dense"), fit_reml(spec, method="ai-reml-mme"))


def _assert_same_fit(a, b, tol: float = 1e-6) -> None:
    assert (a.method, b.method) == ("ai-reml-dense", "ai-reml-mme")
    assert a.converged and b.converged
    np.testing.assert_allclose(b.parameters["estimate"], a.parameters["estimate"], rtol=tol)
    np.testing.assert_allclose(b.parameters["se"], a.parameters["se"], rtol=tol)
    np.testing.assert_allclose(b.parameter_cov, a.parameter_cov, rtol=10 * tol, atol=1e-12)
    assert b.loglik_reml == pytest.approx(a.loglik_reml, abs=tol)
    assert b.loglik_ml == pytest.approx(a.loglik_ml, abs=tol)
    np.testing.assert_allclose(b.fixed_effects(), a.fixed_effects(), rtol=tol)
    cov_scale = float(np.max(np.abs(a.fixed_cov)))
    np.testing.assert_allclose(b.fixed_cov, a.fixed_cov, rtol=tol, atol=1e-12 * cov_scale)
    assert a.blups.keys() == b.blups.keys()
    for label, frame in a.blups.items():
        other = b.blups[label]
        assert list(other.columns) == list(frame.columns)
        assert list(other.index) == list(frame.index)
        scale = float(np.max(np.abs(frame.to_numpy())))
        np.testing.assert_allclose(other.to_numpy(), frame.to_numpy(), rtol=tol, atol=tol * scale)


@pytest.mark.parametrize(
    "name",
    ["sleepstudy", "penicillin", "het_env", "kinship_rep", "kinship_slopes", "two_kernels_by_site"],
)
def test_fits_agree_between_routes(specs: dict, name: str) -> None:
    spec = specs[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryFitWarning)
        a = fit_reml(spec, method="ai-reml-dense")
        b = fit_reml(spec, method="ai-reml-mme")
    _assert_same_fit(a, b)
    assert a.boundary == b.boundary == (name == "kinship_slopes")


def test_route_choice(specs: dict) -> None:
    for name in ("sleepstudy", "penicillin", "het_env"):
        spec = specs[name]
        assert mme_size(build_structure(spec), spec.X.shape[1]) < spec.n_obs / 2
        assert mme_preferred(spec)
        assert fit_reml(spec).method == "ai-reml-mme"
        assert fit_reml(spec, method="ai-reml").method == "ai-reml-mme"
    # 40 ids × 4 records: p + Q = 2 + 2·40 + 3 = 85 and 2 + 40 + 40 = 82, both ≥ 160 / 2
    for name in ("kinship_slopes", "two_kernels_by_site"):
        spec = specs[name]
        assert not mme_preferred(spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundaryFitWarning)
            assert fit_reml(spec, method="ai-reml").method == "ai-reml-dense"
    # iid (1 | g) with repeated records: the MME, not an n × n eigendecomposition
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(30), 8)
    data = pd.DataFrame({"g": g.astype(str), "y": rng.normal(size=30)[g] + rng.normal(size=240)})
    spec = specify("y ~ 1 + (1 | g)", data)
    fit, spectral = fit_reml(spec), fit_reml(spec, method="spectral")
    assert fit.method == "ai-reml-mme"
    np.testing.assert_allclose(fit.parameters["estimate"], spectral.parameters["estimate"], 1e-6)
    assert fit.loglik_reml == pytest.approx(spectral.loglik_reml, abs=1e-8)


def test_large_variance_ratio_keeps_precision() -> None:
    """σ_u²/σ_e² ≈ 10⁶: the v-space score and AI avoid the cancellation of A − A M A."""
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(40), 5)
    x = rng.normal(size=g.size)
    y = 1 + 0.5 * x + 1e3 * rng.normal(size=40)[g] + rng.normal(size=g.size)
    spec = specify("y ~ x + (1 | g)", pd.DataFrame({"g": g.astype(str), "x": x, "y": y}))
    a = fit_reml(spec, method="ai-reml-dense")
    b = fit_reml(spec, method="ai-reml-mme")
    assert b.method == "ai-reml-mme" and b.converged and not b.messages
    ratio = b.parameters["estimate"].iloc[0] / b.parameters["estimate"].iloc[1]
    assert ratio > 1e5
    np.testing.assert_allclose(b.parameters["estimate"], a.parameters["estimate"], rtol=1e-5)
    assert b.loglik_reml >= a.loglik_reml - 1e-7
    # the score at the MME optimum is zero to working precision in units of its AI scale
    structure, _, mme = _evaluators(spec)
    state = mme.evaluate(b.parameters["estimate"].to_numpy())
    step = np.linalg.solve(state["ai"], state["score"])
    assert np.all(np.abs(step) <= 1e-6 * b.parameters["estimate"].to_numpy())
