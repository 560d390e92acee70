"""``report.html``: a report as one static page beside its ``report.md``, readable offline.

The page is the markdown report rendered (markdown-it), with every plot it links
(``plots/*.png``) embedded as a base64 data URI, comparison figures drawn as inline SVG
(one dot-and-whisker chart per headline metric: each run's value with its 95% bootstrap
interval), and sortable tables: a click on a column header sorts the rows by the number
the cells start with (a few lines of inline JavaScript; no CDN, no network). Nothing here
computes a figure: the numbers are those of the markdown report and of metrics.json.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from safeselect.core.io import atomic_write_text
from safeselect.core.metrics import lower_is_better

_STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; min-height: 100vh;
       box-shadow: 0 0 0 1px #d0d7de; }
h1 { font-size: 1.6em; border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #eaeef2; padding-bottom: .2em; }
code { font: 0.88em ui-monospace, SFMono-Regular, Menlo, monospace; background: #f3f4f6; padding: .1em .3em;
       border-radius: 4px; }
.tablewrap { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: 0.9em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 5px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; position: sticky; top: 0; cursor: pointer; user-select: none; }
th:hover { background: #eaeef2; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: .7em; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: .7em; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #fff8c5; }
td strong { color: #0a3069; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; margin: 6px 8px 6px 0; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
figure.chart { margin: 0; border: 1px solid #eaeef2; padding: 6px; background: #fff; }
.note { color: #57606a; font-size: .85em; }
"""

# Sort on a header click: by the first number in each cell ("0.25 [0.10, 0.40]", "**0.3**", "40 / 40"),
# text when a column has no numbers; "-" and empty cells always last. Clicking again reverses.
_SCRIPT = """
document.querySelectorAll("table").forEach(function (table) {
  var ths = table.querySelectorAll("thead th");
  ths.forEach(function (th, col) {
    th.title = "sort by this column";
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute("aria-sort") !== "ascending";
      ths.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      function key(row) {
        var t = (row.cells[col] ? row.cells[col].textContent : "").trim();
        var m = t.match(/^[-+]?\\d*\\.?\\d+(e[-+]?\\d+)?/i);
        return { missing: t === "" || t === "-", num: m ? parseFloat(m[0]) : null, text: t.toLowerCase() };
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x.missing !== y.missing) return x.missing ? 1 : -1;
        var d = (x.num !== null && y.num !== null) ? x.num - y.num : x.text.localeCompare(y.text);
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def render_markdown(text: str) -> str:
    """CommonMark with tables (GitHub style), raw HTML in the source escaped."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _embed_images(body: str, base_dir: Path) -> str:
    """``<img src="plots/x.png">`` -> a data URI, so the page is one file; a missing image says so."""

    def repl(m: re.Match[str]) -> str:
        src, rest = html.unescape(m.group(1)), m.group(2)
        if src.startswith(("data:", "http:", "https:")):
            return m.group(0)
        path = base_dir / src
        if not path.is_file():
            return f'<span class="note">[missing image: {html.escape(src)}]</span>'
        mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img src="data:{mime};base64,{data}"{rest}>'

    return re.sub(r'<img src="([^"]+)"([^>]*)>', repl, body)


def page(markdown: str, base_dir: str | Path, title: str, figures: list[str] | tuple[str, ...] = ()) -> str:
    """The whole HTML document for a markdown report; ``figures`` (inline SVG) go after the first table."""
    body = _embed_images(render_markdown(markdown), Path(base_dir))
    body = body.replace("<table>", '<div class="tablewrap"><table>').replace("</table>", "</table></div>")
    # Consecutive embedded plots (one paragraph of images in the markdown) flow side by side.
    body = re.sub(r"<p>((?:<img [^>]+>\s*)+)</p>", r'<div class="figures">\1</div>', body)
    if figures:
        block = '<div class="figures">' + "".join(f'<figure class="chart">{f}</figure>' for f in figures) + "</div>"
        end = body.find("</table></div>")
        at = end + len("</table></div>") if end >= 0 else len(body)
        body = body[:at] + block + body[at:]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body><main>\n{body}\n<p class=\"note\">Made by safeselect from report.md and the run files; "
            f"click a column header to sort.</p></main>\n<script>{_SCRIPT}</script></body></html>\n")


def write_html(md_path: str | Path, figures: list[str] | tuple[str, ...] = ()) -> Path:
    """Write ``report.html`` beside ``md_path`` from its text (atomically); returns the path."""
    md_path = Path(md_path)
    text = md_path.read_text(encoding="utf-8")
    first = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("# ")), md_path.parent.name)
    out = md_path.with_suffix(".html")
    atomic_write_text(out, page(text, md_path.parent, first, figures))
    return out


# ----------------------------------------------------------------------------- comparison figures (SVG)


def interval_chart(title: str, points: list[tuple[str, float | None, tuple[float, float] | None]],
                   lo: float = 0.0, hi: float = 1.0, lower_better: bool = False) -> str:
    """A dot-and-whisker chart as inline SVG: one line per run, its value and 95% interval on a lo..hi axis."""
    left, width, row, top = 120, 300, 24, 34
    height = top + row * len(points) + 28
    span = (hi - lo) or 1.0

    def x(v: float) -> float:
        return left + width * (min(max(v, lo), hi) - lo) / span

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
             f'font-family="system-ui, sans-serif" font-size="12" role="img" aria-label="{html.escape(title)}">',
             f'<text x="4" y="16" font-weight="600">{html.escape(title)}'
             f'{" (lower is better)" if lower_better else ""}</text>']
    for i in range(5):  # grid and ticks at 0, 1/4, ... of the axis
        v = lo + span * i / 4
        gx = x(v)
        parts.append(f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{height - 22}" stroke="#eaeef2"/>')
        parts.append(f'<text x="{gx:.1f}" y="{height - 8}" text-anchor="middle" fill="#57606a">{v:g}</text>')
    for i, (label, value, ci) in enumerate(points):
        y = top + row * i + row / 2
        name = label if len(label) <= 16 else label[:15] + "…"
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{html.escape(name)}</text>')
        if value is None:
            parts.append(f'<text x="{left}" y="{y + 4:.1f}" fill="#57606a">no value</text>')
            continue
        tip = f"{label}: {value:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")
        parts.append(f"<g><title>{html.escape(tip)}</title>")
        if ci:
            parts.append(f'<line x1="{x(ci[0]):.1f}" y1="{y:.1f}" x2="{x(ci[1]):.1f}" y2="{y:.1f}" '
                         f'stroke="#0969da" stroke-width="2"/>')
            for end in ci:
                parts.append(f'<line x1="{x(end):.1f}" y1="{y - 5:.1f}" x2="{x(end):.1f}" y2="{y + 5:.1f}" '
                             f'stroke="#0969da" stroke-width="2"/>')
        parts.append(f'<circle cx="{x(value):.1f}" cy="{y:.1f}" r="5" fill="#0969da"/>')
        parts.append(f'<text x="{left + width + 16}" y="{y + 4:.1f}">{value:.2f}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def comparison_figures(results: dict[str, dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    """One chart per headline column (label, metric key) over the runs of a comparison; rates on 0..1,
    win rates on 0..100, each run's ``<key>_ci`` as its interval when it has one."""
    figs = []
    for label, key in columns:
        points = []
        for run, m in results.items():
            v = m.get(key)
            ci = m.get(f"{key}_ci")
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            has_ci = isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci)
            points.append((run, float(v) if ok else None, (float(ci[0]), float(ci[1])) if ok and has_ci else None))
        if not any(p[1] is not None for p in points):
            continue
        top = 100.0 if key.startswith("win_rate.") or key.endswith(".win_rate") else 1.0
        if any(p[1] is not None and p[1] > top for p in points):  # not a rate: fit the axis to the values
            top = max(p[1] for p in points if p[1] is not None)
        figs.append(interval_chart(label, points, 0.0, top, lower_is_better(key)))
    return figs
