"""Experiments: the single-run pipeline, and ablation plans (parse, map, expand, run, report, plot)."""
