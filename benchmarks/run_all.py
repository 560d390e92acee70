"""`make bench`: every cost benchmark in sequence, each printing ratios against a baseline measured in the same run.

    python benchmarks/run_all.py            # DSIR vs the official package, SEAL and DualSelect cost vs plain SFT
    python benchmarks/run_all.py --cell     # also one SmolLM2 cell stage by stage and its FLOP bound (one thread)
    python benchmarks/run_all.py --cell --demo  # and, in the cell's run, `make demo` cold with its table paired
    python benchmarks/run_all.py --quality  # also the benchmark sensitivity runs (dose-response, separability; slow)

Results go to stdout; docs/results.md records the latest figures with their commands.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
COST = ["bench_dsir.py", "bench_seal.py", "bench_dualselect.py"]
# The settings docs/results.md records; CPU time of one thread, as the tables there.
CELL = [["bench_cell.py", "--n-eval", "32", "--steps", "20"], ["bench_roofline.py", "--n-eval", "32", "--steps", "20"]]
QUALITY = ["separability.py", "dose_response.py"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", action="store_true", help="also time one SmolLM2 cell and its FLOP bound (about 15 min)")
    ap.add_argument("--demo", action="store_true", help="with --cell: bench_cell also times `make demo` cold "
                    "(bench_demo.py, about 20 more minutes)")
    ap.add_argument("--quality", action="store_true", help="also run the (slow) benchmark-sensitivity scripts")
    args = ap.parse_args()
    failed = []
    cell = [job + ["--demo-cold"] if args.demo and job[0] == "bench_cell.py" else job for job in CELL]
    jobs = [[s] for s in COST] + (cell if args.cell else []) + ([[s] for s in QUALITY] if args.quality else [])
    for script, *flags in jobs:
        print(f"\n=== {script} {' '.join(flags)}", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if [script, *flags] in cell else None
        if subprocess.run([sys.executable, str(HERE / script), *flags], env=env).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
