"""CLI habits: overrides after flags, --version, `cp`, `validate` opening data and checking judges,
and a run folder of another config (refused with --out, a fresh folder without, replaced with --overwrite)."""

from __future__ import annotations

import json

import yaml
from conftest import TINY

from safeselect import __version__
from safeselect.cli.main import main
from safeselect.config.paths import PRESET_DIR


def _err_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"safeselect {__version__}"


def test_overrides_after_flags_join_the_others(capsys, tmp_path):
    assert main(["validate", "quickstart", "--no-data", "selection.ratio=0.5", "model.name=tiny-llama"]) == 0
    assert "model tiny-llama" in capsys.readouterr().out
    # a bad override after a flag is still checked; a stray word is still an argparse error
    assert "did you mean 'selection.ratio'" in _err_line(capsys, ["validate", "quickstart", "--no-data",
                                                                  "selection.rato=0.5"])
    assert main(["validate", "quickstart", "--no-data", "oops"]) == 2
    assert "unrecognized arguments: oops" in capsys.readouterr().err


def test_cp_copies_a_preset_and_refuses_to_clobber(capsys, tmp_path):
    dest = tmp_path / "mine.yaml"
    assert main(["cp", "quickstart", str(dest)]) == 0
    assert dest.read_text() == (PRESET_DIR / "quickstart.yaml").read_text()
    assert "safeselect run" in capsys.readouterr().out
    assert "exists: add --force" in _err_line(capsys, ["cp", "seal", str(dest)])
    assert main(["cp", "seal", str(dest), "--force"]) == 0
    assert yaml.safe_load(dest.read_text())["selection"]["method"] == "seal"
    assert main(["cp", "seal_gamma_value", str(tmp_path)]) == 0  # a plan, into a folder
    assert "safeselect ablate" in capsys.readouterr().out
    assert (tmp_path / "seal_gamma_value.yaml").exists()
    assert "did you mean 'quickstart'" in _err_line(capsys, ["cp", "quickstrat", str(tmp_path / "x.yaml")])
    assert main(["validate", str(dest), "--no-data"]) == 0


def test_validate_opens_every_data_file(capsys, tmp_path):
    task = tmp_path / "task.jsonl"
    task.write_text('{"prompt": "a", "response": "b"}\n' * 2 + '{"prompt": "c", "response": 3}\n')
    err = _err_line(capsys, ["validate", "quickstart", "data.benchmark=jsonl", f"data.task_path={task}"])
    assert f"{task}:3" in err and "'response' must be a string" in err
    task.write_text("".join(json.dumps({"prompt": f"p{i}", "response": "r"}) + "\n" for i in range(5)))
    assert main(["validate", "quickstart", "data.benchmark=jsonl", f"data.task_path={task}"]) == 0
    assert "task rows: 5" in capsys.readouterr().out
    # files a selector reads later are opened now too
    err = _err_line(capsys, ["validate", "quickstart", "selection.method=dsir", f"selection.dsir.target={tmp_path}/no.jsonl"])
    assert "selection.dsir.target" in err and "not found" in err


def test_validate_checks_the_llm_judge_needs_without_printing_the_key(capsys, monkeypatch):
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    base = ["validate", "quickstart", "--no-data", "eval.judges=[refusal,llm]", "judges.llm.api_key_env=MY_JUDGE_KEY"]
    assert "judges.llm.base_url is not set" in _err_line(capsys, base)
    remote = [*base, "judges.llm.base_url=https://judge.example.com/v1"]
    assert "$MY_JUDGE_KEY is not set" in _err_line(capsys, remote)
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-very-secret")
    assert main(remote) == 0
    out = capsys.readouterr()
    assert "key $MY_JUDGE_KEY set" in out.out and "sk-very-secret" not in out.out + out.err
    monkeypatch.delenv("MY_JUDGE_KEY")
    assert main([*base, "judges.llm.base_url=http://127.0.0.1:8000/v1"]) == 0  # a local server takes no key
    assert "none sent: local server" in capsys.readouterr().out
    assert "not an http(s) URL" in _err_line(capsys, [*base, "judges.llm.base_url=127.0.0.1:8000"])
    assert "judges.classifier.path is not set" in _err_line(capsys, ["validate", "quickstart", "--no-data",
                                                                     "eval.judges=[classifier]"])


def test_run_refuses_a_missing_endpoint_before_writing_anything(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    err = _err_line(capsys, ["run", "quickstart", *TINY, "--out", str(out), "eval.judges=[llm]"])
    assert "judges.llm.base_url is not set" in err
    assert not out.exists()


def test_run_folder_of_another_config(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["cp", "quickstart", "mine.yaml"]) == 0
    sel = ["select", "mine.yaml", *TINY, "selection.method=random", "--quiet"]
    assert main(sel) == 0  # default folder runs/mine
    assert yaml.safe_load((tmp_path / "runs/mine/config.yaml").read_text())["selection"]["ratio"] == 0.8
    capsys.readouterr()
    # no --out: a fresh folder, said in one line; the same command later resumes that folder
    assert main([*sel, "selection.ratio=0.5"]) == 0
    err = capsys.readouterr().err
    assert "runs/mine holds an unfinished run of another config (selection.ratio: 0.8 -> 0.5)" in err
    assert "writing to runs/mine-2 instead" in err
    assert yaml.safe_load((tmp_path / "runs/mine-2/config.yaml").read_text())["selection"]["ratio"] == 0.5
    assert main([*sel, "selection.ratio=0.5"]) == 0 and "runs/mine-3" not in capsys.readouterr().err
    assert not (tmp_path / "runs/mine-3").exists()
    # --out: refused, offering --overwrite; --overwrite replaces the folder
    err = _err_line(capsys, [*sel, "selection.ratio=0.25", "--out", "runs/mine"])
    assert "add --overwrite to replace it" in err
    assert main([*sel, "selection.ratio=0.25", "--out", "runs/mine", "--overwrite"]) == 0
    assert "replaced (--overwrite)" in capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "runs/mine/config.yaml").read_text())["selection"]["ratio"] == 0.25
    kept = [json.loads(x)["kept"] for x in (tmp_path / "runs/mine/selection.jsonl").read_text().splitlines()]
    assert sum(kept) == round(0.25 * 24)
