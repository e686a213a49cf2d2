"""The NUTS log density of multi-trait models against a dense stacked normal + priors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import bayeslmm as bl
from bayeslmm.engines.bayes.multitrait_density import multitrait_density

G_TRUE = np.array([[1.0, 0.4, 0.1], [0.4, 1.2, -0.2], [0.1, -0.2, 0.7]])
E_TRUE = np.array([[0.8, -0.2, 0.0], [-0.2, 1.0, 0.3], [0.0, 0.3, 0.9]])


def factor(theta: np.ndarray, t: int, scale: np.ndarray) -> np.ndarray:
    L = np.zeros((t, t))
    L[np.diag_indices(t)] = np.exp(theta[:t])
    L[np.tril_indices(t, -1)] = theta[t:]
    return scale[:, None] * L


def sd_corr(theta: np.ndarray, t: int, scale: np.ndarray) -> np.ndarray:
    """(σ_1..σ_t, R_lower) of Σ = L Lᵀ: the coordinates the priors are stated in."""
    L = factor(theta, t, scale)
    S = L @ L.T
    sd = np.sqrt(np.diag(S))
    R = S / np.outer(sd, sd)
    return np.concatenate([sd, R[np.tril_indices(t, -1)]])


def log_jacobian(theta: np.ndarray, t: int, scale: np.ndarray) -> float:
    """log |det ∂(σ, R)/∂θ| by central differences."""
    h = 1e-6
    J = np.array(
        [
            (sd_corr(theta + h * e, t, scale) - sd_corr(theta - h * e, t, scale)) / (2 * h)
            for e in np.eye(theta.size)
        ]
    ).T
    return float(np.linalg.slogdet(J)[1])


def reference_logp(x, spec, density) -> float:
    """Dense (n t)-dimensional normal with β integrated out (np.kron) + priors + Jacobian."""
    Y = np.array(spec.Y, dtype=float)
    n, t = Y.shape
    k = t + t * (t - 1) // 2
    scale = np.nanstd(Y, axis=0)
    mean = np.nanmean(Y, axis=0)
    miss = np.isnan(Y)
    Y[miss] = (mean + scale * 0)[np.nonzero(miss)[1]] + scale[np.nonzero(miss)[1]] * x[2 * k :]
    LG, LE = factor(x[:k], t, scale), factor(x[k : 2 * k], t, scale)
    G, E = LG @ LG.T, LE @ LE.T
    K = spec.kinship.matrix
    X = np.asarray(spec.X)
    Xc = X.copy()
    Xc[:, 1:] -= X[:, 1:].mean(axis=0)
    # default β priors: intercept N(mean_a, 2.5 s_a), slope N(0, 2.5 s_a / sd(x))
    mu = np.zeros((t, X.shape[1]))
    mu[:, 0] = mean
    sd_b = np.column_stack(
        [2.5 * scale] + [2.5 * scale / Xc[:, j].std() for j in range(1, X.shape[1])]
    )
    B = np.kron(np.eye(t), Xc) * sd_b.ravel()[None, :]
    V = np.kron(G, K) + np.kron(E, np.eye(n)) + B @ B.T
    m = np.kron(np.eye(t), Xc) @ mu.ravel()
    loglik = stats.multivariate_normal(m, V).logpdf(Y.T.ravel())
    prior = 0.0
    for S in (G, E):
        sd = np.sqrt(np.diag(S))
        R = S / np.outer(sd, sd)
        for a in range(t):
            prior += stats.t(3, scale=2.5 * scale[a]).logpdf(sd[a]) + np.log(2)
        prior += (2.0 - 1.0) * np.linalg.slogdet(R)[1]  # LKJ(2), up to its constant
    jac = log_jacobian(x[:k], t, scale) + log_jacobian(x[k : 2 * k], t, scale)
    return loglik + prior + jac + np.sum(np.log(scale[np.nonzero(miss)[1]]))


@pytest.mark.parametrize("missing", [0.0, 0.15])
def test_logp_equals_the_dense_density_plus_priors(multitrait_data, missing: float) -> None:
    rng = np.random.default_rng(21)
    df, K = multitrait_data(rng, 25, G_TRUE, E_TRUE, missing=missing)
    model = bl.LMM("mvbind(y1, y2, y3) ~ x + (1 | id)", df, kinship={"id": K})
    density = multitrait_density(model.spec)
    assert density.missing_rows.size == int(np.isnan(model.spec.Y).sum())
    points = [density.initial_point(s) + rng.normal(scale=0.3, size=density.ndim) for s in range(4)]
    ours = np.array([density.logp(x)[0] for x in points])
    ref = np.array([reference_logp(x, model.spec, density) for x in points])
    # equal up to one constant (normalising constants of LKJ, priors, Jacobian scale)
    np.testing.assert_allclose(ours - ours[0], ref - ref[0], atol=1e-6)
    for x in points:
        value, grad = density.logp(x)
        ref_value, ref_grad = density.logp_reference(x)
        assert value == pytest.approx(ref_value, rel=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("missing", [0.0, 0.2])
def test_gradient_matches_finite_differences(multitrait_data, missing: float) -> None:
    rng = np.random.default_rng(8)
    df, K = multitrait_data(rng, 40, G_TRUE[:2, :2], E_TRUE[:2, :2], missing=missing)
    density = multitrait_density(
        bl.LMM("mvbind(y1, y2) ~ x + (1 | id)", df, kinship={"id": K}).spec
    )
    for seed in range(3):
        x = density.initial_point(seed) + rng.normal(scale=0.3, size=density.ndim)
        _, grad = density.logp(x)
        h = 1e-6
        numeric = np.array(
            [
                (density.logp(x + h * e)[0] - density.logp(x - h * e)[0]) / (2 * h)
                for e in np.eye(x.size)
            ]
        )
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


def test_prior_overrides_change_the_density(multitrait_data) -> None:
    rng = np.random.default_rng(1)
    df, K = multitrait_data(rng, 30, G_TRUE[:2, :2], E_TRUE[:2, :2])
    base = multitrait_density(bl.LMM("mvbind(y1, y2) ~ 1 + (1 | id)", df, kinship={"id": K}).spec)
    flat = multitrait_density(
        bl.LMM(
            "mvbind(y1, y2) ~ 1 + (1 | id)",
            df,
            kinship={"id": K},
            priors={"cor_id": ("lkj", 1.0), "rescor": ("lkj", 1.0)},
        ).spec
    )
    x = base.initial_point(3)
    x[2] = 0.7  # a genetic correlation away from 0
    x[5] = -0.4

    # LKJ(2) − LKJ(1) = log|R_G| + log|R_E| (up to a constant)
    def logdets(d, x):
        out = 0.0
        for off in (0, 3):
            L = factor(x[off : off + 3], 2, d.scale)
            S = L @ L.T
            sd = np.sqrt(np.diag(S))
            out += np.linalg.slogdet(S / np.outer(sd, sd))[1]
        return out

    y = base.initial_point(4)
    diff = (base.logp(x)[0] - flat.logp(x)[0]) - (base.logp(y)[0] - flat.logp(y)[0])
    assert diff == pytest.approx(logdets(base, x) - logdets(base, y), abs=1e-9)
    with pytest.raises(bl.SpecificationError, match="Unknown prior"):
        multitrait_density(
            bl.LMM(
                "mvbind(y1, y2) ~ 1 + (1 | id)",
                df,
                kinship={"id": K},
                priors={"sd_group": ("halfnormal", 1.0)},
            ).spec
        )
    with pytest.raises(bl.SpecificationError, match="LKJ"):
        multitrait_density(
            bl.LMM(
                "mvbind(y1, y2) ~ 1 + (1 | id)",
                df,
                kinship={"id": K},
                priors={"cor_id": ("halfnormal", 1.0)},
            ).spec
        )
