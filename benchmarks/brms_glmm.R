# Real brms on the kinship GLMMs of benchmarks/bench_glmm.py (issue #18).
#
# The data sets are the ones bench_glmm.py simulates (same seeds), written to CSV first:
#
#   OMP_NUM_THREADS=1 python benchmarks/bench_glmm.py --write-csv /tmp/brms_glmm_data \
#       --n 500 1000 --seeds 1 --families poisson poisson-noolre bernoulli
#   OMP_NUM_THREADS=1 MAKEFLAGS=-j1 Rscript benchmarks/brms_glmm.R /tmp/brms_glmm_data \
#       benchmarks/results/brms_glmm.txt poisson:500:1 poisson:1000:1 ...
#
# Each case (family:n:seed) is one brm() call, timed as a whole (Stan code generation +
# C++ compilation + sampling: what a brms user waits for):
#
#   y ~ 1 + (1 | gr(id, cov = K))                 family bernoulli() or poisson() (no olre)
#   y ~ 1 + (1 | gr(id, cov = K)) + (1 | obs)     poisson() with the observation-level effect
#
# brms's default priors (Intercept student_t(3, location from y, 2.5), sd student_t(3, 0,
# 2.5)), its default adapt_delta = 0.8, rstan backend, 2 chains x (1000 warmup + 1000 draws)
# run one after the other on one core (cores = 1) to match bench_glmm.py's bayeslmm fit
# (brms's own default is 4 chains x (1000 + 1000)). total_s is the wall time of the whole
# call and cpu_s its CPU time (R and the C++ compiler); on a shared machine the CPU figures
# are the ones to compare. sample_cpu_s is the chains' own elapsed time
# (rstan::get_elapsed_time, warmup + sampling, summed: Stan 2.21 measures it with clock(),
# i.e. CPU seconds), compile_cpu_s = cpu_s - sample_cpu_s (code generation, compilation, R).
# ess_bulk is posterior::ess_bulk of the posterior draws of the genetic variance
# sd_id__Intercept^2.
#
# One row per case is appended to the output file as soon as the case is done.

suppressPackageStartupMessages({
  library(brms)
  library(posterior)
})
# Debian's rstan 2.21 looks for Boost in R's BH package layout; the system headers serve
rstan::rstan_options(boost_lib = "/usr/include")

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 3) {
  stop("usage: Rscript brms_glmm.R DATA_DIR OUT_FILE family:n:seed [family:n:seed ...]")
}
data_dir <- args[1]
out_file <- args[2]
cases <- args[-(1:2)]

columns <- c(
  "family", "n", "seed", "model", "VA_median", "ess_bulk", "rhat", "divergent", "total_s",
  "cpu_s", "compile_cpu_s", "sample_cpu_s", "ess_per_s", "ess_per_cpu_s",
  "ess_per_sample_cpu_s", "load1", "date"
)
if (!file.exists(out_file)) {
  cpu <- tryCatch(
    sub(".*: ", "", grep("model name", readLines("/proc/cpuinfo"), value = TRUE)[1]),
    error = function(e) "unknown"
  )
  header <- c(
    "# brms_glmm.R: real brms on bench_glmm.py's data sets (R, run separately from Python)",
    sprintf(
      "# %s, %s; brms %s, rstan %s, StanHeaders %s, posterior %s; CPU %s, %d cores",
      R.version.string, Sys.info()[["sysname"]], packageVersion("brms"),
      packageVersion("rstan"), packageVersion("StanHeaders"), packageVersion("posterior"),
      cpu, parallel::detectCores()
    ),
    "# brm(): default priors, adapt_delta 0.8, rstan, chains = 2, iter = 2000 (1000 warmup), cores = 1",
    "# total_s = wall seconds of the whole brm() call; cpu_s = its CPU seconds (R + compiler);",
    "# sample_cpu_s = rstan elapsed (clock(): CPU s, warmup + sampling, both chains);",
    "# compile_cpu_s = cpu_s - sample_cpu_s; ess_bulk = posterior::ess_bulk(sd_id__Intercept^2);",
    "# ess_per_s = ess_bulk / total_s; ess_per_cpu_s = ess_bulk / cpu_s; load1 = 1-min load at start",
    paste(columns, collapse = " ")
  )
  writeLines(header, out_file)
}

for (case in cases) {
  parts <- strsplit(case, ":", fixed = TRUE)[[1]]
  family <- parts[1]
  n <- as.integer(parts[2])
  seed <- as.integer(parts[3])
  stem <- file.path(data_dir, sprintf("glmm_%s_n%d_seed%d", family, n, seed))
  d <- read.csv(paste0(stem, "_data.csv"), stringsAsFactors = FALSE)
  K <- as.matrix(read.csv(paste0(stem, "_K.csv"), row.names = 1, check.names = FALSE))
  stopifnot(identical(rownames(K), colnames(K)), all(d$id %in% rownames(K)))
  d$obs <- seq_len(nrow(d))
  if (family == "poisson") {
    formula <- y ~ 1 + (1 | gr(id, cov = K)) + (1 | obs)
    fam <- poisson()
  } else if (family == "poisson-noolre") {
    formula <- y ~ 1 + (1 | gr(id, cov = K))
    fam <- poisson()
  } else if (family == "bernoulli") {
    formula <- y ~ 1 + (1 | gr(id, cov = K))
    fam <- bernoulli()
  } else {
    stop("unknown family ", family)
  }
  cat(sprintf("[%s] %s n=%d seed=%d ...\n", format(Sys.time()), family, n, seed))
  load1 <- as.numeric(strsplit(readLines("/proc/loadavg"), " ")[[1]][1])
  p0 <- proc.time()
  t0 <- p0[["elapsed"]]
  fit <- brm(
    formula,
    data = d, data2 = list(K = K), family = fam, chains = 2, iter = 2000, warmup = 1000,
    cores = 1, seed = seed, refresh = 0, backend = "rstan", silent = 2
  )
  p1 <- proc.time()
  total <- p1[["elapsed"]] - t0
  # CPU seconds of R and its children (the C++ compiler): a busy machine inflates wall time
  cpu <- sum((p1 - p0)[c("user.self", "sys.self", "user.child", "sys.child")])
  sample_cpu <- sum(rstan::get_elapsed_time(fit$fit))
  va <- as_draws_array(fit, variable = "sd_id__Intercept")^2
  ess <- ess_bulk(va)
  np <- nuts_params(fit)
  div <- sum(np$Value[np$Parameter == "divergent__"])
  row <- data.frame(
    family = family, n = n, seed = seed, model = "brms",
    VA_median = signif(median(va), 4), ess_bulk = signif(ess, 4), rhat = signif(rhat(va), 4),
    divergent = div, total_s = signif(total, 4), cpu_s = signif(cpu, 4),
    compile_cpu_s = signif(cpu - sample_cpu, 4), sample_cpu_s = signif(sample_cpu, 4),
    ess_per_s = signif(ess / total, 4), ess_per_cpu_s = signif(ess / cpu, 4),
    ess_per_sample_cpu_s = signif(ess / sample_cpu, 4), load1 = load1, date = format(Sys.Date())
  )
  print(row)
  write.table(row[columns], out_file,
    append = TRUE, quote = FALSE, row.names = FALSE,
    col.names = FALSE
  )
}
