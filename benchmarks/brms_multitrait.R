# Real brms on a bivariate Gaussian animal model at n = 2,000 (issue #19): the cost of one
# log-density gradient of brms's Stan program, and from it a lower bound on the whole fit.
#
#   OMP_NUM_THREADS=1 MAKEFLAGS=-j1 Rscript benchmarks/brms_multitrait.R [N]
#
# Data as tests/golden/brms/multitrait.R simulates them, scaled up: N individuals, a GRM from
# 2 N simulated markers (0.98 K + 0.02 I), covariate x, two traits with
# Sigma_G = [[1, .5], [.5, 1]], Sigma_E = [[1, .2], [.2, 1]]. Model:
#
#   brm(bf(mvbind(y1, y2) ~ x + (1 | p | gr(id, cov = K))) + set_rescor(TRUE))
#
# Why not the fit itself: brms writes the correlated kinship term (1 | p | gr(id, cov = K))
# as scale_r_cor_cov(), a scalar double loop over the lower triangle of chol(K) (~N^2/2 * 3
# autodiff nodes per gradient), so one gradient at N = 2,000 costs 0.115 CPU s on this
# machine and 2 chains x (1000 warmup + 1000 draws) need at least 4,000 gradients (at least
# one per iteration; ~2^treedepth - 1 in practice): hours, past the 40-minute limit set for
# this check (benchmarks/results/brms_multitrait.txt). The script compiles brms's exact Stan program and data (rstan), times
# gradients at random unconstrained points (rstan::grad_log_prob) and prints
#
#   lower_bound_s = compile_s + 4000 * grad_s         (one gradient per iteration)
#   estimate_s    = compile_s + 4000 * L * grad_s     (L = mean leapfrog steps per iteration
#                                                      of the n = 150 golden fit, if given)

suppressPackageStartupMessages({
  library(brms)
  library(posterior)
})
rstan::rstan_options(boost_lib = "/usr/include")

args <- commandArgs(trailingOnly = TRUE)
n <- if (length(args) >= 1) as.integer(args[1]) else 2000L
leapfrog <- if (length(args) >= 2) as.numeric(args[2]) else NA

set.seed(2019)
m <- 2 * n
freq <- runif(m, 0.05, 0.95)
M <- matrix(rbinom(n * m, 2, rep(freq, each = n)), n, m)
p <- colMeans(M) / 2
W <- sweep(M, 2, 2 * p)
K <- tcrossprod(W) / (2 * sum(p * (1 - p)))
rm(M, W)
K <- 0.98 * K + 0.02 * diag(n)
ids <- sprintf("a%05d", seq_len(n))
dimnames(K) <- list(ids, ids)
Sigma_G <- matrix(c(1, 0.5, 0.5, 1), 2)
Sigma_E <- matrix(c(1, 0.2, 0.2, 1), 2)
x <- rnorm(n)
U <- t(chol(K)) %*% matrix(rnorm(2 * n), n, 2) %*% chol(Sigma_G)
E <- matrix(rnorm(2 * n), n, 2) %*% chol(Sigma_E)
Y <- cbind(1 + 0.5 * x, -0.5 - 0.3 * x) + U + E
d <- data.frame(id = ids, x = x, y1 = Y[, 1], y2 = Y[, 2])

cat(sprintf(
  "brms %s, rstan %s, %s; n = %d; load average %s\n", packageVersion("brms"),
  packageVersion("rstan"), R.version.string, n, readLines("/proc/loadavg")
))
formula <- bf(mvbind(y1, y2) ~ x + (1 | p | gr(id, cov = K))) + set_rescor(TRUE)
code <- make_stancode(formula, data = d, data2 = list(K = K))
sdata <- make_standata(formula, data = d, data2 = list(K = K))
p0 <- proc.time()
sm <- rstan::stan_model(model_code = code)
p1 <- proc.time()
compile_cpu <- sum((p1 - p0)[c("user.self", "sys.self", "user.child", "sys.child")])
# a fit object that holds the instantiated model (no sampling)
fit <- rstan::sampling(sm,
  data = unclass(sdata), chains = 1, iter = 1, algorithm = "Fixed_param",
  refresh = 0, seed = 1
)
npar <- rstan::get_num_upars(fit)
set.seed(1)
times <- numeric(3)
for (k in seq_along(times)) {
  upars <- rnorm(npar, 0, 0.5)
  t0 <- proc.time()[["user.self"]]
  g <- rstan::grad_log_prob(fit, upars)
  times[k] <- proc.time()[["user.self"]] - t0
}
grad_s <- median(times)
lower <- compile_cpu + 4000 * grad_s
estimate <- if (is.na(leapfrog)) NA else compile_cpu + 4000 * leapfrog * grad_s
cat(
  "RESULT n", n, "unconstrained_parameters", npar, "compile_cpu_s", round(compile_cpu, 1),
  "grad_cpu_s", signif(grad_s, 4), "(", paste(signif(times, 4), collapse = " "), ")",
  "lower_bound_cpu_s", round(lower), "leapfrog_per_iteration", leapfrog,
  "estimate_cpu_s", round(estimate), "\n"
)
