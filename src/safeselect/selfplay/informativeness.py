"""How informative a prompt is for the solver, from the rewards of its K sampled responses (eva step 1).

``rewards`` is a (prompts x K) array; a reward the reward function could not
give is NaN and is left out of that prompt's statistics. Metrics:

- ``gap`` = max - min (the default), ``maxmean`` = max - mean,
  ``variance`` (population variance, ddof 0), ``mean``;
- ``gap_inverse`` and ``mean_inverse`` rank in reverse order (a small gap, a
  low mean first). They are the negated values rather than 1/x: negation
  never divides by zero, and after min-max normalisation it gives weight
  1 - normalised(x), which is how the official eva code turns the mean
  into "sample where the solver is weak".

A prompt with no finite reward has informativeness NaN; the samplers give it
weight 0 and draw it last.
"""

from __future__ import annotations

import numpy as np

from safeselect.errors import UserError, suggest

METRICS = ("gap", "maxmean", "variance", "mean", "gap_inverse", "mean_inverse")


def informativeness(rewards: np.ndarray, metric: str = "gap") -> np.ndarray:
    """One value per prompt (row of ``rewards``); NaN where a row has no finite reward."""
    if metric not in METRICS:
        raise UserError(f"unknown informativeness metric '{metric}'{suggest(metric, list(METRICS))}")
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards must be (prompts x K), got shape {r.shape}")
    out = np.full(r.shape[0], np.nan)
    valid = np.isfinite(r)
    for i in range(r.shape[0]):
        x = r[i][valid[i]]
        if x.size == 0:
            continue
        if metric in ("gap", "gap_inverse"):
            v = float(x.max() - x.min())
        elif metric == "maxmean":
            v = float(x.max() - x.mean())
        elif metric == "variance":
            v = float(x.var())
        else:  # mean, mean_inverse
            v = float(x.mean())
        out[i] = -v if metric.endswith("_inverse") else v
    return out


def normalised_weights(values: np.ndarray) -> np.ndarray:
    """Min-max normalised informativeness in [0, 1] (sampling weights before they are made to sum to 1).

    Guards: all finite values equal (or a single prompt) -> every finite prompt gets weight 1 (uniform);
    NaN (no reward) -> 0.
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.zeros_like(v)
    fin = np.isfinite(v)
    if not fin.any():
        return w
    lo, hi = v[fin].min(), v[fin].max()
    if hi - lo <= 0:  # all equal: min-max would divide by zero; nothing distinguishes the prompts
        w[fin] = 1.0
        return w
    w[fin] = (v[fin] - lo) / (hi - lo)
    return w


def stats(rewards: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Summary written to iter_<k>/informativeness.json."""
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    fin = v[np.isfinite(v)]
    rf = r[np.isfinite(r)]

    def q(a: np.ndarray, p: float) -> float:
        return float(np.quantile(a, p)) if a.size else float("nan")

    return {
        "prompts": int(r.shape[0]),
        "responses_per_prompt": int(r.shape[1]) if r.ndim == 2 else 0,
        "rewards_scored": int(rf.size),
        "rewards_missing": int(r.size - rf.size),
        "reward_mean": float(rf.mean()) if rf.size else float("nan"),
        "reward_std": float(rf.std()) if rf.size else float("nan"),
        "informativeness_mean": float(fin.mean()) if fin.size else float("nan"),
        "informativeness_min": float(fin.min()) if fin.size else float("nan"),
        "informativeness_median": q(fin, 0.5),
        "informativeness_max": float(fin.max()) if fin.size else float("nan"),
        "prompts_unscored": int(v.size - fin.size),
        # prompts whose K rewards are all equal: no preference pair can come out of them
        "prompts_all_equal": int(sum(1 for row in r if np.isfinite(row).sum() >= 1
                                     and np.nanmax(row) == np.nanmin(row))),
    }
