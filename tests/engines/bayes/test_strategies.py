"""The NUTS strategies as objects: one interface, chosen in one place, the old name deprecated.

Each strategy answers applies / build / closed_form / posthoc; ``choose`` is the only place
that picks one, and ``sample`` and ``LMM`` ask the strategy that built a model instead of
asking modules in turn. The references are the models' own structure (free variables,
observed node), the closed-form density classes, and the former functions, which must keep
giving the same answers.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.engines.bayes import (
    Strategy,
    build,
    choose,
    choose_strategy,
    get_strategy,
    strategy_of,
)
from bayeslmm.engines.bayes.glmm_density import GLMMDensity
from bayeslmm.engines.bayes.options import SAMPLERS, STRATEGIES
from bayeslmm.engines.bayes.sampling import sample
from bayeslmm.engines.bayes.spectral_density import SpectralDensity
from bayeslmm.engines.bayes.strategies import (
    STRATEGY_REGISTRY,
    LaplaceMarginalStrategy,
    LatentStrategy,
    SpectralStrategy,
)
from bayeslmm.errors import SpecificationError
from bayeslmm.model import LMM, METHODS

N = 20


@pytest.fixture(scope="module")
def data() -> tuple[bl.Kinship, pd.DataFrame]:
    rng = np.random.default_rng(7)
    ids = [f"i{k}" for k in range(N)]
    W = rng.normal(size=(N, 30))
    K = bl.Kinship(W @ W.T / 30 + 0.05 * np.eye(N), ids)
    df = pd.DataFrame(
        {
            "y": rng.normal(10.0, 2.0, N),
            "x": rng.normal(size=N),
            "n": rng.poisson(2.0, N),
            "b": rng.integers(0, 2, N),
            "fam": np.repeat([f"f{k}" for k in range(N // 4)], 4),
            "id": ids,
        }
    )
    return K, df


def _spec(data, formula="y ~ x + (1|id)", **kwargs):
    K, df = data
    return bl.specify(formula, df, kinship={"id": K}, **kwargs)


def test_the_registry_is_the_list_of_strategy_names():
    assert set(STRATEGY_REGISTRY) == set(STRATEGIES) - {"auto"}
    for name, strategy in STRATEGY_REGISTRY.items():
        assert isinstance(strategy, Strategy) and strategy.name == name
        assert get_strategy(name) is strategy
    # "auto" tries the automatic ones in order; the opt-in one never
    assert [s.name for s in STRATEGY_REGISTRY.values() if s.automatic] == [
        "sparse-pedigree",
        "sparse-pedigree-nuts",
        "spectral",
        "latent",
    ]
    assert SAMPLERS == ("auto", "pymc", "nutpie", "numpyro", "blackjax")
    assert METHODS == ("nuts", "reml", "ml", "laplace")


def test_auto_chooses_spectral_only_where_it_applies(data):
    one_kinship = _spec(data)
    assert choose(one_kinship).name == "spectral" == choose_strategy(one_kinship)
    for spec in (
        _spec(data, "y ~ x + (1|id) + (1|fam)"),
        _spec(data, "y ~ (1 + x|id)"),
        _spec(data, "n ~ x + (1|id)", family="poisson"),
        _spec(data, "y ~ x + (1|id)", sigma="~ x"),
    ):
        reasons = get_strategy("spectral").applies(spec)
        assert reasons, spec.formula
        assert choose(spec) is get_strategy("latent") and choose_strategy(spec) == "latent"
    # a GLMM the laplace-marginal strategy covers is still latent under "auto"
    glmm = _spec(data, "n ~ x + (1|id)", family="poisson")
    assert get_strategy("laplace-marginal").applies(glmm) == []
    assert choose(glmm).name == "latent"


def test_a_forced_strategy_names_every_reason_it_does_not_apply(data):
    spec = _spec(data, "n ~ x + (1 + x|id) + (1|fam)", family="poisson")
    with pytest.raises(SpecificationError) as err:
        choose(spec, "spectral")
    message = str(err.value)
    assert "family is poisson" in message and "2 random terms" in message
    assert "Use strategy='latent'" in message
    gaussian = _spec(data, "y ~ x + (1 + x|id)")
    with pytest.raises(SpecificationError) as err:
        choose(gaussian, "laplace-marginal")
    assert "family is gaussian" in str(err.value) and "(1 + x|id) has slopes" in str(err.value)
    # a reason that depends on the priors is found when the model is built
    shares = _spec(data, "n ~ (1|id)", family="poisson", priors={"h2": ("beta", 2, 2)})
    assert choose(shares, "laplace-marginal").name == "laplace-marginal"
    with pytest.raises(SpecificationError, match="share"):
        build(shares, strategy="laplace-marginal")
    with pytest.raises(SpecificationError, match="Unknown strategy 'fast'.*'laplace-marginal'"):
        choose(spec, "fast")
    with pytest.raises(SpecificationError, match="'auto' is a choice"):
        get_strategy("auto")


def test_the_former_name_laplace_warns_and_builds_the_laplace_marginal_strategy(data):
    spec = _spec(data, "n ~ x + (1|id)", family="poisson")
    with pytest.warns(DeprecationWarning, match="strategy='laplace-marginal'") as caught:
        built = build(spec, strategy="laplace")
    # the warning names the caller's line, not the package's (else Python would hide it)
    assert Path(caught[0].filename).resolve() == Path(__file__).resolve()
    assert built.strategy == "laplace-marginal"
    assert strategy_of(built) is get_strategy("laplace-marginal")
    assert sorted(v.name for v in built.model.free_RVs) == ["sd_id", "sd_olre"]
    model = LMM.from_spec(spec)
    with pytest.warns(DeprecationWarning) as caught:
        old = model.build(strategy="laplace")
    assert len([w for w in caught if w.category is DeprecationWarning]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert model.build(strategy="laplace-marginal") is old  # one model per strategy


def test_each_strategy_builds_its_own_model(data):
    spec = _spec(data)
    spectral = build(spec)
    assert isinstance(strategy_of(spectral), SpectralStrategy)
    assert spectral.observed_name == "y_rotated" and spectral.marginal_fixed is not None
    assert set(spectral.timing) == {"build_s", "eigh_s"} and spectral.timing["build_s"] > 0
    latent = build(spec, strategy="latent")
    assert isinstance(strategy_of(latent), LatentStrategy)
    assert {"z_id", "beta_centered"} <= {v.name for v in latent.model.free_RVs}
    laplace = build(_spec(data, "n ~ (1|id)", family="poisson"), strategy="laplace-marginal")
    assert isinstance(strategy_of(laplace), LaplaceMarginalStrategy)
    assert len(laplace.model.potentials) == 1 and not laplace.model.observed_RVs


def test_closed_form_is_offered_exactly_where_nutpie_can_skip_the_graph(data):
    spectral = build(_spec(data))
    assert isinstance(strategy_of(spectral).closed_form(spectral), SpectralDensity)
    joint = build(_spec(data), fixed_effects="joint")  # β sampled: not the closed form's model
    assert strategy_of(joint).closed_form(joint) is None
    binary = build(_spec(data, "b ~ x + (1|id)", family="bernoulli"))
    assert isinstance(strategy_of(binary).closed_form(binary), GLMMDensity)
    gaussian_latent = build(_spec(data), strategy="latent")
    assert strategy_of(gaussian_latent).closed_form(gaussian_latent) is None
    laplace = build(_spec(data, "n ~ (1|id)", family="poisson"), strategy="laplace-marginal")
    assert strategy_of(laplace).closed_form(laplace) is None
    # a model changed after building is no longer the closed form's
    import pymc as pm

    with spectral.model:
        pm.Deterministic("cv", pm.math.sqrt(spectral.model["var_id"]) / 10.0)
    assert strategy_of(spectral).closed_form(spectral) is None


def test_posthoc_draws_come_from_the_strategy_that_integrated_them_out(data):
    spectral = build(_spec(data))
    post = {"var_id": np.full((1, 5), 1.5), "var_residual": np.full((1, 5), 2.0)}
    idata = strategy_of(spectral).posthoc(spectral, az.from_dict(posterior=post), seed=1)
    assert idata.posterior["beta"].dims == ("chain", "draw", "fixed")
    assert "beta_centered" in idata.posterior  # the covariate is centred
    latent = build(_spec(data), strategy="latent")
    untouched = az.from_dict(posterior={"var_id": np.ones((1, 5))})
    assert set(strategy_of(latent).posthoc(latent, untouched).posterior.data_vars) == {"var_id"}
    # only the spectral strategy has random effects left to draw after sampling
    assert callable(strategy_of(spectral).breeding_value_sampler(spectral))
    assert strategy_of(latent).breeding_value_sampler(latent) is None


def test_a_strategy_without_pointwise_log_likelihood_refuses_before_sampling(data):
    laplace = build(_spec(data, "n ~ (1|id)", family="poisson"), strategy="laplace-marginal")
    with pytest.raises(SpecificationError, match="laplace-marginal.*strategy='latent'"):
        sample(laplace, draws=5, tune=5, chains=1, seed=1, sampler="pymc", log_likelihood=True)
    assert "nutpie" not in laplace.cache  # nothing was compiled or sampled
    get_strategy("spectral").check_log_likelihood()  # no error
    get_strategy("latent").check_log_likelihood()


def test_the_former_module_names_still_import():
    from bayeslmm.engines.bayes import builder
    from bayeslmm.engines.bayes.laplace_marginal import build_laplace, laplace_obstacles
    from bayeslmm.engines.bayes.spectral_density import closed_form_applies

    for name in (
        "BuiltModel",
        "SpectralBasis",
        "FixedEffectsPrior",
        "MarginalFixedEffects",
        "build",
        "build_model",
        "choose_strategy",
        "component_labels",
        "fixed_effects_prior",
        "h2_term",
        "marginal_gaussian_logp",
        "marginal_gaussian_random",
        "spectral_basis",
        "spectral_obstacles",
    ):
        assert callable(getattr(builder, name)), name
    assert builder.STRATEGIES == STRATEGIES
    assert callable(build_laplace) and callable(laplace_obstacles)
    assert callable(closed_form_applies)


def _imports(path: Path) -> set[str]:
    """Modules of the bayes engine that ``path`` imports, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n.rsplit(".", 1)[-1] for n in names if n.startswith("bayeslmm.engines.bayes.")}
    return out


def test_the_bayes_engine_has_no_import_circle():
    """Imports inside functions count: builder and laplace_marginal used to import each other."""
    package = Path(bl.__file__).parent / "engines" / "bayes"
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    graph = {m: _imports(package / f"{m}.py") & modules for m in modules}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    circles = sorted(m for m in modules if reaches(m, m, set()))
    assert not circles, f"import circles through {circles}: {graph}"
    assert "laplace_marginal" in graph["strategies"] and "builder" not in graph["laplace_marginal"]
