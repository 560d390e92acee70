"""report.html: one static page beside report.md (tables sortable, plots embedded, comparison charts as SVG),
working offline; rendered in headless Chromium when it is installed (skipped cleanly otherwise)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from safeselect.ablation.plan import load_plan
from safeselect.ablation.runner import run_plan
from safeselect.cli.main import main
from safeselect.reporting.ablation import build_report
from safeselect.reporting.html import comparison_figures, page
from safeselect.reporting.runs import write_report

PLAN = """
name: html toy
base: {selection.method: seal}
seeds: [0, 1, 2]
ablations:
  - name: penalty strength
    parameter: selection.seal.gamma.value
    replacements: [0.0, 0.1, 0.5]
    metrics: [harmful rate, over refusal]
"""


def fake_run(kind: str, cfg: Any, out_dir: Path, reference_dir: Path | None, show_progress: bool) -> None:
    """Metrics that fall with gamma and vary with the seed, with bootstrap intervals like a real run's."""
    g, s = cfg.selection.seal.gamma.value, cfg.seed
    harm, over = round(0.8 - g + 0.02 * s, 4), round(0.1 + g / 2 + 0.01 * s, 4)
    m = {"safety": {"builtin": {"refusal": {"harmful_rate": harm, "harmful_rate_ci": [harm - 0.1, harm + 0.1]}}},
         "overrefusal": {"lookalike": {"refusal_rate": over, "refusal_rate_ci": [over - 0.05, over + 0.05]}},
         "complete": True}
    (out_dir / "metrics.json").write_text(json.dumps(m))


def _no_network(doc: str) -> None:
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", doc), "the page must not load anything over the network"


def test_page_embeds_images_and_sorts_tables(tmp_path):
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(png)
    md = "# T\n\n| run | rate |\n|---|---|\n| b | 0.5 [0.4, 0.6] |\n| a | **0.2** |\n\n![a](plots/a.png) ![gone](plots/b.png)\n"
    doc = page(md, tmp_path, "T")
    assert "data:image/png;base64," + base64.b64encode(png).decode() in doc
    assert "[missing image: plots/b.png]" in doc
    assert doc.count("<table>") == 1 and "<strong>0.2</strong>" in doc and "<script>" in doc
    assert "&lt;script" in page("<script>alert(1)</script>", tmp_path, "x")  # raw HTML in a report is escaped
    _no_network(doc)


def test_ablation_and_comparison_pages(tmp_path, capsys):
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(PLAN)
    out = tmp_path / "abl"
    run_plan(load_plan(plan_file), out, workers=0, run_fn=fake_run)
    build_report(out)  # the report is built from the files afterwards (reporting floor above ablation)
    doc = (out / "report.html").read_text()
    n_png = len(list((out / "plots").glob("*.png")))
    assert n_png == 2 and doc.count("data:image/png;base64,") == n_png
    assert "penalty strength" in doc and doc.count("<table>") == 1
    _no_network(doc)
    # `safeselect report` rebuilds it
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").exists()

    runs = {"aligned": {"safety.builtin.refusal.harmful_rate": 0.0, "safety.builtin.refusal.harmful_rate_ci": [0.0, 0.0]},
            "full": {"safety.builtin.refusal.harmful_rate": 1.0, "task.sentiment.accuracy": 0.9},
            "random": {"safety.builtin.refusal.harmful_rate": 0.9, "task.sentiment.accuracy": 0.85,
                       "win_rate.builtin.rule": 48.0}}
    figs = comparison_figures(runs, [("harmful rate", "safety.builtin.refusal.harmful_rate"),
                                     ("accuracy", "task.sentiment.accuracy"), ("win rate", "win_rate.builtin.rule")])
    assert len(figs) == 3 and all(f.startswith("<svg") for f in figs)
    assert "lower is better" in figs[0] and "lower is better" not in figs[1]
    assert ">100</text>" in figs[2]  # win rates on 0..100
    cmp_dir = tmp_path / "cmp"
    cmp_dir.mkdir()
    write_report(cmp_dir, "# cmp\n\n| run | x |\n|---|---|\n| a | 1 |\n", runs)
    doc = (cmp_dir / "report.html").read_text()
    assert doc.count("<svg") == 3 and doc.index("</table>") < doc.index("<svg")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_page_renders_in_headless_chromium(tmp_path):
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(PLAN)
    out = tmp_path / "abl"
    run_plan(load_plan(plan_file), out, workers=0, run_fn=fake_run)
    build_report(out)  # the report is built from the files afterwards (reporting floor above ablation)
    html_file = out / "report.html"
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-extensions"]
    dom = subprocess.run([*flags, "--dump-dom", html_file.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the inline script ran: every header got its sort handler and title
    headers = re.findall(r"<th[ >][^>]*>?", dom.stdout)
    assert headers and all('title="sort by this column"' in h for h in headers)
    shot = tmp_path / "shot.png"
    res = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,1600", html_file.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, res.stderr[-2000:]


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_header_click_sorts_by_number_with_missing_last(tmp_path):
    md = ("# t\n\n| run | rate | note |\n|---|---|---|\n| a | 0.50 [0.40, 0.60] | x |\n| b | - | y |\n"
          "| c | **0.05** | z |\n| d | 12.5 | w |\n")
    doc = page(md, tmp_path, "t")
    probe = ("<script>var th = document.querySelectorAll('th')[1]; var out = [];"
             "function order() { return Array.prototype.map.call(document.querySelectorAll('tbody tr'),"
             " function (r) { return r.cells[0].textContent; }).join(''); }"
             "th.click(); out.push(order()); th.click(); out.push(order());"
             "document.body.setAttribute('data-order', out.join('|'));</script>")
    f = tmp_path / "probe.html"
    f.write_text(doc.replace("</body>", probe + "</body>"))
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--dump-dom", f.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-order="cadb|dacb"' in dom.stdout, dom.stdout[-500:]
