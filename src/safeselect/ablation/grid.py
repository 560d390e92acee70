"""Expand a plan into runs: ablations x replacements x seeds, plus the one shared reference run.

A run id is a readable slug and a short hash of everything that decides the run
(which run function, the base preset and its file content, and the complete set
of overrides), e.g. ``penalty-strength-0.05-s1-3fa2c91b``. Equal configs get one
run even when two ablations ask for them (``compare``'s ``full`` *is* the
reference run; an override that restates the base config's value, e.g. a replacement
naming the default, does not make a run different), and a changed base gives new ids, so
a stale result is never reused. A :class:`Cell` is one (ablation, replacement, seed) of the report; it
points at the run that answers it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safeselect.ablation.plan import Plan, checked_config, slugify
from safeselect.config.loading import choice_word, get
from safeselect.config.paths import resolve_preset
from safeselect.core.precision import resolve_mixed_precision
from safeselect.errors import UserError
from safeselect.inputs import ALIGNED_ONLY
from safeselect.reporting.comparison import CEILING, FLOOR

REFERENCE_LABEL = "reference"
# The cells of the bounds runs: `oracle` (drops the ground-truth bad rows: the floor) and `full` (keeps every
# row: the ceiling) at the base config, one each per seed, so each table can print its headroom; and the
# aligned starting model itself, evaluated once (the name stays: results.csv files carry it).
BOUNDS = "bounds (oracle, full)"
BOUND_LABELS = (FLOOR, CEILING)
STARTING = ALIGNED_ONLY
# Seed keys that change the starting model or the evaluation prompts: only then is it evaluated per seed.
_STARTING_SEED_KEYS = ("align.", "data.eval_seed", "eval.")


@dataclass
class RunSpec:
    """One run: its id, the run function (``pipeline`` or ``eva``), the preset and the flat overrides."""

    run_id: str
    kind: str
    preset: str | None
    overrides: dict[str, Any]
    seed: int
    is_reference: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        return cls(**d)


@dataclass
class Cell:
    """One (ablation, replacement, seed) of the report and the run that answers it."""

    ablation: str
    parameter: str
    label: str
    value: Any
    seed: int
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        return cls(**d)


@dataclass
class Grid:
    """Unique runs (the reference first) and the report cells."""

    runs: list[RunSpec]
    cells: list[Cell]
    reference_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "cells": [c.to_dict() for c in self.cells],
                "reference_id": self.reference_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        return cls([RunSpec.from_dict(r) for r in d["runs"]], [Cell.from_dict(c) for c in d["cells"]],
                   d.get("reference_id"))


def _preset_digest(preset: str | None) -> str | None:
    """The preset's name and a hash of its file, so editing the preset gives new run ids."""
    if not preset:
        return None

    path = resolve_preset(preset)
    return f"{Path(preset).name}:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def config_hash(kind: str, preset: str | None, overrides: dict[str, Any]) -> str:
    """Short, stable hash of what decides a run (JSON with sorted keys)."""
    payload = json.dumps({"kind": kind, "preset": _preset_digest(preset), "overrides": overrides},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def make_run_id(parts: list[str], kind: str, preset: str | None, overrides: dict[str, Any]) -> str:
    slug = "-".join(slugify(p, 24) for p in parts if p)
    return f"{slug}-{config_hash(kind, preset, overrides)}"


def run_dir(out_dir: str | Path, run_id: str) -> Path:
    """The folder of one run of an ablation: ``OUT/runs/<run_id>``."""
    return Path(out_dir) / "runs" / run_id


PRECISION = "finetune.mixed_precision"


def _resolved_precision(overrides: dict[str, Any], base: Any) -> str:
    """The fine-tune precision a run with ``overrides`` on ``base`` will use on this machine (no / bf16)."""
    # a plan file's YAML reads `no` as False: the word back, as for any override
    value = choice_word(PRECISION, overrides.get(PRECISION, get(base, PRECISION) if base is not None else "auto"))
    device = overrides.get("device", get(base, "device") if base is not None else "auto")
    return resolve_mixed_precision(str(value), str(device))


def _differing(base: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` less those that set a key of ``base`` to the value it already has."""
    if base is None:
        return overrides
    out = {}
    for key, value in overrides.items():
        try:
            if get(base, key) == value:
                continue
        except AttributeError:
            pass
        out[key] = value
    return out


def expand(plan: Plan, seeds: list[int] | None = None) -> Grid:
    """Every run of the plan, deduplicated by effective config; the reference (if any) first.

    A plan that replaces a part with each of its options names the default among them (Algorithm 2 beside
    Algorithm 1, the linear schedule beside constant and exponential): those cells are one run per seed,
    not one per ablation that names them. The run id keeps hashing the overrides as written, so folders of an
    earlier run of the plan resume under the same names.
    """
    seeds = list(seeds) if seeds else list(plan.seeds)
    runs: list[RunSpec] = []
    by_hash: dict[str, str] = {}
    reference_id = None
    try:
        base = checked_config(plan.preset, plan.base)
    except UserError:  # a base that does not build fails later, with its own message, when a run is made
        base = None

    def add(parts: list[str], kind: str, overrides: dict[str, Any], seed: int, is_reference: bool) -> str:
        precision = _resolved_precision(overrides, base)
        others = {k: v for k, v in overrides.items() if k != PRECISION}
        h = config_hash(kind, plan.preset, _differing(base, {**others, PRECISION: precision}))
        if h in by_hash:
            return by_hash[h]
        # The id hashes the precision that will run, not the words written: float32 runs keep the ids they had
        # before `finetune.mixed_precision=auto` (whether `=no` is written or not), so their folders resume; bf16
        # runs get ids of their own instead of colliding with float32 runs of the same plan.
        rid = make_run_id(parts, kind, plan.preset, {**others, **({PRECISION: precision} if precision != "no" else {})})
        runs.append(RunSpec(rid, kind, plan.preset, overrides, seed, is_reference))
        by_hash[h] = rid
        return rid

    if plan.reference is not None:
        seed = seeds[0]
        ov = {**plan.base, **plan.reference, **{k: seed for k in plan.seed_keys}}
        reference_id = add([REFERENCE_LABEL, f"s{seed}"], "pipeline", ov, seed, True)
    cells: list[Cell] = []
    for a in plan.ablations:
        for r in a.replacements:
            for seed in seeds:
                ov = {**plan.base, **r.overrides, **{k: seed for k in plan.seed_keys}}
                rid = add([a.slug, r.label, f"s{seed}"], a.runner, ov, seed, False)
                cells.append(Cell(a.name, a.parameter, r.label, r.value, seed, rid))
    if with_bounds(plan, base):
        # After the plan's own runs, so that a plan with `oracle` / `full` replacements keeps its run ids.
        for seed in seeds:
            for label in BOUND_LABELS:
                ov = {**plan.base, "selection.method": label, **{k: seed for k in plan.seed_keys}}
                rid = add(["bounds", label, f"s{seed}"], "pipeline", ov, seed, False)
                cells.append(Cell(BOUNDS, "selection.method", label, label, seed, rid))
    if with_starting(plan, base):
        # The aligned model and the evaluation prompts do not follow the experiment seed (align.seed and
        # data.eval_seed stay fixed), so its figures are the same at every seed: one evaluation.
        per_seed = any(k.startswith(_STARTING_SEED_KEYS) for k in plan.seed_keys)
        for seed in seeds if per_seed else seeds[:1]:
            ov = {**plan.base, "selection.method": STARTING, **{k: seed for k in plan.seed_keys}}
            rid = add(["bounds", STARTING, f"s{seed}"], "pipeline", ov, seed, False)
            cells.append(Cell(BOUNDS, "selection.method", STARTING, STARTING, seed, rid))
    if plan.only is not None:  # cut after expanding the whole plan, so every run keeps its whole-plan id
        names = {a.name for a in plan.ablations if a.slug in plan.only} | {BOUNDS}
        cells = [c for c in cells if c.ablation in names]
        wanted = {c.run_id for c in cells} | {reference_id}
        runs = [r for r in runs if r.run_id in wanted]
    return Grid(runs, cells, reference_id)


def _builtin_pipeline(plan: Plan, base: Any) -> list[Any]:
    """The plan's sections that run the pipeline, where the base data is the built-in benchmark (whose rows
    know if they are bad); empty otherwise."""
    if base is None or get(base, "data.benchmark") != "builtin":
        return []
    return [a for a in plan.ablations if a.runner == "pipeline"]


def with_bounds(plan: Plan, base: Any) -> bool:
    """Whether the grid holds bounds runs: the plan's ``bounds``, else where they can run and mean something
    (a section runs the pipeline on the built-in benchmark)."""
    if plan.bounds is not None:
        return plan.bounds
    pipeline = _builtin_pipeline(plan, base)
    # not where every section already runs both (a comparison of selectors names oracle and full itself)
    return bool(pipeline) and not all(set(BOUND_LABELS) <= {r.label for r in a.replacements} for a in pipeline)


def with_starting(plan: Plan, base: Any) -> bool:
    """Whether the grid evaluates the aligned model (the starting model, no fine-tuning), so that its row
    stands beside every table: with the bounds runs, and in a comparison of selectors that runs `oracle` and
    `full` itself (and so gets no bounds runs). Never with the bounds turned off (``bounds: false``,
    ``--no-bounds``)."""
    return plan.bounds if plan.bounds is not None else bool(_builtin_pipeline(plan, base))


def describe(grid: Grid) -> str:
    """The ``--dry-run`` listing: one line per run with what it varies."""
    lines = []
    for run in grid.runs:
        cells = [c for c in grid.cells if c.run_id == run.run_id]
        what = "; ".join(sorted({f"{c.ablation}: {c.parameter}={c.value!r}" for c in cells}))
        role = "reference" if run.is_reference else run.kind
        if run.is_reference and cells:
            role += " (also " + ", ".join(sorted({f"{c.ablation}: {c.label}" for c in cells})) + ")"
            what = ""
        lines.append(f"{run.run_id}  [{role}] seed {run.seed}" + (f"  {what}" if what else ""))
    return "\n".join(lines)
