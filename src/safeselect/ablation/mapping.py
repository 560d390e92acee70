"""Map the prose of ablation plans to config keys, config values and metric names.

Users write plans like "Penalty strength (γ) scheduling strategy" with
replacements like "Exponential schedule" or "10%". This module turns such text
into ``selection.seal.gamma.schedule = "exponential"`` or ``selection.ratio = 0.1``:

- :func:`fix_mojibake` repairs text that was UTF-8 but decoded as Mac Roman or
  Windows-1252 on the way ("Œ≥" and "Î³" are "γ", "ÀÜŒ∏" is "ˆθ");
- :func:`map_parameter` scores every config key by the aliases its field
  declares in :mod:`safeselect.config` (plus its own name), on normalised,
  stemmed tokens; an alias counts only when all its tokens occur in the text,
  longer aliases win, and an alias found as a contiguous phrase gets a bonus;
- :func:`map_value` reads numbers (a percentage for a 0..1 key), booleans and
  choices, the latter through the value aliases of :data:`VALUE_ALIASES`
  ("Algorithm 1" -> ``auxiliary``), ignoring what follows a negation
  ("without auxiliary variable");
- :func:`companions` adds the settings a replacement needs to mean what it says
  (a gamma *value* only acts under the constant schedule);
- :func:`map_metric` maps metric prose ("GPU memory", "Arena-Hard WR") to
  patterns over our metric names, and says so when we cannot compute one.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from safeselect.config.schema import field_info
from safeselect.core.metrics import is_sibling
from safeselect.errors import UserError

# ----------------------------------------------------------------------------- text repair and tokens

_MOJIBAKE_CODECS = ("mac_roman", "cp1252", "latin-1")
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


def _roundtrip(segment: str) -> str | None:
    """``segment`` re-read as the UTF-8 it was before a wrong decode, or None when no codec explains it."""
    for codec in _MOJIBAKE_CODECS:
        try:
            fixed = segment.encode(codec).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        if fixed != segment:
            return fixed
    return None


def _fix_run(run: str) -> str:
    fixed = _roundtrip(run)
    if fixed is not None:
        return fixed
    # A run can hold several mojibake sequences plus a stray character: repair the longest prefixes that decode.
    out, i = [], 0
    while i < len(run):
        for j in range(len(run), i + 1, -1):
            piece = _roundtrip(run[i:j])
            if piece is not None:
                out.append(piece)
                i = j
                break
        else:
            out.append(run[i])
            i += 1
    return "".join(out)


def fix_mojibake(text: str) -> str:
    """Repair UTF-8 text that was decoded as Mac Roman, cp1252 or Latin-1; correct text is left alone.

    Each run of non-ASCII characters is re-encoded with the suspected codec and
    decoded as UTF-8; real UTF-8 text ("γ", "é") fails that round trip and stays.
    """
    return _NON_ASCII_RUN.sub(lambda m: _fix_run(m.group(0)), text)


_GREEK = {"γ": "gamma", "θ": "theta", "ω": "omega", "λ": "lambda", "β": "beta", "τ": "tau", "μ": "mu",
          "ν": "nu", "ρ": "rho", "σ": "sigma", "α": "alpha"}
_STOPWORDS = frozenset({
    "a", "an", "the", "of", "in", "on", "at", "by", "for", "to", "with", "and", "or", "from", "into", "per", "via",
    "as", "is", "are", "be", "this", "that", "its", "it", "e", "g", "eg", "ie", "using", "use", "used",
    "specifically", "which", "whose", "their", "our"})
_NEGATIONS = frozenset({"without", "no", "not", "non"})
_TOKEN = re.compile(r"\d+(?:\.\d+)?%?|[a-z]+|[^\sa-z\d]")


def normalise(text: str) -> str:
    """Repaired, lower-case, Greek letters spelled out, punctuation kept as separate characters."""
    text = unicodedata.normalize("NFKC", fix_mojibake(str(text)))
    for letter, name in _GREEK.items():
        text = text.replace(letter, f" {name} ")
    return text.lower()


def _stem(word: str) -> str:
    """A tiny suffix stripper: enough for scheduling/schedule, selected/select, networks/network."""
    if not word.isalpha():
        return word
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def tokens(text: str, drop_negated: bool = False) -> list[str]:
    """Stemmed content tokens of ``text``; with ``drop_negated`` the words after "without/no/not" up to the
    next punctuation are left out (so "without auxiliary variable" does not vote for ``auxiliary``)."""
    out: list[str] = []
    negated = False
    for tok in _TOKEN.findall(normalise(text)):
        if not (tok[0].isalnum()):
            negated = False if tok not in "-'’" else negated
            continue
        if drop_negated and tok in _NEGATIONS:
            negated = True
            continue
        if negated or tok in _STOPWORDS:
            continue
        out.append(_stem(tok))
    return out


def _score(name_toks: list[str], text_toks: list[str]) -> float:
    """len(name) (+0.5 when contiguous in the text) if every token of ``name`` is in the text, else 0."""
    if not name_toks or not set(name_toks) <= set(text_toks):
        return 0.0
    n = len(name_toks)
    contiguous = any(text_toks[i:i + n] == name_toks for i in range(len(text_toks) - n + 1))
    return n + (0.5 if contiguous else 0.0)


def _overlap(name_toks: list[str], text_toks: list[str]) -> float:
    """Share of the name's tokens found in the text (for did-you-mean lists)."""
    return len(set(name_toks) & set(text_toks)) / len(set(name_toks)) if name_toks else 0.0


# ----------------------------------------------------------------------------- config keys


@functools.lru_cache(maxsize=1)
def _fields() -> dict[str, dict[str, Any]]:
    return field_info()


def key_names(key: str) -> list[str]:
    """Every name a key answers to: its declared aliases, its leaf name when distinctive, and parent + leaf."""
    info = _fields()[key]
    parts = key.split(".")
    names = list(info.get("aliases") or ())
    leaf = parts[-1].replace("_", " ")
    if "_" in parts[-1]:
        names.append(leaf)
    if len(parts) > 1:
        names.append(f"{parts[-2].replace('_', ' ')} {leaf}")
    return names


@dataclass(frozen=True)
class KeyMatch:
    """How a piece of prose was mapped to a config key."""

    key: str
    alias: str
    score: float


def _rank_keys(text: str) -> list[KeyMatch]:
    text_toks = tokens(text)
    whole = " ".join(text_toks)
    ranked: list[KeyMatch] = []
    for key in _fields():
        best = KeyMatch(key, "", 0.0)
        for name in key_names(key):
            name_toks = tokens(name)
            # A one-letter alias ("p", "K") only counts when it is the whole text: it occurs everywhere else.
            if len(name_toks) == 1 and len(name_toks[0]) <= 1:
                s = 10.0 if whole == name_toks[0] else 0.0
            else:
                s = _score(name_toks, text_toks)
            if s > best.score:
                best = KeyMatch(key, name, s)
        if best.score > 0:
            ranked.append(best)
    ranked.sort(key=lambda m: (-m.score, m.key))
    return ranked


def closest_knobs(text: str, n: int = 3) -> list[str]:
    """The keys whose names share the most tokens with ``text`` (for error messages)."""
    text_toks = tokens(text)
    scored = []
    for key in _fields():
        best = max((_overlap(tokens(name), text_toks) for name in key_names(key)), default=0.0)
        if best > 0:
            scored.append((best, key))
    scored.sort(key=lambda t: (-t[0], t[1]))
    if not scored:
        import difflib

        return difflib.get_close_matches(str(text), list(_fields()), n=n, cutoff=0.0)
    return [k for _, k in scored[:n]]


def _knob_hint(keys: list[str]) -> str:
    hints = []
    for k in keys:
        aliases = [a for a in (_fields()[k].get("aliases") or ())][:3]
        hints.append(f"{k} ({', '.join(repr(a) for a in aliases)})" if aliases else k)
    return "; ".join(hints)


def map_parameter(text: str, where: str = "plan") -> KeyMatch:
    """A dotted config key, or prose mapped through the field aliases; UserError naming the closest knobs."""
    raw = fix_mojibake(str(text)).strip().strip("`")
    if raw in _fields():
        return KeyMatch(raw, raw, float("inf"))
    ranked = _rank_keys(raw)
    n_text = max(1, len(tokens(raw)))
    if ranked and ranked[0].score < 2 and n_text > 2 * int(ranked[0].score):
        # one generic word ("selector") in a long phrase is too weak to act on
        ranked = []
    if not ranked:
        raise UserError(f"{where}: cannot map ablated part {raw!r} to a config key; closest knobs: "
                        f"{_knob_hint(closest_knobs(raw))}; write the dotted key instead")
    if len(ranked) > 1 and ranked[1].score == ranked[0].score:
        tied = [m.key for m in ranked if m.score == ranked[0].score]
        raise UserError(f"{where}: ablated part {raw!r} is ambiguous between {', '.join(tied)} "
                        f"(matched {', '.join(repr(m.alias) for m in ranked if m.score == ranked[0].score)}); "
                        "write the dotted key instead")
    return ranked[0]


# ----------------------------------------------------------------------------- values

# Prose for the choices of choice-valued keys. The choice itself (underscores as spaces) always counts too.
VALUE_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "selection.seal.algorithm": {
        "auxiliary": ("algorithm 1", "alg 1", "auxiliary", "auxiliary variable", "theta hat", "full bilevel update"),
        "memory_efficient": ("algorithm 2", "alg 2", "memory efficient", "memory-efficient", "simplified update"),
    },
    "selection.seal.gamma.schedule": {
        "constant": ("constant", "fixed value", "fixed gamma", "fixed penalty"),
        "linear": ("linear", "linear incremental", "incremental", "fixed increment"),
        "exponential": ("exponential", "geometric"),
    },
    "eva.creator": {
        "shared": ("shared", "shared network", "same network", "same model", "shared parameters"),
        "independent": ("independent", "independent networks", "separate", "separate network", "frozen creator"),
    },
    "eva.sampler": {"weighted": ("weighted", "informativeness weighted"), "greedy": ("greedy", "top"),
                    "uniform": ("uniform", "random")},
    "eva.loss": {"dpo": ("dpo",), "simpo": ("simpo",), "ipo": ("ipo",)},
    "selection.budget": {"rows": ("rows", "examples", "samples"), "tokens": ("tokens", "token budget")},
}

_TRUE = frozenset({"true", "yes", "on", "enabled", "enable", "with", "1"})
_FALSE = frozenset({"false", "no", "off", "disabled", "disable", "without", "0"})
_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?%?")


@dataclass(frozen=True)
class ValueMatch:
    """A replacement value and how it was read."""

    value: Any
    how: str


def _kind(key: str) -> str:
    """float, int, bool, str or list: from the field's default (None defaults are optional strings)."""
    default = _fields()[key].get("default")
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, list):
        return "list"
    return "str"


def is_fraction_key(key: str) -> bool:
    """A 0..1 share (selection.ratio, eva.sample_ratio, ...): prose may give it as a percentage."""
    rng = _fields()[key].get("range")
    return _kind(key) == "float" and bool(rng) and rng[0] == 0 and rng[1] == 1


def reads_as_percentages(key: str, raws: list[Any]) -> bool:
    """True when the bare numbers of a replacement list are percentages: a 0..1 key and some value above 1.

    Only prose counts (markdown values, YAML strings); a YAML number means exactly what it says.
    """
    if not is_fraction_key(key):
        return False
    nums = [float(r.strip().rstrip("%")) for r in raws if isinstance(r, str) and _NUMBER.fullmatch(r.strip())]
    return bool(nums) and any(v > 1 for v in nums) and all(0 <= v <= 100 for v in nums)


def _choice_names(key: str, choice: str) -> list[str]:
    return [choice.replace("_", " "), *VALUE_ALIASES.get(key, {}).get(choice, ())]


def map_value(key: str, raw: Any, percent: bool = False, where: str = "plan") -> ValueMatch:
    """Read one replacement for ``key``: YAML numbers/booleans pass through, prose is mapped; ``percent`` divides
    bare numbers in prose by 100 (see :func:`reads_as_percentages`)."""
    info = _fields()[key]
    kind = _kind(key)
    choices = info.get("choices")
    if not isinstance(raw, str):  # a YAML number or list means exactly what it says
        return ValueMatch(raw, "as given")
    text = fix_mojibake(raw).strip()
    if choices:
        if text in choices:
            return ValueMatch(text, "as given")
        text_toks = tokens(text, drop_negated=True)
        scored = []
        for choice in choices:
            best = max(((_score(tokens(n), text_toks), n) for n in _choice_names(key, str(choice))), default=(0, ""))
            if best[0] > 0:
                scored.append((best[0], str(choice), best[1]))
        scored.sort(key=lambda t: -t[0])
        if not scored:
            raise UserError(f"{where}: cannot map replacement {text!r} to a value of {key} "
                            f"(choices: {', '.join(map(str, choices))})")
        if len(scored) > 1 and scored[0][0] == scored[1][0]:
            raise UserError(f"{where}: replacement {text!r} is ambiguous for {key}: "
                            f"{scored[0][1]} ({scored[0][2]!r}) or {scored[1][1]} ({scored[1][2]!r})")
        choice = next(c for c in choices if str(c) == scored[0][1])
        return ValueMatch(choice, f"matched {scored[0][2]!r}")
    if kind in ("float", "int"):
        nums = _NUMBER.findall(text.replace(",", ""))
        if len(nums) != 1:
            raise UserError(f"{where}: replacement {text!r} for {key} needs exactly one number "
                            f"(found {len(nums)})")
        num = nums[0]
        if num.endswith("%") or percent:
            value = float(num.rstrip("%")) / 100.0
            how = f"{num} = {value:g}" if num.endswith("%") else f"{num} read as a percentage of a 0..1 share: {value:g}"
        else:
            value = float(num)
            how = "number" if num == text else f"number {num} in the text"
        if kind == "int":
            if value != int(value):
                raise UserError(f"{where}: {key} takes a whole number, got {text!r}")
            value = int(value)
        return ValueMatch(value, how)
    if kind == "bool":
        toks = set(tokens(text))
        if toks & _TRUE and not toks & _FALSE:
            return ValueMatch(True, "read as true")
        if toks & _FALSE and not toks & _TRUE:
            return ValueMatch(False, "read as false")
        raise UserError(f"{where}: cannot read replacement {text!r} as true/false for {key}")
    if kind == "list":
        import yaml

        value = yaml.safe_load(text)
        return ValueMatch(value if isinstance(value, list) else [value], "as a list")
    return ValueMatch(text, "as given")


def companions(key: str, value: Any, base: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Settings a replacement needs to mean what it says; a plan's own base settings take precedence.

    ``base(key)`` gives a key's value in the plan's base config (for companions that copy one).

    - a gamma value only acts under the constant schedule ("gamma = 0.1" means a constant 0.1: METHODS.md 2);
    - the constant schedule at its default value 0 would be "no penalty", so the schedule ablation compares
      against 0.03, the mean of the default linear curve over three epochs (0, 0.03, 0.06);
    - the exponential schedule needs init > 0: 0.015 with rate 2 gives 0.015, 0.03, 0.06, the same end point;
    - an independent eva creator needs a model: a frozen copy of the starting model unless the base names one.
    """
    if key == "selection.seal.gamma.value":
        return {"selection.seal.gamma.schedule": "constant"}
    if key == "selection.seal.gamma.schedule" and value == "constant":
        return {"selection.seal.gamma.value": 0.03}
    if key == "selection.seal.gamma.schedule" and value == "exponential":
        return {"selection.seal.gamma.init": 0.015}
    if key == "eva.creator" and value == "independent":
        # an independent creator is a separate frozen model; by default a frozen copy of the starting model
        model = (base("eva.creator_model") or base("model.name")) if base else None
        return {"eva.creator_model": model} if model else {}
    return {}


# ----------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricRule:
    """Prose names of a metric family and the metric-name patterns it covers (directions and the meaning
    of each concrete name live in :mod:`safeselect.core.metrics`)."""

    names: tuple[str, ...]
    patterns: tuple[str, ...]
    label: str


METRIC_RULES: tuple[MetricRule, ...] = (
    # win_rate.<set>.<judge> covers every set; safety.<set>.<judge>.win_rate repeats the harmful sets' figures.
    MetricRule(("win rate", "win_rate", "wr", "winrate"), ("win_rate.*", "eva.win_rate.*"),
               "win rate (0..100): vs the reference run; eva: final vs starting solver"),
    MetricRule(("safety win rate",), ("safety.*.win_rate",), "win rate on the harmful sets (0..100)"),
    MetricRule(("arena hard", "arena-hard wr", "arenahard"), ("win_rate.arenahard.*",),
               "Arena-Hard win rate (0..100)"),
    MetricRule(("alpacaeval", "alpaca eval", "alpacaeval wr"), ("win_rate.alpacaeval.*", "win_rate.alpacaeval_lc.*"),
               "AlpacaEval win rate (0..100)"),
    MetricRule(("mt bench", "mtbench", "mt-bench avg score"), ("mtbench.score", "mtbench.*.score"),
               "MT-Bench score (1..10)"),
    MetricRule(("safety alignment score", "safety score", "safety avg", "safety average", "safety_avg"),
               ("safety_avg.*",), "Safety Avg: mean harmful rate over safety sets (lower is safer)"),
    MetricRule(("harmful rate", "harmfulness", "attack success rate", "asr", "harmful score"),
               ("safety.*.harmful_rate",), "harmful rate (0..1, lower is safer)"),
    MetricRule(("over refusal", "overrefusal", "refusal rate", "false refusal"), ("overrefusal.*.refusal_rate",),
               "over-refusal rate on benign look-alikes (0..1)"),
    MetricRule(("accuracy", "task accuracy", "task performance", "utility"), ("task.*.accuracy",),
               "task accuracy (0..1)"),
    MetricRule(("gpu memory", "gpu_memory", "memory", "peak memory", "memory usage"),
               ("resources.peak_gpu_memory_mb", "resources.peak_memory_mb"),
               "peak memory in MB (accelerator where there is one, else process memory)"),
    MetricRule(("training time", "training_time", "train time", "time", "wall time", "compute time", "runtime"),
               ("resources.train_s", "resources.selection_s"),
               "wall time of selector training and of the final fine-tune (s)"),
    MetricRule(("selection time",), ("resources.selection_s",), "wall time of selection (s)"),
    MetricRule(("evaluation time", "eval time"), ("resources.eval_s",), "wall time of evaluation (s)"),
    MetricRule(("harmful kept", "harmful kept fraction"), ("selection.harmful_kept_fraction",),
               "share of the harmful task rows that were kept (lower is better)"),
    MetricRule(("ranking auc", "auc", "separability"), ("selection.ranking_auc",),
               "P(the selector scores a benign row above a harmful one); 0.5 = chance"),
)

@dataclass
class MetricSpec:
    """A metric as the plan names it, the patterns over our metric names, and a note when we cannot compute it."""

    name: str
    patterns: list[str] = field(default_factory=list)
    label: str = ""
    note: str = ""

    def matches(self, metric: str) -> bool:
        if is_sibling(metric) or metric == "complete":
            return False
        return any(fnmatch.fnmatchcase(metric, p) for p in self.patterns)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "patterns": list(self.patterns), "label": self.label, "note": self.note}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricSpec:
        return cls(d["name"], list(d.get("patterns") or []), d.get("label", ""), d.get("note", ""))


def map_metric(text: str) -> MetricSpec:
    """Plan metric prose -> patterns over our metric names; an unknown metric keeps a note saying why."""
    raw = fix_mojibake(str(text)).strip()
    if re.fullmatch(r"[a-z_][\w.*?\[\]-]*", raw) and "." in raw:  # a dotted name or pattern of ours
        return MetricSpec(raw, [raw], raw)
    head, _, inside = raw.partition("(")
    text_toks = tokens(head) or tokens(raw)
    best: tuple[float, MetricRule | None] = (0.0, None)
    for rule in METRIC_RULES:
        for name in rule.names:
            s = _score(tokens(name), text_toks)
            if s > best[0]:
                best = (s, rule)
    rule = best[1]
    if rule is None:
        return MetricSpec(raw, [], "", "no safeselect metric matches this name")
    note = ""
    sets = [s.strip() for s in inside.rstrip(")").split(",") if s.strip()] if inside else []
    if sets:
        note = (f"the plan names the sets {', '.join(sets)}; shown are the sets of the base data "
                "(the built-in benchmark unless data.* says otherwise)")
    return MetricSpec(raw, list(rule.patterns), rule.label, note)
