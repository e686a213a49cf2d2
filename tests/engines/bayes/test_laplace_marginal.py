"""strategy="laplace-marginal": the Laplace marginal likelihood, its adjoint gradient and its
posterior.

The references are independent of the code under test: a brute-force Laplace approximation
in the full latent space (β, u, e) with dense matrices and Newton's method written here, its
finite-difference gradient, and the exact posterior of the latent strategy (NUTS over all
latent values).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import block_diag
from scipy.special import expit, gammaln

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.laplace_marginal import LaplaceMarginal, laplace_logp_op
from bayeslmm.errors import SpecificationError


def _grm(n: int, rng: np.random.Generator) -> np.ndarray:
    G = rng.binomial(2, 0.4, (n, 2 * n)).astype(float)
    G -= G.mean(0)
    K = G @ G.T / (2 * n * 0.48)
    return 0.9 * K + 0.1 * np.eye(n)


def _case(family: str, n: int = 40, iid: bool = False, seed: int = 1):
    """Simulated data, one kinship term (and an iid term with 8 levels when ``iid``)."""
    rng = np.random.default_rng(seed)
    K = _grm(n, rng)
    ids = [f"i{k}" for k in range(n)]
    x = rng.normal(size=n)
    herd = [f"h{k % 8}" for k in range(n)]
    eta = 0.3 + 0.4 * x + 0.7 * np.linalg.cholesky(K) @ rng.normal(size=n)
    y = rng.poisson(np.exp(eta)) if family == "poisson" else rng.binomial(1, expit(eta))
    df = pd.DataFrame({"y": y, "x": x, "id": ids, "herd": herd})
    formula = "y ~ x + (1|id)" + (" + (1|herd)" if iid else "")
    return bl.specify(formula, df, kinship={"id": bl.Kinship(K, ids)}, family=family)


def _brute_force_laplace(spec, variances, mu, sd, olre, full=False):
    """Laplace approximation of log p(y | v) over x = (β, u_id, [u_herd], [e]), dense
    (with ``full``: also the mode x̂ and the Hessian there)."""
    y = np.asarray(spec.y, dtype=float)
    X = np.asarray(spec.X, dtype=float)
    blocks, design = [np.diag(sd**2)], [X]
    for j, t in enumerate(spec.terms):
        C = t.kinship.matrix if t.kinship is not None else np.eye(t.n_levels)
        blocks.append(variances[j] * C)
        design.append(t.incidence().toarray())
    if olre:
        blocks.append(variances[-1] * np.eye(spec.n_obs))
        design.append(np.eye(spec.n_obs))
    P, A = block_diag(*blocks), np.hstack(design)
    m0 = np.concatenate([mu, np.zeros(P.shape[0] - mu.size)])
    P_inv = np.linalg.inv(P)
    poisson = spec.family.name == "poisson"

    def loglik(f):
        if poisson:
            return y @ f - np.exp(f).sum() - gammaln(y + 1).sum()
        return y @ f - np.logaddexp(0.0, f).sum()

    def curvature(f):
        return np.exp(f) if poisson else expit(f) * (1 - expit(f))

    z = m0.copy()
    for _ in range(100):
        f = A @ z
        score = A.T @ (y - (np.exp(f) if poisson else expit(f))) - P_inv @ (z - m0)
        H = P_inv + A.T @ (curvature(f)[:, None] * A)
        step = np.linalg.solve(H, score)
        z = z + step
        if np.abs(step).max() < 1e-13:
            break
    f = A @ z
    H = P_inv + A.T @ (curvature(f)[:, None] * A)
    r = z - m0
    value = (
        loglik(f)
        - 0.5 * r @ P_inv @ r
        - 0.5 * np.linalg.slogdet(P)[1]
        - 0.5 * np.linalg.slogdet(H)[1]
    )
    return (value, z, H) if full else value


CASES = [
    ("poisson", False, True, [0.5, 0.3]),
    ("bernoulli", False, False, [0.7]),
    ("poisson", True, False, [0.4, 0.2]),  # two dense components: the explicit B⁻¹ branch
    ("bernoulli", True, False, [1.2, 0.5]),
]


@pytest.mark.parametrize(("family", "iid", "olre", "variances"), CASES)
def test_value_and_gradient_match_brute_force(family, iid, olre, variances):
    spec = _case(family, iid=iid)
    mu, sd = np.array([0.1, 0.2]), np.array([1.5, 0.8])
    lm = LaplaceMarginal.from_spec(spec, olre=olre, fixed_mu=mu, fixed_sd=sd)
    v = np.asarray(variances, dtype=float)
    value, grad = lm.logp_and_grad(v)
    reference = _brute_force_laplace(spec, v, mu, sd, olre)
    assert value == pytest.approx(reference, abs=1e-8)
    h = 1e-5
    fd = np.array(
        [
            (
                _brute_force_laplace(spec, v + e, mu, sd, olre)
                - _brute_force_laplace(spec, v - e, mu, sd, olre)
            )
            / (2 * h)
            for e in np.eye(v.size) * h
        ]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_warm_start_does_not_change_the_value():
    """The mode predictor and the chord steps change the work, not the answer."""
    spec = _case("poisson")
    lm = LaplaceMarginal.from_spec(
        spec, olre=True, intercept=None, fixed_mu=[0.0, 0.0], fixed_sd=[2.0, 1.0]
    )
    v = np.array([0.5, 0.3])
    cold = lm.logp_and_grad(v)
    for w in ([0.6, 0.25], [0.3, 0.5], [2.0, 0.01]):
        lm.logp_and_grad(np.array(w))
    warm = lm.logp_and_grad(v)
    assert warm[0] == pytest.approx(cold[0], abs=1e-9)
    np.testing.assert_allclose(warm[1], cold[1], rtol=1e-6)


def test_posthoc_draws_follow_the_laplace_gaussian():
    """At fixed variances, the drawn (β, u) have the brute-force mode as mean and the inverse
    Hessian as covariance (pathwise conditioning is exact for the Gaussian approximation)."""
    import arviz as az

    from bayeslmm.engines.bayes.laplace_marginal import add_laplace_draws

    spec = _case("poisson", n=25)
    built = build(spec, strategy="laplace-marginal")
    fe = built.cache["laplace_fixed"]
    v = np.array([0.5, 0.3])
    n_draws = 6000
    post = {
        "var_id": np.full((1, n_draws), v[0]),
        "var_olre": np.full((1, n_draws), v[1]),
    }
    idata = add_laplace_draws(built, az.from_dict(posterior=post), seed=3)
    # brute force in the sampled coordinates (centred covariate, intercept prior there)
    spec_c = bl.specify(
        "y ~ xc + (1|id)",
        spec.data.assign(xc=spec.data["x"] - spec.data["x"].mean()),
        kinship={"id": spec.terms[0].kinship},
        family="poisson",
    )
    _, z, H = _brute_force_laplace(spec_c, v, fe.mu, fe.sd, True, full=True)
    cov = np.linalg.inv(H)
    draws = np.column_stack(
        [
            idata.posterior["beta_centered"].values.reshape(n_draws, -1),
            idata.posterior["u_id"].values.reshape(n_draws, -1),
        ]
    )
    k = draws.shape[1]
    se = np.sqrt(np.diag(cov)[:k] / n_draws)
    assert np.all(np.abs(draws.mean(0) - z[:k]) < 4.5 * se)
    np.testing.assert_allclose(np.cov(draws.T), cov[:k, :k], atol=0.08 * np.max(np.diag(cov)[:k]))
    # the deterministics of the other strategies are there
    assert {"beta", "h2", "variance_share", "var_residual"} <= set(idata.posterior.data_vars)


def test_pytensor_op_value_and_gradient():
    import pytensor
    import pytensor.tensor as pt

    spec = _case("bernoulli")
    lm = LaplaceMarginal.from_spec(spec, fixed_mu=[0.0, 0.0], fixed_sd=[2.0, 1.0])
    v = pt.dvector("v")
    out = laplace_logp_op(lm)(v)
    fn = pytensor.function([v], [out, pytensor.grad(out, v)])
    value, grad = fn(np.array([0.8]))
    ref_value, ref_grad = lm.logp_and_grad(np.array([0.8]))
    # (the reference run starts Newton from the Op's mode: equal to Newton's tolerance)
    assert float(value) == pytest.approx(ref_value, abs=1e-9)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-7)


def test_rejects_models_it_does_not_cover():
    spec = _case("poisson")
    df = pd.DataFrame({"y": [1.0, 2.0, 0.5, 1.5], "g": ["a", "a", "b", "b"]})
    with pytest.raises(SpecificationError, match="laplace"):
        build(bl.specify("y ~ 1 + (1 | g)", df), strategy="laplace-marginal")
    built = build(spec, strategy="laplace-marginal")
    assert sorted(v.name for v in built.model.free_RVs) == ["sd_id", "sd_olre"]


def test_posterior_of_va_matches_the_exact_latent_posterior():
    """Poisson kinship GLMM, moderate counts: the laplace strategy's posterior of V_A and of
    the breeding values agrees with NUTS on the full latent model.

    Tolerance: Monte Carlo error (4 SE of the difference of the two posterior means, from
    the ESS of each run) plus 0.25 posterior SD for the Laplace approximation itself: at
    these counts (two records per individual, mean ≈ 2.7) validation/laplace_accuracy.py
    measures it at about −0.1 posterior SD for the mean of V_A (laplace slightly lower).
    """
    import arviz as az

    from bayeslmm.model import LMM

    rng = np.random.default_rng(3)
    n = 50
    K = _grm(n, rng)
    ids = [f"i{k}" for k in range(n)]
    eta = 0.7 + np.sqrt(0.5) * np.linalg.cholesky(K) @ rng.normal(size=n)
    # two records per individual: V_A and the observation-level variance are both identified
    y = rng.poisson(np.exp(np.repeat(eta, 2)))
    df = pd.DataFrame({"y": y, "id": np.repeat(ids, 2)})
    fits = {}
    for strategy in ("laplace-marginal", "latent"):
        model = LMM("y ~ 1 + (1|id)", df, kinship={"id": bl.Kinship(K, ids)}, family="poisson")
        fits[strategy] = model.fit(
            draws=400,
            tune=400,
            chains=2,
            cores=1,
            seed=5,
            strategy=strategy,
            progressbar=False,
            verbose=False,
        )
    va = {s: f.posterior["var_id"].values.ravel() for s, f in fits.items()}
    ess = {s: float(az.ess(f.idata, var_names=["var_id"])["var_id"]) for s, f in fits.items()}
    sd = np.std(va["latent"])
    mc_se = np.sqrt(sum(np.var(va[s]) / ess[s] for s in va))
    assert abs(va["laplace-marginal"].mean() - va["latent"].mean()) < 4 * mc_se + 0.25 * sd
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(va["laplace-marginal"], q) - np.quantile(va["latent"], q)) < (
            4 * mc_se + 0.3 * sd
        )
    u = {s: f.posterior["u_id"].values[..., 0].reshape(-1, n).mean(0) for s, f in fits.items()}
    assert np.corrcoef(u["laplace-marginal"], u["latent"])[0, 1] > 0.97
    assert (
        "h2" in fits["laplace-marginal"].posterior and "beta" in fits["laplace-marginal"].posterior
    )
