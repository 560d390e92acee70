"""``safeselect report DIR``: rebuild the tables of a results folder from its files.

An ablation folder (``safeselect ablate --out``): results.csv, report.md and plots/*.png.
A folder of runs (``safeselect run`` with ``compare``, plus any run later written into it with
``--out DIR/<name>``): report.md with one row per finished run.
"""

from __future__ import annotations

import argparse

from safeselect.errors import UserError
from safeselect.reporting.ablation import build_report, collect
from safeselect.reporting.runs import write_runs_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild the tables and plots of an ablation folder or a folder of runs")
    p.add_argument("dir", metavar="DIR", help="the --out folder of `safeselect ablate`, or of `safeselect run`")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--no-win-rates", action="store_true", help="folder of runs: leave out the win-rate columns")
    p.add_argument("--baseline", default=None,
                   help="the row every other row is paired against (a method of a folder of runs, or a replacement "
                        "label of an ablation; default: the runs' `baseline` setting / each ablation's first "
                        "replacement)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.dir)
    if not out.is_dir():
        raise UserError(f"not a folder: {out}")
    if not (out / "plan.json").exists():
        print(write_runs_report(out, win_rates=not args.no_win_rates, baseline=args.baseline))
        return 0
    path = build_report(out, plots=not args.no_plots, baseline=args.baseline)
    _, grid, rows = collect(out)
    status = {r["run_id"]: r["status"] for r in rows}
    complete = sum(s == "complete" for s in status.values())
    print(f"{complete} of {len(grid.runs)} runs complete; wrote {out / 'results.csv'}, {path}"
          + ("" if args.no_plots else f", {out / 'plots'}/"))
    return 0
