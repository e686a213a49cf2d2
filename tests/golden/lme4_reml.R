# Reference REML fits for bayeslmm's REML engine (tests/engines/reml/test_reml_golden.py).
#
# Run from the repository root:   Rscript tests/golden/lme4_reml.R
# Writes, next to this script:
#   data/*.csv            the datasets (lme4's sleepstudy, Dyestuff, Dyestuff2, Penicillin;
#                         a simulated kinship dataset: kin_pheno.csv, kin_K.csv)
#   lme4_reml.json        one entry per model: VarCorr as data frame, fixed effects with SEs,
#                         REML criterion, logLik (REML and ML at the REML estimate), AIC, BIC,
#                         conditional modes (BLUPs)
#
# The kinship model uses lme4qtl's trick: fit (1 | id) with lFormula, then replace Zt by
# t(L) %*% Zt where K = L L^T, so that u = L v with v ~ N(0, sigma_g^2 I) has Cov(u) = sigma_g^2 K.
# Optimiser tolerances are tightened so that the reference numbers are accurate to well below
# the 1e-5 relative tolerance the tests use.
suppressPackageStartupMessages({
  library(lme4)
  library(nlme)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("--file=", "", args[grep("--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else "tests/golden"
datadir <- file.path(here, "data")
dir.create(datadir, showWarnings = FALSE, recursive = TRUE)

ctrl <- lmerControl(optimizer = "bobyqa",
                    optCtrl = list(rhobeg = 0.2, rhoend = 1e-12, maxfun = 1e5),
                    check.conv.singular = "ignore")

vc_table <- function(fit) {
  vc <- as.data.frame(VarCorr(fit))
  lapply(seq_len(nrow(vc)), function(i) list(
    grp = vc$grp[i],
    var1 = if (is.na(vc$var1[i])) NULL else vc$var1[i],
    var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i],
    vcov = vc$vcov[i], sdcor = vc$sdcor[i]))
}

summarise <- function(fit, formula, dataset) {
  cf <- summary(fit)$coefficients
  re <- ranef(fit)
  blups <- lapply(names(re), function(g) {
    d <- re[[g]]
    list(group = g, levels = rownames(d), values = lapply(as.list(d), unname))
  })
  ll_reml <- logLik(fit)
  ll_ml <- logLik(fit, REML = FALSE)
  list(
    formula = formula, dataset = dataset, n_obs = nobs(fit),
    variance_components = vc_table(fit),
    fixed_effects = lapply(seq_len(nrow(cf)), function(i) list(
      name = rownames(cf)[i], estimate = cf[i, 1], se = cf[i, 2], t = cf[i, 3])),
    reml_criterion = unname(REMLcrit(fit)),
    loglik_reml = as.numeric(ll_reml), df = attr(ll_reml, "df"),
    loglik_ml = as.numeric(ll_ml),
    aic = AIC(fit), bic = BIC(fit),
    singular = isSingular(fit),
    blups = blups
  )
}

data("sleepstudy", package = "lme4")
data("Dyestuff", package = "lme4")
data("Dyestuff2", package = "lme4")
data("Penicillin", package = "lme4")
write.csv(sleepstudy, file.path(datadir, "sleepstudy.csv"), row.names = FALSE)
write.csv(Dyestuff, file.path(datadir, "Dyestuff.csv"), row.names = FALSE)
write.csv(Dyestuff2, file.path(datadir, "Dyestuff2.csv"), row.names = FALSE)
write.csv(Penicillin, file.path(datadir, "Penicillin.csv"), row.names = FALSE)

# a random slope whose fitted correlation is -1 (singular Σ on the edge of the PSD cone)
set.seed(1)
slope <- data.frame(g = factor(rep(1:12, each = 6)), x = rep(seq(-1, 1, length = 6), 12))
slope$y <- rnorm(12)[slope$g] + 0.5 * slope$x + rnorm(72)
write.csv(slope, file.path(datadir, "slope_singular.csv"), row.names = FALSE)

models <- list(
  list(key = "sleepstudy_corr", data = sleepstudy, dataset = "sleepstudy",
       formula = "Reaction ~ Days + (Days | Subject)"),
  list(key = "sleepstudy_uncorr", data = sleepstudy, dataset = "sleepstudy",
       formula = "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"),
  list(key = "sleepstudy_dblbar", data = sleepstudy, dataset = "sleepstudy",
       formula = "Reaction ~ Days + (Days || Subject)"),
  list(key = "sleepstudy_intercept", data = sleepstudy, dataset = "sleepstudy",
       formula = "Reaction ~ Days + (1 | Subject)"),
  list(key = "dyestuff", data = Dyestuff, dataset = "Dyestuff",
       formula = "Yield ~ 1 + (1 | Batch)"),
  list(key = "dyestuff2_singular", data = Dyestuff2, dataset = "Dyestuff2",
       formula = "Yield ~ 1 + (1 | Batch)"),
  list(key = "penicillin", data = Penicillin, dataset = "Penicillin",
       formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"),
  list(key = "slope_singular", data = slope, dataset = "slope_singular",
       formula = "y ~ x + (x | g)")
)

out <- list()
for (m in models) {
  fit <- lmer(as.formula(m$formula), data = m$data, REML = TRUE, control = ctrl)
  out[[m$key]] <- summarise(fit, m$formula, m$dataset)
}

# ---- simulated kinship data ---------------------------------------------------------------
set.seed(20240611)
n_ind <- 60
n_snp <- 300
freq <- runif(n_snp, 0.1, 0.9)
# two families of related individuals plus unrelated ones: parents' genotypes shared
geno <- sapply(freq, function(p) rbinom(n_ind, 2, p))
for (i in 2:20) geno[i, ] <- ifelse(runif(n_snp) < 0.5, geno[1, ], geno[i, ])
for (i in 22:40) geno[i, ] <- ifelse(runif(n_snp) < 0.5, geno[21, ], geno[i, ])
p_hat <- colMeans(geno) / 2
keep <- p_hat > 0 & p_hat < 1
W <- sweep(geno[, keep], 2, 2 * p_hat[keep])
K <- tcrossprod(W) / (2 * sum(p_hat[keep] * (1 - p_hat[keep])))
K <- (K + t(K)) / 2
ids <- sprintf("ind%02d", seq_len(n_ind))
dimnames(K) <- list(ids, ids)
ev <- eigen(K, symmetric = TRUE)
L_true <- ev$vectors %*% diag(sqrt(pmax(ev$values, 0)))
g <- as.vector(L_true %*% rnorm(n_ind)) * sqrt(1.5)
x <- rnorm(n_ind)
y <- 2 + 0.5 * x + g + rnorm(n_ind, sd = 1)
kin <- data.frame(id = ids, y = y, x = x)
# repeated records: a second record for the first 30 individuals
rep_idx <- 1:30
kin_rep <- rbind(kin, data.frame(id = ids[rep_idx], x = rnorm(30),
                                 y = NA))
kin_rep$y[61:90] <- 2 + 0.5 * kin_rep$x[61:90] + g[rep_idx] + rnorm(30, sd = 1)
write.csv(kin, file.path(datadir, "kin_pheno.csv"), row.names = FALSE)
write.csv(kin_rep, file.path(datadir, "kin_pheno_rep.csv"), row.names = FALSE)
write.csv(data.frame(id = ids, K, check.names = FALSE), file.path(datadir, "kin_K.csv"),
          row.names = FALSE)

fit_kinship <- function(dat, key) {
  dat$id <- factor(dat$id, levels = ids)
  # one record per level is unidentifiable for plain (1 | id) but fine with a kinship
  kctrl <- lmerControl(optimizer = "bobyqa", check.nobs.vs.nlev = "ignore",
                       check.nobs.vs.nRE = "ignore", check.conv.singular = "ignore",
                       optCtrl = ctrl$optCtrl)
  lf <- lFormula(y ~ x + (1 | id), data = dat, control = kctrl)
  lev <- levels(lf$reTrms$flist$id)
  Kl <- K[lev, lev]
  e <- eigen(Kl, symmetric = TRUE)
  L <- e$vectors %*% diag(sqrt(pmax(e$values, 0)))
  lf$reTrms$Zt <- as(t(L) %*% as.matrix(lf$reTrms$Zt), "dgCMatrix")
  devfun <- do.call(mkLmerDevfun, c(lf, list(control = kctrl)))
  opt <- optimizeLmer(devfun, optimizer = "bobyqa", control = ctrl$optCtrl)
  fit <- mkMerMod(environment(devfun), opt, lf$reTrms, fr = lf$fr)
  res <- summarise(fit, "y ~ x + (1 | id)", key)
  v <- ranef(fit)$id[, 1]
  res$blups <- list(list(group = "id", levels = lev, values = list(`(Intercept)` = as.vector(L %*% v))))
  res
}
out[["kinship"]] <- fit_kinship(kin, "kin_pheno")
out[["kinship_rep"]] <- fit_kinship(kin_rep, "kin_pheno_rep")

# ---- residual variance by environment: nlme::lme with varIdent ------------------------------
set.seed(7)
het <- expand.grid(rep = 1:4, grp = sprintf("g%02d", 1:25), env = c("a", "b", "c"))
het$x <- rnorm(nrow(het))
u <- rnorm(25, sd = 1.2)
sd_env <- c(a = 0.5, b = 1.0, c = 2.0)
het$y <- 1 + 0.3 * het$x + u[as.integer(factor(het$grp))] +
  rnorm(nrow(het), sd = sd_env[as.character(het$env)])
het <- het[, c("grp", "env", "x", "y")]
write.csv(het, file.path(datadir, "het_env.csv"), row.names = FALSE)
fit_het <- lme(y ~ x, random = ~ 1 | grp, data = het, method = "REML",
               weights = varIdent(form = ~ 1 | env),
               control = lmeControl(tolerance = 1e-12, msTol = 1e-12, niterEM = 100,
                                    msMaxIter = 500, maxIter = 500))
sig <- fit_het$sigma
ratios <- coef(fit_het$modelStruct$varStruct, unconstrained = FALSE, allCoef = TRUE)
out[["het_env"]] <- list(
  formula = "y ~ x + (1 | grp)", sigma = "~ 0 + env", dataset = "het_env",
  n_obs = nrow(het),
  grp_variance = as.numeric(as.matrix(fit_het$modelStruct$reStruct$grp)) * sig^2,
  residual_variance = as.list((sig * ratios)^2),
  fixed_effects = lapply(seq_along(fixef(fit_het)), function(i) list(
    name = names(fixef(fit_het))[i], estimate = unname(fixef(fit_het)[i]),
    se = unname(sqrt(diag(vcov(fit_het)))[i]))),
  loglik_reml = as.numeric(logLik(fit_het))
)

out[["_meta"]] <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                       nlme = as.character(packageVersion("nlme")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE),
           file.path(here, "lme4_reml.json"))
cat("wrote", file.path(here, "lme4_reml.json"), "\n")
