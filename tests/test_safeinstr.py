"""SafeInstr: exactly `count` demonstrations with fresh, non-colliding row ids, seeded, on top of any selector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safeselect.config import loading
from safeselect.config.paths import data_dir
from safeselect.core.rows import Row
from safeselect.errors import UserError
from safeselect.selection import random as random_selector
from safeselect.selection import safeinstr
from safeselect.selection.base import Selection, SelectionContext, context_for


def refs(n: int) -> list[Row]:
    return [Row(f"ref-{i}", f"harmful request {i}", f"I'm sorry, I can't help with request {i}.") for i in range(n)]


def task(n: int, ids: list[str] | None = None) -> list[Row]:
    ids = ids or [f"t{i}" for i in range(n)]
    return [Row(rid, f"review {i}", "positive", harmful=False) for i, rid in enumerate(ids)]


def make_ctx(tmp_path: Path, rows: list[Row], pool: list[Row], **overrides: object) -> SelectionContext:
    cfg = loading.build({"selection.method": "safeinstr", **overrides})
    return context_for(cfg, rows, pool, tmp_path, method="safeinstr", show_progress=False)


def full_selection(rows: list[Row]) -> Selection:
    n = len(rows)
    return Selection([r.row_id for r in rows], [1.0] * n, [True] * n, [1.0] * n, info={"method": "full"})


def test_adds_exactly_count_rows_with_fresh_ids(tmp_path: Path) -> None:
    rows = task(10)
    ctx = make_ctx(tmp_path, rows, refs(30), **{"selection.safeinstr.count": 7})
    out = safeinstr.augment(full_selection(rows), ctx)
    assert len(out.added) == 7
    assert [r.row_id for r in out.added] == [f"safeinstr-{i:05d}" for i in range(7)]
    assert all(r.harmful is False and r.response.startswith("I'm sorry") for r in out.added)
    assert len({r.meta["from_row_id"] for r in out.added}) == 7  # drawn without replacement
    assert len(out.kept_rows(rows)) == 17 and out.kept_weights() == [1.0] * 17
    recs = out.records(rows)
    assert sum(1 for r in recs if r.get("added")) == 7
    assert out.info["safeinstr"] == {"count": 7, "source": "safety_ref", "pool": 30}
    assert len((tmp_path / "safeinstr_added.jsonl").read_text().splitlines()) == 7


def test_ids_never_collide_with_task_ids(tmp_path: Path) -> None:
    rows = task(3, ids=["safeinstr-00001", "safeinstr1-00000", "x"])
    ctx = make_ctx(tmp_path, rows, refs(5), **{"selection.safeinstr.count": 5})
    out = safeinstr.augment(full_selection(rows), ctx)
    ids = [r.row_id for r in out.added]
    assert ids == [f"safeinstr2-{i:05d}" for i in range(5)]
    all_ids = out.row_ids + ids
    assert len(set(all_ids)) == len(all_ids)


def test_seeded_choice(tmp_path: Path) -> None:
    rows = task(4)

    def picks(seed: int) -> list[str]:
        ctx = make_ctx(tmp_path, rows, refs(50), **{"selection.safeinstr.count": 5, "selection.seed": seed})
        return [r.meta["from_row_id"] for r in safeinstr.augment(full_selection(rows), ctx).added]

    assert picks(1) == picks(1)
    assert picks(1) != picks(2)


def test_count_zero_is_a_no_op_and_augment_is_idempotent(tmp_path: Path) -> None:
    rows = task(4)
    sel = full_selection(rows)
    assert safeinstr.augment(sel, make_ctx(tmp_path, rows, refs(5))) is sel
    ctx = make_ctx(tmp_path, rows, refs(5), **{"selection.safeinstr.count": 2})
    once = safeinstr.augment(sel, ctx)
    assert len(safeinstr.augment(once, ctx).added) == 2


def test_errors(tmp_path: Path) -> None:
    rows = task(4)
    with pytest.raises(UserError, match="has only 3 rows"):
        safeinstr.augment(full_selection(rows), make_ctx(tmp_path, rows, refs(3), **{"selection.safeinstr.count": 4}))
    with pytest.raises(UserError, match="nor an existing file"):
        safeinstr.augment(full_selection(rows), make_ctx(tmp_path, rows, refs(3), **{
            "selection.safeinstr.count": 1, "selection.safeinstr.source": str(tmp_path / "missing.jsonl")}))
    trained = full_selection(rows)
    trained.trained_model = object()
    with pytest.raises(UserError, match="trains while it selects"):
        safeinstr.augment(trained, make_ctx(tmp_path, rows, refs(3), **{"selection.safeinstr.count": 1}))


def test_default_count_is_three_percent_of_the_task_rows(tmp_path: Path) -> None:
    assert [safeinstr.default_count(n) for n in (1, 10, 50, 200, 1000)] == [1, 1, 2, 6, 30]
    rows = task(200)
    out = safeinstr.select(make_ctx(tmp_path, rows, refs(10)))  # selection.safeinstr.count = 0
    assert len(out.added) == 6 and out.info["safeinstr"]["count"] == 6


def test_selector_alone_is_random_at_the_budget_plus_demonstrations(tmp_path: Path) -> None:
    rows = task(20)
    ctx = make_ctx(tmp_path, rows, refs(10), **{"selection.safeinstr.count": 3, "selection.ratio": 0.5})
    out = safeinstr.select(ctx)
    base = random_selector.select(ctx)
    assert out.kept == base.kept and sum(out.kept) == 10
    assert len(out.added) == 3 and out.info["method"] == "safeinstr"


def test_sources_json_and_jsonl_files(tmp_path: Path) -> None:
    js = tmp_path / "demos.json"
    js.write_text(json.dumps([{"instruction": "Do harm", "output": "I cannot."},
                              {"prompt": "More harm", "response": "No."}]))
    rows = task(2)
    out = safeinstr.augment(full_selection(rows), make_ctx(tmp_path, rows, [], **{
        "selection.safeinstr.count": 2, "selection.safeinstr.source": str(js)}))
    assert sorted(r.prompt for r in out.added) == ["Do harm", "More harm"]
    jl = tmp_path / "demos.jsonl"
    jl.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n" + json.dumps({"bad": 1}) + "\n")
    with pytest.raises(UserError, match=r"demos.jsonl:2"):
        safeinstr.augment(full_selection(rows), make_ctx(tmp_path, rows, [], **{
            "selection.safeinstr.count": 1, "selection.safeinstr.source": str(jl)}))


def test_real_safeinstr_file(tmp_path: Path) -> None:
    probe = data_dir()
    if probe is None or not (probe / safeinstr.SAFEINSTR_FILE).exists():
        pytest.skip("real data folder (../shared/data) not present")
    rows = task(5)
    out = safeinstr.augment(full_selection(rows), make_ctx(tmp_path, rows, [], **{
        "selection.safeinstr.count": 25, "selection.safeinstr.source": "safeinstr"}))
    assert len(out.added) == 25 and out.info["safeinstr"]["pool"] == 2483
    assert all(r.prompt and r.response and r.source == "safeinstr" for r in out.added)


def test_compare_entry_with_safeinstr_on_top(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`<selector>+safeinstr` in compare: that selector's rows plus 3% of data.n_task demonstrations."""
    from conftest import TINY

    from safeselect.cli.main import main
    from safeselect.core.io import read_jsonl
    from safeselect.pipeline.run import sub_config

    cfg = loading.load("quickstart", ["data.n_task=200"])
    sub = sub_config(cfg, "random+safeinstr")
    assert sub.selection.method == "random" and sub.selection.safeinstr.count == 6
    assert sub_config(loading.load("quickstart", ["selection.safeinstr.count=9"]),
                      "loss+safeinstr").selection.safeinstr.count == 9
    assert safeinstr.methods_used("full", ["seal+safeinstr"]) == {"full", "seal", "safeinstr"}
    out = tmp_path / "out"
    assert main(["run", "quickstart", *TINY, "compare=[random,random+safeinstr]", "--out", str(out), "--quiet"]) == 0
    plain = read_jsonl(out / "random" / "selection.jsonl")
    on_top = read_jsonl(out / "random+safeinstr" / "selection.jsonl")
    added = [r for r in on_top if r.get("added")]
    assert len(added) == 1 and len(on_top) == len(plain) + 1  # 3% of 24 task rows, at least one
    assert [r["kept"] for r in on_top if not r.get("added")] == [r["kept"] for r in plain]
    assert "random+safeinstr" in (out / "report.md").read_text()
    for bad in ("dualselect+safeinstr", "aligned+safeinstr", "nope+safeinstr"):
        capsys.readouterr()
        assert main(["run", "quickstart", *TINY, f"compare=[full,{bad}]", "--out", str(tmp_path / bad)]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
