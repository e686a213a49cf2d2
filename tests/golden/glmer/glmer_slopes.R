# Reference numbers for correlated random slopes (1 + x | g) in bayeslmm's Laplace engine.
#
# Run from the repository root:   Rscript tests/golden/glmer/glmer_slopes.R
# Writes, next to this script:
#   slopes_binomial.csv    simulated binomial data (seeded): g, x, successes s, trials size
#   slopes_binomial.json   glmer's Laplace fit of cbind(s, size - s) ~ x + (1 + x | g), logit,
#                          with a tight optimum (bobyqa, rhoend 1e-12, tolPwrss 1e-10):
#                          theta (lme4's Cholesky factor, column-wise lower triangle), fixef,
#                          VarCorr (Sigma), logLik, deviance, and deviance-function values at
#                          fixed (theta, beta) points
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
outdir <- if (length(script)) dirname(normalizePath(script)) else "tests/golden/glmer"

tight <- glmerControl(
  optimizer = "bobyqa",
  optCtrl = list(rhobeg = 0.2, rhoend = 1e-12, maxfun = 1e6),
  tolPwrss = 1e-10
)

# 30 groups x 8 observations, 10 trials each (cbpp-like counts out of a herd size),
# Sigma = [[0.6, 0.2], [0.2, 0.3]] for (intercept, slope), beta = (-0.5, 0.8)
set.seed(18)
q <- 30
m <- 8
Sigma <- matrix(c(0.6, 0.2, 0.2, 0.3), 2)
U <- matrix(rnorm(2 * q), q, 2) %*% chol(Sigma)
d <- data.frame(g = sprintf("g%02d", rep(seq_len(q), each = m)), x = round(rnorm(q * m), 6))
gi <- rep(seq_len(q), each = m)
eta <- -0.5 + 0.8 * d$x + U[gi, 1] + U[gi, 2] * d$x
d$size <- 10L
d$s <- rbinom(nrow(d), d$size, plogis(eta))
write.csv(d, file.path(outdir, "slopes_binomial.csv"), row.names = FALSE)
d <- read.csv(file.path(outdir, "slopes_binomial.csv"), stringsAsFactors = FALSE)

f <- cbind(s, size - s) ~ x + (1 + x | g)
fit <- glmer(f, data = d, family = binomial, control = tight)
dev <- glmer(f, data = d, family = binomial, devFunOnly = TRUE, control = tight)
# deviance at fixed points: par = (theta_11, theta_21, theta_22, beta_0, beta_1)
pts <- list(c(0.7, 0.2, 0.5, -0.4, 0.7), c(0.9, -0.1, 0.3, -0.6, 0.9))
vc <- as.data.frame(VarCorr(fit))
vc$var2 <- ifelse(is.na(vc$var2), "", vc$var2)
V <- as.matrix(vcov(fit))
out <- list(
  lme4_version = as.character(packageVersion("lme4")),
  R_version = R.version.string,
  formula = paste(deparse(formula(fit)), collapse = " "),
  family = "binomial",
  link = "logit",
  n_obs = nobs(fit),
  theta = unname(getME(fit, "theta")),
  fixef = as.list(fixef(fit)),
  se = as.list(setNames(sqrt(diag(V)), names(fixef(fit)))),
  Sigma = unname(VarCorr(fit)$g[1:2, 1:2]),
  varcorr = vc,
  logLik = as.numeric(logLik(fit)),
  deviance_laplace = -2 * as.numeric(logLik(fit)),
  AIC = AIC(fit),
  df = attr(logLik(fit), "df"),
  optimizer_messages = fit@optinfo$conv$lme4$messages,
  devfun_points = lapply(pts, function(p) list(par = p, deviance = dev(p)))
)
write_json(out, file.path(outdir, "slopes_binomial.json"),
  digits = NA, auto_unbox = TRUE, pretty = TRUE
)
print(summary(fit))
