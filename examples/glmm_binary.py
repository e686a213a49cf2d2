"""A binary trait on a kinship: h² on the latent, link, observed and liability scales.

Run:  python examples/glmm_binary.py   (about a minute on 2 cores)
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import bayeslmm as bl  # noqa: E402

# 60 full-sib families of 8, latent-scale h² = 0.4 on the logit scale (known truth).
sim = bl.datasets.simulate(
    n_families=60, family_size=8, n_snps=2000, h2=0.4, family="bernoulli", seed=7
)
print("truth:", sim.truth)
model = bl.LMM(
    "y ~ 1 + (1|id)", data=sim.data, kinship={"id": sim.kinship}, family="bernoulli", link="logit"
)

laplace = model.fit(method="laplace")  # lme4's glmer, nAGQ = 1
print(laplace)
print(laplace.heritability(prevalence=0.2))

fit = model.fit(draws=1000, tune=1000, chains=2, seed=7)
print(fit.variance_components())
# The population prevalence of the disease (0.2 here) gives the liability scale.
print(fit.heritability_scales(prevalence=0.2))
print(fit.ppc(seed=1))  # observed vs replicated case fraction, with p-values
