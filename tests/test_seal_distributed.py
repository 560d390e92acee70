"""SEAL under torchrun (2 CPU processes, gloo): exact gradients, identical logits on every process,
and the same logits as one process (the batch split and the gradient reductions change nothing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_two_processes_match_one(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--standalone",
                           str(HERE / "seal_dist_worker.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    for rank in (0, 1):
        g = json.loads((tmp_path / f"grad_2_{rank}.json").read_text())
        # The model step and theta_hat's step see exactly the whole batch's gradient.
        assert g["model"] < 1e-6 * max(1.0, g["model_norm"]), g
        assert g["aux"] < 1e-6 * max(1.0, g["aux_norm"]), g

    sys.path.insert(0, str(HERE))
    try:
        import seal_dist_worker as worker
    finally:
        sys.path.remove(str(HERE))
    from safeselect.training.sft import make_accelerator

    acc = make_accelerator(cpu=True)
    for algorithm in ("memory_efficient", "auxiliary"):
        r0 = np.load(tmp_path / f"logits_{algorithm}_2_0.npy")
        r1 = np.load(tmp_path / f"logits_{algorithm}_2_1.npy")
        np.testing.assert_array_equal(r0, r1)  # every process holds the same selector
        assert np.ptp(r0) > 0.05  # the selector moved
        single = worker.train(algorithm, acc)
        np.testing.assert_allclose(r0, single, atol=1e-4)
