"""Results as tables, comparisons, text and rich rendering, plots and intervals."""
