"""Which GLMM configurations nutpie samples in closed form, and why the others are not.

Builds each configuration with the latent strategy (small simulated data, n = 60) and
prints the route ``strategy_of(built).closed_form`` takes: the one-kinship-term density
(``glmm_density``), the multi-term density (``glmm_terms``) or the compiled PyMC graph,
with the reason from ``glmm_closed_form_obstacles`` / ``multiterm_obstacles``. No sampling.

Usage::

    python benchmarks/glmm_routes.py
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

import bayeslmm as bl
from bayeslmm.engines.bayes import build
from bayeslmm.engines.bayes.glmm_density import glmm_closed_form_obstacles
from bayeslmm.engines.bayes.glmm_terms import multiterm_obstacles
from bayeslmm.families import Poisson

N = 60


def _kinship(centred: bool = False) -> bl.Kinship:
    rng = np.random.default_rng(0)
    G = rng.binomial(2, 0.4, (N, 200)).astype(float)
    G -= G.mean(0)
    K = G @ G.T / 200
    if not centred:
        K = 0.95 * K + 0.05 * np.eye(N)
    return bl.Kinship(K / np.mean(np.diag(K)), [f"i{k}" for k in range(N)])


def _data(reps: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = N * reps
    ids = np.repeat([f"i{k}" for k in range(N)], reps)
    t = rng.integers(1, 6, n)
    return pd.DataFrame(
        {
            "y": rng.poisson(3.0, n),
            "b": rng.integers(0, 2, n),
            "s": rng.binomial(t, 0.4),
            "t": t,
            "x": rng.normal(size=n),
            "id": ids,
            "id2": ids,
            "herd": [f"h{k}" for k in rng.integers(0, 6, n)],
            "site": [f"s{k}" for k in rng.integers(0, 4, n)],
        }
    )


def configurations():
    K, Kc = _kinship(), _kinship(centred=True)
    KK = K.hadamard()
    pois, pois_o = Poisson(overdispersion=False), Poisson(overdispersion=True)
    d1, d2 = _data(), _data(2)
    yield "Poisson + olre, one record each", "y ~ x + (1|id)", d1, {"id": K}, pois_o, {}
    yield "Poisson + olre, centred GRM", "y ~ x + (1|id)", d1, {"id": Kc}, pois_o, {}
    yield "Poisson, no olre", "y ~ x + (1|id)", d1, {"id": K}, pois, {}
    yield "Poisson + olre, 2 records each", "y ~ x + (1|id)", d2, {"id": K}, pois_o, {}
    yield "Poisson, no olre, 2 records each", "y ~ x + (1|id)", d2, {"id": K}, pois, {}
    yield "Poisson + olre, rank_share 0.9", "y ~ x + (1|id)", d1, {"id": K}, pois_o, {"rs": 0.9}
    yield "Bernoulli logit", "b ~ x + (1|id)", d1, {"id": K}, "bernoulli", {}
    yield "Bernoulli probit", "b ~ x + (1|id)", d1, {"id": K}, "bernoulli", {"link": "probit"}
    yield "Binomial with trials", "s | trials(t) ~ x + (1|id)", d1, {"id": K}, "binomial", {}
    yield "Poisson + olre, K + iid herd", "y ~ x + (1|id) + (1|herd)", d1, {"id": K}, pois_o, {}
    yield "Bernoulli, K + iid herd", "b ~ x + (1|id) + (1|herd)", d1, {"id": K}, "bernoulli", {}
    yield (
        "Poisson + olre, K + K∘K",
        "y ~ 1 + (1|id) + (1|id2)",
        d1,
        {"id": K, "id2": KK},
        pois_o,
        {},
    )
    yield (
        "Bernoulli, K + K∘K",
        "b ~ 1 + (1|id) + (1|id2)",
        d1,
        {"id": K, "id2": KK},
        "bernoulli",
        {},
    )
    yield "Poisson + olre, crossed iid", "y ~ x + (1|herd) + (1|site)", d2, {}, pois_o, {}
    yield "Bernoulli, one iid factor", "b ~ x + (1|herd)", d2, {}, "bernoulli", {}
    yield "Poisson, kinship slope", "y ~ 1 + (1 + x|id)", d2, {"id": K}, pois, {}
    yield "Poisson + olre, kinship slope", "y ~ x + (1 + x|id)", d2, {"id": K}, pois_o, {}
    yield "Bernoulli, kinship slope", "b ~ x + (1 + x|id)", d2, {"id": K}, "bernoulli", {}
    yield (
        "Binomial with trials, kinship slope + iid herd",
        "s | trials(t) ~ x + (1 + x|id) + (1|herd)",
        d2,
        {"id": K},
        "binomial",
        {},
    )
    yield "Bernoulli, iid slopes (||)", "b ~ x + (1 + x||herd)", d2, {}, "bernoulli", {}
    yield "Poisson + olre, iid correlated slopes", "y ~ x + (1 + x|herd)", d2, {}, pois_o, {}
    yield "Bernoulli, slope only (0 + x|herd)", "b ~ x + (0 + x|herd)", d2, {}, "bernoulli", {}
    yield "Gaussian, kinship slope (latent)", "y ~ x + (1 + x|id)", d2, {"id": K}, "gaussian", {}


def route(name, formula, data, kinship, family, extra) -> tuple[str, str]:
    kw = {"family": family}
    if "link" in extra:
        kw["link"] = extra["link"]
    if "priors" in extra:
        kw["priors"] = extra["priors"]
    spec = bl.specify(formula, data, kinship=kinship, **kw)
    built = build(spec, strategy="latent", rank_share=extra.get("rs"))
    one = glmm_closed_form_obstacles(built)
    if not one:
        return "closed form, one term (glmm_density)", ""
    many = multiterm_obstacles(built)
    if not many:
        return "closed form, several terms (glmm_terms)", one[0]
    return "PyMC graph (numba)", "; ".join(many)


def main() -> None:
    warnings.simplefilter("ignore")
    rows = [(c[0], *route(*c)) for c in configurations()]
    print("| configuration | route | why not the one-term form |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")


if __name__ == "__main__":
    main()
