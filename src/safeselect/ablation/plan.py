"""Ablation plans: "what if we replace X with Y", read from YAML or from the markdown users write.

A plan is a base config, one or more ablations (a config key, ``action: REPLACE``,
replacement values, the metrics to report), seeds, and a reference run (the
``full`` SFT run that win rates compare against, run once per plan).

YAML::

    name: seal_gamma_value
    base: {preset: quickstart, selection.method: seal}   # or `base: NAME`; nested keys work too
    seeds: [0, 1, 2]
    reference: {selection.method: full}                   # `false` for none
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

Prose is mapped by :mod:`safeselect.ablation.mapping`; every mapping is kept
(``how``) so ``safeselect ablate PLAN --explain`` can show it. Loading a plan
builds and validates the config of every run, so a bad value fails before
anything runs.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safeselect.ablation.mapping import (
    MetricSpec,
    companions,
    fix_mojibake,
    map_metric,
    map_parameter,
    map_value,
    reads_as_percentages,
    tokens,
)
from safeselect.config import loading
from safeselect.config.loading import get
from safeselect.config.paths import preset_names
from safeselect.core.dotted import flatten
from safeselect.errors import UserError, suggest
from safeselect.registry import registry

ABLATION_DIR = Path(__file__).resolve().parents[1] / "configs" / "ablations"
DEFAULT_SEEDS = [0, 1, 2]
DEFAULT_SEED_KEYS = ["seed", "selection.seed"]
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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "slug": self.slug, "parameter": self.parameter, "part": self.part,
                "how": self.how, "runner": self.runner, "action": self.action,
                "replacements": [r.to_dict() for r in self.replacements],
                "metrics": [m.to_dict() for m in self.metrics]}


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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "preset": self.preset, "base": self.base,
                "seeds": self.seeds, "seed_keys": self.seed_keys, "reference": self.reference,
                "notes": self.notes, "ablations": [a.to_dict() for a in self.ablations]}


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


def build_ablation(raw: dict[str, Any], base_keys: set[str], where: str,
                   base: Callable[[str], Any] | None = None) -> Ablation:
    """Map one raw ablation (parameter prose or key, replacement values or prose, metric prose)."""
    name = str(raw.get("name") or raw.get("parameter") or "ablation").strip()
    where = f"{where}: ablation '{name}'"
    action = str(raw.get("action", "REPLACE")).strip().upper()
    if action != "REPLACE":
        raise UserError(f"{where}: action {action!r} is not supported (only REPLACE)")
    part = raw.get("parameter")
    if part is None or str(part).strip() == "":
        raise UserError(f"{where}: no parameter / Ablated Part given")
    km = map_parameter(str(part), where)
    key = km.key
    how = "dotted key" if km.alias == key else f"matched alias {km.alias!r}"
    raws = raw.get("replacements")
    if not isinstance(raws, list) or not raws:
        raise UserError(f"{where}: 'replacements' must be a non-empty list")
    values = [r.get("value") if isinstance(r, dict) else r for r in raws]
    percent = reads_as_percentages(key, values)
    reps: list[Replacement] = []
    for r in raws:
        extra: dict[str, Any] = {}
        label = None
        if isinstance(r, dict):
            if "value" not in r:
                raise UserError(f"{where}: a replacement mapping needs 'value' (and optionally label, overrides)")
            label, value_raw = r.get("label"), r["value"]
            extra = flatten(r.get("overrides") or {})
        else:
            value_raw = r
        vm = map_value(key, value_raw, percent=percent, where=where)
        if label is None:
            label = _default_label(value_raw, vm.value, percent)
        comp = {k: v for k, v in companions(key, vm.value, base).items() if k not in base_keys and k not in extra}
        overrides = {**comp, **extra, key: vm.value}
        reps.append(Replacement(str(label), vm.value, fix_mojibake(str(value_raw)), vm.how, overrides))
    seen: dict[str, str] = {}
    for rep in reps:
        sig = json.dumps(rep.overrides, sort_keys=True, default=str)
        if sig in seen:
            raise UserError(f"{where}: replacements {seen[sig]!r} and {rep.text!r} both map to {key}={rep.value!r}")
        seen[sig] = rep.text
    labels = [r.label for r in reps]
    if len(set(labels)) != len(labels):
        raise UserError(f"{where}: replacement labels must differ, got {labels}")
    metrics_raw = raw.get("metrics") or []
    if isinstance(metrics_raw, str):
        metrics_raw = split_top_level(metrics_raw)
    metrics = [map_metric(m) for m in metrics_raw]
    runner = str(raw.get("runner") or ("eva" if key.startswith("eva.") else "pipeline"))
    if runner not in ("pipeline", "eva"):
        raise UserError(f"{where}: runner must be 'pipeline' or 'eva', got {runner!r}")
    return Ablation(name=name, slug=slugify(raw.get("slug") or name), parameter=key,
                    part=fix_mojibake(str(part)), how=how, replacements=reps, metrics=metrics, runner=runner)


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
    known = {"name", "description", "base", "seeds", "seed_keys", "reference", "ablations"}
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
    for i, a in enumerate(data["ablations"]):
        if not isinstance(a, dict):
            raise UserError(f"{path}: ablation {i + 1} must be a mapping")
        unknown = set(a) - {"name", "slug", "parameter", "action", "replacements", "metrics", "runner"}
        if unknown:
            raise UserError(f"{path}: ablation {i + 1}: unknown key(s) {', '.join(sorted(unknown))}")
    return header, data["ablations"]


# ----------------------------------------------------------------------------- markdown plans

_FIELDS = {
    "part": ("ablated part", "ablated component", "component", "parameter", "ablated parameter", "part"),
    "action": ("action",),
    "replacements": ("replacement", "replacements", "values", "alternatives", "variants"),
    "metrics": ("metrics", "metric", "evaluation metrics", "measure", "measures"),
}
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_FIELD = re.compile(r"^\*\*\s*([^*]+?)\s*:?\s*\*\*\s*:?\s*(.*)$|^([A-Za-z][A-Za-z ]{1,30}):\s*(.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def strip_html(text: str) -> str:
    """Drop <style>/<script> blocks and every tag, unescape entities, keep the text and line structure."""
    text = re.sub(r"<(style|script)\b.*?</\1\s*>", "", text, flags=re.S | re.I)
    text = re.sub(r"<[^>\n]+>", "", text)
    return html.unescape(text)


def _field_name(label: str) -> str | None:
    norm = " ".join(label.lower().replace("_", " ").split())
    for name, labels in _FIELDS.items():
        if norm in labels:
            return name
    return None


def parse_markdown(text: str, where: str = "plan") -> tuple[str, list[dict[str, Any]]]:
    """The title and raw ablations ({name, parameter, action, replacements, metrics}) of a markdown plan."""
    lines = strip_html(fix_mojibake(text)).splitlines()
    title = ""
    sections: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    cur_field: str | None = None
    field_indent = 0
    for lineno, line in enumerate(lines, 1):
        h = _HEADING.match(line)
        if h:
            if len(h.group(1)) == 1 and not title:
                title = h.group(2).strip()
            else:
                cur = {"name": h.group(2).strip(), "line": lineno, "fields": {}}
                sections.append(cur)
            cur_field = None
            continue
        if cur is None:
            continue
        b = _BULLET.match(line)
        if b:
            indent, body = len(b.group(1).expandtabs(4)), b.group(2).strip()
            f = _FIELD.match(body)
            fname = _field_name(f.group(1) or f.group(3)) if f else None
            if fname and (cur_field is None or indent <= field_indent):
                cur_field, field_indent = fname, indent
                value = (f.group(2) if f.group(1) is not None else f.group(4)).strip()
                cur["fields"][fname] = {"text": value, "items": [], "line": lineno}
            elif cur_field and indent > field_indent:
                cur["fields"][cur_field]["items"].append(body)
            else:
                cur_field = None
            continue
        if line.strip() and cur_field and line.startswith(" " * (field_indent + 2)):
            entry = cur["fields"][cur_field]
            if entry["items"]:
                entry["items"][-1] += " " + line.strip()
            else:
                entry["text"] = (entry["text"] + " " + line.strip()).strip()
    raws: list[dict[str, Any]] = []
    for s in sections:
        fields = s["fields"]
        if not fields:
            continue  # a prose section (reasoning, notes): not an ablation
        at = f"{where}:{s['line']}"
        if "part" not in fields:
            raise UserError(f"{at}: section '{s['name']}' has no '- **Ablated Part**: ...' bullet")
        if "replacements" not in fields:
            raise UserError(f"{at}: section '{s['name']}' has no '- **Replacement**:' list")
        rep = fields["replacements"]
        items = rep["items"] or split_top_level(rep["text"])
        if not items:
            raise UserError(f"{where}:{rep['line']}: section '{s['name']}' lists no replacement values")
        metrics = fields.get("metrics", {"text": "", "items": []})
        raws.append({
            "name": _section_name(s["name"]), "parameter": fields["part"]["text"] or " ".join(fields["part"]["items"]),
            "action": fields.get("action", {"text": "REPLACE"})["text"] or "REPLACE",
            "replacements": items,
            "metrics": metrics["items"] or split_top_level(metrics["text"]),
            "line": s["line"],
        })
    if not raws:
        raise UserError(f"{where}: no ablation sections found (expected '### title' with "
                        "'- **Ablated Part**:', '- **Action**:', '- **Replacement**:', '- **Metrics**:' bullets)")
    return title, raws


def _section_name(heading: str) -> str:
    """'Ablation Study on Penalty Strength' -> 'Penalty Strength'; 'Ablation: Gamma Schedule' -> 'Gamma Schedule'."""
    name = re.sub(r"^\s*ablation(\s+study)?\s*(on|of|:|-|–)?\s*", "", heading, flags=re.I).strip(" :-–")
    return name or heading.strip()


def _markdown_preset(title: str, raws: list[dict[str, Any]], notes: list[str]) -> str | None:
    """The shipped preset named after what a markdown plan ablates (eva, or the selector), when one exists."""

    keys = []
    for r in raws:
        try:
            keys.append(map_parameter(str(r["parameter"])).key)
        except UserError:
            return None  # the mapping error is raised, with its context, by build_ablation
    name = None
    if keys and all(k.startswith("eva.") for k in keys):
        name = "eva"
    else:
        words = set(tokens(title + " " + " ".join(str(r["parameter"]) for r in raws)))
        methods = {k.split(".")[1] for k in keys if k.startswith("selection.") and k.count(".") >= 2}
        methods |= {m for m in preset_names() if m in words}
        name = methods.pop() if len(methods) == 1 else None
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


def load_plan(path: str | Path, overrides: dict[str, Any] | list[str] | None = None, base: str | None = None,
              seeds: list[int] | None = None, validate: bool = True) -> Plan:
    """Parse, map and (by default) validate a plan.

    ``overrides`` (dotted dict or ``key=value`` strings) apply to the base of every run, ``base`` replaces the
    plan's preset, ``seeds`` its seeds.
    """

    p = resolve_plan_path(path)
    if isinstance(overrides, (list, tuple)):
        overrides = dict(loading.parse_override(o) for o in overrides)
    overrides = dict(overrides or {})
    notes: list[str] = []
    if p.suffix == ".md":
        title, raw_ablations = parse_markdown(p.read_text(encoding="utf-8", errors="replace"), str(p))
        header: dict[str, Any] = {"name": p.stem, "preset": None, "base": {}}
        for r in raw_ablations:
            r.pop("line", None)
    else:
        title = ""
        header, raw_ablations = _yaml_plan(p)
    base_flat = {**header.get("base", {}), **overrides}
    preset = base if base is not None else header.get("preset")
    if p.suffix == ".md" and base is None:
        # Markdown plans name no base config: use the shipped preset of the method they ablate, if there is one.
        preset = _markdown_preset(title, raw_ablations, notes)
    try:
        base_cfg = make_config(preset, base_flat)
    except UserError as e:
        raise UserError(f"{p}: base config: {e}") from None

    def base_value(key: str) -> Any:
        return get(base_cfg, key)

    ablations = [build_ablation(r, set(base_flat), str(p), base_value) for r in raw_ablations]
    if p.suffix == ".md":
        # Markdown plans name no base config: infer the selector they ablate, and say so.
        if any(a.runner == "pipeline" for a in ablations) and "selection.method" not in base_flat:
            method = infer_method(title, ablations, [a.part for a in ablations])
            if method and make_config(preset, base_flat).selection.method != method:
                base_flat = {"selection.method": method, **base_flat}
                notes.append(f"base selection.method={method} (inferred from the plan)")
        if all(a.runner == "eva" for a in ablations):
            header["reference"] = None
            notes.append("no reference run: eva compares its final solver against its starting model")
            if "eva.save_model" not in base_flat:
                base_flat["eva.save_model"] = False
                notes.append("base eva.save_model=false (an ablation keeps metrics, not one model per run)")
    plan = Plan(
        name=str(header.get("name") or p.stem), source=str(p), ablations=ablations,
        preset=preset, base=base_flat,
        seeds=list(seeds) if seeds else header.get("seeds", list(DEFAULT_SEEDS)),
        seed_keys=header.get("seed_keys", list(DEFAULT_SEED_KEYS)),
        reference=header["reference"] if "reference" in header else dict(DEFAULT_REFERENCE),
        notes=notes,
    )
    names = [a.name for a in ablations]
    if len(set(names)) != len(names):
        raise UserError(f"{p}: ablation names must differ, got {names}")
    slugs = [a.slug for a in ablations]
    if len(set(slugs)) != len(slugs):
        raise UserError(f"{p}: ablation names must differ in their first 28 characters, got {slugs}")
    if validate:
        validate_plan(plan)
    return plan


def validate_plan(plan: Plan) -> None:
    """Build the config of the base, the reference and every replacement; a bad value names its ablation."""
    seed = {k: plan.seeds[0] for k in plan.seed_keys}
    try:
        make_config(plan.preset, {**plan.base, **seed})
    except UserError as e:
        raise UserError(f"{plan.source}: base config: {e}") from None
    if plan.reference is not None:
        try:
            make_config(plan.preset, {**plan.base, **plan.reference, **seed})
        except UserError as e:
            raise UserError(f"{plan.source}: reference run: {e}") from None
    for a in plan.ablations:
        for r in a.replacements:
            try:
                make_config(plan.preset, {**plan.base, **r.overrides, **seed})
            except UserError as e:
                raise UserError(f"{plan.source}: ablation '{a.name}', replacement {r.text!r}: {e}") from None


def explain(plan: Plan) -> str:
    """Human-readable mapping of every ablated part, replacement and metric (``safeselect ablate --explain``)."""
    lines = [f"plan {plan.name} ({plan.source})",
             f"  base: {plan.preset or 'defaults'}" + (f" + {_fmt_overrides(plan.base)}" if plan.base else ""),
             f"  seeds: {', '.join(map(str, plan.seeds))} (set {', '.join(plan.seed_keys)})",
             "  reference: " + ("none" if plan.reference is None else f"base + {_fmt_overrides(plan.reference)}")]
    lines += [f"  note: {n}" for n in plan.notes]
    for a in plan.ablations:
        lines.append(f"ablation '{a.name}' [{a.runner}]")
        lines.append(f"  ablated part: {a.part!r}")
        lines.append(f"    -> {a.parameter}  ({a.how})")
        for r in a.replacements:
            extra = {k: v for k, v in r.overrides.items() if k != a.parameter}
            lines.append(f"  replacement {r.text!r}")
            lines.append(f"    -> {a.parameter}={r.value!r}  label '{r.label}'  ({r.how})"
                         + (f"  also {_fmt_overrides(extra)}" if extra else ""))
        for m in a.metrics:
            target = ", ".join(m.patterns) if m.patterns else "NOT COMPUTED"
            lines.append(f"  metric {m.name!r} -> {target}" + (f"  ({m.note})" if m.note else ""))
        if not a.metrics:
            lines.append("  metrics: none named (results.csv still holds every metric)")
    return "\n".join(lines)


def _fmt_overrides(d: dict[str, Any]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in d.items())
