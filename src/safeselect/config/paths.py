"""Where things live: shipped presets, the user cache, the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

from safeselect.errors import UserError, suggest

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a shipped preset."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise UserError(f"config file not found: {p}")
        if p.is_dir():
            raise UserError(f"{p}: is a folder, expected a config YAML file")
        return p
    cand = PRESET_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        raise UserError(f"unknown config '{name_or_path}'{suggest(name_or_path, preset_names())}")
    return cand


def cache_dir() -> Path:
    """User cache: $SAFESELECT_CACHE, else ~/.cache/safeselect."""
    root = os.environ.get("SAFESELECT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "safeselect")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(folder: str | None = None) -> Path | None:
    """Folder of the real data sets: ``folder`` (the config's data.data_dir), then $SAFESELECT_DATA_DIR, then
    ../shared/data next to the repo or cwd."""
    cands = []
    if folder:
        # An explicit folder that does not exist is an error, not a reason to fall back silently.
        if not Path(folder).is_dir():
            raise UserError(f"data.data_dir={folder}: folder not found")
        return Path(folder)
    if os.environ.get("SAFESELECT_DATA_DIR"):
        cands.append(Path(os.environ["SAFESELECT_DATA_DIR"]))
    cands.append(Path.cwd().parent / "shared" / "data")
    cands.append(Path(__file__).resolve().parents[4] / "shared" / "data")
    for c in cands:
        if c.is_dir():
            return c
    return None
