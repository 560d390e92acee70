"""The CLI through main(argv): listing, validation, bad input (exit 2, one line), a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest
from conftest import TINY

from safeselect.cli.main import main


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_ls_lists_everything(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in ["full", "random", "refusal", "smollm2-135m", "tiny-llama", "quickstart", "builtin"]:
        assert name in out


def test_ls_keys_documents_every_key(capsys):
    from safeselect.config.schema import all_keys

    assert main(["ls", "keys"]) == 0
    out = capsys.readouterr().out
    assert all(f"`{k}`" in out for k in all_keys())


def test_validate_ok(capsys):
    assert main(["validate", "quickstart"]) == 0
    assert "ok" in capsys.readouterr().out


def test_validate_builds_the_data_once(capsys, monkeypatch):
    from safeselect import preflight
    from safeselect.registry import registry

    builder = registry("data").get("builtin")
    calls = []

    def counting(cfg):
        calls.append(1)
        return builder(cfg)

    monkeypatch.setattr(registry("data"), "get", lambda name: counting)
    monkeypatch.setattr(preflight, "build_bundle", lambda cfg: pytest.fail("open_data rebuilt the bundle"))
    assert main(["validate", "quickstart"]) == 0
    assert len(calls) == 1
    assert "task rows: 200" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["run", "quickstart", "selection.rato=0.5"], "did you mean 'selection.ratio'"),
    (["run", "quickstart", "selection.ratio=1.5"], "out of range"),
    (["run", "quickstart", "model.name=smollm3"], "unknown model"),
    (["run", "quickstart", "selection.method=sael"], "unknown selector 'sael'"),
    (["run", "quickstrat"], "did you mean 'quickstart'"),
    (["validate", "missing.yaml"], "not found"),
])
def test_bad_input_exit_2(capsys, tmp_path, argv, needle):
    err = _one_line_error(capsys, [*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv)
    assert needle in err


def test_malformed_jsonl_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "task.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", oops}\n')
    err = _one_line_error(capsys, ["run", "quickstart", "data.benchmark=jsonl", f"data.task_path={bad}",
                                   "model.name=tiny-llama", "--out", str(tmp_path / "o")])
    assert f"{bad}:2" in err


def test_tiny_quickstart_writes_every_run_file(capsys, tmp_path):
    out = tmp_path / "qs"
    assert main(["run", "quickstart", *TINY, "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "| aligned |" in table and "| full |" in table and "| random |" in table
    for method in ["full", "random"]:
        run = out / method
        for f in ["config.yaml", "selection.jsonl", "metrics.json", "generations.jsonl", "report.md"]:
            assert (run / f).exists(), f
        m = json.loads((run / "metrics.json").read_text())
        assert m["complete"] is True
        assert 0 <= m["safety"]["builtin"]["refusal"]["harmful_rate"] <= 1
        assert "refusal_rate" in m["overrefusal"]["lookalike"]
        assert "accuracy" in m["task"]["sentiment"] and "accuracy" in m["task"]["arithmetic"]
        assert m["selection"]["kept"] == (24 if method == "full" else round(0.8 * 24))
        assert {"selection_s", "train_s", "eval_s", "peak_memory_mb"} <= set(m["resources"])
        sel = [json.loads(line) for line in (run / "selection.jsonl").read_text().splitlines()]
        assert {"row_id", "score", "kept", "weight", "harmful"} <= set(sel[0])
    # random is compared against full: win rates exist (0..100)
    m = json.loads((out / "random" / "metrics.json").read_text())
    assert 0 <= m["win_rate"]["builtin"]["rule"] <= 100 and m["win_rate"]["lookalike"]["rule"] >= 0
    assert m["win_rate"]["builtin"]["rule"] == m["safety"]["builtin"]["rule"]["win_rate"]
    # a rerun skips complete runs and gives the same table
    assert main(["run", "quickstart", *TINY, "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == table
    # settings of a selector the runs do not use do not matter; a changed setting that does is an error
    assert main(["run", "quickstart", *TINY, "selection.seal.epochs=9", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == table
    err = _one_line_error(capsys, ["run", "quickstart", *TINY, "finetune.lr=0.5", "--out", str(out), "--quiet"])
    assert "holds a finished run of another config (finetune.lr: 0.0003 -> 0.5)" in err
    assert "--overwrite" in err
    # a folder made in the other precision (before the auto default, or on another kind of machine) says how
    # to go on with it
    import yaml

    saved = yaml.safe_load((out / "random" / "config.yaml").read_text())["finetune"]["mixed_precision"]
    other = "bf16" if saved == "no" else "no"
    err = _one_line_error(capsys, ["run", "quickstart", *TINY, f"finetune.mixed_precision={other}", "--out",
                                   str(out), "--quiet"])
    assert f"(finetune.mixed_precision: '{saved}' -> '{other}')" in err
    assert f"to go on with it in its precision, add finetune.mixed_precision={saved})" in err


def test_docs_config_reference_is_current(capsys):
    from pathlib import Path

    assert main(["ls", "keys"]) == 0
    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert capsys.readouterr().out.strip() in doc.read_text(), "regenerate docs/config.md with `safeselect ls keys`"
