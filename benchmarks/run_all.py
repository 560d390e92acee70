"""`make bench`: every cost benchmark in sequence, each printing ratios against a baseline measured in the same run.

    python benchmarks/run_all.py            # DSIR vs the official package, SEAL and DualSelect cost vs plain SFT
    python benchmarks/run_all.py --quality  # also the benchmark sensitivity runs (dose-response, separability; slow)

Results go to stdout; docs/results.md records the latest figures with their commands.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
COST = ["bench_dsir.py", "bench_seal.py", "bench_dualselect.py"]
QUALITY = ["separability.py", "dose_response.py"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quality", action="store_true", help="also run the (slow) benchmark-sensitivity scripts")
    args = ap.parse_args()
    failed = []
    for script in COST + (QUALITY if args.quality else []):
        print(f"\n=== {script}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)]).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
