"""Atomic file writes and strict JSONL reading (file and line on a malformed row)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from safeselect.errors import UserError


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=_default) + "\n" for r in rows))


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a user's file (``.gz`` / ``.xz`` decompressed); UserError naming the file when it is
    missing, a folder, unreadable or not valid gzip / xz, so no input file can end in a traceback."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    if path.suffix in (".gz", ".xz"):
        import gzip
        import lzma

        try:
            raw = gzip.decompress(raw) if path.suffix == ".gz" else lzma.decompress(raw)
        except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
            kind = "gzip" if path.suffix == ".gz" else "xz"
            raise UserError(f"{path}: not a valid {kind} file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return raw


def read_text(path: str | Path) -> str:
    """A user's text file as a string: UTF-8 (a UTF-8 byte-order mark is dropped), ``.gz`` / ``.xz`` too.
    Anything else (UTF-16, Latin-1, binary) is a UserError naming the file and the line of the first bad byte."""
    path = Path(path)
    raw = read_bytes(path)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{path}: UTF-16 text; save it as UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        "save it as UTF-8") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise UserError(f"{path}:{line}: binary data (a NUL byte), expected UTF-8 text")
    return text.removeprefix("\ufeff")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply") from None


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield objects of a JSONL file (``.gz`` too); a bad line raises UserError with file:line."""
    for _, obj in iter_jsonl_numbered(path):
        yield obj


def iter_jsonl_numbered(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file (``.gz`` / ``.xz`` too)."""
    path = Path(path)
    for lineno, line in enumerate(read_text(path).split("\n"), 1):  # "\n" only: JSON may hold U+2028
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: malformed JSONL row ({e.msg})") from None
        except RecursionError:
            raise UserError(f"{path}:{lineno}: JSONL row nested too deeply") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: a JSONL row must be an object, got {type(obj).__name__}")
        yield lineno, obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))
