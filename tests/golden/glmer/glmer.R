# Reference numbers for bayeslmm's Laplace GLMM engine (bayeslmm.engines.laplace).
#
# Run from the repository root:   Rscript tests/golden/glmer/glmer.R
# Writes, next to this script:
#   cbpp.csv, grouseticks.csv               the data sets as lme4 ships them
#   kin_bern.csv, kin_pois.csv, kin_K.csv   simulated kinship GLMM data (seeded) and kinship
#   <case>.json                             glmer results (tight bobyqa optimum, default fit,
#                                           VarCorr, vcov, logLik, deviance function values)
#
# Kinship GLMMs use the Cholesky substitution of lme4qtl / pedigreemm: with K = R'R
# (R = chol(K), upper triangular) and u = R' b, b ~ N(0, sigma^2 I), Z u = (Z R') b, so the
# random-effects design Zt (q x n) is replaced by R %*% Zt and lme4 fits an iid term.
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
outdir <- if (length(script)) dirname(normalizePath(script)) else "tests/golden/glmer"

tight <- glmerControl(optimizer = "bobyqa",
                      optCtrl = list(rhobeg = 0.2, rhoend = 1e-12, maxfun = 1e6),
                      tolPwrss = 1e-12)

summarise_fit <- function(fit, devfun = NULL, points = list()) {
  vc <- as.data.frame(VarCorr(fit))
  vc$var2 <- ifelse(is.na(vc$var2), "", vc$var2)
  fe <- fixef(fit)
  V <- as.matrix(vcov(fit))
  out <- list(
    lme4_version = as.character(packageVersion("lme4")),
    R_version = R.version.string,
    formula = paste(deparse(formula(fit)), collapse = " "),
    family = family(fit)$family,
    link = family(fit)$link,
    n_obs = nobs(fit),
    theta = unname(getME(fit, "theta")),
    fixef = as.list(fe),
    se = as.list(setNames(sqrt(diag(V)), names(fe))),
    # conditional on theta: sigma^2 (R_X'R_X)^-1 from the final PIRLS (use.hessian = FALSE)
    se_rx = as.list(setNames(sqrt(diag(as.matrix(vcov(fit, use.hessian = FALSE)))), names(fe))),
    se_from_hessian = !is.null(fit@optinfo$derivs$Hessian),
    vcov = unname(V),
    varcorr = vc,
    logLik = as.numeric(logLik(fit)),
    deviance_laplace = unname(-2 * as.numeric(logLik(fit))),
    AIC = AIC(fit),
    BIC = BIC(fit),
    df = attr(logLik(fit), "df"),
    optimizer_messages = fit@optinfo$conv$lme4$messages
  )
  if (!is.null(devfun)) {
    out$devfun_points <- lapply(points, function(p) list(par = p, deviance = devfun(p)))
  }
  out
}

write_case <- function(x, name) {
  write_json(x, file.path(outdir, paste0(name, ".json")), digits = NA,
             auto_unbox = TRUE, pretty = TRUE)
}

# ---------------------------------------------------------------------------------------
# cbpp: binomial, logit
# ---------------------------------------------------------------------------------------
data(cbpp, package = "lme4")
write.csv(cbpp, file.path(outdir, "cbpp.csv"), row.names = FALSE)
f_cbpp <- cbind(incidence, size - incidence) ~ period + (1 | herd)
fit <- glmer(f_cbpp, data = cbpp, family = binomial, control = tight)
dev <- glmer(f_cbpp, data = cbpp, family = binomial, devFunOnly = TRUE, control = tight)
pts <- list(c(0.5, -1.0, -1.0, -1.2, -1.5), c(1.2, -1.5, -0.8, -0.9, -1.3))
res <- summarise_fit(fit, dev, pts)
res$default_fit <- summarise_fit(glmer(f_cbpp, data = cbpp, family = binomial))
write_case(res, "cbpp")

# probit variant (non-canonical link: PIRLS weights are Fisher-scoring weights)
fit <- glmer(f_cbpp, data = cbpp, family = binomial(link = "probit"), control = tight)
dev <- glmer(f_cbpp, data = cbpp, family = binomial(link = "probit"), devFunOnly = TRUE, control = tight)
pts <- list(c(0.4, -0.7, -0.5, -0.6, -0.8))
write_case(summarise_fit(fit, dev, pts), "cbpp_probit")

# ---------------------------------------------------------------------------------------
# grouseticks: poisson, log; INDEX is the observation-level random effect
# ---------------------------------------------------------------------------------------
data(grouseticks, package = "lme4")
gt <- grouseticks
# scale() as R computes it (sample SD, n - 1); written to the CSV so Python uses the same column
gt$HEIGHT_s <- as.numeric(scale(gt$HEIGHT))
write.csv(gt, file.path(outdir, "grouseticks.csv"), row.names = FALSE)
f_gt <- TICKS ~ YEAR + HEIGHT_s + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)
fit <- glmer(f_gt, data = gt, family = poisson, control = tight)
dev <- glmer(f_gt, data = gt, family = poisson, devFunOnly = TRUE, control = tight)
pts <- list(c(0.8, 0.5, 0.3, 0.4, 1.0, -1.0, -0.8))
res <- summarise_fit(fit, dev, pts)
res$default_fit <- summarise_fit(glmer(f_gt, data = gt, family = poisson))
write_case(res, "grouseticks")

# ---------------------------------------------------------------------------------------
# kinship GLMMs (simulated, seeded): lme4 with Z* = Z R'
# ---------------------------------------------------------------------------------------
set.seed(20240605)
n_id <- 60
n_rep <- 4
p_snp <- 500
freq <- runif(p_snp, 0.1, 0.9)
G <- sapply(freq, function(f) rbinom(n_id, 2, f))
Wst <- scale(G)
K <- 0.95 * tcrossprod(Wst) / p_snp + 0.05 * diag(n_id)
ids <- sprintf("id%02d", seq_len(n_id))
dimnames(K) <- list(ids, ids)
Kout <- data.frame(id = ids, K, check.names = FALSE)
write.csv(Kout, file.path(outdir, "kin_K.csv"), row.names = FALSE)

Rchol <- chol(K)
a <- drop(t(Rchol) %*% rnorm(n_id)) * sqrt(0.8)
kd <- data.frame(id = rep(ids, each = n_rep), x = rnorm(n_id * n_rep))
eta_b <- -0.3 + 0.5 * kd$x + a[match(kd$id, ids)]
kd$ybin <- rbinom(nrow(kd), 1, plogis(eta_b))
eta_p <- 0.2 + 0.4 * kd$x + 0.6 * a[match(kd$id, ids)]
kd$ycount <- rpois(nrow(kd), exp(eta_p))
write.csv(kd, file.path(outdir, "kin_data.csv"), row.names = FALSE)

fit_kinship <- function(formula, family, data, term = "id") {
  gf <- glFormula(formula, data = data, family = family)
  # rows of Zt that belong to the kinship term (lme4 sorts terms by number of levels)
  k <- which(names(gf$reTrms$cnms) == term)
  rows <- (gf$reTrms$Gp[k] + 1):gf$reTrms$Gp[k + 1]
  lev <- rownames(gf$reTrms$Zt)[rows]
  R <- chol(K[lev, lev])
  Zt <- as.matrix(gf$reTrms$Zt)
  Zt[rows, ] <- as.matrix(R %*% Zt[rows, ])
  gf$reTrms$Zt <- as(as(Matrix(Zt, sparse = TRUE), "generalMatrix"), "CsparseMatrix")
  devfun <- do.call(mkGlmerDevfun, c(gf, list(control = tight)))
  opt <- optimizeGlmer(devfun, optimizer = "bobyqa",
                       control = list(rhobeg = 0.2, rhoend = 1e-12, maxfun = 1e6))
  devfun <- updateGlmerDevfun(devfun, gf$reTrms)
  opt <- optimizeGlmer(devfun, optimizer = "bobyqa", stage = 2,
                       control = list(rhobeg = 0.2, rhoend = 1e-12, maxfun = 1e6))
  fit <- mkMerMod(environment(devfun), opt, gf$reTrms, fr = gf$fr)
  list(fit = fit, devfun = devfun)
}

kb <- fit_kinship(ybin ~ x + (1 | id), binomial, kd)
# summarise before evaluating the deviance elsewhere: the merMod shares the devfun's state
res <- summarise_fit(kb$fit)
pts <- list(c(0.7, -0.2, 0.4), c(1.1, -0.5, 0.6))
res$devfun_points <- lapply(pts, function(p) list(par = p, deviance = kb$devfun(p)))
write_case(res, "kin_bernoulli")

kp <- fit_kinship(ycount ~ x + (1 | id), poisson, kd)
res <- summarise_fit(kp$fit)
pts <- list(c(0.5, 0.1, 0.3))
res$devfun_points <- lapply(pts, function(p) list(par = p, deviance = kp$devfun(p)))
write_case(res, "kin_poisson")

# Poisson kinship GLMM with an observation-level random effect (1 | obs)
kd$obs <- sprintf("o%03d", seq_len(nrow(kd)))
ko <- fit_kinship(ycount ~ x + (1 | id) + (1 | obs), poisson, kd)
res <- summarise_fit(ko$fit)
res$term_order <- names(ko$fit@cnms)
pts <- list(c(0.4, 0.6, 0.1, 0.3))
res$devfun_points <- lapply(pts, function(p) list(par = p, deviance = ko$devfun(p)))
write_case(res, "kin_poisson_olre")

cat("wrote reference files to", outdir, "\n")
