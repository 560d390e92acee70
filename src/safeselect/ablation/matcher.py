"""Map an ablation section to a config key by meaning, and read its values, with the evidence kept.

The matcher scores every ablatable config key against what the section says,
the way a search engine would (idf-weighted token overlap, BM25-style, no
per-plan alias list):

- the key's *document* is its dotted name, the aliases its field declares, its
  help text, its choices, and the help of the sections it sits in
  (``selection.seal.gamma`` -> "penalty schedule", "SEAL bilevel selector");
  common English synonyms ("share" ~ "fraction" ~ "ratio", "size" ~ "number")
  are folded into one token first;
- the *query* is the section's ablated-part text (full weight), its heading
  (0.6) and its free prose (0.25); the plan's method (SEAL, eva, DualSelect,
  ...) boosts the keys of that method and damps those of the others;
- the score is multiplied by the *value compatibility*: the share of the
  section's replacement values that read as values of the key (a list of
  schedule names cannot be a float; a list of numbers cannot be a schedule),
  so "penalty schedule" with "constant / linear / exponential" goes to
  ``gamma.schedule`` and "gamma" with "0.01, 0.1" to ``gamma.value``.

The winner carries a confidence (how far it is ahead of the runner-up, and
whether every value read), the keys that competed with it, the matched words
(evidence) and any value transform. Low confidence is flagged, never hidden.

Values are read by :func:`read_value`: numbers, percentages ("10%"), ratios
("80:20" -> 0.8), complements (an *evolved* share x is ``eva.mix_ratio`` =
1 - x, declared in :data:`safeselect.ablation.mapping.COMPLEMENTS`),
ellipsis ranges ("1.0 ... 0.0"), choices written in CamelCase or with spaces
("EvolInstruct" -> ``evol-instruct``), choices with a number for the knob that
goes with them ("fixed 0.1" -> constant schedule at 0.1, found through the
sibling key whose help starts with "constant:"), and comparatives ("a faster
schedule": the base's increment doubled, flagged).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from safeselect.ablation.mapping import (
    COMPLEMENTS,
    VALUE_ALIASES,
    fix_mojibake,
    is_fraction_key,
    key_fields,
    tokens,
    value_kind,
)
from safeselect.config import schema as cfg_mod
from safeselect.errors import UserError
from safeselect.registry import registry

# ----------------------------------------------------------------------------- vocabulary

# General-English synonym groups folded to one token (not per plan: words any description of a knob may use).
_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("share", "fraction", "ratio", "proportion", "percentag", "percent", "portion", "rate_share"),
    ("size", "number", "count", "amount", "many", "quantity"),
    ("penalty", "gamma", "lagrang"),
    ("schedul", "curve", "anneal", "ramp", "increment", "growth", "strateg"),
    ("function", "activation", "nonlinearity", "transform", "map"),
    ("learn", "lr"),
    ("safe", "safety"),
    ("prompt", "instruction", "question"),
    ("evolv", "evolution", "evol", "rewrit", "mutat"),
    ("select", "selection", "keep", "kept", "retain", "retention_share"),
    ("weight", "importance"),
    ("iteration", "round"),
    ("temperatur", "temp"),
    ("sampl", "draw"),
    ("creator", "evolver", "generator"),
    ("solver", "policy"),
    ("model", "network", "llm", "architectur"),
    ("epoch", "pass"),
    ("step", "update"),
    ("data", "dataset", "set", "pool", "corpu"),
    ("loss", "objective"),
    ("auxiliary", "aux"),
    ("respons", "answer", "completion", "generation"),
    ("inform", "informativ"),
    ("buffer", "mix", "mixtur", "replay"),
    ("original", "seed_prompt", "human"),
)
_CANON: dict[str, str] = {}
for _group in _SYNONYMS:
    for _w in _group:
        _CANON[_w] = _group[0]


def canon(tok: str) -> str:
    if tok in _CANON:
        return _CANON[tok]
    for w, c in _CANON.items():  # stems: "percentag" covers percentage / percentages
        if len(w) >= 5 and tok.startswith(w):
            return c
    return tok


def _camel(text: str) -> str:
    """'EvolInstruct' -> 'Evol Instruct', 'MemoryEfficient' -> 'Memory Efficient'; 'SimPO', 'DPO' stay."""
    return re.sub(r"(?<=[a-z])(?=[A-Z][a-z])", " ", text)


# Multi-word phrases with a one-word meaning, replaced before tokenising.
_PHRASES = ((r"\bstep[\s-]?sizes?\b", "learning rate"), (r"\blearning[\s-]rates?\b", "learning rate"),
            (r"\bhow many\b", "number"), (r"\bseed prompts?\b", "original prompts"),
            (r"\bk\b(?=\s*(?:\)|responses|samples))", "number"))


def qtokens(text: str, drop_negated: bool = False) -> list[str]:
    text = _camel(fix_mojibake(str(text)))
    for pat, rep in _PHRASES:
        text = re.sub(pat, rep, text, flags=re.I)
    return [canon(t) for t in tokens(text, drop_negated=drop_negated)]


def compact(text: str) -> str:
    """'Evol-Instruct', 'evol_instruct', 'EvolInstruct' -> 'evolinstruct' (for choice names)."""
    return re.sub(r"[^a-z0-9]", "", fix_mojibake(str(text)).lower())


# ----------------------------------------------------------------------------- key documents

# Infrastructure, not method knobs: paths, endpoints, output, device, names.
# Seeds are replicates (the plan's seeds), not knobs.
_NOT_ABLATABLE = ("judges.", "eval.", "checkpoint.", "tracking.", "reward.out", "name", "device", "compare",
                  "seed", "data.seed", "selection.seed", "reward.seed", "data.data_dir",
                  "data.task_path", "data.eval_", "eval.reference", "eva.init_from", "eva.save_model",
                  "selection.seal.logits_from", "eva.reward_model", "align.source", "model.lora.target_modules")

_SECTION_WORDS = {"selection.seal": "seal", "selection.dualselect": "dualselect", "selection.dsir": "dsir",
                  "selection.safeinstr": "safeinstr", "selection.judge_filter": "judge_filter", "eva": "eva",
                  "reward": "reward"}


def ablatable(key: str) -> bool:
    return not any(key == p or key.startswith(p) for p in _NOT_ABLATABLE)


@functools.lru_cache(maxsize=1)
def _section_help() -> dict[str, str]:
    """Dotted section -> its help ("selection.seal.gamma" -> "penalty schedule")."""
    import dataclasses

    out: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        import typing

        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            typ = hints[f.name]
            if dataclasses.is_dataclass(typ):
                out[prefix + f.name] = str(f.metadata.get("help", ""))
                walk(typ, prefix + f.name + ".")

    walk(cfg_mod.ExperimentConfig, "")
    return out


@dataclass
class KeyDoc:
    key: str
    kind: str
    names: list[list[str]]          # leaf name and aliases, as token lists (phrases)
    strong: set[str]                # tokens of the names
    help: set[str]
    choices: set[str]
    context: set[str]               # parent path and section helps
    method: str | None              # the method section the key belongs to, if any


def choices_of(key: str) -> list[str]:
    """Declared choices; ``selection.method`` takes the registered selectors."""
    ch = key_fields()[key].get("choices")
    if ch:
        return [str(c) for c in ch]
    if key == "selection.method":
        return sorted(set(registry("selectors").names()))
    return []


@functools.lru_cache(maxsize=1)
def key_docs() -> dict[str, KeyDoc]:
    helps = _section_help()
    docs: dict[str, KeyDoc] = {}
    for key, info in key_fields().items():
        if not ablatable(key):
            continue
        parts = key.split(".")
        leaf = parts[-1].replace("_", " ")
        if leaf.startswith("n "):
            leaf = "number of " + leaf[2:]  # n_prompts is the number of prompts
        names = [qtokens(leaf)] + [qtokens(a) for a in info.get("aliases") or ()]
        if len(parts) > 1:
            names.append(qtokens(f"{parts[-2].replace('_', ' ')} {leaf}"))
        names = [n for n in names if n]
        ctx: set[str] = set()
        method = None
        for i in range(1, len(parts)):
            sec = ".".join(parts[:i])
            ctx |= set(qtokens(parts[i - 1].replace("_", " ")))
            ctx |= set(qtokens(helps.get(sec, "")))
            if sec in _SECTION_WORDS:
                method = _SECTION_WORDS[sec]
        choice_toks: set[str] = set()
        for c in choices_of(key):
            choice_toks |= set(qtokens(c.replace("_", " ").replace("-", " ")))
        docs[key] = KeyDoc(key, value_kind(key), names, {t for n in names for t in n},
                           set(qtokens(str(info.get("help", "")))), choice_toks, ctx, method)
    return docs


@functools.lru_cache(maxsize=1)
def _idf() -> dict[str, float]:
    docs = key_docs()
    n = len(docs)
    df: dict[str, int] = {}
    for d in docs.values():
        for t in d.strong | d.help | d.choices | d.context:
            df[t] = df.get(t, 0) + 1
    return {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}


# ----------------------------------------------------------------------------- the plan's method


_METHOD_WORDS = {
    "seal": ("seal", "bilevel", "penalty", "gamma"),
    "eva": ("eva", "creator", "solver", "self play", "self-play", "evolv", "asymmetric"),
    "dualselect": ("dualselect", "dual select", "coupled"),
    "dsir": ("dsir", "importance resampling"),
}


def plan_method(text: str) -> str | None:
    """The method a plan is about, from its title and prose (most mentions wins; None when unclear)."""
    low = fix_mojibake(text).lower()
    counts = {m: sum(len(re.findall(r"\b" + re.escape(w), low)) for w in words) for m, words in _METHOD_WORDS.items()}
    best = max(counts, key=lambda m: counts[m])
    if counts[best] == 0:
        return None
    ranked = sorted(counts.values(), reverse=True)
    return best if ranked[0] > ranked[1] else None


# ----------------------------------------------------------------------------- scoring


@dataclass
class Candidate:
    key: str
    text_score: float
    compat: float
    score: float
    evidence: list[str]
    values: list[Any] = field(default_factory=list)   # ValueRead per replacement (None when unreadable)


@dataclass
class Query:
    part: str
    name: str = ""
    context: str = ""
    values: list[Any] = field(default_factory=list)  # prose strings, or YAML numbers/booleans as given
    method: str | None = None
    given_part: bool = True


def _text_score(doc: KeyDoc, q: Query) -> tuple[float, list[str]]:
    idf = _idf()
    weighted: dict[str, float] = {}
    for text, w in ((q.part, 1.0), (q.name, 0.6 if q.given_part else 1.0), (q.context, 0.25)):
        for t in qtokens(text, drop_negated=True):
            weighted[t] = max(weighted.get(t, 0.0), w)
    score = 0.0
    evidence: list[str] = []
    for t, w in weighted.items():
        fw = 0.0
        where = ""
        if t in doc.strong:
            fw, where = 3.0, "name"
        elif t in doc.help:
            fw, where = 1.5, "help"
        elif t in doc.choices:
            fw, where = 1.0, "choices"
        elif t in doc.context:
            fw, where = 0.6, "section"
        if fw:
            score += w * fw * idf.get(t, 0.5)
            if w >= 0.6 and f"{t}({where})" not in evidence:
                evidence.append(f"{t}({where})")
    # a whole name or alias found as a phrase in the part text is strong evidence
    part_toks = qtokens(q.part, drop_negated=True) + qtokens(q.name)
    only_part = qtokens(q.part, drop_negated=True)
    # name coverage: how much of the key's best-covered name the text spells out ("gamma" covers the alias
    # 'gamma' of gamma.value fully, but only half of 'simpo gamma')
    coverage = max((sum(t in part_toks for t in n) / len(n) for n in doc.names), default=0.0)
    score *= 0.5 + 0.5 * coverage
    if any(n == only_part for n in doc.names):
        score += 2.0 * sum(idf.get(t, 0.5) for t in only_part)
        evidence.append("exact name")
    seen: set[str] = set()
    for name in doc.names:
        if " ".join(name) in seen:
            continue
        seen.add(" ".join(name))
        if len(name) >= 2 and all(t in part_toks for t in name):
            joined = " ".join(part_toks)
            bonus = 1.5 if " ".join(name) in joined else 0.75
            score += bonus * sum(idf.get(t, 0.5) for t in name)
            if "'" + " ".join(name) + "'" not in evidence:
                evidence.append("'" + " ".join(name) + "'")
    if q.method and doc.method:
        score *= 1.3 if doc.method == q.method else 0.35
    elif q.method == "eva" and doc.method is None and doc.key.startswith(("selection.", "finetune.", "align.")):
        score *= 0.5  # eva plans rarely ablate the select -> fine-tune pipeline
    return score, evidence


# ----------------------------------------------------------------------------- values


@dataclass
class ValueRead:
    """One replacement read for one key: the value, extra settings it needs, how it was read, whether flagged."""

    value: Any
    extra: dict[str, Any]
    how: str
    flagged: bool = False


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(_NUM + "%?")
_RATIO = re.compile(rf"^\D*?({_NUM})\s*(?::|/|to)\s*({_NUM})\b")
_ELLIPSIS = re.compile(r"\.\.\.|…|→|->")
_TRUE = frozenset({"true", "yes", "on", "enabl", "with", "use", "1", "activ", "includ"})
_FALSE = frozenset({"false", "off", "disabl", "without", "0", "none", "no", "remov", "exclud", "skip", "drop"})
_FASTER = ("faster", "quicker", "steeper", "aggressive", "larger", "higher", "bigger", "stronger", "more", "double")
_SLOWER = ("slower", "gentler", "smaller", "lower", "weaker", "less", "fewer", "half", "softer")


def _complement(key: str, text: str) -> bool:
    """True when the wording names the complement of the key's share first (an evolved share for mix_ratio)."""
    spec = COMPLEMENTS.get(key)
    if not spec:
        return False
    own, other = spec
    low = fix_mojibake(text).lower()

    def first(words: tuple[str, ...]) -> int:
        pos = [m.start() for w in words for m in [re.search(r"\b" + re.escape(w), low)] if m]
        return min(pos) if pos else -1

    o, c = first(own), first(other)
    return c >= 0 and (o < 0 or c < o)


def _choice_match(key: str, text: str) -> tuple[str, str] | None:
    """(choice, matched name) for a value text; CamelCase, spaces, dashes and underscores are equal."""
    choices = choices_of(key)
    if not choices:
        return None
    comp = compact(text)
    for c in choices:
        if comp == compact(c):
            return c, c
    toks = tokens(_camel(text), drop_negated=True)  # no synonym folding: "ramp" must not equal "schedule"
    joined = " " + " ".join(toks) + " "
    scored: list[tuple[float, str, str]] = []
    for c in choices:
        names = [c.replace("_", " ").replace("-", " "), *VALUE_ALIASES.get(key, {}).get(c, ())]
        best = (0.0, "")
        for n in names:
            nt = tokens(_camel(n))
            if not nt:
                continue
            if all(t in toks for t in nt):
                s = len(nt) + (0.5 if " " + " ".join(nt) + " " in joined else 0)
                if s > best[0]:
                    best = (s, n)
            elif compact(n) and compact(n) in compact(" ".join(tokens(text, drop_negated=True))):
                best = max(best, (len(nt) * 0.9, n))
        if best[0] > 0:
            scored.append((best[0], c, best[1]))
    if not scored:
        return None
    scored.sort(key=lambda t: -t[0])
    if len(scored) > 1 and scored[0][0] == scored[1][0]:
        return None
    if len(tokens(scored[0][2])) == 1 and len(scored[0][2]) <= 6:
        # a short everyday word ("full", "random", "same") only names a choice when the rest of the value is
        # vocabulary of the schema: "full moon" is not the 'full' selector
        foreign = [t for t in toks if not t[0].isdigit() and t not in _vocabulary()]
        if foreign:
            return None
    return scored[0][1], scored[0][2]


_GENERIC = ("data", "model", "baseline", "method", "variant", "version", "default", "standard", "original",
            "setting", "approach", "strategy", "option", "selection", "selector", "only", "all", "plain")


@functools.lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    """Every word of the schema (names, helps, choices, their prose) and a few generic ones, unfolded."""
    words: set[str] = set(tokens(" ".join(_GENERIC)))
    for key, info in key_fields().items():
        words |= set(tokens(_camel(key.replace(".", " ").replace("_", " "))))
        words |= set(tokens(str(info.get("help", ""))))
        words |= {t for a in info.get("aliases") or () for t in tokens(a)}
        words |= {t for c in choices_of(key) for t in tokens(c.replace("_", " ").replace("-", " "))}
    for per_key in VALUE_ALIASES.values():
        for names in per_key.values():
            words |= {t for n in names for t in tokens(n)}
    return frozenset(words)


def _sibling_for(key: str, choice: str) -> str | None:
    """The numeric sibling of a choice key whose help starts with '<choice>:' (gamma.value for 'constant')."""
    prefix = key.rsplit(".", 1)[0] + "."
    for k, info in key_fields().items():
        if k.startswith(prefix) and k.count(".") == key.count(".") and value_kind(k) in ("float", "int"):
            h = str(info.get("help", "")).lower()
            if h.startswith(choice.lower() + ":") or h.startswith(choice.lower() + " :"):
                return k
    return None


def _scale_word(text: str) -> float | None:
    low = " " + fix_mojibake(text).lower() + " "
    if any(f" {w}" in low for w in _FASTER):
        return 2.0
    if any(f" {w}" in low for w in _SLOWER):
        return 0.5
    return None


def _in_range(key: str, v: float) -> bool:
    rng = key_fields()[key].get("range")
    if not rng:
        return True
    lo, hi = rng
    return (lo is None or v >= lo) and (hi is None or v <= hi)


def read_value(key: str, raw: Any, *, percent: bool = False, wording: str = "",
               base: Callable[[str], Any] | None = None) -> ValueRead:
    """Read one replacement for ``key``; UserError when it cannot be read (the caller may skip it)."""
    kind = value_kind(key)
    if not isinstance(raw, str):  # a YAML number/list means exactly what it says, if the key can take it
        ch = choices_of(key)
        if ch and raw not in ch:
            raise UserError(f"{raw!r} is not one of {', '.join(ch)} ({key})")
        if kind in ("float", "int") and (isinstance(raw, bool) or not isinstance(raw, (int, float))):
            raise UserError(f"{key} takes a number, got {raw!r}")
        return ValueRead(raw, {}, "as given")
    text = fix_mojibake(raw).strip().strip("`*_\"'")
    choices = choices_of(key)
    if choices:
        hit = _choice_match(key, text)
        if hit is not None:
            choice, name = hit
            extra: dict[str, Any] = {}
            how = "as given" if text == choice else f"matched {name!r}"
            nums = _NUMBER.findall(text)
            sib = _sibling_for(key, choice)
            if sib and len(nums) == 1 and not re.search(r"algorithm\s*\d", text, re.I):
                v = float(nums[0].rstrip("%"))
                extra[sib] = int(v) if value_kind(sib) == "int" else v
                how += f"; {sib}={extra[sib]:g} from the text"
            return ValueRead(choice, extra, how)
        scale = _scale_word(text)
        if scale is not None and base is not None:
            cur = str(base(key))
            sib = _sibling_for(key, cur)
            if sib is not None and base(sib):
                v = float(base(sib)) * scale
                return ValueRead(cur, {sib: v}, f"comparative {text!r}: the base {cur} schedule with {sib} "
                                 f"x{scale:g} = {v:g}", flagged=True)
        raise UserError(f"cannot read {text!r} as a value of {key} (choices: {', '.join(choices)})")
    if kind in ("float", "int"):
        return _read_number(key, kind, text, percent, wording, base)
    if kind == "bool":
        toks = set(tokens(text))
        low = text.lower()
        t = bool(toks & _TRUE) or low.startswith("with ")
        f = bool(toks & _FALSE) or low.startswith(("without", "no "))
        if t and not f:
            return ValueRead(True, {}, "read as true")
        if f:
            return ValueRead(False, {}, "read as false")
        raise UserError(f"cannot read {text!r} as true/false for {key}")
    if kind == "list":
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        value = value if isinstance(value, list) else [value]
        default = key_fields()[key].get("default") or []
        if default and any(not isinstance(v, type(default[0])) and not (isinstance(default[0], float)
                                                                          and isinstance(v, int)) for v in value):
            raise UserError(f"cannot read {text!r} as a list like {default!r} for {key}")
        for v in value:
            if isinstance(v, str):
                _free_name(key, v)
        return ValueRead(value, {}, "as a list")
    if len(text.split()) > 4 or not text:
        raise UserError(f"cannot read {text!r} as a value of {key} (a name or path)")
    if _is_model_key(key):
        model = _model_name(text)
        if model is None:
            raise UserError(f"{text!r} is not a registered model (`safeselect ls models`), an HF id or a path")
        return ValueRead(model, {}, "registered model" if model != text else "as given")
    return ValueRead(_free_name(key, text), {}, "a name the key's help lists, or a path", flagged=True)


def _free_name(key: str, text: str) -> str:
    """A value of a free-text key must be a word its help names ("builtin, jsonl, sst2-advbench, ..."), a
    registered component of that kind, or an existing path: anything else is not a setting we can run."""
    from pathlib import Path

    help_words = {compact(w) for w in re.findall(r"[\w.-]+", str(key_fields()[key].get("help", "")))}
    if compact(text) in help_words or Path(text).exists():
        return text
    for kind in ("data", "judges", "selectors", "rewards"):
        try:
            names = registry(kind).names()
        except Exception:  # a registry kind this build does not have
            continue
        if key.split(".")[-1] in ("benchmark", "judge", "judges", "method", "reward") and \
                any(compact(n) == compact(text) for n in names):
            return next(n for n in names if compact(n) == compact(text))
    raise UserError(f"{text!r} is not a value {key} takes (a name its help lists, a registered name or a path)")


def _is_model_key(key: str) -> bool:
    return key == "model.name" or key.endswith("_model") or key.endswith(".selector_model")


def _model_name(text: str) -> str | None:
    """A registered model name (CamelCase, case and dashes ignored), an HF id ('org/name') or an existing path."""
    from pathlib import Path

    names = registry("models").names()
    for n in names:
        if compact(n) == compact(text):
            return n
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) or Path(text).exists():
        return text
    return None


def _read_number(key: str, kind: str, text: str, percent: bool, wording: str,
                 base: Callable[[str], Any] | None) -> ValueRead:
    frac = is_fraction_key(key)
    comp = frac and _complement(key, wording + " " + text)
    m = _RATIO.match(text.replace(" ", " "))
    if frac and m and not re.search(r"\d\s*/\s*\d+\s*(?:epoch|step)", text):
        a, b = float(m.group(1)), float(m.group(2))
        if a + b > 0:
            share = a / (a + b)
            v = 1 - share if comp else share
            how = f"ratio {m.group(1)}:{m.group(2)} = {share:g}" + (
                f"; the plan's share is the complement of {key}: 1 - {share:g} = {v:g}" if comp else "")
            return ValueRead(round(v, 6), {}, how, flagged=comp)
    nums = _NUMBER.findall(text.replace(",", ""))
    if not nums:
        info = key_fields()[key]
        low = text.lower()
        if re.search(r"\b(none|off|disabled?|no|zero)\b", low) and "0 =" in str(info.get("help", "")):
            return ValueRead(0 if kind == "int" else 0.0, {}, "'off' = 0 (the key's help: 0 = off)")
        scale = _scale_word(text)
        if scale is not None and base is not None and isinstance(base(key), (int, float)) and base(key):
            v = base(key) * scale
            v = int(round(v)) if kind == "int" else v
            return ValueRead(v, {}, f"comparative {text!r}: the base {base(key):g} x{scale:g} = {v:g}", flagged=True)
        raise UserError(f"cannot read {text!r} as a number for {key}")
    # "1 epoch (5 steps)": the first number; a bare range "0.1-0.5" is not one value
    if len(nums) > 1 and re.search(rf"{_NUM}\s*(?:-|–|to)\s*{_NUM}", text) and not re.search(r"[a-z]", text.lower()):
        raise UserError(f"{text!r} for {key} is a range, not one value")
    num = nums[0]
    if num.endswith("%") or (percent and frac):
        share = float(num.rstrip("%")) / 100.0
        how = f"{num} = {share:g}" if num.endswith("%") else f"{num} read as a percentage of a 0..1 share: {share:g}"
    else:
        share = float(num)
        how = "number" if num == text else f"number {num} in the text"
    value = share
    flagged = False
    if comp:
        value = round(1 - share, 6)
        how += f"; the plan's share is the complement of {key}: 1 - {share:g} = {value:g}"
        flagged = True
    if kind == "int":
        if value != int(value):
            raise UserError(f"{key} takes a whole number, got {text!r}")
        value = int(value)
    if not _in_range(key, value):
        raise UserError(f"{text!r} = {value:g} is out of the range of {key} {tuple(key_fields()[key]['range'])}")
    return ValueRead(value, {}, how, flagged)


def expand_ellipsis(raws: list[str]) -> tuple[list[str], str]:
    """['1.0 ... 0.0'] or ['1.0', '0.75', '...', '0.0'] -> evenly spaced numbers; the note says how."""
    if not all(isinstance(r, str) for r in raws):
        return raws, ""
    joined = " , ".join(raws)
    if not _ELLIPSIS.search(joined):
        return raws, ""
    parts = [p.strip() for p in re.split(r"\s*(?:,|\.\.\.|…|→|->)\s*", joined) if p.strip()]
    nums = []
    for p in parts:
        m = _NUMBER.fullmatch(p.strip())
        if m is None:
            nm = _NUMBER.findall(p)
            if len(nm) != 1:
                return raws, ""
            p = nm[0]
        nums.append(p)
    if len(nums) < 2:
        return raws, ""
    pct = nums[0].endswith("%")
    vals = [float(n.rstrip("%")) for n in nums]
    lo, hi = vals[0], vals[-1]
    if len(vals) >= 3 and vals[1] != vals[0]:
        step = vals[1] - vals[0]
    else:
        step = (hi - lo) / 4  # five evenly spaced points
    if step == 0 or (hi - lo) / step < 0 or abs((hi - lo) / step) > 50:
        return raws, ""
    n = int(round((hi - lo) / step))
    out = [round(lo + i * step, 6) for i in range(n + 1)]
    note = f"range {nums[0]} ... {nums[-1]} filled in as {', '.join(f'{v:g}' for v in out)}"
    return [f"{v:g}%" if pct else f"{v:g}" for v in out], note


def reads_as_percentages(key: str, raws: list[Any]) -> bool:
    """Bare numbers of a 0..1 share are percentages when some are above 1 and all are within 0..100."""
    if not is_fraction_key(key):
        return False
    nums = []
    for r in raws:
        if isinstance(r, str):
            if _RATIO.match(r) or "%" in r:
                continue
            found = _NUMBER.findall(r.replace(",", ""))
            if len(found) == 1:
                nums.append(float(found[0]))
    return bool(nums) and any(v > 1 for v in nums) and all(0 <= v <= 100 for v in nums)


# ----------------------------------------------------------------------------- mapping a section


@dataclass
class Mapping:
    """A section's key, its values and the evidence; or why it was refused (``key`` None)."""

    key: str | None
    confidence: float = 0.0
    low: bool = False
    evidence: list[str] = field(default_factory=list)
    competitors: list[tuple[str, float]] = field(default_factory=list)
    values: list[tuple[str, ValueRead]] = field(default_factory=list)  # (raw text, reading)
    skipped: list[tuple[str, str]] = field(default_factory=list)       # (raw text, why)
    note: str = ""
    reason: str = ""

    def explain(self) -> str:
        bits = [f"confidence {self.confidence:.2f}" + (" LOW" if self.low else "")]
        if self.evidence:
            bits.append("evidence: " + ", ".join(self.evidence[:8]))
        if self.competitors:
            bits.append("competes with " + ", ".join(f"{k} ({s:.2f})" for k, s in self.competitors))
        return "; ".join(bits)


LOW_CONFIDENCE = 0.5
MIN_SCORE = 2.0


def rank(q: Query, base: Callable[[str], Any] | None = None) -> list[Candidate]:
    docs = key_docs()
    raws, _ = expand_ellipsis(list(q.values))
    wording = " ".join([q.part, q.name])
    cands: list[Candidate] = []
    for key, doc in docs.items():
        ts, ev = _text_score(doc, q)
        if ts <= 0:
            continue
        pct = reads_as_percentages(key, raws)
        reads: list[Any] = []
        ok = 0.0
        for r in raws:
            try:
                vr = read_value(key, r, percent=pct, wording=wording, base=base)
                reads.append(vr)
                ok += 0.6 if vr.flagged else 1.0
            except UserError:
                reads.append(None)
        compat = ok / len(raws) if raws else 0.5
        distinct = len({repr(v.value) + repr(v.extra) for v in reads if v is not None})
        if raws and distinct < min(2, len(raws)):
            compat *= 0.5  # every replacement reads as the same value: not what the section varies
        if choices_of(key) and distinct >= 2 and ts > 0:
            # values that are two or more of a key's named choices are evidence of that key in their own right
            vb = 3.0 * compat * min(distinct, 3)
            ts += vb
            ev = ev + [f"values are its choices (+{vb:.1f})"]
        score = ts * (0.1 + 0.9 * compat)
        cands.append(Candidate(key, ts, compat, score, ev, reads))
    cands.sort(key=lambda c: (-c.score, c.key))
    return cands


def map_section(q: Query, base: Callable[[str], Any] | None = None) -> Mapping:
    """The best key for a section with its values, a confidence and its competitors; or a refusal with a reason."""
    raw_part = fix_mojibake(q.part).strip().strip("`")
    if raw_part in key_fields():  # a dotted key is exact
        return _with_values(Mapping(raw_part, 1.0, evidence=["dotted key"]), raw_part, q, base)
    cands = rank(q, base)
    if not cands or cands[0].text_score < MIN_SCORE:
        near = ", ".join(c.key for c in sorted(cands, key=lambda c: -c.text_score)[:3]) or "none"
        return Mapping(None, reason=f"no config key matches {raw_part!r} (closest: {near})")
    top = cands[0]
    by_text = max(cands, key=lambda c: c.text_score)
    if by_text.compat == 0 and top.text_score < 0.5 * by_text.text_score:
        # the key the wording points at cannot take these values, and no other key is named nearly as well
        return Mapping(None, reason=f"the closest key, {by_text.key}, cannot take the values "
                                    f"{', '.join(map(repr, q.values))}"
                                    + (f" (choices: {', '.join(choices_of(by_text.key))})"
                                       if choices_of(by_text.key) else ""))
    if top.compat == 0:
        return Mapping(None, reason=f"no key named by {raw_part!r} takes the values {', '.join(map(repr, q.values))}")
    second = next((c for c in cands if c.key != top.key), None)
    margin = 1.0 - (second.score / top.score if second and top.score > 0 else 0.0)
    strength = min(1.0, top.text_score / 8.0)
    conf = round(max(0.0, min(1.0, (0.35 + 0.65 * margin) * (0.4 + 0.6 * strength) * (0.3 + 0.7 * top.compat))), 2)
    competitors = [(c.key, round(c.score / top.score, 2)) for c in cands
                   if c.key != top.key and top.score > 0 and c.score >= 0.7 * top.score][:3]
    m = Mapping(top.key, conf, evidence=top.evidence, competitors=competitors)
    m = _with_values(m, top.key, q, base)
    if m.key is None:
        return m
    m.low = conf < LOW_CONFIDENCE or bool(competitors) or any(v.flagged for _, v in m.values) or not q.given_part
    return m


def _with_values(m: Mapping, key: str, q: Query, base: Callable[[str], Any] | None) -> Mapping:
    raws, note = expand_ellipsis(list(q.values))
    m.note = note
    pct = reads_as_percentages(key, raws)
    wording = " ".join([q.part, q.name])
    for r in raws:
        try:
            m.values.append((str(r), read_value(key, r, percent=pct, wording=wording, base=base)))
        except UserError as e:
            m.skipped.append((str(r), str(e)))
    if not m.values:
        why = "; ".join(w for _, w in m.skipped) or "no replacement values"
        return Mapping(None, reason=f"{key}: no replacement can be read ({why})", evidence=m.evidence)
    return m
