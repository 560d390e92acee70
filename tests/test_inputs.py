"""Bad input, anywhere a user gives it: exit 2, one line on stderr, no traceback, nothing written.

Property-based (hypothesis) over the loaders, the config and the plan parser: random bytes and mutated
valid files never end in a traceback. Example counts are small so the suite stays fast.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safeselect.cli.main import main
from safeselect.core.redact import redact, register_secret_env
from safeselect.data import loaders
from safeselect.errors import UserError
from safeselect.inputs import check_out

GOOD_ROWS = "".join(json.dumps({"prompt": f"Say {w}.", "response": f"{w}."}) + "\n" for w in ("one", "two", "three"))
GOOD_CONFIG = "name: x\nseed: 3\nmodel:\n  name: tiny-llama\ndata:\n  n_task: 24\nselection:\n  method: random\n"
GOOD_PLAN = ("name: p\nbase: {model.name: tiny-llama}\nseeds: [0]\nablations:\n  - name: r\n"
             "    parameter: selection.ratio\n    action: REPLACE\n    replacements: [0.5, 0.9]\n")
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_line_exit(argv: list[str], capsys: pytest.CaptureFixture[str], allowed: tuple[int, ...] = (2,)) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc in allowed, (rc, err)
    if rc == 2:
        lines = [x for x in err.splitlines() if x.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err
        return lines[0]
    return ""


def mutate(text: str, data: st.DataObject) -> str:
    """A valid file with a few random edits: deletions, insertions and replacements of characters."""
    chars = list(text)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["del", "ins", "rep"]))
        i = data.draw(st.integers(0, max(0, len(chars) - 1)))
        c = data.draw(st.sampled_from(list('{}[]":,\n -#*\t\x00é') + ["\ufffd", "null", "1e999"]))
        if op == "del" and chars:
            del chars[i]
        elif op == "ins":
            chars.insert(i, c)
        elif chars:
            chars[i] = c
    return "".join(chars)


# ----------------------------------------------------------------------------- loaders


@FAST
@given(raw=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".jsonl.gz", ".xz"]))
def test_loaders_raise_only_user_errors_on_random_bytes(tmp_path: Path, raw: bytes, suffix: str) -> None:
    p = tmp_path / f"rows{suffix}"
    p.write_bytes(raw)
    try:
        rows = loaders.load_rows(p) if not suffix.endswith(("gz", "xz")) else loaders.load_jsonl_rows(p)
    except UserError as e:
        assert "\n" not in str(e)
    else:
        assert all(r.prompt.strip() for r in rows)


@FAST
@given(data=st.data())
def test_loaders_on_mutated_rows(tmp_path: Path, data: st.DataObject) -> None:
    p = tmp_path / "rows.jsonl"
    p.write_text(mutate(GOOD_ROWS, data), encoding="utf-8")
    for fn in (loaders.load_rows, loaders.load_beavertails, loaders.load_gsm8k, loaders.load_hh):
        with contextlib.suppress(UserError):
            fn(p)


@pytest.mark.parametrize("content", [GOOD_ROWS.encode("utf-16"), b"\x80\x81garbage\n", GOOD_ROWS.encode() + b"\x00"])
def test_text_that_is_not_utf8_is_one_clear_line(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "t.jsonl"
    p.write_bytes(content)
    with pytest.raises(UserError, match=r"t\.jsonl.*(UTF|binary)"):
        loaders.load_rows(p)


def test_gzip_that_is_not_gzip(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl.gz"
    p.write_text(GOOD_ROWS)
    with pytest.raises(UserError, match="not a valid gzip"):
        loaders.load_rows(p)
    p.write_bytes(gzip.compress(GOOD_ROWS.encode())[:25])
    with pytest.raises(UserError, match="not a valid gzip"):
        loaders.load_rows(p)


# ----------------------------------------------------------------------------- config and plans through the CLI


@FAST
@given(raw=st.binary(max_size=300))
def test_random_config_bytes_never_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes) -> None:
    p = tmp_path / "cfg.yaml"
    p.write_bytes(raw)
    _one_line_exit(["validate", str(p)], capsys, allowed=(0, 2))


@FAST
@given(data=st.data())
def test_mutated_config_never_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject) -> None:
    p = tmp_path / "cfg.yaml"
    p.write_text(mutate(GOOD_CONFIG, data), encoding="utf-8", errors="surrogatepass")
    _one_line_exit(["validate", str(p)], capsys, allowed=(0, 2))


@FAST
@given(data=st.data(), suffix=st.sampled_from([".yaml", ".md"]))
def test_mutated_or_random_plans_never_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 data: st.DataObject, suffix: str) -> None:
    p = tmp_path / f"plan{suffix}"
    if data.draw(st.booleans()):
        p.write_bytes(data.draw(st.binary(max_size=300)))
    else:
        p.write_text(mutate(GOOD_PLAN, data), encoding="utf-8")
    out = tmp_path / "abl"
    _one_line_exit(["ablate", str(p), "--dry-run", "--out", str(out)], capsys, allowed=(0, 2))
    assert not out.exists()


@FAST
@given(raw=st.binary(max_size=300))
def test_random_task_bytes_exit_2_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    raw: bytes) -> None:
    task = tmp_path / "t.jsonl"
    task.write_bytes(raw)
    out = tmp_path / "out"
    _one_line_exit(["select", "quickstart", "model.name=tiny-llama", "data.benchmark=jsonl", f"data.task_path={task}",
                    "--out", str(out)], capsys)
    assert not out.exists()


@pytest.mark.parametrize("key", ["seed", "data.seed", "selection.seed", "reward.seed"])
@pytest.mark.parametrize("value", ["-1", "4294967296", "1.5"])
def test_seeds_run_would_crash_on_are_refused_by_validate(key: str, value: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert key in _one_line_exit(["validate", "quickstart", f"{key}={value}"], capsys)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "finetune.lr" in _one_line_exit(["validate", "quickstart", f"finetune.lr={value}"], capsys)


# ----------------------------------------------------------------------------- the output folder and run data


def test_out_that_is_a_file_or_under_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    for bad in (f, f / "sub"):
        with pytest.raises(UserError, match="not a folder"):
            check_out(bad)
    before = _files(tmp_path)
    check_out(tmp_path / "new" / "deeper")  # fine, and creates nothing
    assert _files(tmp_path) == before


def test_unwritable_out_is_refused() -> None:
    with pytest.raises(UserError, match="cannot write"):
        check_out("/proc/safeselect-test-out")


@pytest.mark.parametrize("command", [["run", "quickstart"], ["select", "quickstart"], ["data", "build"],
                                     ["eval", "quickstart"]])
def test_commands_refuse_an_out_that_is_a_file(command: list[str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    assert "not a folder" in _one_line_exit([*command, "model.name=tiny-llama", "--out", str(f)], capsys)
    assert f.read_text() == "x"


def test_ablate_dry_run_refuses_an_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    assert "not a folder" in _one_line_exit(["ablate", "seal_gamma_value", "--dry-run", "--out", str(f)], capsys)


@pytest.mark.parametrize("rows, msg", [("", "no task rows"), ("\n\n", "no task rows"),
                                       ('{"prompt": "a"}\n{"prompt": "b", "response": "c"}\n', "1 of 2 task rows")])
@pytest.mark.parametrize("command", ["run", "select", "validate"])
def test_empty_or_response_less_task_data_is_refused_with_counts(rows: str, msg: str, command: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    task = tmp_path / "t.jsonl"
    task.write_text(rows)
    out = ["--out", str(tmp_path / "out")] if command != "validate" else []
    line = _one_line_exit([command, "quickstart", "model.name=tiny-llama", "data.benchmark=jsonl",
                           f"data.task_path={task}", *out], capsys)
    assert msg in line
    assert _files(tmp_path) == {"t.jsonl"}  # no config.yaml, no run folder


@pytest.mark.parametrize("key", ["align.source", "data.safety_ref.source", "data.task_path"])
@pytest.mark.parametrize("content", [None, GOOD_ROWS.encode("utf-16"), b"\xff\xd8\xff\xe0binary"])
def test_every_data_key_refuses_folders_and_non_utf8(key: str, content: bytes | None, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "d.jsonl"
    if content is None:
        p.mkdir()
    else:
        p.write_bytes(content)
    extra = ["data.benchmark=jsonl"] + ([] if key == "data.task_path" else [f"data.task_path={tmp_path / 'ok.jsonl'}"])
    (tmp_path / "ok.jsonl").write_text(GOOD_ROWS)
    before = _files(tmp_path)
    line = _one_line_exit(["run", "quickstart", "model.name=tiny-llama", *extra, f"{key}={p}",
                           "--out", str(tmp_path / "out")], capsys)
    assert "d.jsonl" in line
    assert _files(tmp_path) == before


# ----------------------------------------------------------------------------- secrets


def test_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_JUDGE_CRED", "s3cr3t-value-42")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abcdefghijklmnop")
    register_secret_env("MY_JUDGE_CRED")
    text = ('HTTP 401: {"error": "bad key sk-abcdefghijklmnop", "echo": "s3cr3t-value-42"} '
            "Authorization: Bearer abc.def-ghi123 api_key=zzzzzzzz")
    out = redact(text)
    for secret in ("sk-abcdefghijklmnop", "s3cr3t-value-42", "abc.def-ghi123", "zzzzzzzz"):
        assert secret not in out
    assert "HTTP 401" in out and "***" in out


def test_an_endpoint_echoing_the_key_is_never_printed_or_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A judge endpoint whose 401 body echoes the key: the one error line masks it, and so does error.txt."""
    import http.server
    import threading

    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.dumps({"error": f"invalid key {self.headers.get('Authorization')}"}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        from safeselect.config.loading import load
        from safeselect.judges.http import ChatClient

        cfg = load(None, [f"judges.llm.base_url=http://127.0.0.1:{srv.server_port}/v1", "judges.llm.retries=0",
                          f"judges.llm.cache_dir={tmp_path / 'cache'}"])
        client = ChatClient(cfg.judges.llm)
        with pytest.raises(UserError) as e:
            client.run([[{"role": "user", "content": "hi"}]], parse=lambda raw: raw, show_progress=False)
        assert key not in str(e.value) and "401" in str(e.value)
    finally:
        srv.shutdown()

    # the runner's error.txt goes through the same mask
    from safeselect.ablation.grid import RunSpec
    from safeselect.ablation.runner import execute_run

    def leaky(kind, cfg, out, ref, progress):  # noqa: ANN001, ANN202
        raise RuntimeError(f"endpoint said: bad key {key}")

    spec = RunSpec(run_id="r", kind="pipeline", preset="quickstart", overrides={}, seed=0)
    res = execute_run(spec.to_dict(), str(tmp_path / "abl"), None, run_fn=leaky)
    assert res["status"] == "failed" and key not in res["error"]
    assert key not in (tmp_path / "abl" / "runs" / "r" / "error.txt").read_text()
    assert os.environ["OPENAI_API_KEY"] == key
