"""``safeselect validate CONFIG_OR_PLAN``: load and check a config or an ablation plan without running it."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a config or an ablation plan")
    p.add_argument("target", metavar="CONFIG_OR_PLAN")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from safeselect.config import loading
    from safeselect.registry import registry

    path = Path(args.target)
    if path.suffix == ".md" or (path.suffix in (".yaml", ".yml") and _is_plan(path)):
        from safeselect.ablation.plan import load_plan

        plan = load_plan(path)
        print(f"ok: plan {path} with {len(plan.ablations)} ablation(s)")
        return 0
    cfg = loading.load(args.target, args.overrides)
    registry("selectors").entry(cfg.selection.method)
    for j in cfg.eval.judges:
        registry("judges").entry(j)
    print(f"ok: {args.target} (method {cfg.selection.method}, model {cfg.model.name})")
    return 0


def _is_plan(path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and "ablations" in data
