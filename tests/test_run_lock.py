"""One writer per run folder, and workers that die with their `ablate` parent.

A second process on a locked run folder exits 2 with one line; a lock dies with its process (no stale
locks); killing only the `ablate` parent ends its worker, and the resumed plan completes every run once.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from safeselect.cli.main import main
from safeselect.core import lock
from safeselect.errors import UserError

TINY = {
    "model.name": "tiny-llama", "device": "cpu", "model.max_length": 80, "data.n_task": 16,
    "data.n_eval_harmful": 4, "data.n_eval_overrefusal": 2, "data.n_eval_task": 4, "data.safety_ref.n": 8,
    "align.n_refusals": 6, "align.n_benign": 6, "align.train.epochs": 1, "finetune.epochs": 2,
    "eval.max_new_tokens": 4, "eval.bootstrap": 20,
}

HOLD = "import sys, time; from safeselect.core import lock; lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)"


def _holder(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _free(lock_file: Path) -> bool:
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def test_lock_is_reentrant_in_a_process_and_exclusive_across_processes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with lock.run_lock(run), lock.run_lock(run):  # a compare run locks its folder, a sub-run may lock it again
        assert lock.holder(run) == os.getpid()
    proc = _holder(run)
    try:
        with pytest.raises(UserError, match=rf"another process \(pid {proc.pid}\)"):
            lock.acquire(run)
    finally:
        proc.kill()
        proc.wait()
    lock.acquire(run)  # the kernel dropped the dead holder's lock: never stale
    lock.release(run)


@pytest.mark.parametrize("command", ["run", "select"])
def test_a_second_writer_on_a_run_folder_exits_2(command: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    proc = _holder(out)
    try:
        rc = main([command, "quickstart", *[f"{k}={v}" for k, v in TINY.items()], "compare=[]", "--out", str(out)])
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "another process" in err
    assert sorted(p.name for p in out.iterdir()) == [lock.LOCK_FILE]  # nothing written beside the lock


def test_a_second_ablate_on_the_same_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "abl"
    proc = _holder(out)
    try:
        rc = main(["ablate", "seal_gamma_value", "model.name=tiny-llama", "--out", str(out)])
    finally:
        proc.kill()
        proc.wait()
    assert rc == 2 and "another process" in capsys.readouterr().err


@pytest.mark.slow
def test_killing_only_the_ablate_parent_ends_its_worker_and_the_resume_runs_each_run_once(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "p", "seeds": [0], "base": TINY, "reference": {"selection.method": "full"}, "bounds": False,
        "ablations": [{"name": "ratio", "parameter": "selection.ratio", "action": "REPLACE", "replacements": [0.5]}],
    }))
    out = tmp_path / "abl"
    parent = subprocess.Popen([sys.executable, "-m", "safeselect.cli.main", "ablate", str(plan), "--workers", "1",
                               "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ), start_new_session=True)
    worker_lock = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and worker_lock is None:
        for f in (out / "runs").glob(f"*/{lock.LOCK_FILE}") if (out / "runs").is_dir() else []:
            pid = lock.holder(f.parent)
            if pid and pid != parent.pid and not _free(f):
                worker_lock = f
        time.sleep(0.2)
    assert worker_lock is not None, "no worker started a run"
    os.kill(parent.pid, signal.SIGKILL)  # only the parent, not its process group
    parent.wait()
    deadline = time.monotonic() + 30
    while not _free(worker_lock) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _free(worker_lock), "the worker outlived its ablate parent"
    assert main(["ablate", str(plan), "--workers", "1", "--out", str(out)]) == 0
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2
    for r in runs:
        assert (r / "runner.json").exists() and (r / "metrics.json").exists()
