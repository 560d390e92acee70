"""How well ablation plans written in other planners' styles map: right key and values per section.

    PYTHONPATH=src python benchmarks/plan_mapping.py [--split tune|heldout|all] [-v]

For each fixture plan of tests/ablation_plans.py: every section whose knob exists must map to the expected
key with the expected values; a section mapped to another key counts as wrong, and as *silently* wrong when it
is not flagged low-confidence; a section whose knob does not exist must be refused.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ablation_plans import PLANS, PlanFixture  # noqa: E402

from safeselect.ablation.plan import load_plan  # noqa: E402


def _same(a: list[Any], b: list[Any]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float) or isinstance(y, float):
            try:
                if abs(float(x) - float(y)) > 1e-9:
                    return False
            except (TypeError, ValueError):
                return False
        elif x != y:
            return False
    return True


def load_fixture(fx: PlanFixture, tmp: Path) -> Any:
    path = tmp / f"{fx.name}.md"
    path.write_text(fx.text, encoding="utf-8")
    return load_plan(path, overrides=["model.name=tiny-llama"])


def score_plan(fx: PlanFixture, plan: Any) -> list[dict[str, Any]]:
    rows = []
    for word, exp in fx.expected.items():
        ab = next((a for a in plan.ablations if word.lower() in a.name.lower()), None)
        ref = next((r for r in plan.refused if word.lower() in r.name.lower()), None)
        row: dict[str, Any] = {"plan": fx.name, "section": word, "expected": exp[0] if exp else None}
        if ab is None and ref is None:
            row.update(outcome="missing", got=None)
        elif exp is None:
            if ab is None:
                row.update(outcome="rightly refused", got=None)
            else:
                row.update(outcome="wrong" if not ab.low_confidence else "wrong (flagged)", got=ab.parameter)
        elif ab is None:
            row.update(outcome="refused", got=None, why=ref.reason if ref else "")
        elif ab.parameter != exp[0]:
            row.update(outcome="wrong" if not ab.low_confidence else "wrong (flagged)", got=ab.parameter)
        elif exp[1] is not None and not _same([r.value for r in ab.replacements], exp[1]):
            row.update(outcome="values", got=[r.value for r in ab.replacements])
        else:
            row.update(outcome="right", got=ab.parameter, low=ab.low_confidence)
        rows.append(row)
    return rows


def evaluate(split: str, plans: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Score the fixture plans of ``split``; ``plans`` (name -> loaded plan) saves loading them again."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        for fx in PLANS:
            if split in ("all", fx.split):
                plan = plans[fx.name] if plans else load_fixture(fx, Path(d))
                rows += score_plan(fx, plan)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    exists = [r for r in rows if r["expected"] is not None]
    return {"sections": len(rows), "knob_exists": len(exists),
            "right": sum(r["outcome"] == "right" for r in exists),
            "wrong_silent": sum(r["outcome"] == "wrong" for r in rows),
            "wrong_flagged": sum(r["outcome"] == "wrong (flagged)" for r in rows),
            "rightly_refused": sum(r["outcome"] == "rightly refused" for r in rows),
            "no_knob": len(rows) - len(exists)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="all", choices=("tune", "heldout", "all"))
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    rows = evaluate(args.split)
    if args.v:
        for r in rows:
            print(r)
    s = summary(rows)
    print(f"split {args.split}: {s['right']}/{s['knob_exists']} sections with an existing knob mapped to the right "
          f"key and values; {s['wrong_silent']} wrong without a low-confidence flag, {s['wrong_flagged']} wrong but "
          f"flagged; {s['rightly_refused']}/{s['no_knob']} sections without a knob refused")


if __name__ == "__main__":
    main()
