"""The latent-scale multi-trait GLMM: its log density against an independent computation,
its gradient against finite differences, the refused combinations, and (slow) simulations
with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

import bayeslmm as bl
from bayeslmm.engines.bayes.multitrait_glmm import multitrait_glmm_density
from bayeslmm.errors import DataError, SpecificationError
from bayeslmm.multitrait_spec import is_multitrait, specify_multitrait

# (16√3 / 15π)², the logit attenuation of the population-averaged effects
LOGIT_K = (16.0 * np.sqrt(3.0) / (15.0 * np.pi)) ** 2


def small_data(seed: int = 3, n: int = 7) -> tuple[pd.DataFrame, bl.Kinship]:
    """Five traits, each family, with holes: probit d, Gaussian w1/w2, Poisson c, logit e."""
    rng = np.random.default_rng(seed)
    ids = [f"i{k}" for k in range(n)]
    W = rng.normal(size=(n, 40))
    K = bl.Kinship(W @ W.T / 40 + 0.05 * np.eye(n), ids)
    frame = pd.DataFrame(
        {
            "id": ids,
            "x": rng.normal(size=n),
            "d": rng.integers(0, 2, n).astype(float),
            "w1": rng.normal(size=n) + 2.0,
            "w2": 3.0 * rng.normal(size=n),
            "c": rng.poisson(3.0, n).astype(float),
            "e": [0.0, 1.0] * (n // 2) + [1.0] * (n % 2),
        }
    )
    frame.loc[1, "w1"] = np.nan  # augmented
    frame.loc[2, "d"] = np.nan  # drops out of the probit term
    frame.loc[4, "c"] = np.nan
    return frame, K


FAMILIES = {"d": ("bernoulli", "probit"), "c": "poisson", "e": "bernoulli"}
FORMULA = "mvbind(d, w1, w2, c, e) ~ x + (1 | id)"


def chol(theta: np.ndarray, t: int, scale: np.ndarray) -> np.ndarray:
    L = np.zeros((t, t))
    L[np.diag_indices(t)] = np.exp(theta[:t])
    L[np.tril_indices(t, -1)] = theta[t:]
    return scale[:, None] * L


def model_parameters(x: np.ndarray, density, frame: pd.DataFrame) -> dict:
    """The model's parameters at the sampler's coordinates, written out afresh: Σ_G, Σ_E
    (probit liability variance 1), σ_o, β on the centred design, Z, O, completed records."""
    sl = density._slices()
    t = 5
    sd = frame[["d", "w1", "w2", "c", "e"]].std(ddof=0).to_numpy()
    g_scale = np.array([1.0, sd[1], sd[2], 1.0, 1.0])
    LG = chol(x[sl["theta_g"]], t, g_scale)
    # residual block: w1, w2, then the probit d
    Lstar = chol(x[sl["theta_e"]], 3, np.array([sd[1], sd[2], 1.0]))
    LE = Lstar.copy()
    LE[2] /= np.linalg.norm(LE[2])
    G = LG @ LG.T
    mean_diag = float(np.mean(np.diag(density.root @ density.root.T)))
    m = np.ones(t)
    m[0] = np.sqrt(1.0 + mean_diag * G[0, 0])  # probit
    m[4] = np.sqrt(1.0 + LOGIT_K * mean_diag * G[4, 4])  # logit
    gamma = x[sl["gamma"]].reshape(t, 2)
    beta_c = m[:, None] * (density.beta_mean + density.beta_sd * gamma)
    Y = frame[["d", "w1", "w2", "c", "e"]].to_numpy(dtype=float).copy()
    Y[1, 1] = np.nanmean(Y[:, 1]) + np.nanstd(Y[:, 1]) * x[sl["missing"]][0]
    E = LE @ LE.T  # order w1, w2, d
    # the Gaussian traits' field is centred on its conditional posterior under their records:
    # in the eigenbasis (V, s), c_a = √s (o + L_aa z_a), o = Σ_b<a L_ab z_b, records
    # r = Vᵀ(y_a − X β_a); z_a = √(σ²/T) v + √A/T (r − √s o), A = s L_aa², T = σ² + A
    Z = x[sl["z"]].reshape(-1, t).copy()
    V, s = density.basis, density.root_values
    Xc = np.column_stack([np.ones(len(frame)), frame["x"] - frame["x"].mean()])
    for a, var_e in ((1, E[0, 0]), (2, E[1, 1])) if density.centre_gaussian_fields else ():
        o = Z[:, :a] @ LG[a, :a]
        A = s * LG[a, a] ** 2
        T = var_e + A
        r = V.T @ (Y[:, a] - Xc @ beta_c[a])
        Z[:, a] = np.sqrt(var_e / T) * Z[:, a] + np.sqrt(A) / T * (r - np.sqrt(s) * o)
    return {
        "G": G,
        "Lstar": Lstar,
        "E": E,
        "sd_olre": np.exp(x[sl["log_sd_olre"]][0]),
        "beta_c": beta_c,
        "Z": Z,
        "O": x[sl["olre"]],
        "Y": Y,
        "LG": LG,
    }


def hyper_coordinates(x: np.ndarray, density, frame: pd.DataFrame) -> np.ndarray:
    """(σ_G, r_G, σ_w1, σ_w2, working length of d's row, r_E, σ_o, β): the coordinates the
    priors are stated in, as a function of the sampler's hyperparameters."""
    p = model_parameters(x, density, frame)
    G = p["G"]
    sG = np.sqrt(np.diag(G))
    RG = G / np.outer(sG, sG)
    S = p["Lstar"] @ p["Lstar"].T
    sE = np.sqrt(np.diag(S))  # σ_w1, σ_w2 and the working length ‖L*_d‖
    RE = S / np.outer(sE, sE)
    return np.concatenate(
        [
            sG,
            RG[np.tril_indices(5, -1)],
            sE,
            RE[np.tril_indices(3, -1)],
            [p["sd_olre"]],
            p["beta_c"].ravel(),
        ]
    )


def independent_logp(x: np.ndarray, density, frame: pd.DataFrame) -> float:
    """The log posterior from scipy's distributions: the probit trait's probability given
    the Gaussian records by numerical integration of the joint normal over its liability."""
    p = model_parameters(x, density, frame)
    n = 7
    X = np.column_stack([np.ones(n), frame["x"] - frame["x"].mean()])
    U = density.root @ p["Z"] @ p["LG"].T  # root rootᵀ = K: checked in the test
    eta = X @ p["beta_c"].T + U
    eta[:, 3] += p["sd_olre"] * p["O"]
    Y, E = p["Y"], p["E"]
    loglik = 0.0
    # E over (w1, w2, d): joint normal of (liability_d, w1, w2) per individual
    cov = E[np.ix_([2, 0, 1], [2, 0, 1])]
    for i in range(n):
        mean = np.array([eta[i, 0], eta[i, 1], eta[i, 2]])
        yg = Y[i, 1:3]
        if np.isnan(Y[i, 0]):
            loglik += stats.multivariate_normal(mean[1:], cov[1:, 1:]).logpdf(yg)
            continue
        joint = stats.multivariate_normal(mean, cov)
        lo, hi = (0.0, np.inf) if Y[i, 0] == 1 else (-np.inf, 0.0)
        value, _ = integrate.quad(
            lambda liab, yg=yg, joint=joint: joint.pdf(np.r_[liab, yg]),
            lo,
            hi,
            epsabs=1e-14,
            epsrel=1e-12,
        )
        loglik += np.log(value)
    ok = ~np.isnan(Y[:, 3])
    loglik += stats.poisson(np.exp(eta[ok, 3])).logpmf(Y[ok, 3]).sum()
    loglik += stats.bernoulli(special.expit(eta[:, 4])).logpmf(Y[:, 4]).sum()
    # priors: HalfStudentT(3, 2.5 s) SDs of Gaussian traits, HalfStudentT(3, 1) latent SDs
    sd = frame[["d", "w1", "w2", "c", "e"]].std(ddof=0).to_numpy()
    sG = np.sqrt(np.diag(p["G"]))
    g_scales = [1.0, 2.5 * sd[1], 2.5 * sd[2], 1.0, 1.0]
    prior = sum(
        np.log(2) + stats.t(3, scale=s).logpdf(v) for s, v in zip(g_scales, sG, strict=True)
    )
    prior += np.linalg.slogdet(p["G"] / np.outer(sG, sG))[1]  # LKJ(2)
    S = p["Lstar"] @ p["Lstar"].T
    sE = np.sqrt(np.diag(S))
    prior += sum(
        np.log(2) + stats.t(3, scale=2.5 * sd[a]).logpdf(sE[k]) for k, a in [(0, 1), (1, 2)]
    )
    prior += stats.lognorm(1.0).logpdf(sE[2])  # the probit row's working length
    prior += np.linalg.slogdet(S / np.outer(sE, sE))[1]
    prior += np.log(2) + stats.t(3, scale=1.0).logpdf(p["sd_olre"])
    prior += stats.norm(density.beta_mean, density.beta_sd).logpdf(p["beta_c"]).sum()
    prior += stats.norm.logpdf(p["Z"]).sum() + stats.norm.logpdf(p["O"]).sum()
    # Jacobian of the hyperparameters → the prior's coordinates, by central differences
    sl = density._slices()
    hyper = np.r_[
        np.arange(sl["theta_g"].start, sl["log_sd_olre"].stop),
        np.arange(sl["gamma"].start, sl["gamma"].stop),
    ]
    h = 1e-6
    J = np.empty((hyper.size, hyper.size))
    for j, k in enumerate(hyper):
        step = np.zeros_like(x)
        step[k] = h
        J[:, j] = (
            hyper_coordinates(x + step, density, frame)
            - hyper_coordinates(x - step, density, frame)
        ) / (2 * h)
    # and of the field's coordinates v → z given the rest (block triangular: the product)
    zs = np.arange(sl["z"].start, sl["z"].stop)
    Jz = np.empty((zs.size, zs.size))
    for j, k in enumerate(zs):
        step = np.zeros_like(x)
        step[k] = h
        Jz[:, j] = (
            model_parameters(x + step, density, frame)["Z"]
            - model_parameters(x - step, density, frame)["Z"]
        ).ravel() / (2 * h)
    return float(loglik + prior + np.linalg.slogdet(J)[1] + np.linalg.slogdet(Jz)[1])


@pytest.mark.parametrize("centred", [True, False])
def test_logp_equals_an_independent_computation(centred: bool) -> None:
    frame, K = small_data()
    spec = specify_multitrait(FORMULA, frame, kinship={"id": K}, family=FAMILIES)
    density = multitrait_glmm_density(spec, centre_gaussian_fields=centred)
    assert density.block == (1, 2, 0) and density.olre == (3,)
    # the field's covariance is Σ_G ⊗ K: (L_G ⊗ R)(L_G ⊗ R)ᵀ
    assert np.allclose(density.root @ density.root.T, K.matrix, atol=1e-10)
    V, s = density.basis, density.root_values
    assert np.allclose(V * np.sqrt(s), density.root) and np.allclose(V.T @ V, np.eye(s.size))
    rng = np.random.default_rng(0)
    points = [density.initial_point(s) + 0.3 * rng.normal(size=density.ndim) for s in range(3)]
    ours = np.array([density.logp(x)[0] for x in points])
    ref = np.array([independent_logp(x, density, frame) for x in points])
    # equal up to one constant (normalising constants the density leaves out)
    assert np.allclose(ours - ours[0], ref - ref[0], atol=1e-6)


def test_expand_gives_the_formula_scale_effects_and_nan_outside_the_residual_block() -> None:
    frame, K = small_data()
    density = multitrait_glmm_density(
        specify_multitrait(FORMULA, frame, kinship={"id": K}, family=FAMILIES)
    )
    x = density.initial_point(1)
    p = model_parameters(x, density, frame)
    out = density.expand(x)
    X = np.column_stack([np.ones(7), frame["x"]])
    Xc = np.column_stack([np.ones(7), frame["x"] - frame["x"].mean()])
    assert np.allclose(X @ out["beta"].T, Xc @ p["beta_c"].T)
    assert np.allclose(out["genetic_covariance"], p["G"])
    E = out["residual_covariance"]
    block = [1, 2, 0]
    assert np.allclose(E[np.ix_(block, block)], p["E"][np.ix_([0, 1, 2], [0, 1, 2])])
    assert E[0, 0] == pytest.approx(1.0)  # the liability's residual variance
    assert E[3, 3] == pytest.approx(p["sd_olre"] ** 2)
    assert np.isnan(E[4, 4]) and np.isnan(E[3, 1]) and np.isnan(E[0, 4])
    assert out["missing_values"][0] == pytest.approx(p["Y"][1, 1])


@pytest.mark.parametrize(
    ("formula", "families"),
    [
        (FORMULA, FAMILIES),
        ("mvbind(d, w1) ~ x + (1 | id)", {"d": ("bernoulli", "probit")}),
        ("mvbind(e, w1, w2) ~ x + (1 | id)", {"e": "bernoulli"}),
        ("mvbind(c, e) ~ 1 + (1 | id)", {"c": bl.Poisson(overdispersion=False), "e": "bernoulli"}),
    ],
)
@pytest.mark.parametrize("centred", [True, False])
def test_gradient_matches_finite_differences(formula: str, families: dict, centred: bool) -> None:
    frame, K = small_data()
    density = multitrait_glmm_density(
        specify_multitrait(formula, frame, kinship={"id": K}, family=families),
        centre_gaussian_fields=centred,
    )
    rng = np.random.default_rng(5)
    for seed in range(2):
        x = density.initial_point(seed) + 0.3 * rng.normal(size=density.ndim)
        _, grad = density.logp(x)
        h = 1e-6
        numeric = np.array(
            [
                (density.logp(x + h * e)[0] - density.logp(x - h * e)[0]) / (2 * h)
                for e in np.eye(x.size)
            ]
        )
        assert np.allclose(grad, numeric, rtol=1e-5, atol=1e-5)


def test_low_rank_kinship_gives_the_dense_density() -> None:
    """K = W Wᵀ held as markers: its root is the dense root turned by an orthogonal matrix,
    and the density at the correspondingly turned field is the dense one."""
    rng = np.random.default_rng(0)
    n = 40
    ids = [f"i{k}" for k in range(n)]
    low = bl.grm(rng.binomial(2, 0.3, size=(n, 15)).astype(float), ids=ids, low_rank=True)
    with pytest.warns(UserWarning, match="Forming the dense"):  # the reference only
        dense = bl.Kinship(low.matrix, ids)
    frame = pd.DataFrame({"id": ids, "d": rng.integers(0, 2, n), "w": rng.normal(size=n)})
    densities = [
        multitrait_glmm_density(
            specify_multitrait("mvbind(d, w) ~ 1 + (1 | id)", frame, {"id": K}, {"d": "bernoulli"})
        )
        for K in (low, dense)
    ]
    R_low, R_dense = densities[0].root, densities[1].root
    turn = np.linalg.lstsq(R_low, R_dense, rcond=None)[0]
    assert np.allclose(R_low @ turn, R_dense, atol=1e-10)
    assert np.allclose(turn @ turn.T, np.eye(turn.shape[0]), atol=1e-10)
    z = densities[1]._slices()["z"]
    for seed in range(2):
        x_dense = densities[1].initial_point(seed)
        x_low = x_dense.copy()
        x_low[z] = (turn @ x_dense[z].reshape(-1, 2)).ravel()
        assert densities[0].logp(x_low)[0] == pytest.approx(densities[1].logp(x_dense)[0])


def test_a_family_per_trait_makes_a_multitrait_model() -> None:
    frame, K = small_data()
    assert is_multitrait("cbind(d, w1) ~ 1 + (1 | id)", {"d": "bernoulli"})
    model = bl.LMM(
        "mvbind(d, w1) ~ x + (1 | id)", frame, family={"d": "bernoulli"}, kinship={"id": K}
    )
    assert type(model).__name__ == "MultiTraitLMM"
    assert [f.name for f in model.spec.families] == ["bernoulli", "gaussian"]
    bools = frame.assign(d=frame["d"].fillna(0).astype(bool))
    spec = specify_multitrait("mvbind(d, w1) ~ 1 + (1 | id)", bools, {"id": K}, {"d": "bernoulli"})
    assert set(np.unique(spec.Y[:, 0])) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("formula", "family", "match"),
    [
        ("mvbind(d, w1) ~ 1 + (1 | id)", {"d": "bernoulli", "z": "poisson"}, "not traits"),
        (
            "mvbind(d, e) ~ 1 + (1 | id)",
            {"d": ("bernoulli", "probit"), "e": ("bernoulli", "probit")},
            "probit",
        ),
        ("mvbind(d, w1) ~ 1 + (1 | id)", {"d": "binomial"}, "trials"),
        ("mvbind(d, w1) ~ 1 + (1 | id)", {"d": "gamma"}, "Unknown family"),
        ("mvbind(d, w1) ~ 1 + (1 | id) + (1 | x)", {"d": "bernoulli"}, "exactly one random term"),
        ("cbind(d, w1) ~ 1 + (1 | id)", "bernoulli", "cbind"),
    ],
)
def test_unsupported_combinations_are_refused(formula: str, family, match: str) -> None:
    frame, K = small_data()
    with pytest.raises(SpecificationError, match=match):
        specify_multitrait(formula, frame, kinship={"id": K}, family=family)


def test_reml_is_refused_naming_nuts_and_bad_records_are_data_errors() -> None:
    frame, K = small_data()
    model = bl.LMM(
        "mvbind(d, w1) ~ 1 + (1 | id)", frame, family={"d": "bernoulli"}, kinship={"id": K}
    )
    with pytest.raises(SpecificationError, match="nuts"):
        model.fit(method="reml")
    with pytest.raises(DataError, match="'d'"):
        specify_multitrait(
            "mvbind(d, w1) ~ 1 + (1 | id)",
            frame.assign(d=2.0 * frame["d"]),
            {"id": K},
            {"d": "bernoulli"},
        )
    with pytest.raises(DataError, match="'c'"):
        specify_multitrait(
            "mvbind(c, w1) ~ 1 + (1 | id)",
            frame.assign(c=frame["c"] - 10),
            {"id": K},
            {"c": "poisson"},
        )
    spec = specify_multitrait(
        "mvbind(d, w1) ~ 1 + (1 | id)",
        frame,
        {"id": K},
        {"d": "bernoulli"},
        priors={"sigma_d": ("halfnormal", 1.0)},  # d (logit) has no residual SD
    )
    with pytest.raises(SpecificationError, match="sigma_d"):
        multitrait_glmm_density(spec)


# -- fits ---------------------------------------------------------------------------------------
def sib_kinship(n_sires: int = 40, dams: int = 2, kids: int = 5) -> bl.Kinship:
    """Relationship matrix of full- and half-sib offspring (½ and ¼), parents not recorded."""
    sire = np.repeat(np.arange(n_sires), dams * kids)
    dam = np.repeat(np.arange(n_sires * dams), kids)
    n = sire.size
    off = 1.0 - np.eye(n)
    A = np.eye(n) + 0.25 * (sire[:, None] == sire[None, :]) * off
    A += 0.25 * (dam[:, None] == dam[None, :]) * off
    return bl.Kinship(A, [f"k{i}" for i in range(n)])


def simulate_binary_gaussian(
    rng: np.random.Generator,
    K: bl.Kinship,
    rg: float,
    re: float,
    va: tuple[float, float] = (1.0, 1.0),
    ve: float = 1.0,
) -> pd.DataFrame:
    """A probit liability d (residual variance 1) and a Gaussian w with genetic correlation
    ``rg`` and residual correlation ``re``."""
    n = K.n
    cg = rg * np.sqrt(va[0] * va[1])
    G = np.array([[va[0], cg], [cg, va[1]]])
    E = np.array([[1.0, re * np.sqrt(ve)], [re * np.sqrt(ve), ve]])
    U = np.linalg.cholesky(K.matrix) @ rng.standard_normal((n, 2)) @ np.linalg.cholesky(G).T
    e = rng.standard_normal((n, 2)) @ np.linalg.cholesky(E).T
    x = rng.normal(size=n)
    liability = -0.3 + 0.5 * x + U[:, 0] + e[:, 0]
    return pd.DataFrame(
        {
            "id": list(K.ids),
            "x": x,
            "d": (liability > 0).astype(float),
            "w": 1.0 + 0.8 * x + U[:, 1] + e[:, 1],
        }
    )


def test_fit_tables_on_the_latent_scale() -> None:
    rng = np.random.default_rng(2)
    K = sib_kinship(n_sires=6, dams=2, kids=3)
    frame = simulate_binary_gaussian(rng, K, rg=0.5, re=0.3)
    model = bl.LMM(
        "mvbind(d, w) ~ x + (1 | id)",
        frame,
        family={"d": ("bernoulli", "probit")},
        kinship={"id": K},
    )
    fit = model.fit(draws=60, tune=60, chains=1, seed=1, progressbar=False, verbose=False)
    G = fit.genetic_covariance(draws=True).values
    E = fit.residual_covariance(draws=True).values
    assert np.allclose(E[..., 0, 0], 1.0)  # the liability's residual variance is fixed
    c = K.matrix.diagonal().mean() - K.matrix.mean()
    va = c * G[..., 0, 0]
    h2 = fit.heritability()
    # link scale of a probit trait: V_A / (V_A + 1); a Gaussian trait's sample-scale h²
    assert h2.loc["d", "mean"] == pytest.approx(np.mean(va / (va + 1.0)))
    vw = c * G[..., 1, 1]
    assert h2.loc["w", "mean"] == pytest.approx(np.mean(vw / (vw + E[..., 1, 1])))
    assert h2.loc["d", "scale"] == "link" and h2.loc["w", "scale"] == "data"
    latent = fit.heritability(scale="latent")
    assert latent.loc["d", "mean"] == pytest.approx(1.0)  # no latent variance but V_A
    assert list(fit.residual_correlation().index) == [("d", "w")]
    assert list(fit.genetic_correlation().index) == [("d", "w")]
    assert "latent (link) scale" in repr(fit)


def test_logit_and_poisson_residuals_are_stated_independent() -> None:
    rng = np.random.default_rng(4)
    K = sib_kinship(n_sires=5, dams=2, kids=3)
    frame = simulate_binary_gaussian(rng, K, rg=0.3, re=0.0)
    frame["c"] = rng.poisson(np.exp(0.5 + 0.3 * frame["w"] - 0.3))
    model = bl.LMM(
        "mvbind(d, w, c) ~ 1 + (1 | id)",
        frame,
        family={"d": "bernoulli", "c": "poisson"},
        kinship={"id": K},
    )
    fit = model.fit(draws=40, tune=40, chains=1, seed=2, progressbar=False, verbose=False)
    assert fit.residual_correlation().empty
    E = fit.residual_covariance()
    assert np.isnan(E.loc["d", "d"]) and np.isnan(E.loc["w", "c"])
    assert E.loc["c", "c"] > 0  # the observation-level variance
    assert "['d', 'c'] are independent" in repr(fit)
    # Poisson link scale: V_A / (V_A + σ²_o + ln(1 + 1/λ)), λ = mean exp(η + V/2)
    post = fit.posterior
    c = K.matrix.diagonal().mean() - K.matrix.mean()
    va = c * post["genetic_covariance"].values[0, :, 2, 2]
    vo = post["residual_covariance"].values[0, :, 2, 2]
    b0 = post["beta"].values[0, :, 2, 0]
    lam = np.exp(b0 + 0.5 * (va + vo))
    expected = va / (va + vo + np.log1p(1.0 / lam))
    assert np.allclose(post["heritability"].values[0, :, 2], expected)


@pytest.mark.slow
def test_simulation_recovers_the_genetic_correlation_and_variances() -> None:
    """400 related individuals, probit d and Gaussian w, r_g = 0.6, r_e = 0.3: the truth
    lies inside the 95% posterior intervals."""
    rng = np.random.default_rng(11)
    K = sib_kinship()
    frame = simulate_binary_gaussian(rng, K, rg=0.6, re=0.3)
    model = bl.LMM(
        "mvbind(d, w) ~ x + (1 | id)",
        frame,
        family={"d": ("bernoulli", "probit")},
        kinship={"id": K},
    )
    fit = model.fit(draws=1000, tune=1000, chains=2, seed=3, progressbar=False, verbose=False)
    rg = fit.genetic_correlation().loc[("d", "w")]
    assert rg["hdi_low"] < 0.6 < rg["hdi_high"]
    re = fit.residual_correlation().loc[("d", "w")]
    assert re["hdi_low"] < 0.3 < re["hdi_high"]
    import arviz as az

    G = fit.genetic_covariance(draws=True)
    for a in range(2):
        low, high = az.hdi(G.values[..., a, a].ravel(), hdi_prob=0.95)
        assert low < 1.0 < high
    # the binary trait's latent σ²_G has a long right tail (one record per individual):
    # a few divergences there (29 of 2,000 draws at this seed), not a biased fit
    assert fit.divergences < 0.02 * 2000


@pytest.mark.slow
def test_gaussian_trait_agrees_with_its_single_trait_fit_when_traits_are_unrelated() -> None:
    """With r_g = r_e = 0, the Gaussian trait's V_A posterior in the bivariate model with a
    Bernoulli trait matches the single-trait Gaussian fit within Monte Carlo error."""
    import arviz as az

    rng = np.random.default_rng(21)
    K = sib_kinship()
    frame = simulate_binary_gaussian(rng, K, rg=0.0, re=0.0)
    both = bl.LMM(
        "mvbind(d, w) ~ x + (1 | id)", frame, family={"d": "bernoulli"}, kinship={"id": K}
    ).fit(draws=1500, tune=1000, chains=2, seed=5, progressbar=False, verbose=False)
    single = bl.LMM("w ~ x + (1 | id)", frame, kinship={"id": K}).fit(
        draws=1500, tune=1000, chains=2, seed=6, progressbar=False
    )
    va_both = both.genetic_covariance(draws=True).values[..., 1, 1]
    va_single = single.posterior["var_id"].values.reshape(va_both.shape)
    se = float(np.hypot(np.ravel(az.mcse(va_both))[0], np.ravel(az.mcse(va_single))[0]))
    # 4 Monte Carlo SEs, plus 0.1 posterior SD for the prior on r_g the bivariate model keeps
    tolerance = 4.0 * se + 0.1 * float(va_single.std())
    assert abs(va_both.mean() - va_single.mean()) < tolerance
    assert abs(np.median(va_both) - np.median(va_single)) < tolerance + 2.0 * se


@pytest.mark.parametrize("family", [None, FAMILIES])
@pytest.mark.parametrize("key", ["sd_id_w1", "sigma_w2"])
def test_sd_priors_without_a_positive_closed_form_are_refused_by_name(key, family) -> None:
    """Both multi-trait densities (Gaussian and GLMM) take SD priors with positive support
    and a closed-form density only, and name the offending key."""
    from bayeslmm.engines.bayes.multitrait_density import multitrait_density

    frame, K = small_data()
    formula = FORMULA if family else "mvbind(w1, w2) ~ x + (1 | id)"
    spec = specify_multitrait(
        formula, frame, {"id": K}, family or "gaussian", priors={key: ("normal", 0, 1)}
    )
    build = multitrait_glmm_density if family else multitrait_density
    with pytest.raises(SpecificationError, match=f"'{key}' must be a positive family"):
        build(spec)


def test_prior_tables_on_the_densities_state_defaults_and_overrides() -> None:
    """The table the fits print: the single-trait defaults scaled by each trait's SD
    (computed here from the data), an override by key, LKJ(2) unless overridden."""
    from bayeslmm.engines.bayes.multitrait_density import multitrait_density

    frame, K = small_data()
    sd = frame[["w1", "w2"]].std(ddof=0).to_numpy()
    overrides = {"sd_id_w1": ("halfnormal", 2.0), "cor_id": ("lkj", 3.0)}
    gaussian = multitrait_density(
        specify_multitrait("mvbind(w1, w2) ~ x + (1 | id)", frame, {"id": K}, priors=overrides)
    ).prior_table
    assert gaussian["sd_id_w1"] == "HalfNormal(2)"
    assert gaussian["sd_id_w2"] == f"HalfStudentT(3, {2.5 * sd[1]:.4g})"
    assert gaussian["sigma_w1"] == f"HalfStudentT(3, {2.5 * sd[0]:.4g})"
    assert (gaussian["cor_id"], gaussian["cor_residual"]) == ("LKJ(3)", "LKJ(2)")
    glmm = multitrait_glmm_density(
        specify_multitrait(FORMULA, frame, {"id": K}, FAMILIES, priors=overrides)
    ).prior_table
    assert glmm["sd_id_w1"] == "HalfNormal(2)"
    assert glmm["sd_id_d"] == glmm["sd_olre_c"] == "HalfStudentT(3, 1)"
    assert glmm["sigma_d"] == "fixed at 1 (liability)"
    assert glmm["sigma_w2"] == f"HalfStudentT(3, {2.5 * sd[1]:.4g})"
    assert (glmm["cor_id"], glmm["cor_residual"]) == ("LKJ(3)", "LKJ(2)")
    assert "sigma_e" not in glmm and "sigma_c" not in glmm  # no residual block entry
