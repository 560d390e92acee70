"""``safeselect report DIR``: rebuild results.csv, report.md and plots/*.png of an ablation folder from its files."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild the tables and plots of an ablation folder")
    p.add_argument("dir", metavar="DIR", help="the --out folder of `safeselect ablate`")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from safeselect.errors import UserError
    from safeselect.experiments.report import build_report, collect

    out = Path(args.dir)
    if not out.is_dir():
        raise UserError(f"not a folder: {out}")
    path = build_report(out, plots=not args.no_plots)
    _, grid, rows = collect(out)
    status = {r["run_id"]: r["status"] for r in rows}
    complete = sum(s == "complete" for s in status.values())
    print(f"{complete} of {len(grid.runs)} runs complete; wrote {out / 'results.csv'}, {path}"
          + ("" if args.no_plots else f", {out / 'plots'}/"))
    return 0
