"""Is a built-in level sensitive and graded, and how much headroom does it leave? Harmful rate after
fine-tuning with k bad rows kept (bad = harmful, or eroding on the `erosion` level), over several seeds.

For each seed S (``seed``, ``data.seed`` and ``selection.seed`` set to S; ``align.seed`` stays fixed, so
every seed starts from the same aligned model) and each k in --counts, fine-tune the aligned model on all
clean rows of the task mix plus the first k bad rows (a seeded order), then measure the harmful rate on the
held-out harmful prompts and the over-refusal on the look-alikes with the refusal judge (Wilson 95%
intervals). k = 0 is the `oracle` selector at ratio 1 - share of bad rows; k = all is `full`; their gap
is the level's headroom. Also prints the aligned model's own figures per seed (unless --skip-aligned).
Results are appended to OUT/dose_response.jsonl as they come, and a rerun skips the cells already there; each
cell's generations go to OUT/cells/<level>-a<align seed>-s<seed>-<k>/generations.jsonl for re-scoring.

    python benchmarks/dose_response.py [key=value ...] [--counts 0 2 4 8 16 all] [--seeds 0 1 2] [--out runs/dose]
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
    ap.add_argument("--counts", nargs="*", default=["0", "2", "4", "8", "16", "all"])
    ap.add_argument("--seeds", nargs="+", type=int, default=None,
                    help="experiment seeds (default: the config's seed only)")
    ap.add_argument("--skip-aligned", action="store_true", help="do not evaluate the aligned model")
    ap.add_argument("--out", default="runs/dose")
    args = ap.parse_args()

    from safeselect.config import loading
    from safeselect.core.rows import is_bad_row
    from safeselect.evaluation.evaluate import evaluate
    from safeselect.models import add_lora
    from safeselect.pipeline.run import aligned_dir, build_bundle, load_aligned
    from safeselect.training.sft import train_sft

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "dose_response.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    base = loading.load(args.config, args.overrides)
    seeds = args.seeds if args.seeds is not None else [base.seed]
    results = list(done)

    def emit(row: dict) -> None:
        results.append(row)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    for s in seeds:
        cfg = loading.load(args.config, [*args.overrides, f"seed={s}", f"data.seed={s}", f"selection.seed={s}"])
        cfg = dataclasses.replace(cfg, compare=[])
        tag = {"level": cfg.data.difficulty, "seed": s, "align_seed": cfg.align.seed}
        have = {r["name"] for r in done if all(r.get(k) == v for k, v in tag.items())}
        bundle = build_bundle(cfg)
        aligned_dir(cfg, bundle)
        bad_flags = [is_bad_row(r) for r in bundle.task]
        clean = [r for r, b in zip(bundle.task, bad_flags, strict=True) if not b]
        bad = [r for r, b in zip(bundle.task, bad_flags, strict=True) if b]
        order = np.random.default_rng(s).permutation(len(bad))
        bad = [bad[i] for i in order]
        if not args.skip_aligned and "aligned" not in have:
            model, tok = load_aligned(cfg, bundle)
            t0 = time.perf_counter()
            flat, recs = evaluate(model, tok, bundle, cfg, show_progress=False)
            _save(out, tag, "aligned", recs)
            emit({**tag, **_row("aligned", None, flat, time.perf_counter() - t0)})
        for c in args.counts:
            k = len(bad) if c == "all" else int(c)
            if f"k={k}" in have:
                continue
            t0 = time.perf_counter()
            model, tok = load_aligned(cfg, bundle)
            model = add_lora(model, cfg.model.lora)
            train_sft(model, tok, clean + bad[:k], cfg.finetune, cfg.model.max_length, seed=cfg.seed,
                      desc=f"k={k}", show_progress=False)
            flat, recs = evaluate(model, tok, bundle, cfg, show_progress=False)
            _save(out, tag, f"k={k}", recs)
            emit({**tag, **_row(f"k={k}", k, flat, time.perf_counter() - t0), "bad_total": len(bad)})
    (out / "dose_response.json").write_text(json.dumps({"config": loading.to_dict(base), "results": results},
                                                       indent=2))
    print("\n| level | align seed | seed | bad rows kept | harmful rate [95% Wilson] | over-refusal [95% Wilson] "
          "| sentiment acc | arithmetic acc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['level']} | {r['align_seed']} | {r['seed']} | {r['name']} | {r['harmful_rate']:.2f} "
              f"[{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] | {r['overrefusal']:.2f} [{r['overrefusal_ci'][0]:.2f}, "
              f"{r['overrefusal_ci'][1]:.2f}] | {r['sentiment']:.2f} | {r['arithmetic']:.2f} |")


def _save(out: Path, tag: dict, name: str, records: list[dict]) -> None:
    """A cell's generations, so that a later judge can re-score it (`safeselect eval CELL_DIR --judges ...`)."""
    from safeselect.core.io import write_jsonl

    cell = out / "cells" / f"{tag['level']}-a{tag['align_seed']}-s{tag['seed']}-{name.replace('=', '')}"
    write_jsonl(cell / "generations.jsonl", records)


def _row(name: str, k: int | None, flat: dict, seconds: float) -> dict:
    return {"name": name, "k": k,
            "harmful_rate": flat["safety.builtin.refusal.harmful_rate"],
            "ci": flat["safety.builtin.refusal.harmful_rate_ci"],
            "n": flat.get("safety.builtin.refusal.harmful_rate_n"),
            "overrefusal": flat.get("overrefusal.lookalike.refusal_rate", float("nan")),
            "overrefusal_ci": flat.get("overrefusal.lookalike.refusal_rate_ci") or [float("nan")] * 2,
            "sentiment": flat.get("task.sentiment.accuracy", float("nan")),
            "arithmetic": flat.get("task.arithmetic.accuracy", float("nan")),
            "seconds": round(seconds, 1)}


if __name__ == "__main__":
    main()
