"""Read ablation plans written in markdown, whatever the planner's house style (markdown-it-py, not line regexes).

A plan is a set of *sections*, one per ablation. The parser walks the
markdown-it syntax tree and recognises, in any mix:

- headings of any level, ATX (``### Gamma``) or setext (``Gamma`` over ``===``),
  and bold-only paragraphs or list items used as headings (``**Ablation 2: ...**``);
- field labels in bold, italic or underscores, inside or outside the colon
  (``- **Ablated Part**: ...``, ``*Replacement:* ...``, ``__Metrics__ - ...``),
  or plain (``Values: ...``); the label is classified by its words, so
  "Knob", "Component ablated", "Values tried", "Evaluation" all work;
- values as nested bulleted or numbered lists, a list right after an empty
  field, or inline lists ("X / Y / Z", "X, Y and Z", "X; Y", "X vs. Y");
- tables, either one row per ablation (columns named like fields) or a
  two-column field/value table inside a section;
- one-line ablations in prose ("1. **Penalty schedule**: replace the linear
  schedule with a constant or an exponential one").

What a value *means* (a ratio, a complement, a choice in CamelCase) is the
business of :mod:`safeselect.ablation.matcher`; this module only finds the
texts. Every section keeps its line number and its free prose (``context``),
which the mapper uses as weaker evidence.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from safeselect.ablation.mapping import fix_mojibake
from safeselect.errors import UserError

# ----------------------------------------------------------------------------- field labels

# Words that classify a field label (lower case prefixes; checked in this order, first match wins).
_LABEL_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("metrics", ("metric", "measure", "evaluat", "report", "outcome", "criteri", "kpi", "track")),
    ("action", ("action", "operation")),
    ("replacements", ("value", "alternativ", "variant", "option", "candidate", "level", "sweep", "grid",
                      "range", "setting", "arm", "condition", "configuration", "choice", "tried", "replace with",
                      "compare", "instead")),
    ("baseline", ("baseline", "original", "default", "current", "control", "reference")),
    ("part", ("part", "component", "parameter", "knob", "hyperparameter", "factor", "variable", "target",
              "module", "ablat", "what", "dimension", "aspect", "element", "mechanism", "key", "design choice")),
    ("replacements", ("replac", "change", "modification", "intervention")),
    ("context", ("hypothesis", "rationale", "motivation", "description", "why", "purpose", "goal", "expect",
                 "note", "detail", "procedure", "protocol", "method", "summary", "question", "idea", "setup")),
)
_MAX_LABEL_WORDS = 5
# Words a field label may hold besides its kind's words ("What is ablated", "Values to be tried").
_FILLER = frozenset({"the", "a", "an", "of", "to", "be", "is", "are", "for", "and", "or", "s", "being", "we", "will",
                     "used", "new", "proposed", "planned", "tested", "which", "in", "on", "by", "with", "this",
                     "study", "key", "main", "primary", "secondary", "list", "set", "type", "kind", "name"})


def field_kind(label: str) -> str | None:
    """'Ablated Part' -> part, 'Values tried' -> replacements, 'Evaluation' -> metrics; None for other text
    ('Gamma value' is a heading: 'gamma' is not a field word)."""
    norm = " ".join(re.sub(r"[^\w\s-]", " ", fix_mojibake(label).lower().replace("_", " ")).split())
    words = norm.replace("-", " ").split()
    if not words or len(words) > _MAX_LABEL_WORDS:
        return None
    vocab = [w for _, ws in _LABEL_RULES for w in ws]
    if not all(w in _FILLER or any(w.startswith(v) or v in w for v in vocab if " " not in v) for w in words) \
            and not any(" " in v and v in norm for v in vocab):
        return None
    for kind, ws in _LABEL_RULES:
        if any(w in norm for w in ws):
            return kind
    return None


# ----------------------------------------------------------------------------- sections


@dataclass
class Section:
    """One ablation as written: its heading, the texts of its fields and its free prose."""

    name: str
    line: int
    fields: dict[str, str] = field(default_factory=dict)
    items: dict[str, list[str]] = field(default_factory=dict)
    context: list[str] = field(default_factory=list)
    level: int = 0

    def add(self, kind: str, text: str, items: list[str] | None = None) -> None:
        if kind == "context":
            self.context.append(text)
            return
        if text:
            self.fields[kind] = (self.fields.get(kind, "") + " " + text).strip()
        else:
            self.fields.setdefault(kind, "")
        if items:
            self.items.setdefault(kind, []).extend(items)

    @property
    def has_fields(self) -> bool:
        return any(k in self.fields for k in ("part", "replacements", "action"))

    def values(self, kind: str) -> list[str]:
        """A field's values: its list items, else its inline text split as a value list."""
        if self.items.get(kind):
            out: list[str] = []
            for item in self.items[kind]:
                out += split_item(item)
            return out
        return split_values(self.fields.get(kind, ""))


# ----------------------------------------------------------------------------- value lists


def _split_top(text: str, seps: tuple[str, ...]) -> list[str]:
    """Split on any of ``seps`` outside parentheses/brackets/quotes."""
    out, depth, cur, i = [], 0, "", 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        if depth == 0:
            hit = next((s for s in seps if text.startswith(s, i)), None)
            if hit is not None:
                out.append(cur)
                cur = ""
                i += len(hit)
                continue
        cur += ch
        i += 1
    out.append(cur)
    return [s.strip() for s in out]


_LIST_WORDS = (" and ", " or ", " vs. ", " vs ", " versus ", " against ")


def split_values(text: str) -> list[str]:
    """'X / Y / Z', 'X, Y and Z', 'X; Y', 'X vs. Y' -> items; a ratio '80:20' or a path stays whole."""
    text = fix_mojibake(text).strip().rstrip(".").strip()
    if not text:
        return []
    parts = _split_top(text, (";",))
    if len(parts) == 1:
        parts = _split_top(text, (",",))
    out: list[str] = []
    for p in parts:
        p = re.sub(r"^(?:and|or|&)\s+", "", p.strip(), flags=re.I)
        slashed = _split_top(p, (" / ",))
        if len(slashed) == 1 and re.fullmatch(r"[\w.%-]+(?:/[\w.%-]+)+", p) and not re.search(r"\d/\d", p):
            slashed = p.split("/")  # shared/independent
        for s in slashed:
            out += _split_words(s) if len(parts) == 1 and len(slashed) == 1 else [s]
    # "X, Y and Z": the last comma piece holds "Y and Z"
    if len(out) > 1:
        last = _split_top(out[-1], (" and ", " or "))
        if len(last) > 1 and all(len(x.split()) <= 4 for x in last):
            out = out[:-1] + last
    return [o.strip(" .") for o in out if o.strip(" .")]


def _split_words(text: str) -> list[str]:
    """'constant or exponential' -> two items, but only when every piece is short (a name or a number)."""
    for sep in _LIST_WORDS:
        pieces = _split_top(text, (sep,))
        if len(pieces) > 1 and all(0 < len(p.split()) <= 4 for p in pieces):
            return pieces
    return [text]


def split_item(item: str) -> list[str]:
    """A list item is one value, unless it is itself a short list ('0.01 / 0.05 / 0.1')."""
    pieces = split_values(item)
    if len(pieces) > 1 and all(len(p.split()) <= 3 for p in pieces) and ("/" in item or ";" in item
                                                                            or len(pieces) >= 3):
        return pieces
    return [fix_mojibake(item).strip()]


# ----------------------------------------------------------------------------- inline text


@dataclass
class _Seg:
    text: str
    emph: bool


def _segments(node: Any, emph: bool = False) -> list[Any]:
    """Inline children -> segments and line breaks (None)."""
    out: list[Any] = []
    for ch in node.children:
        if ch.type in ("softbreak", "hardbreak"):
            out.append(None)
        elif ch.type in ("strong", "em"):
            out += _segments(ch, True)
        elif ch.type in ("text", "code_inline", "html_inline"):
            text = ch.content if ch.type != "html_inline" else ""
            out.append(_Seg(text, emph))
        elif ch.type == "link" or ch.children:
            out += _segments(ch, emph)
    return out


def _lines(inline: Any) -> list[list[_Seg]]:
    lines: list[list[_Seg]] = [[]]
    for seg in _segments(inline):
        if seg is None:
            lines.append([])
        else:
            lines[-1].append(seg)
    return [ln for ln in lines if "".join(s.text for s in ln).strip()]


def _plain(line: list[_Seg]) -> str:
    return " ".join("".join(s.text for s in line).split())


_LABEL_TAIL = re.compile(r"^\s*[:：—–-]\s*|^\s*\((.*?)\)\s*:\s*")


def _label(line: list[_Seg]) -> tuple[str, str, bool] | None:
    """(label, rest, emphasised) when the line starts with a label: '**X**: rest', '*X:* rest', 'X: rest'."""
    i = 0
    while i < len(line) and not line[i].text.strip():
        i += 1
    j = i
    while j < len(line) and (line[j].emph or (not line[j].text.strip() and j + 1 < len(line) and line[j + 1].emph)):
        j += 1
    if j > i:
        label = "".join(s.text for s in line[i:j]).strip()
        rest = "".join(s.text for s in line[j:])
        if label.endswith(":"):
            return label.rstrip(":").strip(), rest.strip(), True
        m = _LABEL_TAIL.match(rest)
        if m:
            return label, rest[m.end():].strip(), True
        if not rest.strip():
            return label, "", True  # a bold-only line: a pseudo-heading or a label whose values follow
        return None
    text = _plain(line)
    m = re.match(r"^([A-Za-z][\w ()/'-]{0,40}?)\s*:\s*(.*)$", text)
    if m and field_kind(m.group(1)):
        return m.group(1).strip(), m.group(2).strip(), False
    return None


# ----------------------------------------------------------------------------- the walk


class _Walker:
    def __init__(self, where: str) -> None:
        self.where = where
        self.title = ""
        self.sections: list[Section] = []
        self.cur: Section | None = None
        self.pending: str | None = None  # a field whose values are in the next list

    def open(self, name: str, line: int, level: int) -> Section:
        s = Section(_section_name(name), line, level=level)
        self.sections.append(s)
        self.cur = s
        self.pending = None
        return s

    def section(self, line: int) -> Section:
        if self.cur is None:  # fields before any heading: an untitled section
            self.open("ablation", line, 0)
        assert self.cur is not None
        return self.cur

    # blocks ------------------------------------------------------------------
    def blocks(self, nodes: list[Any]) -> None:
        for node in nodes:
            line = (node.map[0] + 1) if node.map else 0
            if node.type == "heading":
                text = _plain(sum(_lines(node.children[0]), []))
                level = int(node.tag[1])
                if level == 1 and not self.title:
                    self.title = text
                self.open(text, line, level)
            elif node.type == "paragraph":
                self.paragraph(node, line)
            elif node.type in ("bullet_list", "ordered_list"):
                self.list(node)
            elif node.type == "table":
                self.table(node, line)
            elif node.type == "blockquote":
                self.blocks(node.children)

    def paragraph(self, node: Any, line: int) -> None:
        lines = _lines(node.children[0])
        if not lines:
            return
        for k, ln in enumerate(lines):
            lab = _label(ln)
            if lab is None:
                text = _plain(ln)
                if self.pending and self.cur is not None:
                    self.cur.add(self.pending, text)
                    continue
                if self.cur is not None:
                    self.cur.context.append(text)
                continue
            label, rest, emph = lab
            kind = field_kind(label)
            if kind is None or (kind == "context" and not rest):
                if emph and not rest and len(lines) == 1:
                    self.open(label, line + k, 7)  # a bold-only paragraph used as a heading
                elif self.cur is not None:
                    self.cur.context.append(_plain(ln))
                continue
            sec = self.section(line + k)
            sec.add(kind, rest)
            self.pending = kind if not rest and kind != "context" else None

    def list(self, node: Any) -> None:
        for item in node.children:
            self.item(item)

    def item(self, item: Any) -> None:
        line = (item.map[0] + 1) if item.map else 0
        kids = item.children
        first = kids[0] if kids and kids[0].type == "paragraph" else None
        nested = [k for k in kids if k.type in ("bullet_list", "ordered_list")]
        lines = _lines(first.children[0]) if first is not None else []
        lab = _label(lines[0]) if lines else None
        kind = field_kind(lab[0]) if lab else None
        if lab and kind and kind != "context" or (lab and kind == "context" and lab[1]):
            rest = lab[1]
            more = " ".join(_plain(ln) for ln in lines[1:])
            sec = self.section(line)
            texts = [_item_text(n) for lst in nested for n in lst.children]
            sec.add(kind, (rest + " " + more).strip(), texts)
            self.pending = kind if not rest and not texts and kind != "context" else None
            # a nested list of fields (rare): walk it too
            return
        if lab and kind is None and nested and _has_field_items(nested):
            # "1. **Gamma schedule**" with the fields nested under it: a section
            self.open(lab[0] + (f": {lab[1]}" if lab[1] else ""), line, 8)
            for lst in nested:
                self.list(lst)
            self.cur_close()
            return
        if self.pending and self.cur is not None:
            # "3. 100%" followed by "**Metrics** - ..." on the next line: markdown makes that line a lazy
            # continuation of the item; a field label there ends the list
            cut = next((k for k, ln in enumerate(lines) if k > 0 and _label(ln) and field_kind(_label(ln)[0])), None)
            if cut is None:
                self.cur.items.setdefault(self.pending, []).append(_item_text(item))
                return
            self.cur.items.setdefault(self.pending, []).append(" ".join(_plain(ln) for ln in lines[:cut]))
            self.pending = None
            for ln in lines[cut:]:
                lab2 = _label(ln)
                kind2 = field_kind(lab2[0]) if lab2 else None
                if lab2 and kind2:
                    self.cur.add(kind2, lab2[1])
                    self.pending = kind2 if not lab2[1] and kind2 != "context" else None
                elif self.pending:
                    self.cur.add(self.pending, _plain(ln))
            return
        if lab and kind is None and lab[2] and lab[1]:
            # "1. **Penalty schedule**: replace the linear schedule with constant or exponential": prose ablation
            sec = self.open(lab[0], line, 9)
            sec.add("part", lab[0])
            sec.add("prose", lab[1] + " " + " ".join(_plain(ln) for ln in lines[1:]))
            for lst in nested:
                sec.items.setdefault("replacements", []).extend(_item_text(n) for n in lst.children)
            self.cur = sec
            return
        if self.cur is not None:
            self.cur.context.append(_item_text(item))

    def cur_close(self) -> None:
        self.pending = None

    def table(self, node: Any, line: int) -> None:
        rows = []
        for part in node.children:  # thead, tbody
            for tr in part.children:
                rows.append([_plain(sum(_lines(c.children[0]), [])) if c.children else "" for c in tr.children])
        if not rows:
            return
        header = rows[0]
        kinds = [field_kind(h) for h in header]
        if sum(k in ("part", "replacements", "metrics", "action") for k in kinds) >= 2:
            for r, cells in enumerate(rows[1:], 1):
                name = next((c for c, k in zip(cells, kinds, strict=False) if k is None and c), "")
                part = next((c for c, k in zip(cells, kinds, strict=False) if k == "part"), "")
                sec = self.open(name or part or f"row {r}", line + r + 1, 10)
                for c, k in zip(cells, kinds, strict=False):
                    if k in ("part", "replacements", "metrics", "action", "baseline"):
                        sec.add(k, c)
                    elif k == "context" and c:
                        sec.context.append(c)
            self.cur = None
            return
        if len(header) == 2:
            body = rows if field_kind(header[0]) and field_kind(header[0]) != "context" else rows[1:]
            sec = self.section(line)
            hit = False
            for cells in body:
                k = field_kind(cells[0]) if cells else None
                if k and len(cells) > 1:
                    sec.add(k, cells[1])
                    hit = True
            if hit:
                return
        # a table of values under a field ("| Variant | gamma |"): the first column are the replacements
        if self.pending == "replacements" and self.cur is not None:
            self.cur.items.setdefault("replacements", []).extend(r[0] for r in rows[1:] if r and r[0])
            self.pending = None
        elif self.cur is not None:
            self.cur.context += [" | ".join(r) for r in rows]


def _has_field_items(lists: list[Any]) -> bool:
    for lst in lists:
        for it in lst.children:
            kids = it.children
            if kids and kids[0].type == "paragraph":
                ls = _lines(kids[0].children[0])
                lab = _label(ls[0]) if ls else None
                if lab and field_kind(lab[0]) in ("part", "replacements", "metrics", "action"):
                    return True
    return False


def _item_text(item: Any) -> str:
    """The whole text of a list item (its paragraphs; nested lists joined with '; ')."""
    texts, subs = [], []
    for k in item.children:
        if k.type == "paragraph":
            texts.append(" ".join(_plain(ln) for ln in _lines(k.children[0])))
        elif k.type in ("bullet_list", "ordered_list"):
            subs += [_item_text(n) for n in k.children]
    text = " ".join(texts)
    return text + (" (" + "; ".join(subs) + ")" if subs else "")


def _section_name(heading: str) -> str:
    """'Ablation Study on Penalty Strength' -> 'Penalty Strength'; 'Ablation 2: Gamma Schedule' -> 'Gamma Schedule'."""
    heading = re.sub(r"^\s*(?:\d+[.)]|[A-Z][.)])\s+", "", fix_mojibake(heading))
    name = re.sub(r"^\s*(?:(?:proposed|planned|missing|additional|further)\s+)?ablations?(?:\s+stud(?:y|ies))?(?:\s*(?:#\s*)?\d+|\s+[A-Z]\b)?"
                  r"\s*(?:on|of|:|-|–|—|\.)?\s*", "", fix_mojibake(heading), flags=re.I).strip(" :-–—*_")
    return name or heading.strip()


def strip_html(text: str) -> str:
    """Drop <style>/<script> blocks and every tag, unescape entities, keep the text and line structure."""
    text = re.sub(r"<(style|script)\b.*?</\1\s*>", "", text, flags=re.S | re.I)
    text = re.sub(r"<[^>\n]+>", "", text)
    return html.unescape(text)


def parse_sections(text: str, where: str = "plan") -> tuple[str, list[Section]]:
    """The title and every section of a markdown plan that names a part, an action or replacements."""
    from markdown_it import MarkdownIt
    from markdown_it.tree import SyntaxTreeNode

    clean = strip_html(fix_mojibake(text))
    # the HTML wrappers of exported plans leave indented lines behind: dedent so they are not code blocks
    clean = "\n".join(ln[4:] if ln.startswith("    ") and not ln.lstrip().startswith(("-", "*", "+")) and
                      not re.match(r"\s*\d+[.)]", ln) else ln for ln in clean.splitlines())
    md = MarkdownIt("commonmark").enable("table")
    tree = SyntaxTreeNode(md.parse(clean))
    w = _Walker(where)
    w.blocks(tree.children)
    sections = [s for s in w.sections if s.has_fields]
    return w.title, sections


def parse_markdown(text: str, where: str = "plan") -> tuple[str, list[dict[str, Any]]]:
    """The title and raw ablations ({name, parameter, action, replacements, metrics, line, context, ...})."""
    title, sections = parse_sections(text, where)
    raws: list[dict[str, Any]] = []
    for s in sections:
        part = s.fields.get("part") or " ".join(s.items.get("part", []))
        reps = s.values("replacements")
        prose = s.fields.get("prose", "")
        raws.append({
            "name": s.name,
            "parameter": part or s.name,
            "part_given": bool(part),
            "action": (s.fields.get("action") or "REPLACE").strip(),
            "replacements": reps,
            "prose": prose,
            "baseline": s.fields.get("baseline", ""),
            "metrics": s.values("metrics"),
            "line": s.line,
            "context": " ".join(s.context),
        })
    if not raws:
        raise UserError(f"{where}: no ablation sections found (expected a heading per ablation with fields such as "
                        "'- **Ablated Part**:', '- **Replacement**:', '- **Metrics**:')")
    return title, raws
