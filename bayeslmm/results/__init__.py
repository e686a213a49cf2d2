"""Results: heritability, variance proportions, scales, summaries, comparisons and plots."""
