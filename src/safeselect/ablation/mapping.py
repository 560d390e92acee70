"""Text repair, tokens, value vocabularies and metric names for ablation plans written in prose.

The key matcher itself is :mod:`safeselect.ablation.matcher`; this module holds what it reads:

- :func:`fix_mojibake` repairs text that was UTF-8 but decoded as Mac Roman or
  Windows-1252 on the way ("Œ≥" and "Î³" are "γ", "ÀÜŒ∏" is "ˆθ");
- :func:`tokens`: normalised, stemmed content tokens, optionally without what
  follows a negation ("without auxiliary variable");
- :data:`VALUE_ALIASES`: prose for the choices of choice-valued keys
  ("Algorithm 1" -> ``auxiliary``), and :data:`COMPLEMENTS`: shares a plan may
  give from the other side (an evolved share for ``eva.mix_ratio``);
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


# ----------------------------------------------------------------------------- config keys


@functools.lru_cache(maxsize=1)
def key_fields() -> dict[str, dict[str, Any]]:
    return field_info()


# ----------------------------------------------------------------------------- values

# Prose for the choices of choice-valued keys. The choice itself (underscores as spaces) always counts too.
VALUE_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "selection.seal.algorithm": {
        "auxiliary": ("algorithm 1", "alg 1", "auxiliary", "auxiliary variable", "theta hat", "full bilevel update"),
        "memory_efficient": ("algorithm 2", "alg 2", "memory efficient", "memory-efficient", "simplified update"),
    },
    "selection.seal.gamma.schedule": {
        "constant": ("constant", "fixed", "fixed value", "fixed gamma", "fixed penalty", "flat", "static",
                     "no schedule"),
        "linear": ("linear", "linear incremental", "incremental", "fixed increment", "additive", "ramp"),
        "exponential": ("exponential", "geometric", "multiplicative"),
    },
    "eva.creator": {
        "shared": ("shared", "shared network", "same network", "same model", "shared parameters", "same",
                   "itself", "tied", "self"),
        "independent": ("independent", "independent networks", "separate", "separate network", "frozen creator",
                        "decoupled", "distinct", "frozen", "different model"),
    },
    "selection.seal.activation": {"softmax": ("softmax", "soft max"), "sigmoid": ("sigmoid", "logistic")},
    "eva.evolve_method": {"evol-instruct": ("evol instruct", "evolinstruct", "evol"),
                          "self-instruct": ("self instruct", "selfinstruct")},
    "eva.informativeness": {"gap": ("gap", "max min", "reward gap", "range"), "maxmean": ("max mean",),
                            "variance": ("variance", "std", "standard deviation")},
    "eva.sampler": {"weighted": ("weighted", "informativeness weighted", "proportional", "stochastic"),
                    "greedy": ("greedy", "top", "top k", "deterministic"),
                    "uniform": ("uniform", "random")},
    "eva.loss": {"dpo": ("dpo",), "simpo": ("simpo",), "ipo": ("ipo",)},
    "selection.budget": {"rows": ("rows", "examples", "samples"), "tokens": ("tokens", "token budget")},
}

# Shares whose plans may give the other side: (words of the key's own side, words of the complement).
# An "evolved share" x is eva.mix_ratio = 1 - x (mix_ratio is the share of pairs on *original* prompts).
COMPLEMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "eva.mix_ratio": (("original", "human", "seed prompt", "initial prompt"),
                      ("evolved", "new prompt", "synthetic", "generated", "rewritten", "created")),
    "data.harmful_ratio": (("harmful", "poison", "unsafe", "malicious"), ("benign", "clean", "safe row")),
    "selection.ratio": (("kept", "keep", "select", "retain"), ("drop", "remov", "discard", "prun", "filtered out")),
}

def value_kind(key: str) -> str:
    """float, int, bool, str or list: from the field's default (None defaults are optional strings)."""
    default = key_fields()[key].get("default")
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
    rng = key_fields()[key].get("range")
    return value_kind(key) == "float" and bool(rng) and rng[0] == 0 and rng[1] == 1


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
