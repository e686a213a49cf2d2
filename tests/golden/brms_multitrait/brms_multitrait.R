# brms golden for bayeslmm's bivariate Gaussian animal model (issue #19).
#
#   python tests/golden/brms_multitrait/generate.py          # data.csv, A.csv, priors.csv
#   OMP_NUM_THREADS=1 MAKEFLAGS=-j1 nice -n 10 \
#       Rscript tests/golden/brms_multitrait/brms_multitrait.R [DIR]
#
# Fits, on DIR/data.csv (300 individuals of a half-sib/full-sib pedigree, both traits
# recorded) and DIR/A.csv (the numerator relationship matrix),
#
#   brm(bf(mvbind(y1, y2) ~ x + (1 | p | gr(id, cov = A))) + set_rescor(TRUE))
#
# with bayeslmm's default multi-trait priors (DIR/priors.csv, written by generate.py from
# bayeslmm/engines/bayes/multitrait_density.py's rules) instead of brms's defaults:
#   sd (genetic SD of trait a) and sigma (residual SD): student_t(3, 0, 2.5 s_a), half-t
#     because brms bounds them at 0 (s_a = SD of trait a, divisor n as NumPy's std);
#   Intercept (brms's intercept of the centred design, bayeslmm's too): normal(mean y_a,
#     2.5 s_a); slope b of x: normal(0, 2.5 s_a / sd(x)); bayeslmm integrates beta out
#     analytically under the same normal prior;
#   cor (genetic correlation matrix) and rescor (residual): lkj(2).
# 4 chains x (500 warm-up + 1000 draws), cores = 1, adapt_delta 0.95, seed 2026; progress
# every 100 iterations, draws streamed to $TMPDIR/brms_multitrait_golden_*.csv.
# Writes DIR/brms_multitrait.json: per quantity posterior mean, SD, 2.5/97.5 % quantiles,
# Monte Carlo SE of the mean (posterior::mcse_mean), bulk/tail ESS, R-hat; the derived
# h2_t = c G_tt / (c G_tt + E_tt) with bayeslmm's sample-scale c = mean(diag A) - mean(A);
# software versions, sampler diagnostics and the CPU time of the brm() call.

suppressPackageStartupMessages({
  library(brms)
  library(posterior)
  library(jsonlite)
})
rstan::rstan_options(boost_lib = "/usr/include")

args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args) >= 1) args[1] else "tests/golden/brms_multitrait"
chains <- 4L
warmup <- 500L
draws_per_chain <- 1000L
adapt_delta <- 0.95

d <- read.csv(file.path(dir, "data.csv"), stringsAsFactors = FALSE)
A <- as.matrix(read.csv(file.path(dir, "A.csv"), row.names = 1, check.names = FALSE))
stopifnot(identical(rownames(A), d$id), identical(colnames(A), d$id), isSymmetric(A))
pr <- read.csv(file.path(dir, "priors.csv"), stringsAsFactors = FALSE)

# bayeslmm's priors as brms prior statements
prior_of <- function(resp, cls) pr[pr$resp == resp & pr$class == cls, ]
priors <- empty_prior()
for (resp in c("y1", "y2")) {
  r <- prior_of(resp, "sd")
  priors <- priors + set_prior(sprintf("student_t(%.17g, 0, %.17g)", r$df_or_eta, r$scale),
    class = "sd", group = "id", resp = resp
  )
  r <- prior_of(resp, "sigma")
  priors <- priors + set_prior(sprintf("student_t(%.17g, 0, %.17g)", r$df_or_eta, r$scale),
    class = "sigma", resp = resp
  )
  r <- prior_of(resp, "Intercept")
  priors <- priors + set_prior(sprintf("normal(%.17g, %.17g)", r$location, r$scale),
    class = "Intercept", resp = resp
  )
  r <- prior_of(resp, "b_x")
  priors <- priors + set_prior(sprintf("normal(0, %.17g)", r$scale),
    class = "b", coef = "x", resp = resp
  )
}
priors <- priors +
  set_prior(sprintf("lkj(%g)", prior_of("", "cor")$df_or_eta), class = "cor") +
  set_prior(sprintf("lkj(%g)", prior_of("", "rescor")$df_or_eta), class = "rescor")

formula <- bf(mvbind(y1, y2) ~ x + (1 | p | gr(id, cov = A))) + set_rescor(TRUE)
if (nzchar(Sys.getenv("BRMS_CODE_ONLY"))) {
  cat(make_stancode(formula, data = d, data2 = list(A = A), prior = priors))
  quit(save = "no")
}
p0 <- proc.time()
fit <- brm(formula,
  data = d, data2 = list(A = A), prior = priors, chains = chains,
  iter = warmup + draws_per_chain, warmup = warmup, cores = 1, seed = 2026, refresh = 100,
  control = list(adapt_delta = adapt_delta), backend = "rstan", silent = 0,
  sample_file = file.path(Sys.getenv("TMPDIR", "/tmp"), "brms_multitrait_golden.csv")
)
dp <- proc.time() - p0
cpu_s <- sum(dp[c("user.self", "sys.self", "user.child", "sys.child")], na.rm = TRUE)
wall_s <- dp[["elapsed"]]
elapsed <- rstan::get_elapsed_time(fit$fit) # per chain: warm-up and sampling CPU s (clock())
saveRDS(fit, file.path(Sys.getenv("TMPDIR", "/tmp"), "brms_multitrait_golden_fit.rds"))

c_scale <- mean(diag(A)) - mean(A)
dr <- as_draws_df(fit)
dr <- mutate_variables(dr,
  sigma_g_y1 = sd_id__y1_Intercept, sigma_g_y2 = sd_id__y2_Intercept,
  r_g = cor_id__y1_Intercept__y2_Intercept,
  sigma_e_y1 = sigma_y1, sigma_e_y2 = sigma_y2, r_e = rescor__y1__y2,
  G_11 = sigma_g_y1^2, G_22 = sigma_g_y2^2, G_12 = r_g * sigma_g_y1 * sigma_g_y2,
  E_11 = sigma_e_y1^2, E_22 = sigma_e_y2^2, E_12 = r_e * sigma_e_y1 * sigma_e_y2,
  h2_y1 = c_scale * G_11 / (c_scale * G_11 + E_11),
  h2_y2 = c_scale * G_22 / (c_scale * G_22 + E_22)
)
vars <- c(
  "sigma_g_y1", "sigma_g_y2", "r_g", "sigma_e_y1", "sigma_e_y2", "r_e", "h2_y1", "h2_y2",
  "G_11", "G_22", "G_12", "E_11", "E_22", "E_12",
  "b_y1_Intercept", "b_y1_x", "b_y2_Intercept", "b_y2_x"
)
summ <- summarise_draws(
  subset_draws(dr, variable = vars),
  mean = mean, sd = sd,
  q2.5 = function(v) quantile(v, 0.025, names = FALSE),
  q97.5 = function(v) quantile(v, 0.975, names = FALSE),
  mcse_mean = mcse_mean, ess_bulk = ess_bulk, ess_tail = ess_tail, rhat = rhat
)
posterior_summary <- lapply(split(summ, summ$variable), function(r) {
  as.list(r[, c("mean", "sd", "q2.5", "q97.5", "mcse_mean", "ess_bulk", "ess_tail", "rhat")])
})[vars]
np <- nuts_params(fit)
value_of <- function(name) np$Value[np$Parameter == name]
out <- list(
  description = paste(
    "brms bf(mvbind(y1, y2) ~ x + (1 | p | gr(id, cov = A))) + set_rescor(TRUE) with",
    "bayeslmm's default multi-trait priors, on data.csv / A.csv",
    "(tests/golden/brms_multitrait/brms_multitrait.R)"
  ),
  software = list(
    R = R.version.string, brms = as.character(packageVersion("brms")),
    rstan = as.character(packageVersion("rstan")),
    StanHeaders = as.character(packageVersion("StanHeaders")),
    posterior = as.character(packageVersion("posterior"))
  ),
  sampler = list(
    chains = chains, warmup = warmup, draws_per_chain = draws_per_chain, seed = 2026,
    adapt_delta = adapt_delta, divergent = sum(value_of("divergent__")),
    max_treedepth_hits = sum(value_of("treedepth__") >= 10),
    mean_leapfrog = mean(value_of("n_leapfrog__")),
    brm_cpu_s = cpu_s, brm_wall_s = wall_s,
    chain_warmup_cpu_s = unname(elapsed[, "warmup"]),
    chain_sample_cpu_s = unname(elapsed[, "sample"])
  ),
  kinship_scale = c_scale,
  priors = as.data.frame(prior_summary(fit))[, c("prior", "class", "coef", "group", "resp")],
  posterior = posterior_summary
)
write_json(out, file.path(dir, "brms_multitrait.json"),
  auto_unbox = TRUE, digits = NA, pretty = TRUE
)
print(summ, n = 50)
cat(sprintf(
  "brm() %.1f CPU s, %.1f wall s; divergent %d; mean leapfrog %.1f\n", cpu_s, wall_s,
  out$sampler$divergent, out$sampler$mean_leapfrog
))
