"""The SFT loop on two real gloo processes (torchrun + Accelerator(cpu=True)): ranks stay in sync, loss falls."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_sft_under_torchrun_two_processes(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not available")
    out = tmp_path / "res"
    env = dict(os.environ, OMP_NUM_THREADS="1", SAFESELECT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517",
                           str(Path(__file__).with_name("dist_sft_worker.py")), str(out)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r0 = json.loads(Path(f"{out}.0.json").read_text())
    r1 = json.loads(Path(f"{out}.1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    # DDP all-reduces gradients: both ranks hold the same adapter weights after training.
    assert r0["checksum"] == pytest.approx(r1["checksum"], rel=1e-6)
    assert r0["after"] < r0["before"]
    # 16 rows, micro-batch 4 per rank -> 2 batches per rank per epoch -> 3 epochs = 6 steps.
    assert r0["steps"] == 6
