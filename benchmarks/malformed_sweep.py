"""Feed malformed inputs where a user would, and check the CLI's contract for each one.

Each case builds its inputs in a fresh temporary folder, runs ``safeselect`` there in a subprocess
(as a user would), and passes when: exit code 2, exactly one line on stderr, no traceback, and nothing
created or changed in the folder (no run folder, no ``config.yaml``, no half-written file).

    python benchmarks/malformed_sweep.py            # every case, a summary table
    python benchmarks/malformed_sweep.py -k utf16   # cases whose name contains 'utf16'
    python benchmarks/malformed_sweep.py --md       # the table as markdown (docs/results.md)

Runs on the tiny model with tiny sizes, so a case that wrongly starts a run still ends in seconds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TINY = [
    "model.name=tiny-llama", "model.max_length=96", "data.n_task=24", "data.n_eval_harmful=6",
    "data.n_eval_overrefusal=4", "data.n_eval_task=6", "align.n_refusals=8", "align.n_benign=8",
    "align.train.epochs=1", "finetune.epochs=1", "eval.max_new_tokens=6", "eval.bootstrap=50",
    "data.safety_ref.n=12",
]
GOOD_ROWS = "".join(json.dumps({"prompt": f"Say {w}.", "response": f"{w}."}) + "\n"
                    for w in ("one", "two", "three", "four", "five", "six"))


# ----------------------------------------------------------------------------- file makers


def utf16(text: str = GOOD_ROWS) -> bytes:
    return text.encode("utf-16")


def garbage(n: int = 512) -> bytes:
    import random

    r = random.Random(n)
    return bytes(r.randrange(256) for _ in range(n))


def latin1() -> bytes:
    return json.dumps({"prompt": "café crème", "response": "oui"}, ensure_ascii=False).encode("latin-1") + b"\n"


@dataclass
class Case:
    name: str
    files: dict[str, bytes | str | None]  # relative path -> content (None: a folder)
    argv: list[str]
    kind: str = ""

    def __post_init__(self) -> None:
        # key=value overrides before the flags: argparse stops reading them at the first flag
        if "--out" in self.argv:
            i = self.argv.index("--out")
            self.argv = self.argv[:i] + self.argv[i + 2:] + self.argv[i:i + 2]


def jsonl_task(path: str) -> list[str]:
    return ["data.benchmark=jsonl", f"data.task_path={path}"]


def cases() -> list[Case]:
    c: list[Case] = []
    add = c.append
    run = ["run", "quickstart", *TINY, "--out", "out"]
    sel = ["select", "quickstart", *TINY, "selection.method=random", "--out", "out"]
    plan_yaml = ("name: p\nbase: {model.name: tiny-llama}\nseeds: [0]\nablations:\n  - name: r\n"
                 "    parameter: selection.ratio\n    action: REPLACE\n    replacements: [0.5]\n")

    # --- the config file
    add(Case("config is a folder", {"cfg.yaml": None}, ["run", "cfg.yaml", *TINY, "--out", "out"], "config"))
    add(Case("config folder without suffix", {"cfgdir": None}, ["run", "cfgdir", *TINY, "--out", "out"], "config"))
    add(Case("config utf16", {"cfg.yaml": utf16("name: x\n")}, ["run", "cfg.yaml", *TINY, "--out", "out"], "config"))
    add(Case("config binary garbage", {"cfg.yaml": garbage()}, ["run", "cfg.yaml", *TINY, "--out", "out"], "config"))
    add(Case("config latin-1", {"cfg.yaml": "name: café\n".encode("latin-1")}, ["run", "cfg.yaml", "--out", "out"],
             "config"))
    add(Case("config malformed yaml", {"cfg.yaml": "model: [a, b\n"}, ["run", "cfg.yaml", "--out", "out"], "config"))
    add(Case("config bad indentation", {"cfg.yaml": "model:\n  name: x\n   dtype: y\n"}, ["run", "cfg.yaml", "--out", "out"],
             "config"))
    add(Case("config tab indentation", {"cfg.yaml": "model:\n\tname: x\n"}, ["run", "cfg.yaml", "--out", "out"], "config"))
    add(Case("config is a list", {"cfg.yaml": "- a\n- b\n"}, ["run", "cfg.yaml", "--out", "out"], "config"))
    add(Case("config is a scalar", {"cfg.yaml": "42\n"}, ["run", "cfg.yaml", "--out", "out"], "config"))
    add(Case("config unknown key", {"cfg.yaml": "modle:\n  name: x\n"}, ["run", "cfg.yaml", "--out", "out"], "config"))
    add(Case("config section is a number", {"cfg.yaml": "model: 5\n"}, ["run", "cfg.yaml", "--out", "out"], "config"))
    add(Case("config int key is text", {"cfg.yaml": "data:\n  n_task: many\n"}, ["run", "cfg.yaml", "--out", "out"],
             "config"))
    add(Case("config list key is a mapping", {"cfg.yaml": "eval:\n  judges: {a: 1}\n"}, ["run", "cfg.yaml", "--out", "out"],
             "config"))
    add(Case("config negative seed", {"cfg.yaml": "seed: -4\n"}, ["run", "cfg.yaml", *TINY, "--out", "out"], "config"))
    add(Case("config inherits a missing preset", {"cfg.yaml": "defaults: nosuchpreset\n"},
             ["run", "cfg.yaml", "--out", "out"], "config"))
    add(Case("config deeply nested", {"cfg.yaml": "a: " + "[" * 5000 + "]" * 5000 + "\n"},
             ["run", "cfg.yaml", "--out", "out"], "config"))
    add(Case("config yaml anchors bomb", {"cfg.yaml": "a: &a [x]\nb: *c\n"}, ["run", "cfg.yaml", "--out", "out"], "config"))
    add(Case("config file not found", {}, ["run", "missing.yaml", "--out", "out"], "config"))
    add(Case("unknown preset name", {}, ["run", "quickstrat", "--out", "out"], "config"))
    add(Case("validate config folder", {"cfg.yaml": None}, ["validate", "cfg.yaml"], "config"))
    add(Case("validate config utf16", {"cfg.yaml": utf16("name: x\n")}, ["validate", "cfg.yaml"], "config"))

    # --- overrides and numbers
    for key, val in (("seed", "-1"), ("seed", "1.5"), ("seed", "99999999999999"), ("data.seed", "-3"),
                     ("selection.seed", "-1"), ("selection.ratio", "nan"), ("finetune.lr", "inf"),
                     ("selection.ratio", "2"), ("data.n_task", "-5"), ("finetune.batch_size", "0"),
                     ("data.harmful_ratio", "[0.1]"), ("eval.judges", "refusal")):
        add(Case(f"override {key}={val}", {}, [*run, f"{key}={val}"], "number"))
    add(Case("validate negative seed", {}, ["validate", "quickstart", "seed=-1"], "number"))
    add(Case("override without =", {}, ["run", "quickstart", "selection.ratio", "--out", "out"], "number"))
    add(Case("override unknown key", {}, [*run, "selection.ration=0.5"], "number"))

    # --- task data through run
    def task_case(name: str, files: dict[str, bytes | str | None], path: str, base: list[str] = run) -> None:
        add(Case(name, files, [*base, *jsonl_task(path)], "data"))

    task_case("task is a folder", {"t": None}, "t")
    task_case("task utf16", {"t.jsonl": utf16()}, "t.jsonl")
    task_case("task utf16 without BOM", {"t.jsonl": GOOD_ROWS.encode("utf-16-le")}, "t.jsonl")
    task_case("task binary garbage", {"t.jsonl": garbage()}, "t.jsonl")
    task_case("task latin-1", {"t.jsonl": latin1()}, "t.jsonl")
    task_case("task NUL bytes", {"t.jsonl": GOOD_ROWS.encode() + b"\x00\x00\n"}, "t.jsonl")
    task_case("task empty file", {"t.jsonl": ""}, "t.jsonl")
    task_case("task blank lines only", {"t.jsonl": "\n\n  \n"}, "t.jsonl")
    task_case("task rows without response", {"t.jsonl": '{"prompt": "a"}\n{"prompt": "b", "response": "c"}\n'},
              "t.jsonl")
    task_case("task rows with empty response", {"t.jsonl": '{"prompt": "a", "response": "  "}\n'}, "t.jsonl")
    task_case("task JSON array in .jsonl", {"t.jsonl": '[{"prompt": "a", "response": "b"}]\n'}, "t.jsonl")
    task_case("task malformed JSON line", {"t.jsonl": GOOD_ROWS + '{"prompt": "a", \n'}, "t.jsonl")
    task_case("task prompt is a number", {"t.jsonl": '{"prompt": 5, "response": "b"}\n'}, "t.jsonl")
    task_case("task response is a list", {"t.jsonl": '{"prompt": "a", "response": ["b"]}\n'}, "t.jsonl")
    task_case("task harmful is text", {"t.jsonl": '{"prompt": "a", "response": "b", "harmful": "maybe"}\n'}, "t.jsonl")
    task_case("task meta is a list", {"t.jsonl": '{"prompt": "a", "response": "b", "meta": [1]}\n'}, "t.jsonl")
    task_case("task field task is a list", {"t.jsonl": '{"prompt": "a", "response": "b", "task": [1]}\n'}, "t.jsonl")
    task_case("task duplicate row_id", {"t.jsonl": '{"row_id": 1, "prompt": "a", "response": "b"}\n'
                                                  '{"row_id": 1, "prompt": "c", "response": "d"}\n'}, "t.jsonl")
    task_case("task .json is an object", {"t.json": '{"prompt": "a", "response": "b"}'}, "t.json")
    task_case("task .json malformed", {"t.json": '[{"prompt": "a",'}, "t.json")
    task_case("task .json deeply nested", {"t.json": "[" * 100000 + "]" * 100000}, "t.json")
    task_case("task csv without prompt column", {"t.csv": "text,label\nhello,1\n"}, "t.csv")
    task_case("task csv header only", {"t.csv": "prompt,response\n"}, "t.csv")
    task_case("task csv huge field", {"t.csv": 'prompt,response\n"' + "x" * 200000 + '",y\n'}, "t.csv")
    task_case("task .gz that is not gzip", {"t.jsonl.gz": GOOD_ROWS}, "t.jsonl.gz")
    task_case("task truncated gzip", {"t.jsonl.gz": gzip.compress(GOOD_ROWS.encode())[:30]}, "t.jsonl.gz")
    task_case("task gzip of utf16", {"t.jsonl.gz": gzip.compress(utf16())}, "t.jsonl.gz")
    task_case("task .xz that is not xz", {"t.jsonl.xz": GOOD_ROWS}, "t.jsonl.xz")
    task_case("task unknown file type", {"t.txt": GOOD_ROWS}, "t.txt")
    task_case("task file not found", {}, "nope.jsonl")
    task_case("task parquet garbage", {"t.parquet": garbage()}, "t.parquet")
    task_case("select: task utf16", {"t.jsonl": utf16()}, "t.jsonl", sel)
    task_case("select: task empty", {"t.jsonl": ""}, "t.jsonl", sel)
    task_case("select: task folder", {"t": None}, "t", sel)
    task_case("select dualselect: rows without response", {"t.jsonl": '{"prompt": "a"}\n'}, "t.jsonl",
              ["select", "quickstart", *TINY, "selection.method=dualselect", "--out", "out"])
    add(Case("data build: task utf16", {"t.jsonl": utf16()},
             ["data", "build", "--preset", "jsonl", "--out", "out", *jsonl_task("t.jsonl")[1:]], "data"))
    add(Case("data build: task binary", {"t.jsonl": garbage()},
             ["data", "build", "--preset", "jsonl", "--out", "out", "data.task_path=t.jsonl"], "data"))
    add(Case("data build: preset is a folder", {"p.yaml": None}, ["data", "build", "--preset", "p.yaml", "--out", "out"],
             "data"))

    # --- other data keys
    for key, files, val in (
        ("align.source", {"a.jsonl": utf16()}, "a.jsonl"),
        ("align.source", {"a": None}, "a"),
        ("align.source", {"a.jsonl": '{"prompt": "x"}\n'}, "a.jsonl"),
        ("align.source", {"a.jsonl": ""}, "a.jsonl"),
        ("data.safety_ref.source", {"s.jsonl": garbage()}, "s.jsonl"),
        ("data.safety_ref.source", {"s.jsonl": utf16()}, "s.jsonl"),
        ("data.safety_ref.source", {"s.jsonl": ""}, "s.jsonl"),
        ("data.safety_ref.source", {"s": None}, "s"),
        ("data.eval_harmful_path", {"e.jsonl": utf16()}, "e.jsonl"),
        ("data.eval_overrefusal_path", {"e": None}, "e"),
        ("data.eval_task_path", {"e.jsonl": '{"prompt": "a", "task": "x"}\n'}, "e.jsonl"),
        ("data.data_dir", {"dd": "not a folder"}, "dd"),
        ("eval.reference", {"ref.txt": "x"}, "ref.txt"),
        ("selection.seal.logits_from", {}, "no-such-run"),
        ("judges.llm.cache_dir", {"cache": "a file"}, "cache"),
        ("eval.benchmarks.alpacaeval", {"ae.json": utf16("[]")}, "ae.json"),
    ):
        base = run + (jsonl_task("t.jsonl") if key.startswith("data.eval") else [])
        files = dict(files)
        if key.startswith("data.eval"):
            files["t.jsonl"] = GOOD_ROWS
        add(Case(f"{key} {'folder' if None in files.values() else 'bad'} ({val})", files, [*base, f"{key}={val}"],
                 "key"))
    add(Case("selection.dsir.target binary", {"d.jsonl": garbage()},
             [*run, "selection.method=dsir", "selection.dsir.target=d.jsonl"], "key"))
    add(Case("selection.safeinstr.source utf16", {"s.jsonl": utf16()},
             [*run, "selection.safeinstr.count=2", "selection.safeinstr.source=s.jsonl"], "key"))
    add(Case("selection.safeinstr.source without responses", {"s.jsonl": '{"prompt": "a"}\n{"prompt": "b"}\n'},
             [*sel, "selection.method=safeinstr", "selection.safeinstr.source=s.jsonl"], "key"))
    add(Case("eva.prompts utf16", {"p.jsonl": utf16()}, ["eva", "eva", *TINY, "eva.prompts=p.jsonl", "--out", "out"],
             "key"))
    add(Case("reward.sources binary", {"r.jsonl": garbage()},
             ["reward", "train", "reward.sources=[r.jsonl]", "--out", "out"], "key"))

    # --- the output folder
    add(Case("run --out is a file", {"o": "x"}, ["run", "quickstart", *TINY, "--out", "o"], "out"))
    add(Case("run --out under a file", {"o": "x"}, ["run", "quickstart", *TINY, "--out", "o/sub"], "out"))
    add(Case("run --out unwritable", {}, ["run", "quickstart", *TINY, "--out", "/proc/safeselect-out"], "out"))
    add(Case("select --out is a file", {"o": "x"}, ["select", "quickstart", *TINY, "--out", "o"], "out"))
    add(Case("eval --out is a file", {"o": "x"}, ["eval", "quickstart", *TINY, "--out", "o"], "out"))
    add(Case("data build --out is a file", {"o": "x"}, ["data", "build", "--out", "o"], "out"))
    add(Case("ablate --dry-run --out is a file", {"o": "x", "p.yaml": plan_yaml},
             ["ablate", "p.yaml", "--dry-run", "--out", "o"], "out"))
    add(Case("ablate --out is a file", {"o": "x", "p.yaml": plan_yaml}, ["ablate", "p.yaml", *TINY, "--out", "o"], "out"))

    # --- plans
    add(Case("plan is a folder", {"p.md": None}, ["ablate", "p.md", "--dry-run", "--out", "o"], "plan"))
    add(Case("plan folder without suffix", {"pl": None}, ["ablate", "pl", "--dry-run", "--out", "o"], "plan"))
    add(Case("plan utf16 markdown", {"p.md": utf16("# Plan\n## Ablation 1\n")}, ["ablate", "p.md", "--dry-run", "--out", "o"],
             "plan"))
    add(Case("plan binary yaml", {"p.yaml": garbage()}, ["ablate", "p.yaml", "--dry-run", "--out", "o"], "plan"))
    add(Case("plan empty yaml", {"p.yaml": ""}, ["ablate", "p.yaml", "--dry-run", "--out", "o"], "plan"))
    add(Case("plan empty markdown", {"p.md": ""}, ["ablate", "p.md", "--dry-run", "--out", "o"], "plan"))
    add(Case("plan yaml list", {"p.yaml": "- 1\n- 2\n"}, ["ablate", "p.yaml", "--dry-run", "--out", "o"], "plan"))
    add(Case("plan unknown parameter", {"p.yaml": plan_yaml.replace("selection.ratio", "selection.ration")},
             ["ablate", "p.yaml", "--dry-run", "--out", "o"], "plan"))
    add(Case("ablate negative seed", {"p.yaml": plan_yaml}, ["ablate", "p.yaml", "--seeds", "-1", "--dry-run"], "plan"))
    add(Case("ablate negative workers", {"p.yaml": plan_yaml}, ["ablate", "p.yaml", "--workers", "-1", "--out", "o"],
             "plan"))
    add(Case("validate plan folder", {"p.md": None}, ["validate", "p.md"], "plan"))
    return c


# ----------------------------------------------------------------------------- running


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath).name == ".cache":
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime if p.is_file() else 0.0)
    return out


@dataclass
class Result:
    case: Case
    rc: int
    stderr: str
    left: list[str]
    wall_s: float

    @property
    def lines(self) -> list[str]:
        return [x for x in self.stderr.splitlines() if x.strip()]

    @property
    def ok(self) -> bool:
        return self.rc == 2 and len(self.lines) == 1 and "Traceback" not in self.stderr and not self.left


def run_case(case: Case, python: str, timeout: float = 300.0) -> Result:
    with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
        root = Path(tmp)
        for rel, content in case.files.items():
            p = root / rel
            if content is None:
                p.mkdir(parents=True)
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(content.encode() if isinstance(content, str) else content)
        before = snapshot(root)
        env = dict(os.environ, SAFESELECT_CACHE=str(root / ".cache"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([python, "-m", "safeselect.cli.main", *case.argv], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=timeout)
            rc, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired:
            rc, err = -1, "timed out"
        after = snapshot(root)
        left = sorted(k for k in after if before.get(k) != after[k])
        return Result(case, rc, err, left, time.perf_counter() - t0)


def run_all(select: Callable[[Case], bool] = lambda c: True, python: str = sys.executable,
            progress: bool = True) -> list[Result]:
    out = []
    for case in cases():
        if not select(case):
            continue
        r = run_case(case, python)
        out.append(r)
        if progress:
            mark = "ok  " if r.ok else "FAIL"
            print(f"{mark} rc={r.rc} {case.name}: {(r.lines or ['(no stderr)'])[-1][:140]}"
                  + (f"  LEFT {r.left}" if r.left else ""), file=sys.stderr, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--md", action="store_true", help="print the markdown table")
    args = ap.parse_args()
    results = run_all(lambda c: args.k in c.name)
    passed = sum(r.ok for r in results)
    by_kind: dict[str, list[int]] = {}
    for r in results:
        by_kind.setdefault(r.case.kind, [0, 0])
        by_kind[r.case.kind][0] += r.ok
        by_kind[r.case.kind][1] += 1
    print(f"{passed} of {len(results)} malformed inputs: exit 2, one line, nothing left behind")
    for kind, (ok, n) in sorted(by_kind.items()):
        print(f"  {kind:<8} {ok}/{n}")
    if args.md:
        print("\n| case | exit | stderr (one line) | left behind |\n|---|---|---|---|")
        for r in results:
            line = (r.lines[-1] if r.lines else "").replace("|", "\\|")[:160]
            print(f"| {r.case.name} | {r.rc} | {line} | {', '.join(r.left) or '-'} |")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
