"""Arguments shared by subcommands: CONFIG, key=value overrides, --out, --overwrite; the run folder to write."""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

from safeselect import preflight
from safeselect.config import loading
from safeselect.errors import UserError
from safeselect.pipeline.run import clear_runs, describe_conflicts, run_conflicts


def add_config_args(p: argparse.ArgumentParser, out: bool = True) -> None:
    p.add_argument("config", metavar="CONFIG", help="a YAML config path or the name of a shipped preset")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. selection.ratio=0.5 (before or after the flags)")
    if out:
        p.add_argument("--out", default=None, help="output directory (default runs/<config name>)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace a run folder that holds a run of another config (default: refuse with --out; "
                            "without --out, write to a fresh runs/<config name>-N)")


def add_progress_args(p: argparse.ArgumentParser, verbose: bool = True) -> None:
    """``--quiet`` (no progress bars) and, for commands that train, ``-v/--verbose`` (the log)."""
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if verbose:
        p.add_argument("-v", "--verbose", action="store_true",
                       help="show the log: every training step's loss, skipped runs")


def add_worker_args(p: argparse.ArgumentParser, what: str) -> None:
    """``--workers`` and ``--threads``: independent cells (``what``) in parallel fresh processes."""
    p.add_argument("--workers", type=int, default=None,
                   help=f"{what} run at once, each in a fresh process (0 = one after another in this process); "
                        "default: one single-threaded worker per core on CPU, one on a GPU (the most cells per hour)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: 1 on CPU with the default workers; the cores fewer "
                        "cells leave over become threads)")


def check_worker_args(args: argparse.Namespace) -> None:
    if args.workers is not None and args.workers < 0:
        raise UserError("--workers must be >= 0")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be >= 1")


def checked_config(args: argparse.Namespace, command: str) -> Any:
    """CONFIG with its overrides, its methods, model and judges checked before anything trains: a missing
    endpoint or model must not surface after the fine-tune."""
    cfg = loading.load(args.config, args.overrides)
    preflight.check_before_training(cfg, command)
    return cfg


def default_out(config: str) -> Path:
    return Path("runs") / Path(config).stem


def resolve_out(args: argparse.Namespace, cfg: Any) -> Path:
    """The folder to write ``cfg``'s run(s) into, deciding what to do with a folder of another config.

    - no conflict (empty, absent, or the same config: it resumes / is reused): ``--out`` or the default;
    - ``--overwrite``: the conflicting run folders are deleted first, and that is said on stderr;
    - ``--out`` given: refused in one line (exit 2) that offers ``--overwrite``;
    - no ``--out``: the first free ``runs/<config name>-N`` (N = 2, 3, ...), said on stderr, so the
      README's commands all work one after another; the same command later resumes that folder.
    """
    explicit = args.out is not None
    out = Path(args.out) if explicit else default_out(args.config)
    conflicts = run_conflicts(cfg, out)
    if not conflicts:
        return out
    what = describe_conflicts(conflicts)
    if getattr(args, "overwrite", False):
        clear_runs(list(conflicts))
        print(f"safeselect: {what}: replaced (--overwrite)", file=sys.stderr)
        return out
    if explicit:
        raise UserError(f"{what}: add --overwrite to replace it, or choose another --out")
    for i in itertools.count(2):
        cand = out.with_name(f"{out.name}-{i}")
        if not run_conflicts(cfg, cand):
            print(f"safeselect: {what}: writing to {cand} instead (--overwrite replaces it)", file=sys.stderr)
            return cand
    raise AssertionError("unreachable")
