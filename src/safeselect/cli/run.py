"""``safeselect run CONFIG [key=value ...] [--out DIR]``: align -> select -> fine-tune -> evaluate, one table."""

from __future__ import annotations

import argparse

from safeselect.cli.common import (
    add_config_args,
    add_progress_args,
    add_worker_args,
    check_worker_args,
    checked_config,
    resolve_out,
)
from safeselect.inputs import check_out
from safeselect.pipeline.run import accelerator, run_compare, run_experiment, run_seeds
from safeselect.reporting.runs import table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="one experiment end to end (or several methods with `compare`)")
    add_config_args(p)
    add_progress_args(p)
    add_worker_args(p, "with `compare` or `seeds`: (seed, method) cells")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_worker_args(args)
    cfg = checked_config(args, "run")
    out = check_out(resolve_out(args, cfg))
    if cfg.seeds:
        print(run_seeds(cfg, out, show_progress=not args.quiet, workers=args.workers, threads=args.threads))
        print(f"\nrun files in {out}/s<seed>/<method>/; the table over seeds in {out}/report.md")
        return 0
    if cfg.compare:
        results = run_compare(cfg, out, show_progress=not args.quiet, workers=args.workers, threads=args.threads)
    else:
        results = {cfg.selection.method: run_experiment(cfg, out, show_progress=not args.quiet)}
    if accelerator(cfg).is_main_process:  # one table under a multi-process launch
        print(table(results))
        print(f"\nrun files in {out}/ (report.md, metrics.json, generations.jsonl, selection.jsonl, model/)")
    return 0
