"""Data: rows with stable ids, loaders for real data sets, the built-in benchmark, mixing and splits."""
