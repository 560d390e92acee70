"""One writer per run folder: an exclusive ``flock`` on ``DIR/.lock``, held while a process writes the run.

The kernel drops a ``flock`` when its process dies (killed, crashed, out of memory), so a lock can never
go stale; a second process that tries to write the same folder meanwhile gets a UserError (exit 2) naming
the holder's pid. Locks are re-entrant within a process (a ``compare`` run locks its folder, then each
sub-run its own), and the lock file's descriptor is not inherited by child processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safeselect.errors import UserError

LOCK_FILE = ".lock"

_held: dict[str, tuple[int, int]] = {}  # resolved folder -> (fd, depth) held by this process
_guard = threading.Lock()


def _key(folder: Path) -> str:
    return str(folder.resolve())


def holder(folder: str | Path) -> int | None:
    """The pid written by the process holding (or that last held) ``folder``'s lock, if any."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text(encoding="utf-8").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def acquire(folder: str | Path) -> None:
    """Take ``folder``'s lock (creating the folder), or raise UserError when another process holds it."""
    import fcntl

    folder = Path(folder)
    key = _key(folder)
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            return
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = holder(folder)
            raise UserError(f"{folder} is being written by another process{f' (pid {pid})' if pid else ''}: "
                            "wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[key] = (fd, 1)


def release(folder: str | Path) -> None:
    """Drop one level of this process's hold on ``folder``'s lock (the lock itself at the last)."""
    import fcntl

    key = _key(Path(folder))
    with _guard:
        if key not in _held:
            return
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
            return
        del _held[key]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    """``with run_lock(out):`` the folder is this process's to write until the block ends (or the process dies)."""
    acquire(folder)
    try:
        yield Path(folder)
    finally:
        release(folder)
