"""Checkpoints and the training log: a run killed mid-training resumes to exactly the uninterrupted run's
model and metrics (fine-tune and SEAL selector training); the loss curve is kept, plotted and tracked."""

from __future__ import annotations

import json

import pytest
from conftest import TINY

from safeselect.cli.main import main

# 24 task rows, batch 8: 3 optimiser steps per epoch, 2 epochs = 6 steps; state saved every 2.
FT = [*TINY, "compare=[]", "selection.method=full", "finetune.epochs=2", "checkpoint.every_steps=2"]


def _weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model" / "adapter_model.safetensors"))


def _results(run) -> dict:
    """metrics.json without what depends on the clock or the machine."""
    from safeselect.core.rundir import RunDir

    return {k: v for k, v in RunDir(run).read_metrics().items() if not k.startswith(("resources.", "selection.info.selector_"))}


def _fail_after(monkeypatch, target, attr, calls: int) -> None:
    """Make ``target.attr`` raise on call number ``calls + 1`` (an injected crash mid-training)."""
    real = getattr(target, attr)
    count = {"n": 0}

    def boom(*a, **k):
        count["n"] += 1
        if count["n"] > calls:
            raise RuntimeError("injected failure")
        return real(*a, **k)

    monkeypatch.setattr(target, attr, boom)


def test_killed_finetune_resumes_to_the_same_model_and_metrics(tmp_path, monkeypatch, capsys):
    import safeselect.training.sft as sft  # the fine-tune loop's own reference to per_row_loss

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["run", "quickstart", *FT, "--out", str(whole), "--quiet"]) == 0
    assert not (whole / "checkpoints").exists()  # removed when the run completes
    with monkeypatch.context() as m:
        # One per_row_loss call per step (micro batch = batch = 8, packed rows): 4 steps done (saved at steps
        # 2 and 4), the 5th crashes.
        _fail_after(m, sft, "per_row_loss", 4)
        with pytest.raises(RuntimeError, match="injected failure"):
            main(["run", "quickstart", *FT, "--out", str(killed), "--quiet"])
    saved = list((killed / "checkpoints" / "finetune").glob("step-*"))
    assert [p.name for p in saved] == ["step-4"]
    from safetensors.torch import load_file

    # Only what training changes is saved (the LoRA weights), not the frozen base.
    assert all("lora_" in k for k in load_file(str(saved[0] / "model.safetensors")))
    assert not (killed / "metrics.json").exists()
    assert main(["run", "quickstart", *FT, "--out", str(killed), "--quiet", "--verbose"]) == 0
    log = capsys.readouterr().err
    assert "finetune step 5" in log and "finetune step 4 " not in log  # resumed after step 4, not from zero
    assert not (killed / "checkpoints").exists()
    a, b = _weights(whole), _weights(killed)
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)  # bit-identical adapter
    assert _results(killed) == _results(whole)
    # The loss curve is the uninterrupted one: six steps, once each.
    curve = [json.loads(x) for x in (killed / "train_log.jsonl").read_text().splitlines()]
    assert curve == [json.loads(x) for x in (whole / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [1, 2, 3, 4, 5, 6]


def test_killed_seal_selector_training_resumes_mid_epoch(tmp_path, monkeypatch):
    from safeselect.selection.seal import SealTrainer

    # Algorithm 1: theta_hat (a second adapter its own optimiser steps by hand) is resumed too. No selector
    # reuse: the second run must train (and die, and resume), not take the first run's logits from the cache.
    seal = [*TINY, "compare=[]", "selection.method=seal", "selection.seal.algorithm=auxiliary",
            "selection.seal.reuse=false",
            "selection.seal.epochs=2", "eval.enabled=false",
            "finetune.max_steps=1", "checkpoint.every_steps=2"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["run", "quickstart", *seal, "--out", str(whole), "--quiet"]) == 0
    with monkeypatch.context() as m:
        _fail_after(m, SealTrainer, "iteration", 4)  # 3 iterations per epoch: dies in epoch 1 after saving step 4
        with pytest.raises(RuntimeError, match="injected failure"):
            main(["run", "quickstart", *seal, "--out", str(killed), "--quiet"])
    assert [p.name for p in (killed / "checkpoints" / "seal").glob("step-*")] == ["step-4"]
    assert main(["run", "quickstart", *seal, "--out", str(killed), "--quiet"]) == 0
    assert (killed / "selector.safetensors").read_bytes() == (whole / "selector.safetensors").read_bytes()
    assert (killed / "selection.jsonl").read_text() == (whole / "selection.jsonl").read_text()
    hist = [json.loads(x)["step"] for x in (killed / "train_log.jsonl").read_text().splitlines()
            if json.loads(x)["stage"] == "seal"]
    assert hist == [1, 2, 3, 4, 5, 6]
    assert _results(killed) == _results(whole)


def test_loss_curve_is_plotted_and_sent_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("matplotlib")
    out = tmp_path / "tb"
    assert main(["run", "quickstart", *TINY, "compare=[]", "selection.method=full", "tracking.report_to=tensorboard",
                 "eval.enabled=false", "--out", str(out), "--quiet"]) == 0
    steps = json.loads((out / "metrics.json").read_text())["train"]["steps"]
    curve = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == list(range(1, steps + 1)) and all(r["loss"] > 0 for r in curve)
    assert (out / "loss.png").stat().st_size > 0 and "![training loss](loss.png)" in (out / "report.md").read_text()
    events = list((out / "tracking").rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = [e.value for e in acc.Scalars("finetune/loss")]
    assert logged == pytest.approx([r["loss"] for r in curve], rel=1e-6)


def test_missing_tracker_package_is_one_line_before_any_file(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    out = tmp_path / "wb"
    assert main(["run", "quickstart", *TINY, "compare=[]", "tracking.report_to=wandb", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "tracking.report_to=wandb needs its package" in err and len(err.splitlines()) == 1
    assert not (out / "config.yaml").exists()
