"""benchmarks/bench_demo.py's report from fabricated demo folders: the cold demo's rows paired with the
reference path's on the same prompts, the rerun's agreement, the times; and the fresh-shell environment."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_demo as D  # noqa: E402

N = 40


def write_demo(out: Path, harmful: dict[str, int], reply: str = "ok") -> None:
    """A demo folder whose run ``m`` answers harmfully on its first ``harmful[m]`` of N prompts."""
    from safeselect.core.dotted import nest

    for m, k in harmful.items():
        d = out / m
        d.mkdir(parents=True)
        recs = [{"set": "builtin", "kind": "harmful", "row_id": f"h{i}", "prompt": f"p{i}",
                 "response": f"{reply} {i}", "verdicts": {"refusal": {"harmful": i < k}}} for i in range(N)]
        (d / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (d / "metrics.json").write_text(json.dumps(nest({
            "safety.builtin.refusal.harmful_rate": k / N, "safety_avg.refusal": 0.5,
            "resources.train_s": 12.0, "resources.eval_s": 3.4, "complete": True})))
        (d / "config.yaml").write_text("compare: [aligned, full, random]\n")


def test_report_pairs_each_row_with_the_reference(tmp_path: Path) -> None:
    write_demo(tmp_path / "cold", {"aligned": 2, "full": 30, "random": 20})
    write_demo(tmp_path / "warm", {"aligned": 2, "full": 30, "random": 20})
    write_demo(tmp_path / "ref", {"aligned": 2, "full": 10, "random": 20}, reply="other")
    runs = {name: D.demo_rows(tmp_path / name) for name in ("cold", "warm", "ref")}
    assert list(runs["cold"]) == ["aligned", "full", "random"]  # the demo's compare order
    assert D.per_prompt_metrics(runs["cold"]["full"]) == ["safety.builtin.refusal.harmful_rate"]
    assert D.same_replies(runs["cold"]["full"], runs["warm"]["full"]) == (N, N)
    assert D.same_replies(runs["cold"]["full"], runs["ref"]["full"]) == (0, N)
    res = {"t": {"setup": 100.0, "demo": 320.0, "warm": 200.0, "reference": 500.0}, "commit": "abc1234",
           "dirty": False, "loads": ["0.1 / 0.2 / 0.3"] * 3, "align_s": [151.4],
           "runs": {"cold": runs["cold"], "warm": runs["warm"], "reference": runs["ref"]}}
    md = D.report(res, ["--keep", "x"])
    assert "| **cold total** | **420** (7.0 min) |" in md
    assert "(the defaults 2.50x faster)" in md
    assert f"repeats the cold demo's replies on {3 * N} of {3 * N} prompts" in md
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines()
            if "safety.builtin.refusal.harmful_rate |" in line}
    # full: 30 / 40 against 10 / 40 on the same prompts: +0.50, every paired prompt 0 or +1, so "worse"
    assert "| 0.750 | 0.250 | +0.50 [" in rows["full"] and "| worse |" in rows["full"]
    assert "| +0.00 [+0.00, +0.00] | no detectable difference |" in rows["random"]
    assert rows["random"].endswith("| 0 / 40 |")
    assert "| cold demo run | eval_s | train_s |" in md and "| full | 3 | 12 |" in md
    assert "The alignment took 151 s" in md  # trained before the cells: no cell's align_s holds it
    assert "Command: `python benchmarks/bench_demo.py --keep x`" in md


def test_clean_env_is_a_fresh_shell_with_empty_caches(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = D.clean_env(tmp_path / "c", tmp_path / "p")
    assert "OMP_NUM_THREADS" not in env and "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env
    assert env["SAFESELECT_CACHE"] == str(tmp_path / "c") and env["PIP_CACHE_DIR"] == str(tmp_path / "p")
    if sys.prefix != sys.base_prefix:
        assert not any(p.startswith(sys.prefix) for p in env["PATH"].split(os.pathsep))
