"""``safeselect validate CONFIG_OR_PLAN``: load and check a config or an ablation plan without running it."""

from __future__ import annotations

import argparse
from pathlib import Path

from safeselect.ablation.plan import load_plan
from safeselect.cli.run import check_methods
from safeselect.config import loading
from safeselect.core.io import read_text
from safeselect.inputs import check_file, preflight


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a config or an ablation plan")
    p.add_argument("target", metavar="CONFIG_OR_PLAN")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.target)
    if path.exists() or path.suffix in (".md", ".yaml", ".yml"):
        check_file(path, "CONFIG_OR_PLAN")  # a folder, or not UTF-8 text: one line
    if path.suffix == ".md" or (path.suffix in (".yaml", ".yml") and _is_plan(path)):
        plan = load_plan(path)
        print(f"ok: plan {path} with {len(plan.ablations)} ablation(s)")
        return 0
    cfg = loading.load(args.target, args.overrides)
    check_methods(cfg)
    preflight(cfg)  # every file a key names opened and the data built, as `run` would; nothing written
    print(f"ok: {args.target} (method {cfg.selection.method}, model {cfg.model.name})")
    return 0


def _is_plan(path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(read_text(path)) if path.exists() else None
    except (yaml.YAMLError, RecursionError):
        return False
    return isinstance(data, dict) and "ablations" in data
