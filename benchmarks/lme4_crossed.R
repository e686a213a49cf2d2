# lme4 on the crossed designs of benchmarks/bench_crossed.py (same CSVs).
#
#   Rscript benchmarks/lme4_crossed.R CSV_DIR [REPEATS]
#
# Prints one line per fit, "case setting seconds deviance": the best elapsed seconds of
# REPEATS calls (the fitting call alone; reading the CSV is not timed) and the criterion
# (lmer: REML criterion; glmer: -2 logLik, the Laplace deviance). Settings: "default" (lme4's
# defaults) and, for glmer, "tight" (glmerControl(tolPwrss = 1e-10), glmer's tight-tolerance
# optimum, to compare accuracy). Comment lines give the estimates.
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
repeats <- if (length(args) > 1) as.integer(args[2]) else 3L

timed <- function(expr_fun) {
  best <- Inf
  fit <- NULL
  for (i in seq_len(repeats)) {
    t <- system.time(fit <- expr_fun())["elapsed"]
    best <- min(best, t)
  }
  list(fit = fit, seconds = best)
}

report <- function(case, setting, res, reml) {
  fit <- res$fit
  crit <- if (reml) REMLcrit(fit) else -2 * as.numeric(logLik(fit))
  cat(sprintf("%s %s %.3f %.6f\n", case, setting, res$seconds, crit))
  vc <- as.data.frame(VarCorr(fit))
  cat(sprintf("# %s %s theta: %s\n", case, setting, paste(signif(getME(fit, "theta"), 8), collapse = " ")))
  cat(sprintf("# %s %s variances: %s\n", case, setting,
              paste(paste0(vc$grp, "=", signif(vc$vcov, 8)), collapse = " ")))
  cat(sprintf("# %s %s fixef: %s\n", case, setting,
              paste(paste0(names(fixef(fit)), "=", signif(fixef(fit), 8)), collapse = " ")))
}

cat(sprintf("# %s, lme4 %s, repeats %d\n", R.version.string, packageVersion("lme4"), repeats))

path <- file.path(dir, "insteval.csv")
if (file.exists(path)) {
  d <- read.csv(path, colClasses = c("numeric", "factor", "factor"))
  res <- timed(function() lmer(y ~ 1 + (1 | s) + (1 | d), data = d, REML = TRUE))
  report("insteval", "default", res, TRUE)
}

path <- file.path(dir, "verbagg.csv")
if (file.exists(path)) {
  d <- read.csv(path)
  d$id <- factor(d$id)
  d$item <- factor(d$item)
  f <- r ~ x1 + x2 + (1 | id) + (1 | item)
  report("verbagg", "default", timed(function() glmer(f, data = d, family = binomial)), FALSE)
  report("verbagg", "tight", timed(function() glmer(
    f, data = d, family = binomial, control = glmerControl(tolPwrss = 1e-10)
  )), FALSE)
}

path <- file.path(dir, "arabidopsis.csv")
if (file.exists(path)) {
  d <- read.csv(path)
  d$popu <- factor(d$popu)
  d$gen <- factor(d$gen)
  d$obs <- factor(seq_len(nrow(d)))
  f <- total ~ nutrient * amd + rack + (1 | popu) + (1 | gen) + (1 | obs)
  report("arabidopsis", "default", timed(function() glmer(f, data = d, family = poisson)), FALSE)
  report("arabidopsis", "tight", timed(function() glmer(
    f, data = d, family = poisson, control = glmerControl(tolPwrss = 1e-10)
  )), FALSE)
}
