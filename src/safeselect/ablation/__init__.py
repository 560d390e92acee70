"""Ablation plans: parse (YAML and markdown), map prose to keys, expand the grid, run."""
