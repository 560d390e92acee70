"""`safeselect run` end to end under a multi-process launch: `torchrun --nproc_per_node 2 -m safeselect` on CPU
(gloo), the way `accelerate launch -m safeselect run ...` starts it on several GPUs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY


def _torchrun() -> str:
    return shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


@pytest.mark.slow
@pytest.mark.skipif(not Path(_torchrun()).exists(), reason="torchrun not installed")
def test_run_under_torchrun_two_processes(tmp_path):
    from peft import AutoPeftModelForCausalLM

    out, cache = tmp_path / "run", tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1", SAFESELECT_CACHE=str(cache), PYTHONWARNINGS="ignore")
    argv = [_torchrun(), "--nproc_per_node", "2", "--standalone", "-m", "safeselect", "run", "quickstart", *TINY,
            "compare=[]", "selection.method=full", "device=cpu", "finetune.mixed_precision=bf16",
            "checkpoint.every_steps=1", "--out", str(out), "--quiet"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=480, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The aligned model was built once (by the main process) and shared.
    aligned = list((cache / "aligned").glob("tiny-llama-*"))
    assert len(aligned) == 1 and (aligned[0] / "config.json").exists()
    m = json.loads((out / "metrics.json").read_text())
    assert m["complete"] is True and 0 <= m["safety"]["builtin"]["refusal"]["harmful_rate"] <= 1
    # 24 rows sharded over 2 processes, 8 per forward: 2 steps each instead of 3 on one process.
    assert m["train"]["steps"] == 2
    # The main process alone wrote the run files: one table, one loss curve of 2 steps, no leftovers.
    assert proc.stdout.count("| run |") == 1
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    files = {"config.yaml", "generations.jsonl", "metrics.json", "model", "report.md", "report.html", "selection.jsonl",
             "train_log.jsonl"}
    assert files <= {p.name for p in out.iterdir()} <= files | {"loss.png", ".lock"}  # plot: matplotlib; .lock: the run lock
    cfg = json.loads((out / "model" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(aligned[0].resolve())
    model = AutoPeftModelForCausalLM.from_pretrained(out / "model")
    assert all(p.dtype == __import__("torch").float32 for p in model.parameters())  # bf16 only inside autocast
