"""SEAL's penalty schedules: gamma per epoch (or per step) and the model-step mixing weight lambda.

METHODS.md section 2: ``constant`` (gamma = value), ``linear`` (init + step * e),
``exponential`` (init * rate ** e). With ``every: epoch`` the curve advances once
per epoch (the official code's "upper-level weight" decay); with ``every: step``
the same curve is read at the fractional epoch ``global_step / steps_per_epoch``,
so a one-epoch run still sees gamma rise. Pure functions, no torch.
"""

from __future__ import annotations

from safeselect.config.schema import GammaConfig
from safeselect.errors import UserError


def gamma_curve(g: GammaConfig, t: float) -> float:
    """The schedule's curve at (possibly fractional) epoch position ``t >= 0``."""
    if t < 0:
        raise ValueError(f"epoch position must be >= 0, got {t}")
    if g.schedule == "constant":
        return float(g.value)
    if g.schedule == "linear":
        return float(g.init + g.step * t)
    if g.schedule == "exponential":
        if g.init <= 0:
            raise UserError("'selection.seal.gamma.init' must be > 0 for the exponential schedule")
        return float(g.init * g.rate ** t)
    raise UserError(f"unknown gamma schedule '{g.schedule}' (choose constant, linear or exponential)")


def gamma_at(g: GammaConfig, epoch: int, step_in_epoch: int = 0, steps_per_epoch: int = 1) -> float:
    """Gamma for optimiser step ``step_in_epoch`` (0-based) of epoch ``epoch`` (0-based)."""
    if g.every == "epoch":
        return gamma_curve(g, float(epoch))
    if g.every == "step":
        if steps_per_epoch < 1:
            raise ValueError("steps_per_epoch must be >= 1")
        return gamma_curve(g, epoch + step_in_epoch / steps_per_epoch)
    raise UserError(f"unknown gamma.every '{g.every}' (choose epoch or step)")


def mixing_weight(gamma: float) -> float:
    """lambda = 1 / (1 + gamma): the safe-loss share of the normalised penalty gradient.

    The penalty objective L_safe + gamma * L_ft, divided by (1 + gamma), is
    lambda * L_safe + (1 - lambda) * L_ft; gamma = 0 trains on the safe set only.
    """
    if gamma < 0:
        raise UserError(f"gamma must be >= 0, got {gamma}")
    return 1.0 / (1.0 + gamma)


def schedule_table(g: GammaConfig, epochs: int, steps_per_epoch: int) -> list[list[float]]:
    """Gamma of every step, one list per epoch (what a run will use; written to selector.json)."""
    return [[gamma_at(g, e, s, steps_per_epoch) for s in range(steps_per_epoch)] for e in range(epochs)]
