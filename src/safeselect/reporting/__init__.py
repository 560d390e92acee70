"""Reports: run and comparison tables, ablation tables, plots."""
