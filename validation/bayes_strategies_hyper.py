"""Spectral vs latent strategy, nutpie vs PyMC NUTS, on the bundled hyper data (n = 250).

Model ``bp ~ 1 + (1 | id)`` with the demo's normalised GRM; 2 chains × 1000 draws after 1000
warm-up, seed 1, 2 cores. Prints h² (posterior mean and 95% HDI), bulk ESS of h²,
divergences, compile / sampling / total seconds and ESS per second of sampling.
The two strategies are the same model, so their h² posteriors must agree within MC error;
the REML estimate is printed for reference.

Run::

    OMP_NUM_THREADS=1 python validation/bayes_strategies_hyper.py \\
        > validation/bayes_strategies_hyper.txt
"""

from __future__ import annotations

import platform
import warnings

from bayeslmm.commands.demo import hyper_model


def main() -> None:
    warnings.filterwarnings("ignore")
    model, _ = hyper_model()
    print(f"# hyper, n = {model.spec.n_obs}, {platform.processor() or platform.machine()}")
    reml = model.fit(method="reml").heritability().loc["h2"]
    print(f"REML h2 = {reml['estimate']:.3f} (SE {reml['se']:.3f})")
    header = "strategy  sampler  h2_mean  hdi_low  hdi_high  ess_bulk  div  compile_s  sample_s"
    print(header + "  total_s  ess_per_s")
    for strategy, sampler in [
        ("spectral", "nutpie"),
        ("spectral", "pymc"),
        ("latent", "nutpie"),
        ("latent", "pymc"),
    ]:
        fit = model.fit(
            draws=1000, tune=1000, chains=2, cores=2, seed=1, sampler=sampler,
            strategy=strategy, progressbar=False, verbose=False,
        )  # fmt: skip
        h = fit.heritability().loc["h2"]
        t = fit.timing
        print(
            f"{strategy:9s} {sampler:7s} {h['mean']:8.3f} {h['hdi_low']:8.3f} "
            f"{h['hdi_high']:9.3f} {h['ess_bulk']:9.0f} {fit.diagnostics['divergences']:4d} "
            f"{t['compile_s']:10.1f} {t['sample_s']:9.1f} {t['total_s']:8.1f} "
            f"{h['ess_bulk'] / t['sample_s']:10.0f}"
        )
    print("(PyMC's sample_s includes its own graph compilation, cached on disk between runs.)")


if __name__ == "__main__":
    main()
