"""Harmful-ratio mixing and seeded, disjoint splits of row lists.

Both are pure functions of their inputs and a seed: the same call always gives
the same rows in the same order, so a run can be repeated exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from safeselect.core.rows import Row
from safeselect.errors import UserError


def rng(seed: int | str, stream: str = "") -> random.Random:
    """A seeded generator for one named stream; string seeding is stable across processes (no hash salt)."""
    return random.Random(f"safeselect:{seed}:{stream}")


def harmful_count(ratio: float, n: int) -> int:
    """The number of harmful rows in a mix of ``n`` rows at ``ratio``: ``round(ratio * n)`` (Python rounding)."""
    if not 0.0 <= ratio <= 1.0:
        raise UserError(f"harmful ratio {ratio} is out of range [0, 1]")
    if n < 0:
        raise UserError(f"mix size {n} must be >= 0")
    # ratio*n can land a hair off an integer (0.2*200 = 40.000000000000007); round() absorbs it.
    return int(round(ratio * n))


def mix(benign: Sequence[Row], harmful: Sequence[Row], ratio: float, n: int, seed: int | str = 0) -> list[Row]:
    """Draw ``round(ratio*n)`` harmful and ``n - that`` benign rows (without replacement) and shuffle them.

    Rows are taken in a seeded random order from each pool, so a smaller mix is
    not a prefix of a larger one's pools but is fully determined by the seed.
    Raises UserError if a pool is too small.
    """
    k = harmful_count(ratio, n)
    if k > len(harmful):
        raise UserError(f"mix needs {k} harmful rows (ratio {ratio} of {n}) but only {len(harmful)} are available")
    if n - k > len(benign):
        raise UserError(f"mix needs {n - k} benign rows but only {len(benign)} are available")
    r = rng(seed, "mix")
    picked = r.sample(list(harmful), k) + r.sample(list(benign), n - k)
    r.shuffle(picked)
    return picked


def split(rows: Sequence[Row], sizes: Sequence[int | float], seed: int | str = 0) -> list[list[Row]]:
    """Shuffle ``rows`` with ``seed`` and cut them into disjoint parts.

    ``sizes`` are counts (ints) or fractions (floats summing to at most 1; each
    part gets ``floor(f * len(rows))`` rows, and the last part takes the
    remainder when the fractions sum to 1). Parts never share a row.
    """
    n = len(rows)
    if not sizes:
        raise UserError("split needs at least one size")
    if all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        counts = [int(s) for s in sizes]
        if any(c < 0 for c in counts):
            raise UserError(f"split sizes must be >= 0, got {list(sizes)}")
        if sum(counts) > n:
            raise UserError(f"split sizes {list(sizes)} need {sum(counts)} rows but only {n} are available")
    else:
        fracs = [float(s) for s in sizes]
        if any(f < 0 for f in fracs) or sum(fracs) > 1.0 + 1e-9:
            raise UserError(f"split fractions {list(sizes)} must be >= 0 and sum to at most 1")
        counts = [int(math.floor(f * n + 1e-9)) for f in fracs]
        if abs(sum(fracs) - 1.0) <= 1e-9:
            counts[-1] = n - sum(counts[:-1])
    order = list(range(n))
    rng(seed, "split").shuffle(order)
    parts: list[list[Row]] = []
    start = 0
    for c in counts:
        parts.append([rows[i] for i in order[start:start + c]])
        start += c
    return parts
