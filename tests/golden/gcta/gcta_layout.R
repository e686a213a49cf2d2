# GCTA binary GRM layout, checked from R (tests/test_io.py::test_gcta_layout_against_r).
#
# Run from the repository root:   Rscript tests/golden/gcta/gcta_layout.R
# Reads K.csv (a small GRM) and py_written.grm.* (written by bayeslmm.io.write_gcta_grm), and
# writes, next to this script:
#   r_written.grm.bin/.grm.id/.grm.N.bin  K in GCTA's layout, written here with writeBin
#                                         (N[i, j] = 400 + (i - 1) + (j - 1), 1-based)
#   r_read_py.json                        py_written.grm.* read by ReadGRMBin (as given in the
#                                         GCTA documentation): diag, off, id, N
suppressPackageStartupMessages(library(jsonlite))

args <- commandArgs(trailingOnly = FALSE)
script <- sub("--file=", "", args[grep("--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else "tests/golden/gcta"

# From the GCTA documentation (section on the GRM file format).
ReadGRMBin <- function(prefix, AllN = F, size = 4) {
  sum_i <- function(i) {
    return(sum(1:i))
  }
  BinFileName <- paste(prefix, ".grm.bin", sep = "")
  NFileName <- paste(prefix, ".grm.N.bin", sep = "")
  IDFileName <- paste(prefix, ".grm.id", sep = "")
  id <- read.table(IDFileName)
  n <- dim(id)[1]
  BinFile <- file(BinFileName, "rb")
  grm <- readBin(BinFile, n = n * (n + 1) / 2, what = numeric(0), size = size)
  NFile <- file(NFileName, "rb")
  if (AllN == T) {
    N <- readBin(NFile, n = n * (n + 1) / 2, what = numeric(0), size = size)
  } else {
    N <- readBin(NFile, n = 1, what = numeric(0), size = size)
  }
  i <- sapply(1:n, sum_i)
  close(BinFile)
  close(NFile)
  return(list(diag = grm[i], off = grm[-i], id = id, N = N))
}

K <- as.matrix(read.csv(file.path(here, "K.csv"), row.names = 1, check.names = FALSE,
                        colClasses = c("character", rep("numeric", 6))))
n <- nrow(K)
lower <- unlist(lapply(1:n, function(i) K[i, 1:i]))            # row by row, diagonal last
counts <- unlist(lapply(1:n, function(i) 400 + (i - 1) + (0:(i - 1))))
con <- file(file.path(here, "r_written.grm.bin"), "wb")
writeBin(lower, con, size = 4, endian = "little")
close(con)
con <- file(file.path(here, "r_written.grm.N.bin"), "wb")
writeBin(counts, con, size = 4, endian = "little")
close(con)
write.table(data.frame(rownames(K), rownames(K)), file.path(here, "r_written.grm.id"),
            sep = "\t", quote = FALSE, row.names = FALSE, col.names = FALSE)

py <- ReadGRMBin(file.path(here, "py_written"), AllN = TRUE)
out <- list(diag = py$diag, off = py$off, id = as.character(py$id[[2]]), N = py$N)
writeLines(toJSON(out, digits = NA), file.path(here, "r_read_py.json"))
