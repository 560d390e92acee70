"""The offline Bradley-Terry reward model: pair building, the split, encoding, training on a tiny encoder, CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from safeselect.cli.main import main
from safeselect.config import loading
from safeselect.data.loaders import split_last_reply
from safeselect.errors import UserError
from safeselect.selfplay.reward_train import builtin_pairs, hh_pairs, split_pairs

WORDS = (
    "good", "helpful", "clear", "answer", "bad", "rude", "wrong", "reply", "please", "explain", "the", "a",
    "to", "of", "what", "is", "how", "why", "tell", "me", "about", "cats", "dogs", "rain",
    "sun", "water", "trees", "music", "maths", "history", "science",
)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A tiny BERT encoder + word-level tokenizer saved to disk (stands in for all-MiniLM-L6-v2)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("enc")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tok = BertTokenizerFast(vocab=vocab)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _toy_pairs(n: int, seed: int = 0) -> list[dict]:
    r = np.random.default_rng(seed)
    topics = ["cats", "dogs", "rain", "sun", "water", "trees", "music", "maths", "history", "science"]
    out = []
    for i in range(n):
        t = topics[int(r.integers(len(topics)))]
        out.append({"prompt": f"please explain {t}", "chosen": f"a good clear helpful answer about {t}",
                    "rejected": f"a bad rude wrong reply about {t}", "source": "toy", "kind": f"k{i % 2}"})
    return out


def test_split_dialogue_and_hh_pairs(tmp_path):
    assert split_last_reply("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like this") == (
        "hi\n\nAssistant: hello\n\nHuman: how?", "like this")
    assert split_last_reply("no turns") is None
    path = tmp_path / "hh.jsonl.gz"
    rows = [{"chosen": f"\n\nHuman: q{i}\n\nAssistant: safe {i}", "rejected": f"\n\nHuman: q{i}\n\nAssistant: bad {i}"}
            for i in range(5)]
    rows.append({"chosen": "\n\nHuman: same\n\nAssistant: x", "rejected": "\n\nHuman: same\n\nAssistant: x"})
    with gzip.open(path, "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    pairs = hh_pairs(path, 0, seed=0)
    assert len(pairs) == 5  # identical replies dropped
    assert all(p["chosen"].startswith("safe") and p["rejected"].startswith("bad") for p in pairs)
    assert len(hh_pairs(path, 3, seed=0)) == 3


def test_builtin_pairs_are_right_by_construction():
    from safeselect.core.answers import is_correct
    from safeselect.judges.refusal import RefusalJudge
    from safeselect.registry import registry

    cfg = loading.build({"data.n_task": 20, "align.n_refusals": 10, "align.n_benign": 10, "data.safety_ref.n": 10})
    pairs = builtin_pairs(cfg, 1000)
    kinds = {p["kind"] for p in pairs}
    assert kinds == {"refusal>compliance", "correct>wrong", "answer>refusal"}
    judge = RefusalJudge()
    bundle = registry("data").get("builtin")(cfg)
    rows = {r.prompt: r for r in [*bundle.task, *bundle.align, *bundle.safety_ref]}
    evals = {r.prompt for sets in (bundle.eval_task, bundle.eval_harmful, bundle.eval_overrefusal)
             for rs in sets.values() for r in rs}
    for p in pairs:
        assert p["prompt"] in rows and p["prompt"] not in evals and p["chosen"] != p["rejected"]
        if p["kind"] == "refusal>compliance":
            assert judge.refused([p["chosen"], p["rejected"]]) == [True, False]
        elif p["kind"] == "correct>wrong":
            row = rows[p["prompt"]]
            assert is_correct(row, p["chosen"]) is True and is_correct(row, p["rejected"]) is False
        else:
            assert judge.refused([p["rejected"]]) == [True]
    assert len(builtin_pairs(cfg, 7)) == 7


def test_split_pairs_is_seeded_and_disjoint():
    pairs = [{"i": i} for i in range(10)]
    train, held = split_pairs(pairs, 0.2, seed=3)
    assert len(held) == 2 and len(train) == 8
    assert {p["i"] for p in train} | {p["i"] for p in held} == set(range(10))
    assert split_pairs(pairs, 0.2, seed=3) == (train, held)
    assert len(split_pairs(pairs, 0.01, seed=0)[1]) == 1  # at least one held out when asked


def test_encode_pair_formats(tiny_encoder):
    from transformers import AutoTokenizer

    from safeselect.models.tiny import tokenizer
    from safeselect.selfplay.rewards import encode_pair, pair_format

    bert = AutoTokenizer.from_pretrained(str(tiny_encoder))
    assert pair_format(bert) == "text_pair"
    ids = encode_pair(bert, "tell me about cats", "a good answer", 64, "text_pair")
    assert bert.decode(ids) == "[CLS] tell me about cats [SEP] a good answer [SEP]"
    assert len(encode_pair(bert, "cats " * 50, "a good answer", 16, "text_pair")) == 16
    chat = tokenizer()
    assert pair_format(chat) == "chat"
    ids = encode_pair(chat, "hi", "hello", 512, "chat")
    assert chat.decode(ids).startswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello")
    long = encode_pair(chat, "hi " * 40, "hello", 10, "chat")
    assert len(long) == 10 and long == ids[-10:]  # the end (the response) survives truncation


def test_reward_train_cli_learns_and_saves_a_loadable_model(tmp_path, tiny_encoder, capsys):
    from safeselect.selfplay.pool import PromptEntry
    from safeselect.selfplay.rewards import ModelReward

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in _toy_pairs(48)))
    out = tmp_path / "rm"
    code = main(["reward", "train", f"reward.encoder={tiny_encoder}", f"reward.sources=[{data}]",
                 "reward.epochs=4", "reward.lr=0.003", "reward.batch_size=8", "reward.holdout=0.25",
                 "reward.max_length=32", "device=cpu", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out pair accuracy" in printed
    rep = json.loads((out / "report.json").read_text())
    assert rep["pairs_heldout"] == 12 and rep["pairs_train"] == 36
    assert rep["heldout_accuracy"]["value"] == 1.0 and rep["heldout_accuracy"]["n"] == 12
    assert set(rep["heldout_accuracy"]["by_source"]) == {"pairs", "pairs:jsonl"}
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    assert json.loads((out / "safeselect_reward.json").read_text())["format"] == "text_pair"
    # eva (and the judges) use it by path as a sequence classifier
    cfg = loading.build({"eva.reward_model": str(out), "device": "cpu"})
    rm = ModelReward(cfg)
    s = rm([PromptEntry("a", "tell me about sun")] * 2, ["a good helpful answer", "a rude wrong reply"])
    assert s[0] > s[1]


def test_reward_train_errors(tmp_path, capsys):
    assert main(["reward", "train", "reward.sources=[nowhere.jsonl]", "--out", str(tmp_path / "x")]) == 2
    assert "nowhere.jsonl" in capsys.readouterr().err
    with pytest.raises(UserError, match="not found"):
        from safeselect.selfplay.rewards import load_reward_model

        load_reward_model(tmp_path / "missing")
