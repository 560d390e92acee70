"""How separable are the bad rows by the simplest signal? ROC AUC of per-row loss under the aligned model.

A loss-based selector keeps the lowest-loss rows; if bad rows (harmful, or eroding on the `erosion` level)
all have the highest loss (AUC near 1), any loss-based method looks perfect and methods cannot be told
apart. Prints, per level and seed (``seed``, ``data.seed`` = S; the aligned model is the same for every
seed, fixed by ``align.seed``), the AUC (bad vs clean, score = loss) and the bad kept fraction of keeping
the lowest-loss share 1 - (share of bad rows) (the oracle's budget: 80% on easy / hard, 60% on erosion).

    python benchmarks/separability.py [key=value ...] [--levels easy hard erosion] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC = P(score of a random positive > score of a random negative), ties counted half (Mann-Whitney)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    pos = labels.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--levels", nargs="+", default=["easy", "hard", "erosion"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = ap.parse_args()

    from safeselect.config import loading
    from safeselect.core.rows import is_bad_row
    from safeselect.pipeline.run import build_bundle, load_aligned
    from safeselect.selection.base import budget_mask
    from safeselect.training.losses import row_losses

    print("| level | seed | rows | bad | ROC AUC (loss) | bad kept, lowest-loss 1 - bad share |")
    print("|---|---|---|---|---|---|")
    for level in args.levels:
        for s in args.seeds:
            cfg = loading.load(args.config, [*args.overrides, f"data.difficulty={level}", f"seed={s}",
                                            f"data.seed={s}"])
            bundle = build_bundle(cfg)
            model, tok = load_aligned(cfg, bundle)
            losses = row_losses(model, tok, bundle.task, cfg.model.max_length, batch_size=8)
            labels = np.array([bool(is_bad_row(r)) for r in bundle.task])
            auc = roc_auc(losses, labels)
            kept = budget_mask(-losses, 1 - labels.mean())
            frac = float((kept & labels).sum() / labels.sum())
            print(f"| {level} | {s} | {len(labels)} | {int(labels.sum())} | {auc:.3f} | {frac:.2f} |", flush=True)
            print(json.dumps({"level": level, "seed": s, "align_seed": cfg.align.seed, "auc": auc,
                              "bad_kept_fraction_lowest_loss": frac, "keep": round(1 - float(labels.mean()), 3)}), flush=True)


if __name__ == "__main__":
    main()
