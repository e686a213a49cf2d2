"""Heritability of blood pressure in the hyper mouse backcross, NUTS beside REML.

Run:  python examples/quickstart_hyper.py   (about half a minute on 2 cores)
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # parallel chains + threaded BLAS oversubscribe

import bayeslmm as bl  # noqa: E402

hyper = bl.datasets.load_hyper()
# 174 markers, ~52% missing (selective genotyping), mean-imputed; the backcross 0/1 coding
# gives a mean diagonal far from 1, so normalise: h² is then the share of variance at the
# average self-relationship.
K = bl.grm(hyper.genotypes).normalized()
model = bl.LMM("bp ~ 1 + (1|id)", data=hyper.pheno, kinship={"id": K})

fit = model.fit(draws=1000, tune=1000, chains=2, seed=2001)
print(fit.heritability())
print(fit.variance_components())

reml = model.fit(method="reml")
print(reml.heritability())

table = bl.compare_fits(reml, fit)
print(table.to_string(index=False))
fig = bl.plot_comparison(reml, fit, kinds=("variance share", "variance component"))
fig.savefig("hyper_reml_vs_posterior.png", dpi=120)
print("wrote hyper_reml_vs_posterior.png")
