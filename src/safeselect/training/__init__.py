"""Training: chat encoding with response-only masks, per-row losses, the SFT loop, per-example gradients."""
