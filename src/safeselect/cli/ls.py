"""``safeselect ls [selectors|judges|models|configs|data|rewards]``: what can be picked by name."""

from __future__ import annotations

import argparse

from safeselect.config.paths import PRESET_DIR, preset_names
from safeselect.config.schema import field_info
from safeselect.registry import registry

KINDS = ["selectors", "judges", "models", "configs", "data", "rewards", "keys"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ls", help="list selectors, judges, models, configs")
    p.add_argument("kind", nargs="?", choices=KINDS, help="what to list (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.kind == "keys":
        print(config_reference())
        return 0
    kinds = [args.kind] if args.kind else [k for k in KINDS if k != "keys"]
    for kind in kinds:
        print(f"{kind}:")
        if kind == "configs":
            for name in preset_names():
                first = (PRESET_DIR / f"{name}.yaml").read_text().splitlines()[:1]
                desc = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
                print(f"  {name:<18} {desc}")
            for plan in sorted((PRESET_DIR / "ablations").glob("*.yaml")):
                first = plan.read_text().splitlines()[:1]
                desc = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
                print(f"  {plan.stem:<18} ablation plan (safeselect ablate {plan.stem}) {desc}")
            continue
        for e in registry(kind).entries():
            status = "" if e.status == "faithful" else f"  [{e.status}]"
            paper = f"  ({e.paper})" if e.paper else ""
            print(f"  {e.name:<18} {e.summary}{paper}{status}")
    return 0


def config_reference() -> str:
    """Every config key with its default, choices or range, aliases and help, as a markdown table."""

    lines = ["| key | default | values | help |", "|---|---|---|---|"]
    for key, meta in field_info().items():
        values = ""
        if meta.get("choices"):
            values = " / ".join(str(c) for c in meta["choices"])
        elif meta.get("range"):
            lo, hi = meta["range"]
            values = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        help_text = meta["help"].replace("|", "\\|")
        if meta.get("aliases"):
            help_text += " (plans: " + ", ".join(f"'{a}'" for a in meta["aliases"]) + ")"
        lines.append(f"| `{key}` | `{meta.get('default')}` | {values} | {help_text} |")
    return "\n".join(lines)
