"""``safeselect select CONFIG [key=value ...] [--out DIR]``: selection only; writes selection.jsonl and metrics.json."""

from __future__ import annotations

import argparse
import dataclasses

from safeselect.cli.common import add_config_args, add_progress_args, checked_config, resolve_out
from safeselect.inputs import check_out
from safeselect.pipeline.run import accelerator, select_only


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="run a selector only and write selection.jsonl")
    add_config_args(p)
    add_progress_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = checked_config(args, "select")
    # Selection only: `compare` entries do not apply, the one folder holds this selector's files.
    out = check_out(resolve_out(args, dataclasses.replace(cfg, compare=[])))
    stats = select_only(cfg, out, show_progress=not args.quiet)
    if accelerator(cfg).is_main_process:
        for k, v in stats.items():
            print(f"{k}: {v}")
    return 0
