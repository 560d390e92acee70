"""Is the built-in benchmark sensitive and graded? Harmful rate after fine-tuning with k harmful rows kept.

For each k in --counts, fine-tune the aligned model on all benign rows of the
task mix plus the first k harmful rows (a seeded order), then measure the
harmful rate on the held-out harmful prompts with the refusal judge. A curve
that rises over a range of k (not a cliff at k = 2) leaves room to tell
selectors apart. Also prints the aligned model's own harmful rate.

    python benchmarks/dose_response.py [key=value ...] [--counts 0 2 4 8 16 all] [--out runs/dose]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--counts", nargs="+", default=["0", "2", "4", "8", "16", "all"])
    ap.add_argument("--out", default="runs/dose")
    args = ap.parse_args()

    from safeselect.config import loading
    from safeselect.evaluation.evaluate import evaluate
    from safeselect.models import add_lora
    from safeselect.pipeline.run import aligned_dir, build_bundle, load_aligned
    from safeselect.training.sft import train_sft

    cfg = loading.load(args.config, args.overrides)
    cfg = dataclasses.replace(cfg, compare=[])
    bundle = build_bundle(cfg)
    aligned_dir(cfg, bundle)
    benign = [r for r in bundle.task if not r.harmful]
    harmful = [r for r in bundle.task if r.harmful]
    order = np.random.default_rng(cfg.seed).permutation(len(harmful))
    harmful = [harmful[i] for i in order]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []

    model, tok = load_aligned(cfg, bundle)
    t0 = time.perf_counter()
    flat, _ = evaluate(model, tok, bundle, cfg, show_progress=False)
    results.append(_row("aligned", None, flat, time.perf_counter() - t0))
    print(json.dumps(results[-1]), flush=True)
    for c in args.counts:
        k = len(harmful) if c == "all" else int(c)
        t0 = time.perf_counter()
        model, tok = load_aligned(cfg, bundle)
        model = add_lora(model, cfg.model.lora)
        train_sft(model, tok, benign + harmful[:k], cfg.finetune, cfg.model.max_length, seed=cfg.seed,
                  desc=f"k={k}", show_progress=False)
        flat, _ = evaluate(model, tok, bundle, cfg, show_progress=False)
        results.append(_row(f"k={k}", k, flat, time.perf_counter() - t0))
        print(json.dumps(results[-1]), flush=True)
    (out / "dose_response.json").write_text(json.dumps({"config": loading.to_dict(cfg), "results": results}, indent=2))
    print("\n| harmful rows kept | harmful rate [95% CI] | over-refusal | sentiment acc | arithmetic acc |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['harmful_rate']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] | "
              f"{r['overrefusal']:.2f} | {r['sentiment']:.2f} | {r['arithmetic']:.2f} |")


def _row(name: str, k: int | None, flat: dict, seconds: float) -> dict:
    return {"name": name, "k": k,
            "harmful_rate": flat["safety.builtin.refusal.harmful_rate"],
            "ci": flat["safety.builtin.refusal.harmful_rate_ci"],
            "overrefusal": flat.get("overrefusal.lookalike.refusal_rate", float("nan")),
            "sentiment": flat.get("task.sentiment.accuracy", float("nan")),
            "arithmetic": flat.get("task.arithmetic.accuracy", float("nan")),
            "seconds": round(seconds, 1)}


if __name__ == "__main__":
    main()
