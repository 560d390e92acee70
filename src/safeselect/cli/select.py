"""``safeselect select CONFIG [key=value ...] [--out DIR]``: selection only; writes selection.jsonl and metrics.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from safeselect.cli.common import add_config_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="run a selector only and write selection.jsonl")
    add_config_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="show the log: every training step's loss, skipped runs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from safeselect.cli.run import check_methods, default_out
    from safeselect.config import loading
    from safeselect.core.dotted import nest
    from safeselect.core.io import atomic_write_text, write_json, write_jsonl
    from safeselect.pipeline.run import CHECKPOINTS, aligned_dir, build_bundle, select
    from safeselect.selection.base import budget_stats
    from safeselect.training.checkpoint import clear

    cfg = loading.load(args.config, args.overrides)
    check_methods(cfg)
    out = Path(args.out) if args.out else default_out(args.config)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", loading.to_yaml(cfg))
    bundle = build_bundle(cfg)
    aligned_dir(cfg, bundle, show_progress=not args.quiet)
    selection, ctx = select(cfg, bundle, out, show_progress=not args.quiet)
    write_jsonl(out / "selection.jsonl", selection.records(bundle.task))
    stats = {f"selection.{k}": v for k, v in budget_stats(selection.kept, bundle.task, ctx.response_tokens).items()}
    write_json(out / "metrics.json", nest(stats))
    clear(out / CHECKPOINTS)  # the selector finished: its resumable state is no longer needed
    for k, v in stats.items():
        print(f"{k}: {v}")
    return 0
