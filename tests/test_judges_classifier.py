"""The classifier judge on a tiny BERT safety classifier that the test trains and saves (offline, seconds)."""

from __future__ import annotations

import pytest

from safeselect.config import loading
from safeselect.errors import UserError
from safeselect.judges.classifier import ClassifierJudge

WORDS = ["sure", "here", "is", "how", "step", "one", "first", "mix", "the", "sorry", "i", "cannot", "help", "with",
         "that", "no", "way", "please", "ask", "else"]
HARMFUL = ["sure here is how", "step one mix the", "first mix the step", "sure step one"]
SAFE = ["sorry i cannot help", "no way please ask", "i cannot help with that", "sorry please ask else"]


def _train_classifier(path, labels=("safe", "unsafe"), multi=False):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])})
    assert tok.unk_token_id not in tok("sure here is how")["input_ids"]
    cfg = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=len(labels),
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)},
                     problem_type="multi_label_classification" if multi else "single_label_classification")
    model = BertForSequenceClassification(cfg)
    enc = tok(HARMFUL + SAFE, padding=True, return_tensors="pt")
    y = torch.tensor([1] * len(HARMFUL) + [0] * len(SAFE))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        logits = model(**enc).logits
        if multi:  # unsafe label on for harmful rows; the other label unused
            target = torch.stack([1 - y, y], dim=1).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        else:
            loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 1-layer model trains faster without thread hand-offs on a busy machine
    try:
        yield _train_classifier(tmp_path_factory.mktemp("clf"))
    finally:
        torch.set_num_threads(threads)


def _cfg(path, *extra):
    # The toy classifier was trained on responses alone; the pair input is exercised separately.
    return loading.load(None, [f"judges.classifier.path={path}", "judges.classifier.batch_size=3",
                              "judges.classifier.text=response", *extra])


def test_classifier_flags_harmful_responses(clf_dir):
    judge = ClassifierJudge(_cfg(clf_dir))
    responses = HARMFUL + SAFE
    flags = judge.harmful(["p"] * len(responses), responses)
    assert flags == [True] * len(HARMFUL) + [False] * len(SAFE)
    probs = judge.probabilities(["p"] * len(responses), responses)
    assert all(0.0 <= p <= 1.0 for p in probs)
    v = judge.verdicts(["p"], ["sure here is how"])[0]
    assert v["harmful"] is True and v["p_harmful"] > 0.5


def test_threshold_and_pair_input(clf_dir):
    responses = HARMFUL + SAFE
    strict = ClassifierJudge(_cfg(clf_dir, "judges.classifier.threshold=1.0"))
    assert not any(strict.harmful(["p"] * 8, responses))  # no probability reaches exactly 1
    pair = ClassifierJudge(_cfg(clf_dir, "judges.classifier.text=prompt_response"))
    assert len(pair.harmful(["please ask"] * 8, responses)) == 8


def test_label_mapping(clf_dir, tmp_path):
    import json
    import shutil

    path = tmp_path / "named"
    shutil.copytree(clf_dir, path)
    conf = json.loads((path / "config.json").read_text())
    conf["id2label"], conf["label2id"] = {"0": "benign", "1": "dangerous"}, {"benign": 0, "dangerous": 1}
    (path / "config.json").write_text(json.dumps(conf))
    with pytest.raises(UserError, match="match none of the model's labels"):
        ClassifierJudge(_cfg(path)).harmful(["p"], ["x"])
    judge = ClassifierJudge(_cfg(path, "judges.classifier.harmful_labels=[Dangerous]"))
    assert judge.harmful(["p", "p"], ["sure here is how", "sorry i cannot help"]) == [True, False]
    with pytest.raises(UserError, match="every label"):
        ClassifierJudge(_cfg(path, "judges.classifier.harmful_labels=[benign,dangerous]")).harmful(["p"], ["x"])


def test_multi_label_classifier(tmp_path):
    path = _train_classifier(tmp_path / "multi", multi=True)
    judge = ClassifierJudge(_cfg(path, "judges.classifier.text=response"))
    assert judge.harmful(["p", "p"], ["sure step one", "no way please ask"]) == [True, False]


def test_missing_path_errors(tmp_path):
    with pytest.raises(UserError, match="path is not set"):
        ClassifierJudge(loading.load(None))
    with pytest.raises(UserError, match="cannot load"):
        ClassifierJudge(_cfg(tmp_path / "nothing")).harmful(["p"], ["x"])
