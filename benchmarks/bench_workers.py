"""Cells per hour: one worker with 2 torch threads against two workers with 1 thread, on tiny cells.

Each cell is ``safeselect run quickstart`` on tiny-llama (random selection, one fine-tune, one
evaluation) in a fresh process, as the ablation runner runs it. The alignment is trained once
first (shared cache), so every timed cell does the same work. Both layouts run ``--cells`` cells
back to back in the same invocation; what the ablation runner's ``plan_workers`` rule picks follows
from the faster one.

    python benchmarks/bench_workers.py [--cells 4]
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


def cell(out: str, seed: int, threads: int, cache: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SAFESELECT_CACHE": cache}
    subprocess.run([sys.executable, "-m", "safeselect", "run", "quickstart", *TINY, f"seed={seed}",
                    "--out", out, "--quiet"], env=env, check=True, capture_output=True)


def layout(workers: int, threads: int, cells: int, root: str, cache: str) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(lambda i: cell(f"{root}/w{workers}t{threads}-{i}", 100 + i, threads, cache), range(cells)))
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=4)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-workers-")
    cache = f"{root}/cache"
    # Warm-up, untimed: each seed's alignment (its cache key includes the seed) is trained once here.
    for i in range(args.cells):
        cell(f"{root}/warm-{i}", 100 + i, 1, cache)
    load0 = os.getloadavg()[0]
    a = layout(1, 2, args.cells, root, cache)
    b = layout(2, 1, args.cells, root, cache)
    print(f"| layout | wall s for {args.cells} cells | cells per hour |\n|---|---|---|")
    print(f"| 1 worker x 2 threads | {a:.1f} | {3600 * args.cells / a:.0f} |")
    print(f"| 2 workers x 1 thread | {b:.1f} | {3600 * args.cells / b:.0f} |")
    print(f"\n2 x 1 / 1 x 2 throughput: {a / b:.2f}x. Load average (1 min) {load0:.1f} -> {os.getloadavg()[0]:.1f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
