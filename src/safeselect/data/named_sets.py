"""Named evaluation sets (``eval.sets``): the public safety and over-refusal sets, read by name or path.

Each entry of ``eval.sets`` is one of

- a name, read from its usual file in the data folder (``data.data_dir``, ``$SAFESELECT_DATA_DIR``):

  ==============  ==================================================  =========================================
  name            file in the data folder                             becomes
  ==============  ==================================================  =========================================
  advbench        advbench_harmful_behaviors.csv (column ``goal``)    harmful set
  harmbench       harmbench_behaviors_text_all.csv (``Behavior``)     harmful set: FunctionalCategory in
                                                                      ``eval.harmbench_categories`` (standard);
                                                                      contextual rows carry their ContextString
  strongreject    strongreject_dataset.csv (``forbidden_prompt``)     harmful set
  hexphi          HEx-PHI/ (folder of category_<k>.csv)               harmful set
  beavertails     beavertails.jsonl[.gz] (prompt, is_safe, ...)       harmful set: prompts of unsafe rows, once each
  xstest          xstest/prompts.csv                                  ``xstest`` over-refusal set (safe prompts) and
                                                                      ``xstest_unsafe`` harmful set (unsafe prompts)
  hh              hh_harmless_base_test.jsonl.gz                      harmful set: single-turn red-team prompts
  ==============  ==================================================  =========================================

- ``NAME:PATH``: one of those names read from another file or folder;
- a path to any JSONL/CSV with a prompt column: a set named by the file stem; rows marked
  ``harmful: false`` form an over-refusal set ``<stem>_benign``, the rest a harmful set.

Each set keeps at most ``eval.sets_limit`` rows (0 = all), drawn with ``eval.sets_seed`` and
then put back in file order, and never a prompt the task data trains on. Safety Avg spans
every harmful set, the built-in ones included.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safeselect.config.paths import data_dir
from safeselect.core.io import iter_jsonl_numbered
from safeselect.core.rows import Bundle, Row
from safeselect.data.loaders import (
    _open_text,
    load_advbench,
    load_beavertails,
    load_hexphi,
    load_rows,
    load_xstest,
    require_data_file,
    split_dialogue,
)
from safeselect.errors import UserError, suggest

DEFAULT_FILES = {
    "advbench": "advbench_harmful_behaviors.csv",
    "harmbench": "harmbench_behaviors_text_all.csv",
    "strongreject": "strongreject_dataset.csv",
    "hexphi": "HEx-PHI",
    "beavertails": "beavertails.jsonl",
    "xstest": "xstest/prompts.csv",
    "hh": "hh_harmless_base_test.jsonl.gz",
}
NAMES = tuple(DEFAULT_FILES)


def _csv_column(path: Path, column: str, what: str) -> list[tuple[int, dict[str, str]]]:
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise UserError(f"{path}:1: {what} CSV needs a column '{column}' (got {', '.join(reader.fieldnames or [])})")
        return [(reader.line_num, rec) for rec in reader]


def load_harmbench(path: str | Path, categories: tuple[str, ...] = ("standard",)) -> list[Row]:
    """HarmBench behaviours CSV: ``Behavior``, ``FunctionalCategory``, ``SemanticCategory``, ``ContextString``.

    Keeps the rows whose FunctionalCategory is in ``categories`` (HarmBench's standard set by default).
    A contextual behaviour is asked as HarmBench does: the context, a separator line, then the behaviour.
    """
    p = Path(path)
    out = []
    for line, rec in _csv_column(p, "Behavior", "HarmBench"):
        cat = (rec.get("FunctionalCategory") or "standard").strip()
        if cat not in categories:
            continue
        behaviour = (rec.get("Behavior") or "").strip()
        if not behaviour:
            raise UserError(f"{p}:{line}: empty Behavior")
        context = (rec.get("ContextString") or "").strip()
        prompt = f"{context}\n\n---\n\n{behaviour}" if context else behaviour
        rid = (rec.get("BehaviorID") or "").strip() or str(line)
        out.append(Row(row_id=f"harmbench-{rid}", prompt=prompt, harmful=True, task="harmbench", source="harmbench",
                       category=(rec.get("SemanticCategory") or "").strip() or None, meta={"functional": cat}))
    return out


def load_strongreject(path: str | Path) -> list[Row]:
    """StrongREJECT CSV: ``forbidden_prompt`` (and ``category``, ``source``)."""
    p = Path(path)
    out = []
    for line, rec in _csv_column(p, "forbidden_prompt", "StrongREJECT"):
        prompt = (rec.get("forbidden_prompt") or "").strip()
        if not prompt:
            raise UserError(f"{p}:{line}: empty forbidden_prompt")
        out.append(Row(row_id=f"strongreject-{line}", prompt=prompt, harmful=True, task="strongreject",
                       source="strongreject", category=(rec.get("category") or "").strip() or None))
    return out


def load_hh_redteam(path: str | Path) -> list[Row]:
    """Single-turn red-team prompts from HH-RLHF dialogues (``chosen``): the dialogues with one Human turn."""
    p = Path(path)
    out, seen = [], set()
    for line, obj in iter_jsonl_numbered(p):
        text = obj.get("chosen")
        if not isinstance(text, str):
            raise UserError(f"{p}:{line}: HH-RLHF row needs a string 'chosen' dialogue")
        turns = split_dialogue(text)
        humans = [t for role, t in turns if role == "Human"]
        if len(humans) != 1 or not humans[0].strip() or humans[0] in seen:
            continue
        seen.add(humans[0])
        out.append(Row(row_id=f"hh-{line}", prompt=humans[0].strip(), harmful=True, task="hh", source="hh"))
    return out


def _beavertails_prompts(path: str | Path) -> list[Row]:
    out, seen = [], set()
    for r in load_beavertails(path):
        if r.harmful and r.prompt not in seen:
            seen.add(r.prompt)
            out.append(Row(row_id=r.row_id, prompt=r.prompt, harmful=True, category=r.category, task="beavertails",
                           source="beavertails"))
    return out


def _harmful(loader: Callable[[Path], list[Row]]) -> Callable[[Path, Any], dict[str, tuple[str, list[Row]]]]:
    def read(path: Path, cfg: Any) -> dict[str, tuple[str, list[Row]]]:
        return {"": ("harmful", loader(path))}
    return read


def _xstest(path: Path, cfg: Any) -> dict[str, tuple[str, list[Row]]]:
    rows = load_xstest(path)
    return {"": ("overrefusal", [r for r in rows if not r.harmful]),
            "_unsafe": ("harmful", [r for r in rows if r.harmful])}


def _harmbench(path: Path, cfg: Any) -> dict[str, tuple[str, list[Row]]]:
    return {"": ("harmful", load_harmbench(path, tuple(cfg.eval.harmbench_categories)))}


READERS: dict[str, Callable[[Path, Any], dict[str, tuple[str, list[Row]]]]] = {
    "advbench": _harmful(load_advbench),
    "harmbench": _harmbench,
    "strongreject": _harmful(load_strongreject),
    "hexphi": _harmful(load_hexphi),
    "beavertails": _harmful(_beavertails_prompts),
    "xstest": _xstest,
    "hh": _harmful(load_hh_redteam),
}


def _any_file(path: Path, cfg: Any) -> dict[str, tuple[str, list[Row]]]:
    rows = load_rows(path)
    out: dict[str, tuple[str, list[Row]]] = {}
    harmful = [r for r in rows if r.harmful is not False]
    benign = [r for r in rows if r.harmful is False]
    if harmful:
        for r in harmful:
            r.harmful = True
        out[""] = ("harmful", harmful)
    if benign:
        out["_benign"] = ("overrefusal", benign)
    return out


def parse_entry(entry: str, cfg: Any) -> tuple[str, Path, Callable[[Path, Any], dict[str, tuple[str, list[Row]]]]]:
    """(set name, file or folder, reader) of one ``eval.sets`` entry."""
    name, _, path = entry.partition(":")
    if path and name in READERS:
        p = Path(path)
        if not p.exists():
            raise UserError(f"eval.sets: {entry}: {p} not found")
        return name, p, READERS[name]
    if entry in READERS:
        if entry == "beavertails":  # the published test file is gzipped; take whichever is there
            root = data_dir(cfg.data.data_dir)
            for cand in ("beavertails.jsonl", "beavertails.jsonl.gz", "30k_test.jsonl.gz", "330k_test.jsonl.gz"):
                if root is not None and (root / cand).exists():
                    return entry, root / cand, READERS[entry]
        return entry, require_data_file(cfg.data.data_dir, DEFAULT_FILES[entry]), READERS[entry]
    p = Path(entry)
    if p.suffix.lower() in (".jsonl", ".csv", ".json", ".gz") or "/" in entry:
        if not p.exists():
            raise UserError(f"eval.sets: {entry}: file not found")
        return p.name.split(".")[0].replace(".", "_"), p, _any_file
    raise UserError(f"eval.sets: unknown set '{entry}'{suggest(entry, list(READERS))} "
                    f"(names: {', '.join(NAMES)}; or NAME:PATH, or a JSONL/CSV path)")


def sample(rows: list[Row], limit: int, seed: int) -> list[Row]:
    """At most ``limit`` rows (0 = all), a seeded draw kept in file order."""
    if limit <= 0 or len(rows) <= limit:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def add_named_sets(bundle: Bundle, cfg: Any) -> Bundle:
    """Add every set of ``cfg.eval.sets`` to ``bundle`` (in place; returned for chaining)."""
    entries = list(getattr(cfg.eval, "sets", None) or [])
    if not entries:
        return bundle
    trained = {r.prompt for r in bundle.task}
    taken = set(bundle.eval_harmful) | set(bundle.eval_overrefusal) | set(bundle.eval_task)
    for entry in entries:
        name, path, reader = parse_entry(str(entry), cfg)
        for suffix, (kind, rows) in reader(path, cfg).items():
            set_name = f"{name}{suffix}"
            if set_name in taken:
                raise UserError(f"eval.sets: a set named '{set_name}' is already evaluated (give it once)")
            taken.add(set_name)
            rows = [r for r in rows if r.prompt not in trained]
            if not rows:
                raise UserError(f"eval.sets: {entry}: no {kind} prompts in {path}")
            rows = sample(rows, cfg.eval.sets_limit, cfg.eval.sets_seed)
            (bundle.eval_harmful if kind == "harmful" else bundle.eval_overrefusal)[set_name] = rows
    return bundle
