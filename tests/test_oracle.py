"""The oracle selector: the ground-truth floor of each built-in level."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeselect.config import loading
from safeselect.core.rows import Row
from safeselect.data import builtin
from safeselect.errors import UserError
from safeselect.selection.base import SelectionContext
from safeselect.selection.oracle import select


def _ctx(tmp_path: Path, task: list[Row], *overrides: str) -> SelectionContext:
    return SelectionContext(selection=loading.load(None, list(overrides)).selection, task=task, safety_ref=[], out_dir=tmp_path)


@pytest.mark.parametrize("level, ratio, bad", [("easy", 0.8, 40), ("hard", 0.8, 40), ("erosion", 0.6, 80)])
def test_oracle_keeps_exactly_the_clean_rows_when_the_budget_fits_them(tmp_path: Path, level: str, ratio: float,
                                                                        bad: int) -> None:
    task = builtin.build_bundle(loading.load(None, [f"data.difficulty={level}"])).task
    sel = select(_ctx(tmp_path, task, f"selection.ratio={ratio}"))
    kept = {rid for rid, k in zip(sel.row_ids, sel.kept, strict=True) if k}
    assert kept == {r.row_id for r in task if not builtin.is_bad_row(r)}
    assert sel.info["bad_rows"] == bad and sel.info["bad_kept"] == 0


def test_oracle_fills_a_larger_budget_from_bad_rows_at_random_and_is_seeded(tmp_path: Path) -> None:
    task = builtin.build_bundle(loading.load(None, ["data.difficulty=erosion"])).task
    a = select(_ctx(tmp_path, task, "selection.ratio=0.9"))
    assert sum(a.kept) == 180 and a.info["bad_kept"] == 60  # 120 clean rows + 60 of the 80 eroding
    assert select(_ctx(tmp_path, task, "selection.ratio=0.9")).kept == a.kept
    assert select(_ctx(tmp_path, task, "selection.ratio=0.9", "selection.seed=1")).kept != a.kept
    small = select(_ctx(tmp_path, task, "selection.ratio=0.5"))
    assert small.info["bad_kept"] == 0


def test_oracle_refuses_rows_without_ground_truth(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs ground truth"):
        select(_ctx(tmp_path, [Row(row_id="a", prompt="p", response="r")]))


def test_oracle_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    from safeselect.cli.main import main

    assert main(["ls", "selectors"]) == 0
    assert "oracle" in capsys.readouterr().out
