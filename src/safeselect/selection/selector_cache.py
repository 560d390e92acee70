"""Reuse of a trained SEAL selector: its logits, kept in the cache under a key of everything they depend on.

SEAL trains its selector on all task rows and only then cuts at ``selection.ratio`` (or a token budget),
so the logits do not depend on the cut. A sweep over selection ratios, or SEAL beside SEAL + SafeInstr
(whose demonstrations are added after the cut), trains the same selector again and again: 70-90% of a
SEAL cell's time on CPU. The key hashes what the training reads: the task and safety rows (every
field), the starting model (its cached folder, or the files of a local model), the SEAL section except
the cut, the shared fine-tune values SEAL declared, the selection seed, the torch thread count (training
is not bit-reproducible across thread counts) and the source of the code that trains it, so a code change
never serves stale logits. Multi-process runs neither read nor write it. Parallel runs that need the same
training (an ablation's workers cutting one selector at several ratios) take :func:`training_lock`: one
trains, the others wait and then read its logits instead of training it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from safeselect.config.paths import cache_dir
from safeselect.core.rows import Row

CACHE_SUBDIR = "selectors"
# Knobs of the SEAL section that act after training (or choose not to train): not part of the key.
_NOT_TRAINING = ("logits_from", "reuse")
# The code whose behaviour the logits depend on, relative to the package root.
_TRAINING_CODE = ("selection/seal.py", "selection/schedules.py", "training", "models/__init__.py")


def _jsonable(x: Any) -> Any:
    if is_dataclass(x) and not isinstance(x, type):
        return asdict(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot hash {type(x).__name__}")


def _code_digest() -> str:
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for rel in _TRAINING_CODE:
        p = root / rel
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _rows_digest(rows: list[Row]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r.to_dict(), sort_keys=True, default=_jsonable).encode())
        h.update(b"\n")
    return h.hexdigest()


def single_process() -> bool:
    """Whether this is a single-process run, the only kind that reads or writes the cache."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1


def selector_key(*, seal: Any, task: list[Row], safety_ref: list[Row], model_id: str, shared: dict[str, Any],
                 selection_seed: int) -> str | None:
    """The cache key of a selector training, or None where it must not be shared (a multi-process run)."""
    import torch

    if not single_process():
        return None
    section = {k: v for k, v in asdict(seal).items() if k not in _NOT_TRAINING}
    payload = {
        "seal": section, "model": model_id, "shared": shared, "selection_seed": selection_seed,
        "task": _rows_digest(task), "safety_ref": _rows_digest(safety_ref),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "code": _code_digest(),
        "cuda": torch.cuda.is_available(),  # "device: auto" means another device on a GPU machine (shared caches)
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=_jsonable).encode()).hexdigest()[:20]


def cached(key: str | None, files: tuple[str, ...]) -> Path | None:
    """The cache folder holding every one of ``files`` for ``key``, or None."""
    if key is None:
        return None
    d = cache_dir() / CACHE_SUBDIR / key
    return d if all((d / f).is_file() for f in files) else None


@contextlib.contextmanager
def training_lock(key: str | None) -> Iterator[None]:
    """Held while looking ``key`` up and, on a miss, training and storing it: a second process (or thread)
    with the same key waits here and then finds the stored logits. No key: no lock."""
    if key is None:
        yield
        return
    import fcntl

    root = cache_dir() / CACHE_SUBDIR
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, also if the training dies
        yield


def store(key: str | None, src: Path, files: tuple[str, ...]) -> None:
    """Copy ``files`` of ``src`` into the cache under ``key``, whole or not at all (two writers: the last wins)."""
    if key is None:
        return
    root = cache_dir() / CACHE_SUBDIR
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    for f in files:
        shutil.copy2(src / f, tmp / f)
    dest = root / key
    if dest.exists():  # an identical training finished first (same key): keep it
        shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        tmp.rename(dest)
    except OSError:  # lost a race to another writer of the same key
        shutil.rmtree(tmp, ignore_errors=True)


def copy_into(cached_dir: Path, out_dir: Path, files: tuple[str, ...]) -> None:
    """Copy the cached files into a run folder, so the run holds its own selector like a trained one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        tmp = out_dir / f".{f}.tmp"
        shutil.copy2(cached_dir / f, tmp)
        tmp.replace(out_dir / f)
