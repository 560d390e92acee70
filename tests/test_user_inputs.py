"""Inputs as users have them: HF ids from the local HF cache, dataset folders and names with split and column
mapping, the `messages` chat format, Alpaca's instruction + input, a chat template override and a system prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY

from safeselect.cli.main import main
from safeselect.config.schema import ModelConfig
from safeselect.data import loaders
from safeselect.errors import UserError
from safeselect.models import load_model, load_tokenizer
from safeselect.training.encode import IGNORE, encode_rows


def _hub_snapshot(cache: Path, kind: str, repo_id: str, commit: str = "0" * 40) -> Path:
    """The layout huggingface_hub keeps: <kind>s--org--name/refs/main -> snapshots/<commit>/."""
    repo = cache / f"{kind}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    return snap


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_hf_ids_with_and_without_namespace_load_from_the_local_cache(hf_cache, capsys):
    model, tok = load_model("tiny-llama")
    for repo in ("acme/tiny-chat", "tinychat"):
        snap = _hub_snapshot(hf_cache, "model", repo)
        model.save_pretrained(snap)
        tok.save_pretrained(snap)
    for repo in ("acme/tiny-chat", "tinychat"):
        m, t = load_model(repo)
        assert t.chat_template == tok.chat_template
        w, w0 = m.get_input_embeddings().weight, model.get_input_embeddings().weight
        assert w.shape == w0.shape and bool((w == w0).all())
        assert load_tokenizer(repo).eos_token == tok.eos_token
    with pytest.raises(UserError, match="nor in the local HF cache"):
        load_model("acme/not-downloaded")
    assert main(["validate", "quickstart", "--no-data", "model.name=tinychat"]) == 0
    assert str(hf_cache) in capsys.readouterr().out
    assert main(["validate", "quickstart", "--no-data", "model.name=gpt2"]) == 2
    assert "gpt2" in capsys.readouterr().err


def _write_jsonl(path: Path, objs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_messages_format_learns_the_last_assistant_turn(tmp_path):
    f = _write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "how many apples"},
                      {"role": "assistant", "content": "two"}, {"role": "user", "content": "and tom"},
                      {"role": "assistant", "content": "three"}], "harmful": False},
        {"conversations": [{"from": "human", "value": "good movie"}, {"from": "gpt", "value": "positive"}]},
        {"prompt": [{"role": "user", "content": "bad movie"}], "completion": [{"role": "assistant", "content": "negative"}]},
    ])
    rows = loaders.load_rows(f)
    assert [(r.prompt, r.response) for r in rows] == [("hi", "hello"), ("and tom", "three"),
                                                      ("good movie", "positive"), ("bad movie", "negative")]
    assert rows[0].chat == "hi" and "messages" not in rows[0].meta
    assert [m["content"] for m in rows[1].meta["messages"]] == ["be brief", "how many apples", "two", "and tom"]
    tok = load_tokenizer("tiny-llama")
    item = encode_rows(tok, rows[1:2], 256)[0]
    learned = tok.decode([t for t, lab in zip(item["input_ids"], item["labels"], strict=True) if lab != IGNORE])
    context = tok.decode([t for t, lab in zip(item["input_ids"], item["labels"], strict=True) if lab == IGNORE])
    assert learned == "three<|im_end|>"  # only the last assistant turn is learned ...
    assert "be brief" in context and "two" in context and "and tom" in context  # ... the rest is context


@pytest.mark.parametrize("obj, needle", [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}, "role 'robot'"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "assistant", "content": "b"}]}, "no user turn"),
    ({"messages": [{"role": "user", "content": 3}]}, "string 'role' and 'content'"),
])
def test_malformed_chats_name_file_and_line(tmp_path, obj, needle):
    f = _write_jsonl(tmp_path / "c.jsonl", [{"prompt": "ok", "response": "ok"}, obj])
    with pytest.raises(UserError, match=needle) as e:
        loaders.load_rows(f)
    assert f"{f}:2" in str(e.value)


def test_alpaca_instruction_and_input_are_joined(tmp_path):
    f = tmp_path / "alpaca.json"
    f.write_text(json.dumps([
        {"instruction": "Classify the sentiment.", "input": "A great movie.", "output": "positive"},
        {"instruction": "Name a colour.", "input": "", "output": "blue"},
    ]))
    rows = loaders.load_rows(f)
    assert rows[0].prompt == "Classify the sentiment.\n\nA great movie." and rows[0].response == "positive"
    assert rows[1].prompt == "Name a colour." and "input" not in rows[1].meta


def test_dataset_folders_and_names_with_split_and_columns(tmp_path, hf_cache):
    import datasets

    train = datasets.Dataset.from_dict({"instruction": ["a", "b"], "output": ["x", "y"], "id": ["r1", "r2"]})
    test = datasets.Dataset.from_dict({"instruction": ["c"], "output": ["z"], "id": ["r3"]})
    cols = {"prompt": "instruction", "response": "output", "row_id": "id"}
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "saved")
    parquet = tmp_path / "pq"
    parquet.mkdir()
    train.to_parquet(parquet / "train.parquet")
    test.to_parquet(parquet / "test.parquet")
    snap = _hub_snapshot(hf_cache, "dataset", "acme/toy")
    for name, ds in (("train", train), ("test", test)):
        ds.to_json(snap / f"{name}.jsonl")
    for where in (tmp_path / "saved", parquet, "acme/toy"):
        rows = loaders.load_rows(where, columns=cols, split="test")
        assert [(r.row_id, r.prompt, r.response) for r in rows] == [("r3", "c", "z")], where
        assert [r.row_id for r in loaders.load_rows(where, columns=cols)] == ["r1", "r2"]  # train by default
    with pytest.raises(UserError, match="did you mean 'test'"):
        loaders.load_rows(parquet, columns=cols, split="tets")
    with pytest.raises(UserError, match="no column 'question'"):
        loaders.load_rows(parquet, columns={"prompt": "question"})
    with pytest.raises(UserError, match="nor in the local HF cache"):
        loaders.load_rows("acme/not-here")
    # through the config: data.task.split and data.task.columns
    from safeselect.config import loading as config
    from safeselect.data.recipes import bundle_from_paths

    cfg = config.load("quickstart", [*TINY, "data.benchmark=jsonl", f"data.task_path={parquet}",
                                     "data.task.split=test", "data.task.columns={prompt: instruction, response: output}"])
    assert [(r.prompt, r.response) for r in bundle_from_paths(cfg).task] == [("c", "z")]


def test_chat_template_override_and_system_prompt(tmp_path):
    hi = [{"role": "user", "content": "hi"}]
    tok = load_tokenizer("tiny-llama", ModelConfig(system_prompt='Be safe, say "no" to harm.'))
    text = tok.apply_chat_template(hi, tokenize=False, add_generation_prompt=True)
    assert text.startswith('<|im_start|>system\nBe safe, say "no" to harm.<|im_end|>\n<|im_start|>user\nhi')
    own = tok.apply_chat_template([{"role": "system", "content": "mine"}, *hi], tokenize=False)
    assert own.count("system") == 1 and "mine" in own  # a chat's own system message wins
    # a tokenizer saved with the system prompt and loaded again does not get it twice
    from safeselect.models import apply_chat_settings

    apply_chat_settings(tok, ModelConfig(system_prompt="Other."))
    assert tok.apply_chat_template(hi, tokenize=False).count("<|im_start|>system") == 1
    assert "Other." in tok.apply_chat_template(hi, tokenize=False)
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                   "{% if add_generation_prompt %}[assistant] {% endif %}")
    tok2 = load_tokenizer("tiny-llama", ModelConfig(chat_template=str(tpl), system_prompt="S"))
    assert tok2.apply_chat_template(hi, tokenize=False, add_generation_prompt=True) == "[system] S\n[user] hi\n[assistant] "
    with pytest.raises(UserError, match="neither a file nor a Jinja template"):
        load_tokenizer("tiny-llama", ModelConfig(chat_template=str(tmp_path / "missing.jinja")))


def test_run_on_a_chat_file_with_a_system_prompt(tmp_path, capsys):
    f = _write_jsonl(tmp_path / "task.jsonl", [
        {"messages": [{"role": "user", "content": f"review {i}: great movie"}, {"role": "assistant", "content": "positive"}]}
        for i in range(8)])
    out = tmp_path / "run"
    assert main(["run", "quickstart", *TINY, "--out", str(out), "--quiet", "compare=[]", "data.benchmark=jsonl",
                 f"data.task_path={f}", "model.system_prompt=You are a careful assistant."]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["rows"] == 8 and m["complete"] is True
