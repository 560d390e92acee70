"""Which prompts the creator evolves (eva step 2): weighted without replacement, greedy, or uniform.

``weighted`` draws without replacement with probability proportional to the
min-max normalised informativeness (successive draws: each draw picks among
the prompts not drawn yet, in proportion to their weights). Guard: when fewer
prompts have a non-zero weight than must be drawn, all of them are taken and
the rest are drawn uniformly from the zero-weight prompts, so the requested
count is always met.
"""

from __future__ import annotations

import math

import numpy as np

from safeselect.errors import UserError, suggest
from safeselect.selfplay.informativeness import normalised_weights

SAMPLERS = ("weighted", "greedy", "uniform")


def n_to_sample(n_prompts: int, ratio: float) -> int:
    """floor(ratio * n), at least 1 when ratio > 0 and there is a prompt, at most n."""
    if n_prompts <= 0 or ratio <= 0:
        return 0
    return min(n_prompts, max(1, math.floor(ratio * n_prompts + 1e-9)))


def sample(values: np.ndarray, n: int, method: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Indices of ``n`` prompts, and info (how many came from the zero-weight fallback)."""
    v = np.asarray(values, dtype=np.float64)
    total = v.shape[0]
    n = min(n, total)
    info = {"method": method, "requested": int(n), "fallback_uniform": 0}
    if n <= 0:
        return np.zeros(0, dtype=np.int64), info
    if method == "uniform":
        return rng.choice(total, size=n, replace=False), info
    if method == "greedy":
        # highest informativeness first; NaN (unscored) last; stable so ties keep pool order
        key = np.where(np.isfinite(v), v, -np.inf)
        return np.argsort(-key, kind="stable")[:n], info
    if method != "weighted":
        raise UserError(f"unknown sampler '{method}'{suggest(method, list(SAMPLERS))}")
    w = normalised_weights(v)
    nonzero = np.flatnonzero(w > 0)
    if nonzero.size <= n:
        # guard: not enough prompts with a chance to be drawn; take them all, fill uniformly from the rest
        zero = np.flatnonzero(w <= 0)
        fill = rng.choice(zero, size=n - nonzero.size, replace=False) if n > nonzero.size else zero[:0]
        info["fallback_uniform"] = int(fill.size)
        picked = np.concatenate([rng.permutation(nonzero), fill]).astype(np.int64)
        return picked, info
    p = w / w.sum()
    return rng.choice(total, size=n, replace=False, p=p), info


def inclusion_probabilities(weights: np.ndarray, n: int) -> np.ndarray:
    """Exact probability that each item is among ``n`` successive weighted draws without replacement.

    Enumerates the draw sequences, so only for small pools (tests and checks).
    """
    w = np.asarray(weights, dtype=np.float64)
    out = np.zeros_like(w)

    def walk(taken: tuple[int, ...], prob: float) -> None:
        if len(taken) == n:
            for i in taken:
                out[i] += prob
            return
        free = [i for i in range(w.size) if i not in taken]
        z = sum(w[i] for i in free)
        for i in free:
            if w[i] > 0:
                walk(taken + (i,), prob * w[i] / z)

    walk((), 1.0)
    return out
