"""Ablation plans: "what if we replace X with Y", read from YAML or from the markdown users write.

A plan is a base config, one or more ablations (a config key, ``action: REPLACE``,
replacement values, the metrics to report), seeds, and a reference run (the
``full`` SFT run that win rates compare against, run once per plan).

YAML::

    name: seal_gamma_value
    base: {preset: quickstart, selection.method: seal}   # or `base: NAME`; nested keys work too
    seeds: [0, 1, 2]
    reference: {selection.method: full}                   # `false` for none
    bounds: true                                          # oracle + full per seed (default: on the built-in benchmark)
    ablations:
      - name: gamma value
        parameter: selection.seal.gamma.value             # a dotted key, or prose mapped through aliases
        action: REPLACE
        replacements: [0.01, 0.1, {label: strong, value: 0.5, overrides: {selection.seal.epochs: 5}}]
        metrics: [win rate, safety alignment score]

Markdown (the format of ``../shared/plans/``, HTML wrapping and mojibake tolerated)::

    ### Ablation Study on Penalty Strength
    - **Ablated Part**: Penalty strength parameter (γ) in the bilevel optimization process
    - **Action**: REPLACE
    - **Replacement**:
      - 0.01
      - 0.5
    - **Metrics**: win rate, safety alignment score

Prose is mapped by :mod:`safeselect.ablation.matcher`; every mapping is kept
(``how``) so ``safeselect ablate PLAN --explain`` can show it. Loading a plan
builds and validates the config of every run, so a bad value fails before
anything runs.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safeselect.ablation.mapping import MetricSpec, companions, fix_mojibake, map_metric, tokens
from safeselect.ablation.markdown import parse_markdown, split_values
from safeselect.ablation.matcher import (
    Query,
    expand_ellipsis,
    map_section,
    plan_method,
    read_value,
    reads_as_percentages,
)
from safeselect.config import loading
from safeselect.config.loading import get
from safeselect.config.paths import preset_names, resolve_preset
from safeselect.core.dotted import flatten
from safeselect.errors import UserError, suggest
from safeselect.evaluation.benchmarks import configured as benchmarks_configured
from safeselect.registry import registry

ABLATION_DIR = Path(__file__).resolve().parents[1] / "configs" / "ablations"
DEFAULT_SEEDS = [0, 1, 2]
DEFAULT_SEED_KEYS = ["seed", "data.seed", "selection.seed"]  # the seed of data, selection and training
DEFAULT_REFERENCE: dict[str, Any] = {"selection.method": "full"}


@dataclass
class Replacement:
    """One replacement: its label (table row), the value of the ablated key, and every override it sets."""

    label: str
    value: Any
    text: str
    how: str
    overrides: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "text": self.text, "how": self.how,
                "overrides": self.overrides}


@dataclass
class Ablation:
    """One ``REPLACE`` ablation of one config key."""

    name: str
    slug: str
    parameter: str
    part: str
    how: str
    replacements: list[Replacement]
    metrics: list[MetricSpec]
    runner: str = "pipeline"  # "pipeline" (run_experiment) or "eva" (run_eva)
    action: str = "REPLACE"
    confidence: float = 1.0
    low_confidence: bool = False
    competitors: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (replacement text, why it does not run)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "slug": self.slug, "parameter": self.parameter, "part": self.part,
                "how": self.how, "runner": self.runner, "action": self.action,
                "confidence": self.confidence, "low_confidence": self.low_confidence,
                "competitors": self.competitors, "skipped": [list(t) for t in self.skipped], "note": self.note,
                "replacements": [r.to_dict() for r in self.replacements],
                "metrics": [m.to_dict() for m in self.metrics]}


@dataclass
class Refusal:
    """A section of the plan that does not run, and why."""

    name: str
    part: str
    reason: str
    line: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "part": self.part, "reason": self.reason, "line": self.line}


@dataclass
class Plan:
    """A parsed, mapped and validated plan."""

    name: str
    source: str
    ablations: list[Ablation]
    preset: str | None = None
    base: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    seed_keys: list[str] = field(default_factory=lambda: list(DEFAULT_SEED_KEYS))
    reference: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_REFERENCE))
    notes: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    only: list[str] | None = None  # slugs of the ablations to run (None: all); see only_ablations
    # `oracle` and `full` runs at the base config per seed (floor, ceiling, headroom); None: where the base
    # data knows its bad rows (the built-in benchmark) and a section runs the pipeline
    bounds: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "preset": self.preset, "base": self.base,
                "seeds": self.seeds, "seed_keys": self.seed_keys, "reference": self.reference,
                "notes": self.notes, "ablations": [a.to_dict() for a in self.ablations],
                "refused": [r.to_dict() for r in self.refused], "only": self.only, "bounds": self.bounds}


# ----------------------------------------------------------------------------- helpers


def slugify(text: str, limit: int = 28) -> str:
    """Lower-case alphanumerics and dashes, at most ``limit`` characters, never empty."""
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", "-", fix_mojibake(str(text)).lower())  # keep the dot of 0.05 only
    s = re.sub(r"[^a-z0-9.]+", "-", s).strip("-")
    if len(s) > limit:
        cut = s[:limit]
        s = cut[:cut.rfind("-")] if cut.rfind("-") > limit // 2 else cut  # end on a whole word when we can
    return s.strip("-") or "x"


def override_text(key: str, value: Any) -> str:
    """``key=value`` as `safeselect run` reads it (the value as YAML: 1e-05, lists and quoted strings survive)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    elif text.endswith("..."):
        text = text[:-3].strip()
    return f"{key}={text}"


def make_config(preset: str | None, flat: dict[str, Any]) -> Any:
    """The config of one run: defaults < preset (name or path) < ``flat`` dotted overrides."""

    return loading.load(preset, [override_text(k, v) for k, v in flat.items()])


_CHECKED: dict[str, Any] = {}


def checked_config(preset: str | None, flat: dict[str, Any]) -> Any:
    """:func:`make_config` for reading only (validation, metric checks): a plan builds the same config many times
    while it is loaded, and one build costs about a second on a busy machine. Never mutate the result."""
    stamp = None
    if preset:
        try:
            stamp = resolve_preset(preset).stat().st_mtime_ns  # an edited preset is built again
        except (UserError, OSError):
            stamp = None
    sig = json.dumps([preset, stamp, flat], sort_keys=True, default=str)
    if sig not in _CHECKED:
        if len(_CHECKED) > 256:
            _CHECKED.clear()
        _CHECKED[sig] = make_config(preset, flat)
    return _CHECKED[sig]


def resolve_plan_path(name_or_path: str | Path) -> Path:
    """A plan file (YAML or markdown), or the name of a shipped plan in ``configs/ablations``."""
    p = Path(name_or_path)
    if p.exists():
        return p
    if p.suffix in (".yaml", ".yml", ".md"):
        raise UserError(f"plan file not found: {p}")
    cand = ABLATION_DIR / f"{name_or_path}.yaml"
    if cand.exists():
        return cand

    raise UserError(f"unknown plan '{name_or_path}'{suggest(str(name_or_path), shipped_plans())}")


def shipped_plans() -> list[str]:
    return sorted(p.stem for p in ABLATION_DIR.glob("*.yaml"))


# ----------------------------------------------------------------------------- mapping one ablation


def _as_query_values(raws: list[Any]) -> list[Any]:
    return [r.get("value") if isinstance(r, dict) else r for r in raws]


def values_from_prose(text: str) -> list[str]:
    """'replace the linear schedule with constant or exponential' -> ['constant', 'exponential']."""
    text = fix_mojibake(text).strip()
    m = re.search(r"\b(?:with|by|to|across|over|between|among|through|using|:)\s+(?!the\b)(.+)$", text, re.I)
    if m is None:
        return []
    tail = re.sub(r"\s*\((?:e\.g\.|i\.e\.)[^)]*\)", "", m.group(1))
    tail = re.split(r"\s+(?:and\s+)?(?:measure|report|compare|evaluate)\b", tail)[0]
    return split_values(tail)


def build_ablation(raw: dict[str, Any], base_keys: set[str], where: str,
                   base: Callable[[str], Any] | None = None, method: str | None = None) -> Ablation:
    """Map one raw ablation (parameter prose or key, replacement values or prose, metric prose); UserError says why
    a section cannot run."""
    name = fix_mojibake(str(raw.get("name") or raw.get("parameter") or "ablation")).strip()
    where = f"{where}: ablation '{name}'"
    action = str(raw.get("action", "REPLACE")).strip()
    raws = raw.get("replacements")
    if not isinstance(raws, list):
        raws = []
    if action.upper() != "REPLACE":
        verb = action.split()[0].lower().strip(":,.") if action.split() else ""
        if verb not in ("replace", "replacement", "swap", "substitute", "vary", "change", "sweep", "compare", "set",
                        "use", "try"):
            raise UserError(f"{where}: action {action!r} is not supported (only REPLACE)")
        if not raws:
            raws = values_from_prose(action)
    if not raws and raw.get("prose"):
        raws = values_from_prose(str(raw["prose"]))
    part = raw.get("parameter")
    if part is None or str(part).strip() == "":
        raise UserError(f"{where}: no parameter / Ablated Part given")
    if not raws:
        raise UserError(f"{where}: 'replacements' must be a non-empty list (no replacement values found)")
    context = " ".join(str(raw.get(k) or "") for k in ("context", "prose", "baseline", "action"))
    q = Query(part=str(part), name=name, context=context, values=_as_query_values(raws), method=method,
              given_part=bool(raw.get("part_given", True)))
    mp = map_section(q, base)
    if mp.key is None:
        raise UserError(f"{where}: {mp.reason}")
    key = mp.key
    by_text = dict(mp.values)
    reps: list[Replacement] = []
    skipped = list(mp.skipped)
    expanded, _ = expand_ellipsis(_as_query_values(raws)) if all(isinstance(r, str) for r in raws) else (None, "")
    items: list[Any] = expanded if expanded is not None else raws
    percent = reads_as_percentages(key, [r for r in items if isinstance(r, str)])
    for r in items:
        extra: dict[str, Any] = {}
        label = None
        if isinstance(r, dict):
            if "value" not in r:
                raise UserError(f"{where}: a replacement mapping needs 'value' (and optionally label, overrides)")
            label, value_raw = r.get("label"), r["value"]
            extra = flatten(r.get("overrides") or {})
            try:
                vr = read_value(key, value_raw, percent=percent, wording=q.part + " " + name, base=base)
            except UserError as e:
                raise UserError(f"{where}: {e}") from None
        else:
            value_raw = r
            vr = by_text.get(str(r))
            if vr is None:
                continue  # listed in skipped with its reason
        if label is None:
            label = _default_label(value_raw, vr.value, percent)
        extra = {**vr.extra, **extra}
        comp = {k: v for k, v in companions(key, vr.value, base).items()
                if k not in base_keys and k not in extra}
        overrides = {**comp, **extra, key: vr.value}
        reps.append(Replacement(str(label), vr.value, fix_mojibake(str(value_raw)), vr.how, overrides))
    seen: dict[str, str] = {}
    unique: list[Replacement] = []
    for rep in reps:
        sig = json.dumps(rep.overrides, sort_keys=True, default=str)
        if sig in seen:
            if not raw.get("strict_values", False) and isinstance(raw.get("replacements", [None])[0], str):
                skipped.append((rep.text, f"same setting as {seen[sig]!r} ({key}={rep.value!r})"))
                continue
            raise UserError(f"{where}: replacements {seen[sig]!r} and {rep.text!r} both map to {key}={rep.value!r}")
        seen[sig] = rep.text
        unique.append(rep)
    reps = unique
    labels = [r.label for r in reps]
    if len(set(labels)) != len(labels):
        for rep in reps:  # "fixed 0.1" and "fixed 0.2" both labelled 'constant'
            if labels.count(rep.label) > 1:
                rep.label = slugify(rep.text, 24)
        labels = [r.label for r in reps]
        if len(set(labels)) != len(labels):
            raise UserError(f"{where}: replacement labels must differ, got {labels}")
    if not reps:
        raise UserError(f"{where}: no replacement of {key} can run (" +
                        "; ".join(f"{t!r}: {w}" for t, w in skipped) + ")")
    metrics_raw = raw.get("metrics") or []
    if isinstance(metrics_raw, str):
        metrics_raw = split_top_level(metrics_raw)
    metrics = [map_metric(m) for m in metrics_raw]
    runner = str(raw.get("runner") or ("eva" if key.startswith("eva.") else "pipeline"))
    if runner not in ("pipeline", "eva"):
        raise UserError(f"{where}: runner must be 'pipeline' or 'eva', got {runner!r}")
    how = "dotted key" if mp.evidence == ["dotted key"] else mp.explain()
    return Ablation(name=name, slug=slugify(raw.get("slug") or name), parameter=key,
                    part=fix_mojibake(str(part)), how=how, replacements=reps, metrics=metrics, runner=runner,
                    confidence=mp.confidence, low_confidence=mp.low,
                    competitors=[k for k, _ in mp.competitors], skipped=skipped, note=mp.note)


def _default_label(raw: Any, value: Any, percent: bool) -> str:
    if isinstance(raw, str) and raw.strip().endswith("%"):
        return raw.strip()
    if percent and isinstance(value, float):
        return f"{value * 100:g}%"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: "win_rate (HH, HEX-PHI), GPU_memory" -> 2 items."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [s for s in out if s]


# ----------------------------------------------------------------------------- YAML plans


def _parse_seeds(raw: Any, where: str) -> list[int]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        raise UserError(f"{where}: 'seeds' must be a list of integers, got {raw!r}")
    if len(set(raw)) != len(raw):
        raise UserError(f"{where}: seeds must differ, got {raw}")
    return list(raw)


def _yaml_plan(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{at}: malformed YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("ablations"), list):
        raise UserError(f"{path}: a plan is a mapping with an 'ablations' list")
    known = {"name", "description", "base", "seeds", "seed_keys", "reference", "bounds", "ablations"}
    for k in data:
        if k not in known:
            raise UserError(f"{path}: unknown plan key '{k}'{suggest(k, sorted(known))}")
    header: dict[str, Any] = {"name": data.get("name") or path.stem}
    base = data.get("base") or {}
    if isinstance(base, str):
        base = {"preset": base}
    if not isinstance(base, dict):
        raise UserError(f"{path}: 'base' must be a preset name or a mapping of config keys")
    base = dict(base)
    preset = base.pop("preset", None)
    if preset and not Path(str(preset)).is_absolute() and (path.parent / str(preset)).exists():
        preset = str((path.parent / str(preset)).resolve())
    header["preset"] = preset
    header["base"] = flatten(base)
    if "seeds" in data:
        header["seeds"] = _parse_seeds(data["seeds"], str(path))
    if "seed_keys" in data:
        header["seed_keys"] = list(data["seed_keys"] or [])
    if "reference" in data:
        ref = data["reference"]
        if ref in (False, None, "none"):
            header["reference"] = None
        elif isinstance(ref, dict):
            header["reference"] = flatten(ref)
        else:
            raise UserError(f"{path}: 'reference' must be a mapping of overrides or false")
    if "bounds" in data:
        if not isinstance(data["bounds"], bool):
            raise UserError(f"{path}: 'bounds' must be true or false (oracle and full runs per seed)")
        header["bounds"] = data["bounds"]
    for i, a in enumerate(data["ablations"]):
        if not isinstance(a, dict):
            raise UserError(f"{path}: ablation {i + 1} must be a mapping")
        unknown = set(a) - {"name", "slug", "parameter", "action", "replacements", "metrics", "runner"}
        if unknown:
            raise UserError(f"{path}: ablation {i + 1}: unknown key(s) {', '.join(sorted(unknown))}")
    return header, data["ablations"]


# ----------------------------------------------------------------------------- markdown plans


def _markdown_preset(method: str | None, keys: list[str], notes: list[str]) -> str | None:
    """The shipped preset of the method a markdown plan is about (eva, or the selector), when one exists."""

    name = method
    if keys and all(k.startswith("eva.") for k in keys):
        name = "eva"
    elif name is None:
        found = {k.split(".")[1] for k in keys if k.startswith("selection.") and k.count(".") >= 2}
        name = found.pop() if len(found) == 1 else None
    if name and name in preset_names():
        notes.append(f"base preset {name} (inferred from the plan; --base replaces it)")
        return name
    return None


def infer_method(title: str, ablations: list[Ablation], texts: list[str]) -> str | None:
    """The selector a markdown plan is about: from ablated keys (selection.<method>.*) or its name in the text."""

    names = set(registry("selectors").names()) | {"seal", "dualselect"}
    found = {a.parameter.split(".")[1] for a in ablations
             if a.parameter.startswith("selection.") and a.parameter.count(".") >= 2}
    found &= names
    if not found:
        words = set(tokens(title + " " + " ".join(texts)))
        found = {n for n in names if n in words}
    return found.pop() if len(found) == 1 else None


# ----------------------------------------------------------------------------- loading


def read_plan_text(p: Path) -> str:
    """The plan's text; a folder or a file that is not UTF-8 is a UserError (exit 2), not a traceback."""
    if p.is_dir():
        raise UserError(f"{p}: is a directory, not a plan file")
    try:
        return p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text (byte {e.start}); save the plan as UTF-8") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read the plan ({e.strerror or e})") from None


def _map_all(raws: list[dict[str, Any]], base_keys: set[str], where: str, base: Callable[[str], Any],
             method: str | None, strict: bool) -> tuple[list[Ablation], list[Refusal]]:
    """Map every section on its own: what maps runs, what does not is refused with its reason."""
    ablations: list[Ablation] = []
    refused: list[Refusal] = []
    for r in raws:
        line = int(r.get("line") or 0)
        at = f"{where}:{line}" if line else where
        try:
            ab = build_ablation(r, base_keys, at, base, method)
        except UserError as e:
            if strict:
                raise
            name = fix_mojibake(str(r.get("name") or r.get("parameter") or "ablation"))
            reason = str(e).split(f"ablation '{name}': ", 1)[-1]
            refused.append(Refusal(name, fix_mojibake(str(r.get("parameter") or "")), reason, line))
            continue
        if strict and ab.skipped:
            t, why = ab.skipped[0]
            raise UserError(f"{at}: ablation '{ab.name}': replacement {t!r} cannot run ({why})")
        ablations.append(ab)
    return ablations, refused


def only_ablations(plan: Plan, names: list[str]) -> Plan:
    """``plan`` restricted to the ablations named (by section name or slug, any case).

    For running one section of a long plan now and the rest later: the grid is expanded from the whole plan
    and then cut (:func:`safeselect.ablation.grid.expand`), so each run keeps the id it has in the whole plan
    and a later run of the whole plan into the same folder reuses it."""
    known = {key: a for a in plan.ablations for key in (a.name.lower(), a.slug)}
    for n in names:
        if n.lower() not in known:
            raise UserError(f"{plan.source}: no ablation '{n}'" + suggest(n, [a.name for a in plan.ablations]))
    return dataclasses.replace(plan, only=[a.slug for a in plan.ablations if a.slug in {known[n.lower()].slug for n in names}])


def load_plan(path: str | Path, overrides: dict[str, Any] | list[str] | None = None, base: str | None = None,
              seeds: list[int] | None = None, validate: bool = True, strict: bool | None = None) -> Plan:
    """Parse, map and (by default) validate a plan.

    ``overrides`` (dotted dict or ``key=value`` strings) apply to the base of every run, ``base`` replaces the
    plan's preset, ``seeds`` its seeds. Markdown plans are partial by default: each section is mapped or refused
    on its own (``plan.refused`` says why); ``strict=True`` makes any refusal an error. YAML plans are strict.
    """

    p = resolve_plan_path(path)
    if isinstance(overrides, (list, tuple)):
        overrides = dict(loading.parse_override(o) for o in overrides)
    overrides = dict(overrides or {})
    notes: list[str] = []
    method = None
    if p.suffix == ".md":
        text = read_plan_text(p)
        title, raw_ablations = parse_markdown(text, str(p))
        header: dict[str, Any] = {"name": p.stem, "preset": None, "base": {}}
        method = plan_method(title + " " + text)
        strict = bool(strict)
    else:
        title = ""
        header, raw_ablations = _yaml_plan(p)
        strict = True if strict is None else strict
    base_flat = {**header.get("base", {}), **overrides}
    preset = base if base is not None else header.get("preset")
    if p.suffix == ".md" and base is None:
        # Markdown plans name no base config: use the shipped preset of the method they ablate, if there is one.
        preset = _markdown_preset(method, [], [])
    try:
        base_cfg = checked_config(preset, base_flat)
    except UserError as e:
        raise UserError(f"{p}: base config: {e}") from None

    def base_value(key: str) -> Any:
        return get(base_cfg, key)

    ablations, refused = _map_all(raw_ablations, set(base_flat), str(p), base_value, method, strict)
    if p.suffix == ".md" and base is None:
        inferred = _markdown_preset(method, [a.parameter for a in ablations], notes)
        if inferred != preset:
            preset = inferred
            base_cfg = checked_config(preset, base_flat)
            ablations, refused = _map_all(raw_ablations, set(base_flat), str(p), base_value, method, strict)
    if p.suffix == ".md":
        # Markdown plans name no base config: infer the selector they ablate, and say so.
        if any(a.runner == "pipeline" for a in ablations) and "selection.method" not in base_flat:
            sel = infer_method(title, ablations, [a.part for a in ablations])
            if sel and checked_config(preset, base_flat).selection.method != sel:
                base_flat = {"selection.method": sel, **base_flat}
                notes.append(f"base selection.method={sel} (inferred from the plan)")
        if ablations and all(a.runner == "eva" for a in ablations):
            header["reference"] = None
            notes.append("no reference run: eva compares its final solver against its starting model")
            if "eva.save_model" not in base_flat:
                base_flat["eva.save_model"] = False
                notes.append("base eva.save_model=false (an ablation keeps metrics, not one model per run)")
    _unique_names(ablations)
    plan = Plan(
        name=str(header.get("name") or p.stem), source=str(p), ablations=ablations,
        preset=preset, base=base_flat,
        seeds=list(seeds) if seeds else header.get("seeds", list(DEFAULT_SEEDS)),
        seed_keys=header.get("seed_keys", list(DEFAULT_SEED_KEYS)),
        reference=header["reference"] if "reference" in header else dict(DEFAULT_REFERENCE),
        notes=notes, refused=refused, bounds=header.get("bounds"),
    )
    if not ablations:
        plan.reference = None
    if validate:
        validate_plan(plan, strict=strict)
        for a in plan.ablations:  # the report says why a named metric has no column
            for m in a.metrics:
                produced, why = metric_status(plan, a, m)
                if not produced and m.patterns and "not produced: " not in m.note:
                    m.note = (m.note + "; " if m.note else "") + "not produced: " + why
    return plan


def _unique_names(ablations: list[Ablation]) -> None:
    """Two sections with one name (or one slug) get numbered, so their runs and table rows stay apart."""
    seen: dict[str, int] = {}
    for a in ablations:
        key = a.slug
        if key in seen:
            seen[key] += 1
            a.name = f"{a.name} ({seen[key]})"
            a.slug = slugify(f"{a.slug[:24]}-{seen[key]}")
        else:
            seen[key] = 1


def validate_plan(plan: Plan, strict: bool = True) -> None:
    """Build the config of the base, the reference and every replacement; a bad value names its ablation.

    Not strict: a replacement whose config does not build is skipped with the reason, and an ablation left with
    none is refused."""
    seed = {k: plan.seeds[0] for k in plan.seed_keys}
    try:
        cfg = checked_config(plan.preset, {**plan.base, **seed})
    except UserError as e:
        raise UserError(f"{plan.source}: base config: {e}") from None
    if benchmarks_configured(cfg) and not cfg.judges.llm.base_url:
        raise UserError(f"{plan.source}: eval.benchmarks.* are set but judges.llm.base_url is not: the alignment "
                        "benchmarks are scored by the llm judge")
    if plan.reference is not None:
        try:
            checked_config(plan.preset, {**plan.base, **plan.reference, **seed})
        except UserError as e:
            raise UserError(f"{plan.source}: reference run: {e}") from None
    keep: list[Ablation] = []
    for a in plan.ablations:
        ok: list[Replacement] = []
        for r in a.replacements:
            try:
                checked_config(plan.preset, {**plan.base, **r.overrides, **seed})
                ok.append(r)
            except UserError as e:
                if strict:
                    raise UserError(f"{plan.source}: ablation '{a.name}', replacement {r.text!r}: {e}") from None
                a.skipped.append((r.text, str(e)))
        a.replacements = ok
        if ok:
            keep.append(a)
        else:
            plan.refused.append(Refusal(a.name, a.part, "no replacement builds a valid config (" + "; ".join(
                f"{t!r}: {w}" for t, w in a.skipped) + ")"))
    plan.ablations = keep


# ----------------------------------------------------------------------------- metrics: produced or flagged


def metric_status(plan: Plan, ablation: Ablation, spec: MetricSpec) -> tuple[bool, str]:
    """Whether the runs of ``ablation`` produce ``spec``; when not, the setting that would produce it."""
    if not spec.patterns:
        return False, spec.note or "no safeselect metric matches this name"
    cfg = checked_config(plan.preset, plan.base)
    b = cfg.eval.benchmarks
    judge = bool(cfg.judges.llm.base_url)
    eva = ablation.runner == "eva"
    pats = " ".join(spec.patterns)

    def bench(files: list[tuple[str, Any]], label: str) -> tuple[bool, str]:
        missing = [k for k, v in files if not v]
        if not judge:
            missing.append("judges.llm.base_url")
        if missing:
            return False, f"{label} runs only with {', '.join(f'{k}=...' for k in missing)} set (the llm judge " \
                          "scores it; pass them as overrides)"
        return True, f"{label} through the llm judge"
    if "arenahard" in pats:
        return bench([("eval.benchmarks.arenahard_questions", b.arenahard_questions),
                      ("eval.benchmarks.arenahard_baseline", b.arenahard_baseline)], "Arena-Hard")
    if "alpacaeval" in pats:
        return bench([("eval.benchmarks.alpacaeval", b.alpacaeval)], "AlpacaEval")
    if "mtbench" in pats:
        return bench([("eval.benchmarks.mtbench_questions", b.mtbench_questions)], "MT-Bench")
    if eva:
        if any(p.startswith(("eva.", "win_rate", "resources.")) for p in spec.patterns):
            if any(p.startswith(("eva.", "win_rate")) for p in spec.patterns) and cfg.eva.n_heldout <= 0:
                return False, "eva's win rate needs eva.n_heldout > 0"
            return True, ""
        return False, ("eva runs do not measure this (it is a select -> fine-tune metric); "
                       "eva reports eva.reward.*, eva.win_rate.rule and resources.*")
    if any(p.startswith("win_rate") for p in spec.patterns) and plan.reference is None:
        return False, "win rates need a reference run (reference: {selection.method: full})"
    if any(p.startswith(("safety", "overrefusal", "task.", "win_rate")) for p in spec.patterns) \
            and not cfg.eval.enabled:
        return False, "needs eval.enabled=true"
    if spec.patterns == ["resources.peak_gpu_memory_mb"] and cfg.device == "cpu":
        return False, "peak GPU memory needs device=cuda (or auto on a GPU machine)"
    if all(p.startswith("eva.") for p in spec.patterns):
        return False, "an eva metric: the ablated key runs the select -> fine-tune pipeline"
    return True, ""


def explain(plan: Plan) -> str:
    """How every section was mapped (evidence, confidence, competing keys, value transforms), what each metric
    needs, and which sections do not run and why (``safeselect ablate --explain``)."""
    lines = [f"plan {plan.name} ({plan.source})",
             f"  base: {plan.preset or 'defaults'}" + (f" + {_fmt_overrides(plan.base)}" if plan.base else ""),
             f"  seeds: {', '.join(map(str, plan.seeds))} (set {', '.join(plan.seed_keys)})",
             "  reference: " + ("none" if plan.reference is None else f"base + {_fmt_overrides(plan.reference)}"),
             "  bounds: " + {True: "on", False: "off", None: "auto (on for the built-in benchmark)"}[plan.bounds]]
    lines += [f"  note: {n}" for n in plan.notes]
    for a in plan.ablations:
        flag = "  [LOW CONFIDENCE: check this mapping]" if a.low_confidence else ""
        lines.append(f"ablation '{a.name}' [{a.runner}]{flag}")
        lines.append(f"  ablated part: {a.part!r}")
        lines.append(f"    -> {a.parameter}  ({a.how})")
        if a.competitors:
            lines.append(f"    two or more keys compete: {a.parameter} vs {', '.join(a.competitors)}; "
                         "write the dotted key in the plan to settle it")
        if a.note:
            lines.append(f"  values: {a.note}")
        for r in a.replacements:
            extra = {k: v for k, v in r.overrides.items() if k != a.parameter}
            lines.append(f"  replacement {r.text!r}")
            lines.append(f"    -> {a.parameter}={r.value!r}  label '{r.label}'  ({r.how})"
                         + (f"  also {_fmt_overrides(extra)}" if extra else ""))
        for text, why in a.skipped:
            lines.append(f"  replacement {text!r} NOT RUN: {why}")
        lines += metric_lines(plan, a)
    for r in plan.refused:
        lines.append(f"NOT RUN: section '{r.name}'" + (f" (line {r.line})" if r.line else "") + f": {r.reason}")
    return "\n".join(lines)


def metric_lines(plan: Plan, a: Ablation) -> list[str]:
    """One line per metric the section names: what it maps to, and FLAGGED with the setting that would produce it."""
    out = []
    for m in a.metrics:
        produced, why = metric_status(plan, a, m)
        target = ", ".join(m.patterns) if m.patterns else "no metric"
        if produced:
            out.append(f"  metric {m.name!r} -> {target}" + (f"  ({m.note})" if m.note else ""))
        else:
            out.append(f"  metric {m.name!r} -> {target}  FLAGGED, not produced: {why}")
    if not a.metrics:
        out.append("  metrics: none named (results.csv still holds every metric)")
    return out


def _fmt_overrides(d: dict[str, Any]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in d.items())
