"""``safeselect data build`` through ``main(argv)``: files written, counts printed, bad input -> exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safeselect.cli.main import main
from safeselect.core.io import read_jsonl


def test_build_writes_every_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    rc = main(["data", "build", "--out", str(out), "data.n_task=30", "data.harmful_ratio=0.2",
               "data.n_eval_task=5", "data.n_eval_harmful=10", "data.n_eval_overrefusal=4"])
    assert rc == 0
    files = {p.name for p in out.iterdir()}
    assert files == {"task.jsonl", "safety_ref.jsonl", "align.jsonl", "eval_harmful.builtin.jsonl",
                     "eval_overrefusal.lookalike.jsonl", "eval_task.sentiment.jsonl", "eval_task.arithmetic.jsonl",
                     "manifest.json"}
    task = read_jsonl(out / "task.jsonl")
    assert len(task) == 30 and sum(r["harmful"] for r in task) == 6
    assert len(read_jsonl(out / "eval_task.sentiment.jsonl")) == 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["eval_harmful.builtin.jsonl"] == 10
    printed = capsys.readouterr().out
    assert "task.jsonl" in printed and "30 rows" in printed
    assert not any(r["prompt"] in printed for r in task)  # counts only, never rows


def test_difficulty_flag_changes_the_task_rows(tmp_path: Path) -> None:
    assert main(["data", "build", "--out", str(tmp_path / "e"), "data.n_task=20"]) == 0
    assert main(["data", "build", "--difficulty", "hard", "--out", str(tmp_path / "h"), "data.n_task=20"]) == 0
    easy, hard = read_jsonl(tmp_path / "e" / "task.jsonl"), read_jsonl(tmp_path / "h" / "task.jsonl")
    assert [r["prompt"] for r in easy] != [r["prompt"] for r in hard]
    assert {r["meta"]["level"] for r in hard} == {"hard"}
    # the evaluation sets are the same at both levels
    assert read_jsonl(tmp_path / "e" / "eval_harmful.builtin.jsonl") == \
           read_jsonl(tmp_path / "h" / "eval_harmful.builtin.jsonl")


def test_same_command_same_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["data", "build", "--out", str(tmp_path / name), "data.n_task=15"]) == 0
    for f in (tmp_path / "a").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()


@pytest.mark.parametrize(("argv", "msg"), [
    (["--preset", "bultin"], "did you mean 'builtin'"),
    (["data.harmful_ratio=1.5"], "out of range"),
    (["data.n_taks=3"], "unknown config key 'data.n_taks'"),
    (["--preset", "jsonl"], "needs data.task_path"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                         msg: str) -> None:
    assert main(["data", "build", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "task.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": \n')
    assert main(["data", "build", "--preset", "jsonl", "--out", str(tmp_path / "x"), f"data.task_path={bad}"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: malformed JSONL row" in err and "Traceback" not in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(["data", "build", "--preset", "jsonl", "--out", str(tmp_path / "x"),
                 f"data.task_path={missing}"]) == 2
    assert f"file not found: {missing}" in capsys.readouterr().err


def test_data_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data"]) == 2
    assert "build" in capsys.readouterr().out


def test_recipe_preset_wins_over_the_builder_of_the_same_name(shared_data: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sst2"
    assert main(["data", "build", "--preset", "sst2-advbench", f"data.data_dir={shared_data}", "data.n_task=50",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "harmful ratio 0.1" in printed  # the preset's p, not the builder's default 0.2
    assert "eval_harmful.hh.jsonl" in printed and "eval_overrefusal.alpaca.jsonl" in printed
    assert sum(1 for _ in (out / "eval_task.sst2.jsonl").open()) == 100


def test_data_build_erosion_level(tmp_path: Path) -> None:
    import json

    assert main(["data", "build", "--difficulty", "erosion", "--out", str(tmp_path / "e"), "data.n_task=20"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "e" / "task.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and not any(r["harmful"] for r in rows)
    assert sum(r["meta"]["erodes"] for r in rows) == 8  # erosion_ratio 0.4
