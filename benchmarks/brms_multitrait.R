# brms's bivariate Gaussian animal model at n = 2,000 with a dense GRM (issue #19): the real
# cost of a NUTS iteration, and from it an upper bound on brms's ESS(r_g) per CPU s.
#
#   python benchmarks/brms_multitrait_data.py --n 2000 --seed 2019 --out /tmp/brms_mt
#   OMP_NUM_THREADS=1 MAKEFLAGS=-j1 BRMS_OUT=/tmp/brms_mt nice -n 10 \
#       Rscript benchmarks/brms_multitrait.R /tmp/brms_mt [WARMUP=30] [DRAWS=15]
#
# Data: benchmarks/bench_multitrait.py's simulate(2000, 2019), written by
# brms_multitrait_data.py (data.csv; the GRM K as raw float64, K.bin; init.json), so that
# brms and bayeslmm fit the same numbers. Model, brms's default priors:
#
#   brm(bf(mvbind(y1, y2) ~ x + (1 | p | gr(id, cov = K))) + set_rescor(TRUE))
#
# A whole fit (4 chains x 2,000 iterations) would take many CPU hours here: brms writes the
# kinship term as scale_r_cor_cov(), a scalar double loop over chol(K)'s lower triangle
# (~n^2/2 x 3 autodiff nodes per gradient). The script compiles brms's exact Stan program
# (make_stancode / make_standata, rstan::stan_model; compile CPU s timed), times three
# gradients at random points (rstan::grad_log_prob), and runs ONE chain of WARMUP + DRAWS
# iterations (rstan::sampling, cores = 1, seed 1) from a warm start inside the typical set
# (init.json), printing per-iteration step size, tree depth and n_leapfrog, the warm-up and
# sampling CPU seconds as Stan measures them (clock(), the process's CPU time, in rstan
# 2.21's run_adaptive_sampler), and the bound
#
#   ESS(r_g) per CPU s  <=  DRAWS / sampling CPU s
#
# (the ESS of DRAWS draws of one chain cannot exceed DRAWS by more than antithetic sampling
# allows; bulk ESS of r_g, a strongly autocorrelated variance-type quantity here, is in
# practice far below DRAWS). The whole-call figure adds compile and warm-up. A short warm-up
# adapts the metric crudely (Stan's 15/75/10 % windows below 150 iterations); WARMUP = 150,
# DRAWS = 50 is the better setting where an idle core is available for ~1-3 hours.
# Draws, warm-up included, are streamed to $BRMS_OUT/brms_n2000_samples.csv (sample_file),
# so that a run stopped early still shows its per-iteration tree sizes (columns 1-7).

suppressPackageStartupMessages({
  library(brms)
})
rstan::rstan_options(boost_lib = "/usr/include")

args <- commandArgs(trailingOnly = TRUE)
data_dir <- if (length(args) >= 1) args[1] else "/tmp/brms_mt"
warmup <- if (length(args) >= 2) as.integer(args[2]) else 30L
draws <- if (length(args) >= 3) as.integer(args[3]) else 15L

d <- read.csv(file.path(data_dir, "data.csv"), stringsAsFactors = FALSE)
n <- nrow(d)
K <- matrix(readBin(file.path(data_dir, "K.bin"), "double", n * n, size = 8, endian = "little"),
  n, n, byrow = TRUE
)
dimnames(K) <- list(d$id, d$id)
stopifnot(isSymmetric(K))

cat(sprintf(
  "brms %s, rstan %s, StanHeaders %s, %s; n = %d; warmup %d, draws %d; load average %s\n",
  packageVersion("brms"), packageVersion("rstan"), packageVersion("StanHeaders"),
  R.version.string, n, warmup, draws, readLines("/proc/loadavg")
))
cpu_of <- function(p) sum(p[c("user.self", "sys.self", "user.child", "sys.child")], na.rm = TRUE)
formula <- bf(mvbind(y1, y2) ~ x + (1 | p | gr(id, cov = K))) + set_rescor(TRUE)
code <- make_stancode(formula, data = d, data2 = list(K = K))
sdata <- make_standata(formula, data = d, data2 = list(K = K))
print(prior_summary(brm(formula, data = d, data2 = list(K = K), empty = TRUE)))
p0 <- proc.time()
sm <- rstan::stan_model(model_code = code)
compile_cpu <- cpu_of(proc.time() - p0)
cat(sprintf("compile: %.1f CPU s\n", compile_cpu))

# gradient cost at random unconstrained points
probe <- rstan::sampling(sm,
  data = unclass(sdata), chains = 1, iter = 1, algorithm = "Fixed_param",
  refresh = 0, seed = 1
)
npar <- rstan::get_num_upars(probe)
set.seed(1)
grad_times <- vapply(1:3, function(k) {
  upars <- rnorm(npar, 0, 0.5)
  t0 <- proc.time()
  rstan::grad_log_prob(probe, upars)
  cpu_of(proc.time() - t0)
}, numeric(1))
grad_s <- median(grad_times)
cat(sprintf(
  "unconstrained parameters %d; gradient %.4f CPU s (%s)\n", npar, grad_s,
  paste(signif(grad_times, 4), collapse = " ")
))

out_dir <- Sys.getenv("BRMS_OUT", data_dir)
# warm start inside the typical set (brms_multitrait_data.py: REML values, U drawn from its
# conditional posterior): the cold start's first warm-up iterations run 511 leapfrog steps
init <- jsonlite::fromJSON(file.path(data_dir, "init.json"))
init$z_1 <- as.matrix(init$z_1)
init$L_1 <- as.matrix(init$L_1)
init$Lrescor <- as.matrix(init$Lrescor)
init$b_y1 <- as.array(init$b_y1)
init$b_y2 <- as.array(init$b_y2)
init$sd_1 <- as.array(init$sd_1)
stopifnot(identical(dim(init$z_1), c(2L, n)))
p0 <- proc.time()
fit <- rstan::sampling(sm,
  data = unclass(sdata), chains = 1, iter = warmup + draws, warmup = warmup, cores = 1,
  seed = 1, refresh = 1, save_warmup = TRUE, init = list(init),
  control = list(stepsize = 0.02), # the warm start's scale: skips the search down from 1
  sample_file = file.path(out_dir, "brms_n2000_samples.csv")
)
sampling_cpu <- cpu_of(proc.time() - p0)
elapsed <- rstan::get_elapsed_time(fit)
sp <- rstan::get_sampler_params(fit, inc_warmup = TRUE)[[1]]
is_post <- seq_len(nrow(sp)) > warmup
leap <- sp[, "n_leapfrog__"]
cat("per iteration (iteration, stepsize, treedepth, n_leapfrog, divergent):\n")
print(data.frame(
  iter = seq_len(nrow(sp)), stepsize = signif(sp[, "stepsize__"], 4),
  treedepth = sp[, "treedepth__"], n_leapfrog = leap, divergent = sp[, "divergent__"]
), row.names = FALSE)
rg <- rstan::extract(fit, pars = "cor_1[1]", permuted = FALSE)[, 1, 1]
ess_rg <- posterior::ess_bulk(matrix(rg, ncol = 1))
warm_cpu <- elapsed[1, "warmup"]
samp_cpu <- elapsed[1, "sample"]
cat(sprintf(
  paste0(
    "RESULT n %d params %d compile_cpu_s %.1f grad_cpu_s %.4f warmup %d draws %d ",
    "warmup_cpu_s %.1f sample_cpu_s %.1f sampling_call_cpu_s %.1f ",
    "post_leapfrog_mean %.1f post_leapfrog_total %d post_stepsize %.4g post_divergent %d ",
    "warmup_leapfrog_total %d cpu_per_draw_s %.2f cpu_per_leapfrog_s %.4f ",
    "ess_rg_bulk %.1f rg_mean %.3f ",
    "ess_rg_per_cpu_s_bound_post %.4f ess_rg_per_cpu_s_bound_whole %.4f\n"
  ),
  n, npar, compile_cpu, grad_s, warmup, draws, warm_cpu, samp_cpu, sampling_cpu,
  mean(leap[is_post]), sum(leap[is_post]), sp[warmup + 1, "stepsize__"],
  sum(sp[is_post, "divergent__"]), sum(leap[!is_post]), samp_cpu / draws,
  samp_cpu / sum(leap[is_post]), ess_rg, mean(rg),
  draws / samp_cpu, draws / (compile_cpu + warm_cpu + samp_cpu)
))
cat(sprintf("load average %s\n", readLines("/proc/loadavg")))
