"""Cells per hour: one worker with 2 torch threads against two workers with 1 thread.

Each cell is ``safeselect run quickstart`` (random selection, one fine-tune, one evaluation) in a fresh
process, as the ablation runner runs it: on tiny-llama by default, or with ``--smollm2`` the quickstart's own
cell on SmolLM2-135M (the aligned model from the usual cache, trained first if it is missing), with any
further ``key=value`` overrides (e.g. ``finetune.mixed_precision=bf16``). Every timed cell does the same work
(alignment and conversions cached beforehand). Both layouts run ``--cells`` cells back to back in the same
invocation; what the ablation runner's ``plan_workers`` rule picks follows from the faster one.

    python benchmarks/bench_workers.py [--cells 4] [--smollm2] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

TINY = ["model.name=tiny-llama", "model.max_length=96", "data.n_task=24", "data.n_eval_harmful=6",
        "data.n_eval_overrefusal=4", "data.n_eval_task=6", "align.n_refusals=8", "align.n_benign=8",
        "align.train.epochs=1", "finetune.epochs=1", "eval.max_new_tokens=6", "eval.bootstrap=50",
        "data.safety_ref.n=12", "compare=[]", "selection.method=random"]


REAL = ["compare=[]", "selection.method=random"]


def cell(out: str, seed: int, threads: int, cache: str | None, overrides: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **({"SAFESELECT_CACHE": cache} if cache else {})}
    subprocess.run([sys.executable, "-m", "safeselect", "run", "quickstart", *overrides, f"seed={seed}",
                    "--out", out, "--quiet"], env=env, check=True, capture_output=True)


def layout(workers: int, threads: int, cells: int, root: str, cache: str | None, overrides: list[str]) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(lambda i: cell(f"{root}/w{workers}t{threads}-{i}", 100 + i, threads, cache, overrides),
                    range(cells)))
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=4)
    ap.add_argument("--smollm2", action="store_true", help="the quickstart's SmolLM2 cell, not a tiny-llama one")
    ap.add_argument("overrides", nargs="*", help="config overrides of every cell, e.g. finetune.mixed_precision=bf16")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-workers-")
    # tiny cells use a cache of their own; SmolLM2 cells the usual one (its converted model and aligned model)
    cache = None if args.smollm2 else f"{root}/cache"
    overrides = (REAL if args.smollm2 else TINY) + args.overrides
    # Warm-up, untimed: the alignment (and, for SmolLM2, the model conversion) is cached here.
    cell(f"{root}/warm", 99, 1, cache, overrides)
    load0 = os.getloadavg()[0]
    a = layout(1, 2, args.cells, root, cache, overrides)
    b = layout(2, 1, args.cells, root, cache, overrides)
    print(f"| layout | wall s for {args.cells} cells | cells per hour |\n|---|---|---|")
    print(f"| 1 worker x 2 threads | {a:.1f} | {3600 * args.cells / a:.0f} |")
    print(f"| 2 workers x 1 thread | {b:.1f} | {3600 * args.cells / b:.0f} |")
    print(f"\n2 x 1 / 1 x 2 throughput: {a / b:.2f}x. Load average (1 min) {load0:.1f} -> {os.getloadavg()[0]:.1f}. "
          f"Command: `python benchmarks/bench_workers.py --cells {args.cells}"
          f"{' --smollm2' if args.smollm2 else ''}{''.join(' ' + o for o in args.overrides)}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
