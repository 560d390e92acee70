"""Preference pairs from K scored responses (eva step 5) and the original / evolved mix (eva step 4).

chosen = the best and rejected = the worst of a prompt's K responses. A prompt
gives no pair when its best and worst rewards are equal (a tie carries no
preference), when fewer than two rewards are finite, or when the best and worst
texts are identical.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def build_pairs(prompt_ids: list[str], prompts: list[str], responses: list[list[str]],
                rewards: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One pair per prompt with a strict best > worst; counts of what was dropped and why."""
    r = np.asarray(rewards, dtype=np.float64)
    if not (len(prompt_ids) == len(prompts) == len(responses) == r.shape[0]):
        raise ValueError("prompt_ids, prompts, responses and rewards must have one entry per prompt")
    pairs: list[dict[str, Any]] = []
    counts = {"prompts": len(prompts), "pairs": 0, "ties": 0, "unscored": 0, "same_text": 0}
    for i, pid in enumerate(prompt_ids):
        row = r[i]
        fin = np.flatnonzero(np.isfinite(row))
        if fin.size < 2:
            counts["unscored"] += 1
            continue
        # first occurrence of the max / min among the finite rewards (deterministic)
        best = int(fin[np.argmax(row[fin])])
        worst = int(fin[np.argmin(row[fin])])
        if not row[best] > row[worst]:
            counts["ties"] += 1
            continue
        if responses[i][best] == responses[i][worst]:
            counts["same_text"] += 1
            continue
        pairs.append({"prompt_id": pid, "prompt": prompts[i], "chosen": responses[i][best],
                      "rejected": responses[i][worst], "chosen_reward": float(row[best]),
                      "rejected_reward": float(row[worst]), "margin": float(row[best] - row[worst])})
    counts["pairs"] = len(pairs)
    return pairs, counts


def mix_counts(n_original: int, n_evolved: int, mix_ratio: float) -> tuple[int, int]:
    """(original, evolved) pair counts so that original / total = ``mix_ratio`` as closely as the supply allows.

    Uses every evolved pair when enough original pairs exist; otherwise every original pair and as many
    evolved pairs as keep the ratio. ``mix_ratio`` 0 -> evolved only, 1 -> original only.
    """
    if mix_ratio >= 1:
        return n_original, 0
    if mix_ratio <= 0:
        return 0, n_evolved
    want_orig = round(mix_ratio * n_evolved / (1 - mix_ratio))
    if want_orig <= n_original:
        return want_orig, n_evolved
    evo = min(n_evolved, math.floor(n_original * (1 - mix_ratio) / mix_ratio + 1e-9))
    return n_original, evo


def mix_pairs(original: list[dict[str, Any]], evolved: list[dict[str, Any]], mix_ratio: float,
              rng: np.random.Generator) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The solver's training pairs: a seeded subset of each side in the ``mix_counts`` proportions, shuffled.

    Guard: no evolved pair at all (every evolution cleaned away or tied) -> train on the original pairs and
    say so (``fallback_original``), rather than skip the solver step.
    """
    info: dict[str, Any] = {"mix_ratio": mix_ratio, "available_original": len(original),
                            "available_evolved": len(evolved), "fallback_original": False}
    if not evolved and mix_ratio < 1:
        n_o, n_e = len(original), 0
        info["fallback_original"] = True
    else:
        n_o, n_e = mix_counts(len(original), len(evolved), mix_ratio)
    pick_o = [original[i] for i in sorted(rng.choice(len(original), size=n_o, replace=False))] if n_o else []
    pick_e = [evolved[i] for i in sorted(rng.choice(len(evolved), size=n_e, replace=False))] if n_e else []
    out = [dict(p, source="original") for p in pick_o] + [dict(p, source="evolved") for p in pick_e]
    order = rng.permutation(len(out))
    info.update(original=n_o, evolved=n_e)
    return [out[i] for i in order], info
