"""``safeselect cp PRESET FILE``: copy a shipped preset (a config or an ablation plan) to edit it.

    safeselect cp quickstart my.yaml        # then edit my.yaml and: safeselect run my.yaml
    safeselect cp seal_gamma_value plans/   # an ablation plan, into a folder

The copy is the preset file as shipped, comments included; a preset that starts from another
(``defaults: quickstart``) keeps naming it, so the copy stays short and resolves the same way.
An existing file is not replaced unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safeselect.config.paths import PRESET_DIR, preset_names
from safeselect.core.io import atomic_write_text
from safeselect.errors import UserError, suggest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cp", help="copy a shipped preset or ablation plan to a file, to start from it")
    p.add_argument("preset", metavar="PRESET", help="a preset or plan name (`safeselect ls configs`)")
    p.add_argument("dest", metavar="FILE", help="where to write it (a folder gets PRESET.yaml inside)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=run)


def preset_file(name: str) -> Path:
    """The shipped YAML of a config preset or of an ablation plan called ``name``."""
    for cand in (PRESET_DIR / f"{name}.yaml", PRESET_DIR / "ablations" / f"{name}.yaml"):
        if cand.is_file():
            return cand
    plans = [p.stem for p in (PRESET_DIR / "ablations").glob("*.yaml")]
    raise UserError(f"unknown preset '{name}'{suggest(name, preset_names() + plans)}")


def run(args: argparse.Namespace) -> int:
    src = preset_file(args.preset)
    dest = Path(args.dest)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists() and not args.force:
        raise UserError(f"{dest} exists: add --force to replace it")
    if not dest.parent.is_dir():
        raise UserError(f"folder not found: {dest.parent}")
    atomic_write_text(dest, src.read_text())
    kind = "ablation plan" if src.parent.name == "ablations" else "config"
    command = "ablate" if kind == "ablation plan" else "run"
    print(f"wrote {dest} ({kind} '{args.preset}'); edit it, then: safeselect {command} {dest}")
    return 0
