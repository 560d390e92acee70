"""Loading a config: defaults < YAML preset < ``key=value`` overrides, validated against the schema.

Unknown keys and bad values raise :class:`UserError` naming the key and the
closest valid one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

from safeselect.config.paths import resolve_preset
from safeselect.config.schema import ExperimentConfig, _field_info_cached, _walk, all_keys
from safeselect.core.dotted import flatten
from safeselect.core.io import read_text
from safeselect.core.precision import resolve_mixed_precision
from safeselect.errors import UserError, suggest


@functools.cache
def _known_keys() -> tuple[frozenset[str], tuple[str, ...]]:
    """(leaf keys and section keys, leaf keys in order); the schema is fixed, so computed once."""
    leaves = tuple(all_keys())
    sections = {k for k, _, sub in _walk(ExperimentConfig) if sub is not None}
    return frozenset(leaves) | frozenset(sections), leaves


def _check_key(key: str) -> None:
    known, leaves = _known_keys()
    if key not in known:
        raise UserError(f"unknown config key '{key}'{suggest(key, list(leaves))}")


MAX_SEED = 2**32 - 1  # numpy's and torch's seed range


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(read_text(path)) or {}  # a folder, not UTF-8, binary: one UserError
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = str(getattr(e, "problem", None) or e).splitlines()[0]
        raise UserError(f"{path}{where}: malformed YAML ({problem})") from None
    except RecursionError:
        raise UserError(f"{path}: YAML nested too deeply") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of keys to values")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=3`` -> ("a.b", 3), values parsed as YAML scalars/lists."""
    import yaml

    if "=" not in text:
        raise UserError(f"override '{text}' must look like key=value")
    key, _, raw = text.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError:
        value = raw
    return key, choice_word(key, value)


def _coerce_gamma(flat: dict[str, Any]) -> dict[str, Any]:
    """A plain number for ``selection.seal.gamma`` means a constant schedule (METHODS.md section 2)."""
    g = flat.get("selection.seal.gamma")
    if g is not None and not isinstance(g, dict):
        if isinstance(g, bool) or not isinstance(g, (int, float)):
            raise UserError(f"selection.seal.gamma={g!r}: give a number (constant) or a mapping with 'schedule'")
        flat = dict(flat)
        del flat["selection.seal.gamma"]
        flat["selection.seal.gamma.schedule"] = "constant"
        flat["selection.seal.gamma.value"] = float(g)
    return flat


@functools.cache
def _dict_leaves() -> frozenset[str]:
    """Leaf keys whose value is a mapping (``data.task.columns``)."""
    return frozenset(k for k, meta in _field_info_cached().items() if isinstance(meta.get("default"), dict))


def _fold_dict_leaves(flat: dict[str, Any]) -> dict[str, Any]:
    """``data.task.columns.prompt: x`` (from flattening YAML, or an override) -> ``data.task.columns: {prompt: x}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        leaf = next((d for d in _dict_leaves() if key.startswith(d + ".")), None)
        if leaf is None:
            out[key] = value
            continue
        sub = out.setdefault(leaf, {})
        if not isinstance(sub, dict):
            raise UserError(f"'{leaf}' must be a mapping")
        sub[key[len(leaf) + 1:]] = value
    return out


def choice_word(key: str, value: Any) -> Any:
    """``value`` for ``key``, with a YAML boolean turned back into the word it was written as, for a field whose
    choices are words:
    YAML 1.1 reads ``no`` / ``off`` / ``yes`` / ``on`` as booleans, so ``finetune.mixed_precision=no``
    arrived as False (and failed as 'False')."""
    choices = (_field_info_cached().get(key) or {}).get("choices")
    if not isinstance(value, bool) or not choices or any(isinstance(c, bool) for c in choices):
        return value
    words = ("yes", "on", "true") if value else ("no", "off", "false")
    return next((c for c in choices if str(c).lower() in words), value)


def build(values: dict[str, Any]) -> ExperimentConfig:
    """Build a validated config from a flat {dotted key: value} mapping on top of the defaults."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    values = _fold_dict_leaves(_coerce_gamma(values))
    base = OmegaConf.structured(ExperimentConfig)
    for key, value in values.items():
        _check_key(key)
        value = choice_word(key, value)
        try:
            OmegaConf.update(base, key, value, merge=True)
        except OmegaConfBaseException as e:
            msg = str(e).splitlines()[0]
            raise UserError(f"bad value for '{key}': {value!r} ({msg})") from None
    cfg: ExperimentConfig = OmegaConf.to_object(base)  # type: ignore[assignment]
    validate(cfg)
    resolve_precision(cfg, cfg.device)
    return cfg


def resolve_precision(obj: Any, device: str) -> None:
    """Every ``mixed_precision=auto`` inside ``obj`` (a config dataclass) set, in place, to what it means on
    ``device`` here (:func:`safeselect.core.precision.resolve_mixed_precision`): the run's config.yaml then
    says which precision ran, and a cell from another kind of machine differs in config."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name == "mixed_precision" and value == "auto":
            setattr(obj, f.name, resolve_mixed_precision(value, device))
        else:
            resolve_precision(value, device)


def validate(cfg: ExperimentConfig) -> None:
    """Check choices and ranges declared on the fields."""
    info = _field_info_cached()
    for key, meta in info.items():
        value = get(cfg, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"bad value for '{key}': {value} (a finite number is needed)")
        if key.rsplit(".", 1)[-1] == "seed" and value is not None and not 0 <= value <= MAX_SEED:
            # numpy and torch take seeds in [0, 2**32 - 1]; refuse here what would crash mid-run
            raise UserError(f"'{key}'={value} is out of range [0, {MAX_SEED}] (seeds are non-negative 32-bit integers)")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise UserError(f"bad value for '{key}': {value!r}{suggest(str(value), list(choices))}")
        rng = meta.get("range")
        if rng and value is not None and isinstance(value, (int, float)):
            lo, hi = rng
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                lo_s = "-inf" if lo is None else lo
                hi_s = "inf" if hi is None else hi
                raise UserError(f"'{key}'={value} is out of range [{lo_s}, {hi_s}]")
    g = cfg.selection.seal.gamma
    if g.schedule == "exponential" and g.init <= 0:
        raise UserError("'selection.seal.gamma.init' must be > 0 for the exponential schedule")
    if (cfg.eval.backend, cfg.eval.dtype) in (("hf", "int8"), ("torch", "int8"), ("ctranslate2", "bfloat16")):
        raise UserError(f"eval.dtype={cfg.eval.dtype} is not available with eval.backend={cfg.eval.backend} "
                        "(hf, torch: float32, bfloat16; ctranslate2: float32, int8)")


def get(cfg: Any, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def load(config: str | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """defaults < YAML preset (by name or path) < ``key=value`` overrides."""
    flat: dict[str, Any] = {}
    if config:
        path = resolve_preset(config)
        data = _read_yaml(path)
        inherit = data.pop("defaults", None)
        if inherit:
            flat.update(flatten(_read_yaml(resolve_preset(str(inherit)))))
        flat.update(flatten(data))
    for text in overrides:
        key, value = parse_override(text)
        flat[key] = value
    return build(flat)


def to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: ExperimentConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
