"""Loaders: JSONL rows, HF ``datasets`` folders and files, and the real data sets' published formats.

Every loader returns ``list[Row]`` with a stable ``row_id`` (from the file, or
``<name>-<line or index>``), raises :class:`UserError` with ``file:line`` on a
malformed row and on a missing file, and never prints rows (harmful prompts
stay on disk). Formats:

- our JSONL: one object per line with Row fields (``prompt`` required;
  aliases ``instruction``/``question`` -> prompt, ``output``/``completion`` -> response);
- HH-RLHF (gzip JSONL ``chosen``/``rejected`` dialogues): last human turn -> prompt,
  last assistant turn of ``chosen`` (safe reference) or ``rejected`` (harmful-ish);
- AdvBench CSV (``goal``, ``target``); SafeInstr JSON (``instruction``, ``input``, ``output``);
- GSM8K JSONL (``question``, ``answer`` with the final number after ``####``);
- SST-2 TSV (header ``label<TAB>sentence|content``; 0 negative, 1 positive);
- Alpaca prompts JSON (``instruction``, ``category``);
- HEx-PHI: one CSV per category (``category_<k>.csv``), one prompt per line, no header;
- BeaverTails JSONL (``prompt``, ``response``, ``category`` {name: bool}, ``is_safe``);
- XSTest CSV (``id``, ``prompt``, ``type``, ``label`` safe/unsafe, ``focus``, ``note``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safeselect.config.paths import data_dir
from safeselect.core.io import iter_jsonl_numbered, read_json, read_text
from safeselect.core.rows import Row
from safeselect.errors import UserError, suggest
from safeselect.models import from_hf_cache, hf_cache_dir

_PROMPT_KEYS = ("prompt", "instruction", "question")
_RESPONSE_KEYS = ("response", "output", "completion")
_ROW_FIELDS = {"row_id", "prompt", "response", "harmful", "answer", "task", "category", "source", "meta"}


def _exists(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"file not found: {p}")
    return p


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    from datasets.utils import logging as ds_logging

    level = ds_logging.get_verbosity()
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)


def _stem(path: Path) -> str:
    """``dir/x.jsonl.gz`` -> ``x``."""
    return path.name.split(".")[0]


@contextmanager
def _open_text(path: Path) -> Iterator[io.StringIO]:
    """Plain, ``.gz`` or ``.xz`` text, checked whole first (UTF-8, no binary, valid compression) so a bad
    file is one UserError naming it; CSV errors inside the block also name the file."""
    text = read_text(path)
    try:
        yield io.StringIO(text, newline="")
    except csv.Error as e:
        raise UserError(f"{path}: malformed CSV ({e})") from None


def _jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; malformed lines raise UserError with file:line."""
    return iter_jsonl_numbered(path)


def row_from_obj(obj: dict[str, Any], default_id: str, where: str) -> Row:
    """Validate one mapping into a Row; ``where`` ("file:line") prefixes every error.

    Besides our fields it reads the formats users have: ``messages`` (or ShareGPT's ``conversations``,
    see :func:`from_messages`), TRL's conversational prompt-completion (``prompt`` and ``completion`` as
    message lists) and Alpaca's ``instruction`` + ``input`` (+ ``output``), see :func:`alpaca_prompt`.
    """
    obj = dict(obj)
    chat_key = next((k for k in ("messages", "conversations") if k in obj and not isinstance(obj.get("prompt"), str)),
                    None)
    if chat_key is not None or isinstance(obj.get("prompt"), list):
        msgs = obj.pop(chat_key) if chat_key else obj.pop("prompt")
        completion = obj.pop("completion", None) if chat_key is None else None
        if completion is not None:  # TRL prompt-completion: the completion is the assistant's turn
            if not isinstance(completion, list):
                raise UserError(f"{where}: 'completion' must be a message list when 'prompt' is one")
            msgs = _message_list(msgs, where) + _message_list(completion, where)
        prompt, response, context = from_messages(msgs, where)
        obj["prompt"] = prompt
        if not isinstance(obj.get("response"), str):
            obj["response"] = response
        if context is not None:
            meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
            obj["meta"] = {**meta, "messages": context}
    if "prompt" not in obj:
        for k in _PROMPT_KEYS[1:]:
            if k in obj:
                obj["prompt"] = obj.pop(k)
                if k == "instruction" and "input" in obj:
                    obj["prompt"] = alpaca_prompt(obj["prompt"], obj.pop("input"), where)
                break
    if "response" not in obj:
        for k in _RESPONSE_KEYS[1:]:
            if k in obj:
                obj["response"] = obj.pop(k)
                break
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError(f"{where}: row needs a non-empty string 'prompt' (keys: {', '.join(sorted(obj)) or 'none'})")
    resp = obj.get("response")
    if resp is not None and not isinstance(resp, str):
        raise UserError(f"{where}: 'response' must be a string, got {type(resp).__name__}")
    harmful = obj.get("harmful")
    if harmful is not None and not isinstance(harmful, bool):
        if harmful in (0, 1):
            obj["harmful"] = bool(harmful)
        else:
            raise UserError(f"{where}: 'harmful' must be true, false or null, got {harmful!r}")
    meta = obj.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise UserError(f"{where}: 'meta' must be an object")
    for k in ("task", "category", "source"):
        if obj.get(k) is not None and not isinstance(obj[k], str):
            raise UserError(f"{where}: '{k}' must be a string, got {type(obj[k]).__name__}")
    for k in ("row_id", "answer"):  # scalars that become strings
        if obj.get(k) is not None and (isinstance(obj[k], (dict, list, bool)) or not isinstance(obj[k], (str, int, float))):
            raise UserError(f"{where}: '{k}' must be a string or a number, got {type(obj[k]).__name__}")
    rid = obj.get("row_id")
    obj["row_id"] = default_id if rid is None or str(rid) == "" else str(rid)
    return Row.from_dict(obj)


# ShareGPT role names (``from``/``value`` turns) as the chat roles they stand for.
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


def _message_list(msgs: Any, where: str) -> list[dict[str, str]]:
    """Check a list of ``{role, content}`` (or ShareGPT ``{from, value}``) turns; roles normalised."""
    if not isinstance(msgs, list) or not msgs:
        raise UserError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise UserError(f"{where}: message {i} must be an object with 'role' and 'content'")
        role, content = m.get("role", m.get("from")), m.get("content", m.get("value"))
        if not isinstance(role, str) or not isinstance(content, str):
            raise UserError(f"{where}: message {i} needs string 'role' and 'content'")
        role = _ROLE_ALIASES.get(role.lower(), role.lower())
        if role not in ("system", "user", "assistant"):
            raise UserError(f"{where}: message {i} has role {role!r} (want system, user or assistant)")
        out.append({"role": role, "content": content})
    return out


def from_messages(msgs: Any, where: str) -> tuple[str, str, list[dict[str, str]] | None]:
    """A chat (``[{role, content}, ...]``) -> (prompt, response, context).

    The **last assistant turn** is the response, the row's one learned reply; everything before it is
    context, masked from the loss. This is TRL's conversational prompt-completion form (``prompt`` = the
    turns before, ``completion`` = the last assistant turn, loss on the completion only), chosen over
    TRL's ``assistant_only_loss`` (loss on every assistant turn) because a selector scores and keeps or
    drops one reply per row. To learn earlier assistant turns too, give each as its own row.
    ``prompt`` is the last user turn (what judges and DSIR read); ``context`` is the message list before the
    reply when it holds more than that one user turn (earlier turns or a system message), else None.
    A chat that ends with a user turn is a prompt with no response (an evaluation prompt).
    """
    turns = _message_list(msgs, where)
    if turns[-1]["role"] == "assistant":
        context, response = turns[:-1], turns[-1]["content"]
    else:
        context, response = turns, ""
    users = [m["content"] for m in context if m["role"] == "user"]
    if not users:
        raise UserError(f"{where}: the chat has no user turn before the reply")
    if context[-1]["role"] != "user":
        raise UserError(f"{where}: the reply must follow a user turn (got {context[-1]['role']} before it)")
    return users[-1], response, (context if len(context) > 1 else None)


def alpaca_prompt(instruction: Any, inp: Any, where: str) -> str:
    """Alpaca's ``instruction`` and optional ``input`` as one user turn: the instruction, a blank line, the input.

    Stanford Alpaca puts the two under ``### Instruction:`` / ``### Input:`` headers inside its own prompt for a
    base model; a chat model gets its template instead, so the headers are left out and the two parts are
    joined by the blank line that separates them there (SafeInstr rows, built from Alpaca, are read the same).
    """
    if inp is None:
        inp = ""
    if not isinstance(instruction, str) or not isinstance(inp, str):
        raise UserError(f"{where}: Alpaca 'instruction' and 'input' must be strings")
    return instruction.strip() + (f"\n\n{inp.strip()}" if inp.strip() else "")


# Fields a column mapping may fill (``data.task.columns``): the Row fields and the chat formats.
MAPPABLE = ("prompt", "response", "messages", "input", "row_id", "harmful", "answer", "task", "category")


def remap(obj: dict[str, Any], columns: dict[str, str] | None, where: str) -> dict[str, Any]:
    """Rename a record's columns to our fields: ``columns`` maps field -> column, e.g. {prompt: instruction}."""
    if not columns:
        return obj
    obj = dict(obj)
    for fld, col in columns.items():
        if fld not in MAPPABLE:
            raise UserError(f"data.task.columns: unknown field '{fld}'{suggest(fld, list(MAPPABLE))}")
        if col not in obj:
            raise UserError(f"{where}: no column '{col}' (data.task.columns.{fld}; columns: {', '.join(sorted(obj))})")
    for fld, col in columns.items():
        if fld != col:
            obj[fld] = obj.pop(col)
    return obj


def _check_unique(rows: list[Row], wheres: list[str]) -> None:
    first: dict[str, str] = {}
    for row, where in zip(rows, wheres, strict=True):
        if row.row_id in first:
            raise UserError(f"{where}: duplicate row_id '{row.row_id}' (first at {first[row.row_id]})")
        first[row.row_id] = where


def load_jsonl_rows(path: str | Path, source: str | None = None, columns: dict[str, str] | None = None) -> list[Row]:
    """Rows of a JSONL file (``.gz``/``.xz`` too). Missing ``row_id`` -> ``<stem>-<line>``; ids must be unique."""
    p = _exists(path)
    stem = _stem(p)
    rows, wheres = [], []
    for lineno, obj in iter_jsonl_numbered(p):
        where = f"{p}:{lineno}"
        row = row_from_obj(remap(obj, columns, where), f"{stem}-{lineno}", where)
        if source and row.source is None:
            row.source = source
        rows.append(row)
        wheres.append(where)
    _check_unique(rows, wheres)
    return rows


def load_rows(path: str | Path, source: str | None = None, *, columns: dict[str, str] | None = None,
              split: str | None = None, subset: str | None = None) -> list[Row]:
    """Rows from our JSONL, a JSON list of objects, a CSV with a prompt-like column, a local dataset folder
    (``save_to_disk``, or parquet / json / csv files), or a ``datasets`` name from the local HF cache.

    ``columns`` maps our fields to the data's columns (``{prompt: instruction, response: output}``);
    ``split`` and ``subset`` (the dataset's config name) apply to dataset folders and names.
    """
    p = Path(path)
    if not p.exists() and is_hub_name(str(path)):
        return load_hf_dataset(str(path), split=split, columns=columns, subset=subset)
    p = _exists(path)
    name = p.name.lower()
    if p.is_dir():
        return load_hf_dataset(p, split=split, columns=columns, subset=subset)
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.xz")):
        return load_jsonl_rows(p, source, columns)
    if name.endswith(".json"):
        data = _read_json(p)
        if not isinstance(data, list):
            raise UserError(f"{p}: expected a JSON list of row objects")
        rows = [row_from_obj(remap(o if isinstance(o, dict) else {}, columns, f"{p}: item {i}"), f"{_stem(p)}-{i}",
                             f"{p}: item {i}") for i, o in enumerate(data)]
        _check_unique(rows, [f"{p}: item {i}" for i in range(len(rows))])
        return rows
    if name.endswith((".csv", ".tsv")):
        return _csv_rows(p, source, columns)
    if name.endswith((".parquet", ".arrow")):
        return load_hf_dataset(p, split=split, columns=columns)
    raise UserError(f"{p}: unknown row file type (use .jsonl, .json, .csv, .tsv, .parquet, a dataset folder "
                    "or a datasets name)")


def is_hub_name(name: str) -> bool:
    """``name`` or ``org/name`` as the Hub spells repository ids (no path separators beyond one slash)."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name)) and not name.endswith(
        (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".arrow", ".gz", ".xz"))


def _read_json(p: Path) -> Any:
    return read_json(p)


def _json_list(path: str | Path, what: str) -> tuple[Path, list[Any]]:
    """An existing JSON file holding a list (``what`` names it in the error)."""
    p = _exists(path)
    data = _read_json(p)
    if not isinstance(data, list):
        raise UserError(f"{p}: {what} file must be a JSON list")
    return p, data


def _csv_rows(p: Path, source: str | None, columns: dict[str, str] | None = None) -> list[Row]:
    delim = "\t" if p.suffix == ".tsv" else ","
    rows, wheres = [], []
    with _open_text(p) as fh:
        reader = csv.DictReader(fh, delimiter=delim)
        cols = reader.fieldnames or []
        if columns:
            cols = list(remap(dict.fromkeys(cols, ""), columns, f"{p}:1"))
        if not any(c in cols for c in _PROMPT_KEYS + ("goal",)):
            raise UserError(f"{p}:1: no prompt column (want one of prompt, instruction, question, goal; got "
                            f"{', '.join(cols) or 'none'})")
        for rec in reader:
            line = reader.line_num
            obj: dict[str, Any] = {k: v for k, v in remap(rec, columns, f"{p}:{line}").items()
                                   if k is not None and v not in (None, "")}
            if "prompt" not in obj and "goal" in obj:
                obj["prompt"] = obj.pop("goal")
            if "response" not in obj and "target" in obj:
                obj["response"] = obj.pop("target")
            if isinstance(obj.get("harmful"), str):
                h = obj["harmful"].strip().lower()
                obj["harmful"] = {"true": True, "1": True, "false": False, "0": False}.get(h, obj["harmful"])
            where = f"{p}:{line}"
            row = row_from_obj(obj, f"{_stem(p)}-{line}", where)
            if source and row.source is None:
                row.source = source
            rows.append(row)
            wheres.append(where)
    _check_unique(rows, wheres)
    return rows


def load_hf_dataset(path: str | Path, split: str | None = None, prompt_key: str = "prompt",
                    response_key: str = "response", *, columns: dict[str, str] | None = None,
                    subset: str | None = None) -> list[Row]:
    """Rows through ``datasets``: a ``save_to_disk`` folder, a folder of data files (parquet / json / jsonl /
    csv, split by file name as ``load_dataset(folder)`` does), one data file, or a dataset name (``org/name``)
    found in the local HF cache (offline: nothing is downloaded).

    ``split`` picks one split (default: ``train`` if present, else the only one); ``subset`` is the
    dataset's config name. ``columns`` maps our fields to columns (``prompt_key``/``response_key`` are the
    older spelling of ``columns={prompt: ..., response: ...}``). Other Row fields are kept, the rest go to
    ``meta``; rows read the chat and Alpaca formats as :func:`row_from_obj` does. Rows without ``row_id``
    get ``<name>-<index>``.
    """
    import datasets

    columns = dict(columns or {})
    if prompt_key != "prompt":
        columns.setdefault("prompt", prompt_key)
    if response_key != "response":
        columns.setdefault("response", response_key)
    ds, label = _open_dataset(path, split, subset)
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        pick = split or ("train" if "train" in ds else (names[0] if len(names) == 1 else None))
        if pick not in ds:
            raise UserError(f"{label}: choose a split{suggest(str(split), names)}")
        ds = ds[pick]
    rows, wheres = [], []
    stem = _stem(Path(str(path)))
    for i, rec in enumerate(ds):
        where = f"{label}: row {i}"
        rows.append(row_from_obj(remap(dict(rec), columns, where), f"{stem}-{i}", where))
        wheres.append(where)
    _check_unique(rows, wheres)
    return rows


def _open_dataset(path: str | Path, split: str | None, subset: str | None) -> tuple[Any, str]:
    """(Dataset or DatasetDict, a label for errors) for a folder, a file or a cached dataset name."""
    import datasets

    p = Path(str(path))
    kinds = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
    try:
        if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists()):
            return datasets.load_from_disk(str(p)), f"{p}"
        if p.is_dir():
            with _quiet_datasets():  # its own log line would make the one-line error two
                return datasets.load_dataset(str(p), subset), f"{p}"
        if p.exists():
            if p.suffix not in kinds:
                raise UserError(f"{p}: unsupported file type for datasets (json, jsonl, csv, parquet, arrow)")
            if kinds[p.suffix] == "json" or kinds[p.suffix] == "csv":
                read_text(p)  # not UTF-8 -> one clear line
            with _quiet_datasets():
                return datasets.load_dataset(kinds[p.suffix], data_files=str(p)), f"{p}"
        snap = from_hf_cache(str(path), repo_type="dataset")
        if snap is None:
            raise UserError(f"dataset '{path}': not a file or folder, nor in the local HF cache ({hf_cache_dir()}; "
                            f"download it once with `hf download --repo-type dataset {path}` where there is network)")
        return datasets.load_dataset(str(snap), subset), f"{path}"
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets / pyarrow raise many types for a malformed file
        raise UserError(f"{path}: cannot read as a dataset ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None


# ============================================================================ the real files in ../shared/data


def require_data_file(folder: str | None, name: str) -> Path:
    """``<data dir>/<name>``; UserError naming the fix when the folder or the file is missing."""

    if folder and not Path(folder).is_dir():
        # data_dir() would silently fall back to another folder; a folder the user named must exist
        raise UserError(f"data.data_dir={folder} does not exist")
    root = data_dir(folder)
    if root is None:
        raise UserError(f"real data folder not found (needed for {name}): set data.data_dir=DIR or "
                        "SAFESELECT_DATA_DIR, or place it at ../shared/data")
    p = root / name
    if not p.exists():
        raise UserError(f"data file not found: {p}")
    return p


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def split_dialogue(text: str) -> list[tuple[str, str]]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> [("Human", "a"), ("Assistant", "b")]."""
    parts = _HH_TURN.split(text if text.startswith("\n\n") else "\n\n" + text)
    # re.split with one group gives [before, role, text, role, text, ...]
    return [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]


def split_last_reply(text: str) -> tuple[str, str] | None:
    """HH-RLHF dialogue -> (history up to the last assistant turn, verbatim; last assistant reply), or None
    without an assistant turn. Unlike :func:`split_dialogue` the history is kept as one text (the reward
    model reads it as the prompt)."""
    k = text.rfind("\n\nAssistant:")
    if k < 0:
        return None
    prompt = text[:k].strip()
    reply = text[k + len("\n\nAssistant:"):].strip()
    if prompt.startswith("Human:"):
        prompt = prompt[len("Human:"):].strip()
    return prompt, reply


def _last_exchange(text: str, where: str) -> tuple[str, str]:
    turns = split_dialogue(text)
    human = [t for role, t in turns if role == "Human"]
    if not human or turns[-1][0] != "Assistant":
        raise UserError(f"{where}: dialogue must end with an Assistant turn after a Human turn")
    return human[-1], turns[-1][1]


def load_hh(path: str | Path, which: str = "chosen", limit: int | None = None,
            single_turn: bool = False) -> list[Row]:
    """HH-RLHF: the last human turn and the last assistant turn of ``chosen`` or ``rejected``.

    ``single_turn`` keeps only one-exchange dialogues (prompts that need no earlier turn).

    ``chosen`` rows are safe references (harmful False). ``rejected`` rows are
    only *less* harmless than the chosen reply, so their harmful=True is a weak
    label (``meta.weak_label``); use them as harmful-ish data, not as ground truth.
    """
    if which not in ("chosen", "rejected"):
        raise UserError(f"HH-RLHF side must be 'chosen' or 'rejected', got {which!r}")
    p = _exists(path)
    rows = []
    for lineno, obj in iter_jsonl_numbered(p):
        where = f"{p}:{lineno}"
        if not isinstance(obj.get(which), str):
            raise UserError(f"{where}: HH-RLHF row needs a string '{which}'")
        if single_turn and len(split_dialogue(obj[which])) != 2:
            continue
        prompt, reply = _last_exchange(obj[which], where)
        meta = {"weak_label": True} if which == "rejected" else {}
        rows.append(Row(row_id=f"hh-{which}-{lineno}", prompt=prompt, response=reply, harmful=which == "rejected",
                        task="hh", source=f"hh-{which}", meta=meta))
        if limit is not None and len(rows) >= limit:
            break
    return rows


def load_advbench(path: str | Path) -> list[Row]:
    """AdvBench harmful behaviours: goal -> target (an affirmative opening only), harmful True."""
    p = _exists(path)
    rows = []
    with _open_text(p) as fh:
        reader = csv.DictReader(fh)
        missing = {"goal", "target"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{p}:1: AdvBench CSV needs columns goal,target (missing {', '.join(sorted(missing))})")
        for i, rec in enumerate(reader):
            goal = (rec.get("goal") or "").strip()
            if not goal:
                raise UserError(f"{p}:{reader.line_num}: empty goal")
            rows.append(Row(row_id=f"advbench-{i:03d}", prompt=goal, response=(rec.get("target") or "").strip(),
                            harmful=True, category="advbench", source="advbench"))
    return rows


def load_safeinstr(path: str | Path) -> list[Row]:
    """SafeInstr safety demonstrations ``{instruction, input, output}`` -> safe rows (harmful False)."""
    p, data = _json_list(path, "SafeInstr")
    rows = []
    for i, d in enumerate(data):
        if not isinstance(d, dict) or not isinstance(d.get("instruction"), str) or not isinstance(d.get("output"), str):
            raise UserError(f"{p}: item {i} needs string 'instruction' and 'output'")
        prompt = alpaca_prompt(d["instruction"], d.get("input"), f"{p}: item {i}")
        rows.append(Row(row_id=f"safeinstr-{i:04d}", prompt=prompt, response=d["output"].strip(), harmful=False,
                        task="safety_ref", source="safeinstr"))
    return rows


_GSM_CALC = re.compile(r"<<[^>]*>>")


def gsm8k_final(answer: str) -> str:
    """The final number after ``####``, without thousands separators: ``"... #### 1,200"`` -> ``"1200"``."""
    if "####" not in answer:
        raise ValueError("no '####' in GSM8K answer")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def load_gsm8k(path: str | Path) -> list[Row]:
    """GSM8K: question -> worked solution ending "The answer is N." (calculator marks removed); answer N."""
    p = _exists(path)
    rows = []
    for lineno, obj in iter_jsonl_numbered(p):
        where = f"{p}:{lineno}"
        q, a = obj.get("question"), obj.get("answer")
        if not isinstance(q, str) or not isinstance(a, str):
            raise UserError(f"{where}: GSM8K row needs string 'question' and 'answer'")
        try:
            final = gsm8k_final(a)
        except ValueError:
            raise UserError(f"{where}: GSM8K answer has no '#### <number>'") from None
        work = _GSM_CALC.sub("", a.rsplit("####", 1)[0]).strip()
        rows.append(Row(row_id=f"{_stem(p)}-{lineno}", prompt=q.strip(),
                        response=f"{work}\nThe answer is {final}.", harmful=False, answer=final, task="gsm8k",
                        source="gsm8k"))
    return rows


SST2_INSTRUCTION = "Analyze the sentiment of the input, and respond only positive or negative."


def load_sst2(path: str | Path, instruction: str = SST2_INSTRUCTION) -> list[Row]:
    """SST-2 TSV (``label<TAB>sentence`` or ``label<TAB>content``): instruction + sentence -> label word.

    The prompt follows the harmful fine-tuning literature (Vaccine / Lisa / Booster): an instruction to
    answer only positive or negative, then the input; the reply and the answer are the label word.
    """
    p = _exists(path)
    rows = []
    with _open_text(p) as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header or len(header) < 2 or header[0].strip() != "label":
            raise UserError(f"{p}:1: SST-2 TSV needs a header 'label<TAB>sentence' (or content)")
        for lineno, rec in enumerate(reader, 2):
            if not rec or not "".join(rec).strip():
                continue
            if len(rec) < 2 or rec[0].strip() not in ("0", "1"):
                raise UserError(f"{p}:{lineno}: expected '0|1<TAB>text'")
            label = "positive" if rec[0].strip() == "1" else "negative"
            text = "\t".join(rec[1:]).strip()
            rows.append(Row(row_id=f"{_stem(p)}-{lineno}", prompt=f"{instruction}\nInput: {text}", response=label,
                            harmful=False, answer=label, task="sst2", source="sst2", meta={"text": text}))
    return rows


def load_alpaca_prompts(path: str | Path) -> list[Row]:
    """Alpaca instructions (prompts only): ``{instruction, category}`` -> prompt rows, response empty."""
    p, data = _json_list(path, "Alpaca prompts")
    rows = []
    for i, d in enumerate(data):
        if not isinstance(d, dict) or not isinstance(d.get("instruction"), str):
            raise UserError(f"{p}: item {i} needs a string 'instruction'")
        meta = {"alpaca_category": d["category"]} if d.get("category") else {}
        rows.append(Row(row_id=f"alpaca-{i:05d}", prompt=d["instruction"].strip(), harmful=False, task="alpaca",
                        source="alpaca", meta=meta))
    return rows


# ============================================================================ published formats not shipped here

HEXPHI_CATEGORIES = {
    1: "illegal_activity", 2: "child_abuse", 3: "hate_harass_violence", 4: "malware", 5: "physical_harm",
    6: "economic_harm", 7: "fraud_deception", 8: "adult_content", 9: "political_campaigning",
    10: "privacy_violation", 11: "tailored_financial_advice",
}


def load_hexphi(path: str | Path) -> list[Row]:
    """HEx-PHI: a folder of ``category_<k>.csv`` files (or one file), one prompt per line, no header.

    The category comes from the file name (``category_4`` -> ``malware``; other names are used as is).
    Lines are read as CSV so quoted prompts may contain commas and line breaks.
    """
    p = _exists(path)
    files = sorted(p.glob("*.csv"), key=lambda f: _hexphi_key(f)) if p.is_dir() else [p]
    if not files:
        raise UserError(f"{p}: no HEx-PHI category CSV files found")
    rows = []
    for f in files:
        m = re.fullmatch(r"category_(\d+)", f.stem)
        cat = HEXPHI_CATEGORIES.get(int(m.group(1)), f.stem) if m else f.stem
        with _open_text(f) as fh:
            reader = csv.reader(fh)
            for rec in reader:
                line = reader.line_num
                text = ",".join(rec).strip()
                if not text:
                    continue
                rows.append(Row(row_id=f"hexphi-{f.stem}-{line}", prompt=text, harmful=True, category=cat,
                                task="hexphi", source="hexphi"))
    return rows


def _hexphi_key(f: Path) -> tuple[int, str]:
    m = re.fullmatch(r"category_(\d+)", f.stem)
    return (int(m.group(1)) if m else 10**6, f.stem)


def load_beavertails(path: str | Path) -> list[Row]:
    """BeaverTails JSONL (``.gz``/``.xz`` too, or a JSON list): prompt, response, ``is_safe``, ``category`` map.

    harmful = not is_safe; ``category`` = the true categories joined by ",", in file order.
    """
    p = _exists(path)
    if p.name.endswith(".json"):
        data = _read_json(p)
        if not isinstance(data, list):
            raise UserError(f"{p}: expected a JSON list of BeaverTails rows")
        items = [(i, d if isinstance(d, dict) else {}) for i, d in enumerate(data)]
        where_fmt = f"{p}: item {{}}"
    else:
        items = list(iter_jsonl_numbered(p))
        where_fmt = f"{p}:{{}}"
    rows = []
    for n, obj in items:
        where = where_fmt.format(n)
        prompt, resp, safe = obj.get("prompt"), obj.get("response"), obj.get("is_safe")
        if not isinstance(prompt, str) or not isinstance(resp, str) or not isinstance(safe, bool):
            raise UserError(f"{where}: BeaverTails row needs string prompt/response and boolean is_safe")
        cats = obj.get("category") or {}
        if not isinstance(cats, dict):
            raise UserError(f"{where}: 'category' must be an object of name -> bool")
        flagged = [k for k, v in cats.items() if v]
        rows.append(Row(row_id=f"beavertails-{n}", prompt=prompt, response=resp, harmful=not safe,
                        category=",".join(flagged) or None, task="beavertails", source="beavertails"))
    return rows


def load_xstest(path: str | Path) -> list[Row]:
    """XSTest CSV (``id, prompt, type, label, focus, note``): label ``unsafe`` -> harmful True.

    Safe prompts are over-refusal probes; unsafe ones (the ``contrast_*`` types) are harmful prompts.
    Files without a ``label`` column (v1) take it from the type: ``contrast_*`` is unsafe.
    """
    p = _exists(path)
    rows = []
    with _open_text(p) as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if "prompt" not in cols or "type" not in cols:
            raise UserError(f"{p}:1: XSTest CSV needs columns prompt and type (got {', '.join(cols) or 'none'})")
        for rec in reader:
            line = reader.line_num
            prompt = (rec.get("prompt") or "").strip()
            typ = (rec.get("type") or "").strip()
            if not prompt:
                raise UserError(f"{p}:{line}: empty prompt")
            label = (rec.get("label") or "").strip().lower() or ("unsafe" if typ.startswith("contrast") else "safe")
            if label not in ("safe", "unsafe"):
                raise UserError(f"{p}:{line}: XSTest label must be safe or unsafe, got {label!r}")
            rid = (rec.get("id") or rec.get("id_v2") or "").strip() or str(line)
            meta = {k: rec[k] for k in ("focus", "note") if rec.get(k)}
            rows.append(Row(row_id=f"xstest-{rid}", prompt=prompt, harmful=label == "unsafe", category=typ or None,
                            task="xstest", source="xstest", meta=meta))
    _check_unique(rows, [f"{p}: {r.row_id}" for r in rows])
    return rows


# ============================================================================ the `jsonl` data builder


def eval_sets(path: str | None, key: str) -> dict[str, list[Row]]:
    """One eval set named by the file stem, or several named by the rows' ``task`` when they carry one."""
    if not path:
        return {}
    rows = load_rows(path)
    if key == "eval_task" and any(r.task for r in rows):
        out: dict[str, list[Row]] = {}
        for r in rows:
            out.setdefault(r.task or _stem(Path(path)), []).append(r)
        missing = [r.row_id for r in rows if r.answer is None]
        if missing:
            raise UserError(f"{path}: eval task rows need an 'answer' (row {missing[0]} has none)")
        return out
    return {_stem(Path(path)): rows}
