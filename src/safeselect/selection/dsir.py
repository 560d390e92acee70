"""`dsir`: data selection with importance resampling (Xie et al. 2023) on hashed n-gram features.

The method in four verbs (as the official ``data-selection`` package): **featurize**
every text into hashed unigram + bigram counts, **fit** a bag-of-n-gram model to a
target set (default: the safety references) and to the raw task set, **weigh** each
task row by its log importance weight ``features . (log p_target - log p_raw)``, and
**resample**: keep the top rows by weight plus Gumbel noise (= sampling without
replacement proportional to ``exp(log weight)``), or by weight alone, at the shared
budget (rows or response tokens).

Features follow the official package's definition: lower-cased text, word-punct
tokens (``\\w+|[^\\w\\s]+``, Python's ``re``), n-grams joined by one space,
bucket = ``sha256(gram) mod buckets``. They are identical except on rare
characters such as "³", which nltk >= 3.10 (the ``regex`` engine) does not count
as a word character. The hash is a fixed function of the text, never Python's
salted ``hash()``, so the result is the same in every process. What differs is
how the work is done: instead of hashing every token occurrence in a Python
loop, texts are tokenised in chunks, each distinct word is hashed once (a
vocabulary shared by all chunks), each distinct bigram once (found with
``np.unique`` on integer codes of word ids and cached across chunks as sorted
arrays), and the per-row sums are numpy gathers and ``reduceat``. The official
package also drops rows shorter than 100 words by default (on short SFT rows it
then has almost nothing to select from); here nothing is dropped unless
``selection.dsir.min_tokens`` asks for it, and then the number dropped is
reported. The smoothing differs on purpose: add-k (``selection.dsir.smoothing``)
instead of the official ``log(p + 1e-8)``, which all but excludes a row with one
n-gram the target never shows; the benchmark reports both.

Saved state (``save``/``load``) is two ``.npy`` arrays plus a JSON of parameters:
no pickle.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np

from safeselect.core.io import read_json, write_json
from safeselect.core.rows import Row
from safeselect.errors import UserError
from safeselect.selection.base import Selection, SelectionContext, budget_mask
from safeselect.selection.safeinstr import load_pool

# The word-punct tokenisation of the official package (nltk's WordPunctTokenizer is this regex).
_TOKEN = re.compile(r"\w+|[^\w\s]+")
_CHUNK_ROWS = 1024  # texts tokenised at once: bounds the Python string objects alive at a time


def tokenize(text: str) -> list[str]:
    """Lower-cased word-punct tokens: runs of word characters, and runs of other non-space characters."""
    return _TOKEN.findall(text.lower())


def row_text(row: Row) -> str:
    """What DSIR reads of a row: prompt and response (both carry the row's topic)."""
    return f"{row.prompt}\n{row.response}" if row.response else row.prompt


@dataclass
class HashedNgrams:
    """Hashed n-gram occurrences of N texts in CSR layout.

    Row ``i``'s bucket ids are ``indices[indptr[i]:indptr[i + 1]]`` (its unigrams, then
    its bigrams, ...; a bucket repeats once per occurrence). ``n_words[i]`` is the
    number of word-punct tokens of text ``i``.
    """

    indices: np.ndarray
    indptr: np.ndarray
    n_words: np.ndarray
    buckets: int
    ngrams: int

    def __len__(self) -> int:
        return len(self.n_words)

    def counts(self) -> np.ndarray:
        """Total count per bucket over all rows (the bag-of-n-grams of the whole set)."""
        return np.bincount(self.indices, minlength=self.buckets).astype(np.int64)

    def row_dot(self, v: np.ndarray, block_rows: int = 8192) -> np.ndarray:
        """``features @ v`` for every row, without building the count matrix."""
        v = np.asarray(v, dtype=np.float64)
        out = np.zeros(len(self), dtype=np.float64)
        for a in range(0, len(self), block_rows):
            b = min(a + block_rows, len(self))
            lo, hi = int(self.indptr[a]), int(self.indptr[b])
            if hi == lo:
                continue
            starts = self.indptr[a:b] - lo
            nonempty = self.indptr[a + 1:b + 1] > self.indptr[a:b]
            # reduceat over the non-empty rows only: the segment of each then ends where the next
            # non-empty row starts, which is exactly its own end (empty rows in between add nothing).
            out[a:b][nonempty] = np.add.reduceat(v[self.indices[lo:hi]], starts[nonempty])
        return out

    def matrix(self) -> Any:
        """The ``N x buckets`` count matrix (``scipy.sparse.csr_matrix``, duplicates summed)."""
        from scipy import sparse

        m = sparse.csr_matrix((np.ones(len(self.indices), dtype=np.int64), self.indices, self.indptr),
                              shape=(len(self), self.buckets))
        m.sum_duplicates()
        return m


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _hash_buckets(grams: Iterable[bytes], count: int, buckets: int, dtype: type) -> np.ndarray:
    """``sha256(gram) mod buckets`` for UTF-8 encoded grams (the hot loop: local names, no per-item call)."""
    sha, from_bytes = hashlib.sha256, int.from_bytes
    return np.fromiter((from_bytes(sha(g).digest(), "big") % buckets for g in grams), dtype=dtype, count=count)


class _CodeCache:
    """Buckets of the bigrams seen in earlier chunks, as two sorted arrays (10 bytes a bigram, no Python objects)."""

    def __init__(self, dtype: type) -> None:
        self.codes = np.zeros(0, dtype=np.int64)
        self.buckets = np.zeros(0, dtype=dtype)

    def lookup(self, uniq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bucket or 0, found, insertion position) for the sorted unique ``uniq`` codes."""
        pos = np.searchsorted(self.codes, uniq)
        out = np.zeros(len(uniq), dtype=self.buckets.dtype)
        if len(self.codes) == 0:
            return out, np.zeros(len(uniq), dtype=bool), pos
        pos_c = np.minimum(pos, len(self.codes) - 1)
        found = self.codes[pos_c] == uniq
        out[found] = self.buckets[pos_c[found]]
        return out, found, pos

    def add(self, pos: np.ndarray, codes: np.ndarray, buckets: np.ndarray) -> None:
        """Insert sorted new ``codes`` at their insertion positions (keeps both arrays sorted by code)."""
        self.codes = np.insert(self.codes, pos, codes)
        self.buckets = np.insert(self.buckets, pos, buckets)


def featurize(texts: Iterable[str], buckets: int = 10000, ngrams: int = 2,
              chunk_rows: int = _CHUNK_ROWS) -> HashedNgrams:
    """Hashed 1..``ngrams``-gram counts of every text (an iterable: files can be streamed)."""
    if buckets < 1:
        raise UserError(f"selection.dsir.buckets={buckets} must be >= 1")
    if ngrams < 1:
        raise UserError(f"selection.dsir.ngrams={ngrams} must be >= 1")
    dtype = np.uint16 if buckets <= 1 << 16 else np.uint32 if buckets <= 1 << 32 else np.uint64
    vocab: dict[str, int] = {}  # word -> id, shared by all chunks
    words: list[bytes] = []  # id -> UTF-8 word, to build n-gram strings from ids
    word_bucket = np.zeros(0, dtype=dtype)
    bigrams = _CodeCache(dtype)
    parts: list[np.ndarray] = []
    row_sizes: list[np.ndarray] = []
    words_per_row: list[np.ndarray] = []
    for chunk in _batched(texts, chunk_rows):
        toks = [tokenize(t) for t in chunk]
        lens = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
        flat = list(chain.from_iterable(toks))
        del toks
        new = [w for w in dict.fromkeys(flat) if w not in vocab]  # first-seen order: ids never depend on hash()
        if new:  # hash each new word once
            vocab.update(zip(new, range(len(vocab), len(vocab) + len(new)), strict=True))
            enc = [w.encode("utf-8") for w in new]
            words += enc
            word_bucket = np.concatenate([word_bucket, _hash_buckets(enc, len(enc), buckets, dtype)])
        ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=len(flat))
        del flat
        # Output layout per row: its unigrams, then its bigrams, ... (CSR rows).
        per_order = [np.maximum(lens - k + 1, 0) for k in range(1, ngrams + 1)]
        sizes = np.sum(per_order, axis=0)
        out_ptr = np.concatenate([[0], np.cumsum(sizes)])
        out = np.empty(int(out_ptr[-1]), dtype=dtype)
        row_start = np.concatenate([[0], np.cumsum(lens)])
        row_of = np.repeat(np.arange(len(chunk)), lens)
        local = np.arange(len(ids)) - row_start[row_of]  # position of each token inside its row
        out[out_ptr[row_of] + local] = word_bucket[ids]
        offset = lens.copy()  # where order k starts inside each output row
        prev = ids  # id of the (k-1)-gram starting at each position (word ids for k = 2, chunk-local above)
        for k in range(2, ngrams + 1):
            pos = np.flatnonzero(local <= lens[row_of] - k)  # positions that start a k-gram
            if len(pos) == 0:
                break
            # Integer code of each k-gram: bigrams from two word ids (stable across chunks, so cached);
            # longer n-grams from the chunk-local id of their first k-1 words.
            mult = 1 << 32 if k == 2 else len(vocab)
            codes = prev[pos] * mult + ids[pos + k - 1]
            uniq, first, inv = np.unique(codes, return_index=True, return_inverse=True)
            inv = inv.ravel()
            starts = pos[first]
            if k == 2:
                grams, found, where = bigrams.lookup(uniq)
                miss = np.flatnonzero(~found)
                a, b = ids[starts[miss]].tolist(), ids[starts[miss] + 1].tolist()
                hashed = _hash_buckets((words[x] + b" " + words[y] for x, y in zip(a, b, strict=True)), len(miss),
                                       buckets, dtype)
                grams[miss] = hashed
                bigrams.add(where[miss], uniq[miss], hashed)
            else:
                grams = _hash_buckets((b" ".join(words[w] for w in ids[s:s + k].tolist()) for s in starts.tolist()),
                                      len(uniq), buckets, dtype)
            r = row_of[pos]
            out[out_ptr[r] + offset[r] + local[pos]] = grams[inv]
            offset = offset + per_order[k - 1]
            nxt = np.full(len(ids), -1, dtype=np.int64)
            nxt[pos] = inv
            prev = nxt
        parts.append(out)
        row_sizes.append(sizes)
        words_per_row.append(lens)
    sizes_all = np.concatenate(row_sizes) if row_sizes else np.zeros(0, dtype=np.int64)
    return HashedNgrams(
        indices=np.concatenate(parts) if parts else np.zeros(0, dtype=dtype),
        indptr=np.concatenate([[0], np.cumsum(sizes_all)]).astype(np.int64),
        n_words=np.concatenate(words_per_row) if words_per_row else np.zeros(0, dtype=np.int64),
        buckets=buckets, ngrams=ngrams,
    )


def fit_log_probs(counts: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """Add-k smoothed bag-of-n-grams model: ``log((c_b + k) / (sum(c) + k * buckets))``."""
    c = np.asarray(counts, dtype=np.float64)
    if smoothing <= 0:
        raise UserError(f"selection.dsir.smoothing={smoothing} must be > 0 (an empty bucket would get log 0)")
    return np.log(c + smoothing) - np.log(c.sum() + smoothing * len(c))


@dataclass
class DsirModel:
    """The two fitted bag-of-n-gram models; ``log_ratio`` is what every feature count is multiplied by."""

    log_p_target: np.ndarray
    log_p_raw: np.ndarray
    buckets: int
    ngrams: int
    smoothing: float

    @classmethod
    def fit(cls, target: HashedNgrams, raw: HashedNgrams, smoothing: float = 1.0) -> DsirModel:
        if (target.buckets, target.ngrams) != (raw.buckets, raw.ngrams):
            raise ValueError("target and raw features must use the same buckets and n-gram order")
        return cls(fit_log_probs(target.counts(), smoothing), fit_log_probs(raw.counts(), smoothing),
                   raw.buckets, raw.ngrams, smoothing)

    @property
    def log_ratio(self) -> np.ndarray:
        return self.log_p_target - self.log_p_raw

    def weigh(self, feats: HashedNgrams) -> np.ndarray:
        """Log importance weight of every row: ``features . (log p_target - log p_raw)``."""
        if feats.buckets != self.buckets:
            raise ValueError(f"features have {feats.buckets} buckets, the model {self.buckets}")
        return feats.row_dot(self.log_ratio)

    def save(self, out_dir: str | Path, **arrays: np.ndarray) -> None:
        """``log_p_target.npy``, ``log_p_raw.npy`` (+ any extra arrays) and ``params.json``; written atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, arr in {"log_p_target": self.log_p_target, "log_p_raw": self.log_p_raw, **arrays}.items():
            _save_npy(out / f"{name}.npy", np.asarray(arr))
        write_json(out / "params.json", {"method": "dsir", "buckets": self.buckets, "ngrams": self.ngrams,
                                         "smoothing": self.smoothing, "hash": "sha256(gram) mod buckets",
                                         "tokenizer": _TOKEN.pattern + " on lower-cased text"})

    @classmethod
    def load(cls, out_dir: str | Path) -> DsirModel:
        out = Path(out_dir)
        p = read_json(out / "params.json")
        return cls(np.load(out / "log_p_target.npy", allow_pickle=False), np.load(out / "log_p_raw.npy", allow_pickle=False),
                   int(p["buckets"]), int(p["ngrams"]), float(p["smoothing"]))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def resample_keys(log_weights: np.ndarray, sampling: str = "gumbel", seed: int = 0) -> np.ndarray:
    """Ranking keys: ``log w + Gumbel(0, 1)`` noise (seeded) or ``log w`` itself.

    Taking the top k of ``log w_i + G_i`` draws k rows without replacement, each
    step picking row i with probability ``w_i / sum of the remaining w`` (the
    Gumbel-top-k trick); ``topk`` is the deterministic limit.
    """
    lw = np.asarray(log_weights, dtype=np.float64)
    if sampling == "topk":
        return lw.copy()
    if sampling != "gumbel":
        raise UserError(f"unknown selection.dsir.sampling '{sampling}' (choose gumbel or topk)")
    return lw + np.random.default_rng(seed).gumbel(size=lw.shape)


def target_rows(target: str, ctx: SelectionContext) -> list[Row]:
    """The target set: ``safety_ref`` (the context's pool), ``safeinstr`` (the real file) or a JSON/JSONL path."""
    if target == "safety_ref":
        return list(ctx.safety_ref)

    return load_pool(target, ctx, key="selection.dsir.target")


def select(ctx: SelectionContext) -> Selection:
    sel = ctx.selection
    d = sel.dsir
    target = target_rows(d.target, ctx)
    if not target:
        raise UserError(f"selection.dsir.target='{d.target}' gives an empty target set")
    raw = featurize((row_text(r) for r in ctx.task), d.buckets, d.ngrams)
    tgt = featurize((row_text(r) for r in target), d.buckets, d.ngrams)
    model = DsirModel.fit(tgt, raw, d.smoothing)
    log_w = model.weigh(raw)
    keys = resample_keys(log_w, d.sampling, sel.seed)
    eligible = raw.n_words >= d.min_tokens
    kept = budget_mask(keys, sel.ratio, sel.budget, ctx.response_tokens, eligible=eligible)
    n = len(ctx.task)
    info: dict[str, Any] = {
        "method": "dsir", "sampling": d.sampling, "target": d.target, "n_target": len(target),
        "buckets": d.buckets, "ngrams": d.ngrams, "smoothing": d.smoothing,
        "min_tokens": d.min_tokens, "dropped_short": int((~eligible).sum()),
        "log_weight_mean": float(log_w.mean()) if n else 0.0,
    }
    if sel.budget == "rows" and int(kept.sum()) < int(round(sel.ratio * n)):
        info["budget_shortfall_rows"] = int(round(sel.ratio * n)) - int(kept.sum())
    if ctx.out_dir is not None:
        model.save(Path(ctx.out_dir) / "dsir", log_weights=log_w, keys=keys)
        write_json(Path(ctx.out_dir) / "dsir" / "row_ids.json", [r.row_id for r in ctx.task])
    # The score is the ranking key actually used (log weight + Gumbel noise under gumbel sampling),
    # so "kept" always follows "score"; the plain log weights are saved beside it.
    return Selection([r.row_id for r in ctx.task], keys.tolist(), kept.tolist(), [1.0] * n, info=info)
