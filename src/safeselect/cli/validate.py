"""``safeselect validate CONFIG_OR_PLAN [key=value ...]``: check everything a run would need, running nothing.

For a config: the keys and values, the selectors and judges named, the model (registered, a local
folder or the local HF cache), every data file the run will read (opened, every row checked: the
data builder's task / reference / alignment / evaluation files, a DSIR target, SafeInstr
demonstrations, benchmark questions) and every judge's needs (an endpoint in ``judges.llm.base_url``,
the key variable ``judges.llm.api_key_env`` present unless the endpoint is local; the key is never
printed). For a plan: the plan, then the same checks on each distinct run config of its grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safeselect import preflight as checks
from safeselect.ablation.grid import expand
from safeselect.ablation.plan import ABLATION_DIR, load_plan, make_config
from safeselect.ablation.runner import check_components
from safeselect.config import loading
from safeselect.core.io import read_text
from safeselect.inputs import check_file, check_methods, preflight


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a config or an ablation plan: keys, data files, model, judges")
    p.add_argument("target", metavar="CONFIG_OR_PLAN")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--no-data", action="store_true", help="skip opening the data files (keys and judges only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.target)
    if path.exists() or path.suffix in (".md", ".yaml", ".yml"):
        check_file(path, "CONFIG_OR_PLAN")  # a folder, or not UTF-8 text: one line
    if path.suffix == ".md" or (path.suffix in (".yaml", ".yml") and _is_plan(path)) or _is_shipped_plan(args.target):
        return _validate_plan(args)
    cfg = loading.load(args.target, args.overrides)
    check_methods(cfg)
    # every file a key names opened and the data built once, as `run` would; nothing written
    bundle = None if args.no_data else preflight(cfg)
    lines = check_config(cfg, open_data=not args.no_data, bundle=bundle)
    print(f"ok: {args.target} (method {cfg.selection.method}, model {cfg.model.name})")
    for line in lines:
        print(f"  {line}")
    return 0


def check_config(cfg, open_data: bool = True, command: str = "run", bundle=None) -> list[str]:  # noqa: ANN001 - light import
    """Every check on one config, in the order a run meets them; raises UserError at the first failure.
    ``bundle``: the data already built from ``cfg``, reused instead of building it again."""
    lines = checks.check_before_training(cfg, command)
    if open_data:
        lines += checks.open_data(cfg, bundle)
    return lines


def _validate_plan(args: argparse.Namespace) -> int:
    plan = load_plan(args.target, overrides=args.overrides)
    grid = expand(plan)
    check_components(grid)
    seen: set[str] = set()
    for r in grid.runs:
        if r.kind != "pipeline":
            continue
        cfg = make_config(r.preset, r.overrides)
        # Runs that differ only in selector knobs read the same files: check each data / judge setup once.
        d = loading.to_dict(cfg)
        key = repr((d["model"], d["data"], d["align"], d["eval"], d["judges"], cfg.selection.method,
                    d["selection"]["dsir"]["target"], d["selection"]["safeinstr"]))
        if key not in seen:
            seen.add(key)
            check_config(cfg, open_data=not args.no_data)
    print(f"ok: plan {args.target} with {len(plan.ablations)} ablation(s), {len(grid.runs)} runs "
          f"({len(seen)} distinct data / model / judge setups checked)"
          + (f", {len(plan.refused)} section(s) that cannot run" if plan.refused else ""))
    for r in plan.refused:
        print(f"  not run: '{r.name}'" + (f" (line {r.line})" if r.line else "") + f": {r.reason}")
    return 0


def _is_shipped_plan(name: str) -> bool:
    return "/" not in name and (ABLATION_DIR / f"{name}.yaml").is_file()


def _is_plan(path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(read_text(path)) if path.exists() else None
    except (yaml.YAMLError, RecursionError):
        return False
    return isinstance(data, dict) and "ablations" in data
