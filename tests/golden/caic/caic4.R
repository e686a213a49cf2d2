# Reference conditional AICs from R's cAIC4 (Säfken, Rügamer, Kneib & Greven 2021) for
# bayeslmm's reml_fit.caic() (tests/results/test_caic.py).
#
# Run from the repository root:   Rscript tests/golden/caic/caic4.R
# Reads the datasets that tests/golden/lme4_reml.R exported (tests/golden/data/*.csv) and
# writes caic4.json next to this script: per model, cAIC4's caic, df (its bias correction,
# including 1 for sigma^2) and conditional log-likelihood, with the REML variance components.
#
# The kinship model uses lme4qtl's substitution, as lme4_reml.R does: (1 | id) with Zt
# replaced by t(L) %*% Zt, K = L L^T, so that cAIC4 sees Z L as the random-effect design.
suppressPackageStartupMessages({
  library(lme4)
  library(cAIC4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("--file=", "", args[grep("--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else "tests/golden/caic"
datadir <- file.path(dirname(here), "data")

ctrl <- lmerControl(optimizer = "bobyqa",
                    optCtrl = list(rhobeg = 0.2, rhoend = 1e-12, maxfun = 1e5),
                    check.conv.singular = "ignore")

entry <- function(fit, formula, dataset) {
  r <- cAIC(fit)
  vc <- as.data.frame(VarCorr(fit))
  list(formula = formula, dataset = dataset, n_obs = nobs(fit),
       caic = r$caic, df = r$df, cll = r$loglikelihood,
       vcov = vc$vcov, cAIC4_version = as.character(packageVersion("cAIC4")))
}

sleepstudy <- read.csv(file.path(datadir, "sleepstudy.csv"))
sleepstudy$Subject <- factor(sleepstudy$Subject)
penicillin <- read.csv(file.path(datadir, "Penicillin.csv"))
models <- list(
  list(key = "sleepstudy_intercept", data = sleepstudy, dataset = "sleepstudy",
       formula = "Reaction ~ Days + (1 | Subject)"),
  list(key = "sleepstudy_corr", data = sleepstudy, dataset = "sleepstudy",
       formula = "Reaction ~ Days + (Days | Subject)"),
  list(key = "sleepstudy_uncorr", data = sleepstudy, dataset = "sleepstudy",
       formula = "Reaction ~ Days + (Days || Subject)"),
  list(key = "penicillin", data = penicillin, dataset = "Penicillin",
       formula = "diameter ~ 1 + (1 | plate) + (1 | sample)")
)
out <- list()
for (m in models) {
  fit <- lmer(as.formula(m$formula), data = m$data, REML = TRUE, control = ctrl)
  out[[m$key]] <- entry(fit, m$formula, m$dataset)
}

# kinship model: kin_pheno.csv with K from kin_K.csv
kin <- read.csv(file.path(datadir, "kin_pheno.csv"))
Kt <- read.csv(file.path(datadir, "kin_K.csv"), check.names = FALSE)
K <- as.matrix(Kt[, -1])
dimnames(K) <- list(Kt$id, Kt$id)
kin$id <- factor(kin$id, levels = Kt$id)
kctrl <- lmerControl(optimizer = "bobyqa", check.nobs.vs.nlev = "ignore",
                     check.nobs.vs.nRE = "ignore", check.conv.singular = "ignore",
                     optCtrl = ctrl$optCtrl)
lf <- lFormula(y ~ x + (1 | id), data = kin, control = kctrl)
lev <- levels(lf$reTrms$flist$id)
e <- eigen(K[lev, lev], symmetric = TRUE)
L <- e$vectors %*% diag(sqrt(pmax(e$values, 0)))
lf$reTrms$Zt <- as(t(L) %*% as.matrix(lf$reTrms$Zt), "dgCMatrix")
devfun <- do.call(mkLmerDevfun, c(lf, list(control = kctrl)))
opt <- optimizeLmer(devfun, optimizer = "bobyqa", control = ctrl$optCtrl)
fit <- mkMerMod(environment(devfun), opt, lf$reTrms, fr = lf$fr)
out[["kinship"]] <- entry(fit, "y ~ x + (1 | id)", "kin_pheno")

writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           file.path(here, "caic4.json"))
