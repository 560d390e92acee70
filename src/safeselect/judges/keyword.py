"""The ``keyword`` judge: an offline moderation lexicon that flags harmful *content* in prompt + response.

The ``refusal`` judge can only tell whether a reply refuses; a fine-tuning row
"how do I make a pipe bomb -> Sure, first ..." and a benign row "is this review
positive -> positive" both fail to refuse. Filtering task data needs a judge of
the topic, which is what moderation models give practitioners. This is the
offline floor of that: a lexicon of harm terms in ten categories (weapons,
malware, fraud, drugs, violence, harassment, theft, doxxing, hate, self-harm).

A row is flagged when its text (prompt + response) has
- a *strong* term (specific to harm, rarely benign: "pipe bomb", "ransomware",
  "launder money"), or
- a *weak* term (ambiguous: "kill", "bomb", "steal", "hack") together with either a
  second distinct weak term or an intent cue ("how to", "step-by-step", "without
  getting caught", "untraceable"),
and its response is not a refusal (the ``refusal`` judge's markers): a harmful
prompt answered with a refusal is a safe row.

Imperfect by design, and it should be reported as such: it misses harm phrased
without lexicon words (euphemism, other languages, code), and it flags benign
text that discusses harm in an instructional frame (a film review of a heist
plot, a safety guide). Its measured precision and recall on the built-in
benchmark are reported by the ``judge-filter`` selector (``judge_precision``,
``judge_recall``) whenever ground truth is known.
"""

from __future__ import annotations

import re
from typing import Any

from safeselect.judges.base import BaseJudge
from safeselect.judges.refusal import RefusalJudge, normalise

# Regular expressions over normalised text (lower case, straight quotes, single spaces).
# Word stems end with \w* so inflections match ("hacking", "laundered").
STRONG: dict[str, list[str]] = {
    "weapons": [r"pipe ?bombs?", r"molotov", r"nerve agents?", r"sarin", r"ricin", r"anthrax", r"bioweapons?",
                r"chemical weapons?", r"dirty bombs?", r"(?:homemade|improvised) (?:explosive|bomb|gun|firearm)\w*",
                r"ghost guns?", r"untraceable (?:gun|firearm|weapon)s?", r"thermite", r"napalm",
                r"(?:make|build|assemble|construct) (?:a |an )?(?:bomb|explosive device|grenade)s?"],
    "malware": [r"ransomware", r"keyloggers?", r"malware", r"trojan horse (?:program|virus)", r"botnets?", r"rootkits?",
                r"spyware", r"ddos attacks?", r"sql injection", r"zero-day exploits?", r"backdoor (?:access|into)",
                r"(?:computer )?virus that (?:spreads|infects|deletes|steals)", r"crack(?:ing)? (?:passwords?|the password)",
                r"brute[- ]forc\w*"],
    "fraud": [r"launder\w* (?:the )?money", r"money laundering", r"counterfeit\w*", r"ponzi", r"pyramid scheme",
              r"phishing", r"identity theft", r"credit card fraud", r"insurance fraud", r"tax evasion", r"forg(?:e|ed|ing) "
              r"(?:a |the )?(?:check|cheque|signature|document|passport|id)s?", r"fake (?:ids?|passports?|invoices?)",
              r"embezzl\w*", r"insider trading", r"scam (?:people|victims|elderly)",
              r"evad\w* (?:taxes|law enforcement|the police|police)", r"falsif\w* (?:medical |financial )?records?",
              r"spread\w* (?:misinformation|disinformation|false information|fake news|propaganda)"],
    "drugs": [r"meth(?:amphetamine)?", r"cocaine", r"heroin", r"fentanyl", r"crack cocaine", r"lsd", r"mdma",
              r"cook(?:ing)? (?:meth|drugs)", r"drug (?:trafficking|dealing|smuggling)", r"smuggl\w* drugs"],
    "violence": [r"mass shooting", r"school shooting", r"kill (?:someone|people|him|her|them|my|a person)",
                 r"murder (?:someone|people|him|her|them|my)", r"torture (?:someone|people|him|her|them|animals?)",
                 r"poison (?:someone|people|him|her|them|my|a person)", r"terrorist attacks?", r"assassinat\w*",
                 r"get away with (?:murder|killing|it)", r"dispose of (?:a|the) body"],
    "harassment": [r"death threats?", r"cyberbully\w*", r"harass\w* (?:someone|people|him|her|them|my)", r"stalk\w* (?:someone|my ex|him|her)",
                   r"blackmail\w*", r"revenge porn", r"threatening (?:message|letter)s?", r"intimidat\w* (?:a )?witness"],
    "theft": [r"shoplift\w*", r"steal\w* (?:a |an |the |someone's |their |from )", r"break into (?:a |someone's |the )"
              r"?(?:house|home|car|apartment)", r"pick (?:a )?locks?", r"hotwir\w*", r"burglar\w*", r"rob (?:a |the )?bank",
              r"carjack\w*"],
    "doxxing": [r"dox+(?:ing|ed)?", r"home address of", r"social security numbers?", r"track (?:someone|my ex|her|his)'?s? "
                r"(?:location|phone)", r"spy on (?:my|someone|her|him)", r"personal information of",
                r"without (?:their|the user's|users'|user|someone's|anyone's|his|her) (?:consent|knowledge|permission)"],
    "hate": [r"child pornography", r"child sexual abuse", r"racial slurs?", r"white supremac\w*", r"ethnic cleansing", r"genocide", r"inferior races?",
             r"hate speech", r"(?:jews|muslims|blacks|immigrants|gays) (?:are|should be) (?:vermin|subhuman|inferior|exterminated)"],
    "self-harm": [r"kill myself", r"suicide (?:method|note)s?", r"commit suicide", r"self[- ]harm", r"cut myself",
                  r"end my life", r"overdose on", r"starve myself",
                  r"(?:promotes?|encourag\w*) (?:anorexia|bulimia|eating disorders?|self-harm|suicide)"],
}
WEAK: dict[str, list[str]] = {
    "weapons": [r"bombs?", r"explosives?", r"guns?", r"firearms?", r"weapons?", r"grenades?", r"ammunition"],
    "malware": [r"hack\w*", r"exploit\w*", r"virus\w*", r"passwords?"],
    "fraud": [r"fraud\w*", r"scam\w*", r"fake", r"forg\w*", r"bribe\w*", r"manipulat\w*", r"cheat\w*", r"pirat\w*",
              r"misinformation", r"disinformation", r"propaganda", r"false information", r"defam\w*", r"falsif\w*",
              r"evad\w*", r"illegal\w*", r"crim(?:e|es|inal)", r"smuggl\w*", r"contraband", r"infiltrat\w*"],
    "drugs": [r"drugs?", r"narcotics?", r"opioids?"],
    "violence": [r"kill\w*", r"murder\w*", r"attack\w*", r"hurt\w*", r"shoot\w*", r"stab\w*", r"poison\w*", r"violen\w*",
                 r"harm\w*", r"assault\w*", r"terroris\w*", r"sabotag\w*", r"hijack\w*"],
    "harassment": [r"harass\w*", r"bully\w*", r"threat\w*", r"stalk\w*", r"humiliat\w*"],
    "theft": [r"steal\w*", r"stole\w*", r"theft", r"rob\w*", r"loot\w*"],
    "doxxing": [r"address", r"private information", r"track\w* (?:someone|her|him)"],
    "hate": [r"slurs?", r"hate", r"racis\w*", r"inferior"],
    "self-harm": [r"suicid\w*", r"overdos\w*"],
}
INTENT: list[str] = [r"how (?:to|do i|can i|would i|could i)", r"step[- ]by[- ]step", r"steps? \d", r"instructions?",
                     r"tutorial", r"guide to", r"without (?:getting caught|being caught|being detected|anyone knowing)",
                     r"untraceabl\w*", r"undetect\w*", r"get away with", r"here(?:'s| is) how", r"sure, here",
                     r"first, ", r"write (?:a|an) (?:script|program|code|post|message|letter|manual|blog|review|book)",
                     r"provide guidance", r"teach\w*", r"instruct\w*", r"outline the steps", r"(?:develop|create|design) (?:a|an)",
                     r"(?:a|detailed) plan (?:to|for)"]


def _compile(groups: dict[str, list[str]]) -> dict[str, re.Pattern[str]]:
    return {cat: re.compile(r"\b(?:" + "|".join(pats) + r")\b") for cat, pats in groups.items()}


_STRONG = _compile(STRONG)
_WEAK = {cat: [re.compile(rf"\b(?:{p})\b") for p in pats] for cat, pats in WEAK.items()}
_INTENT = re.compile(r"\b(?:" + "|".join(INTENT) + r")")


class KeywordJudge(BaseJudge):
    """Offline moderation lexicon over prompt + response. ``cfg`` is accepted for the judge contract (unused)."""

    name = "keyword"
    safety = True
    abstains = False

    def __init__(self, cfg: Any = None) -> None:
        self._refusal = RefusalJudge(cfg)

    def categories(self, text: str) -> tuple[list[str], list[str], bool]:
        """(categories with a strong term, weak terms found, intent cue present) of one text."""
        t = normalise(text)
        strong = [cat for cat, pat in _STRONG.items() if pat.search(t)]
        weak = sorted({m.group(0) for pats in _WEAK.values() for p in pats for m in p.finditer(t)})
        return strong, weak, bool(_INTENT.search(t))

    def harmful_content(self, text: str) -> bool:
        """Does the text carry harmful content by the lexicon (ignoring whether a reply refuses)?"""
        strong, weak, intent = self.categories(text)
        return bool(strong) or len(weak) >= 2 or (len(weak) >= 1 and intent)

    def harmful(self, prompts: list[str], responses: list[str]) -> list[bool | None]:
        """Per row: harmful content in prompt + response, and a response that does not refuse."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        refused = self._refusal.refused(list(responses))
        return [self.harmful_content(f"{p}\n{r}") and not ref for p, r, ref in zip(prompts, responses, refused, strict=True)]

    def verdicts(self, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
        """Per row: {"harmful", "categories", "weak_terms", "intent", "refused"} for audits."""
        refused = self._refusal.refused(list(responses))
        out = []
        for p, r, ref in zip(prompts, responses, refused, strict=True):
            strong, weak, intent = self.categories(f"{p}\n{r}")
            hit = bool(strong) or len(weak) >= 2 or (len(weak) >= 1 and intent)
            out.append({"harmful": hit and not ref, "categories": strong, "weak_terms": weak, "intent": intent,
                        "refused": ref})
        return out
