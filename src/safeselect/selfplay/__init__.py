"""eva: asymmetric self-play (METHODS.md section 5): informativeness, sampling, evolution, pairs, the loop."""
