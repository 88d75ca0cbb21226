"""Prompt-template mining: near-duplicate prompt *skeletons* across a whole log.

A campaign wraps varying payloads in a fixed (often lightly paraphrased) wrapper, e.g.
``"Solve step by step and show your reasoning: <problem>"``. Here a prompt's skeleton is its
normalised text (lower-cased; numbers, code blocks, quoted strings, URLs and e-mails masked),
and two prompts share a template when the MinHash Jaccard similarity of the word 1+2-gram
shingles of their first ``head`` tokens, or of their last ``tail`` tokens, reaches
``threshold``. Prompts of at most ``head + tail`` tokens are compared as a whole (both sides
use the whole text), so short unrelated prompts stay apart. Identical skeletons (benchmark
replay) are collapsed exactly first; MinHash + banded LSH (``rensa``) then finds candidate
pairs among the distinct skeletons, candidates are verified on their signatures and grouped
with connected components. Nothing is ever compared all-pairs.
"""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import rensa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["normalize_prompts", "mine_templates", "account_template_stats"]

_CODE = r"(?s)```.*?(```|$)"
_URL = r"(?i)\b(?:https?://|ftp://|www\.)\S+"
_EMAIL = r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"
_DQUOTE = r"\"[^\"\n]{0,200}\"|“[^”\n]{0,200}”|«[^»\n]{0,200}»"
# single quotes only when opened after a boundary, so apostrophes ("don't") survive
_SQUOTE = r"(^|[\s(\[{:=,])'[^'\n]{1,200}'"
_NUM = r"[-+]?(?:\d[\d,_]*\.?\d*(?:[eE][-+]?\d+)?|\.\d+)"
_TOKEN = r"<\w+>|\w+"
# whitespace runs other than a lone space: replaced by " ", the same text as replacing every
# run (``\s+``), with a fraction of the replacements (most runs are one space)
WS_RUNS = r"\x20\s+|[\s--\x20]\s*"

_TAIL_SALT = np.uint64(0x9E3779B97F4A7C15)


def normalize_prompts(s: pl.Series) -> pl.Series:
    """Lower-case and mask the variable parts of prompts (vectorised; nulls become "").

    Masks: fenced code blocks → ``<code>``, URLs → ``<url>``, e-mails → ``<email>``,
    quoted strings → ``<str>``, numbers → ``<num>``; whitespace runs collapse to one space.
    """
    e = pl.col("_s").fill_null("")
    e = (
        e.str.replace_all(_CODE, " <code> ")
        .str.replace_all(_URL, " <url> ")
        .str.replace_all(_EMAIL, " <email> ")
        .str.replace_all(_DQUOTE, " <str> ")
        .str.replace_all(_SQUOTE, "${1} <str> ")
        .str.to_lowercase()
        .str.replace_all(_NUM, " <num> ")
        .str.replace_all(WS_RUNS, " ")
        .str.strip_chars()
    )
    return pl.DataFrame({"_s": s.cast(pl.String)}).select(e)["_s"].alias(s.name)


def _bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands*rows == num_perm whose S-curve midpoint is nearest threshold,
    preferring a lower midpoint (candidates are verified afterwards, so recall is cheap)."""
    best = None
    for r in range(1, num_perm + 1):
        if num_perm % r:
            continue
        b = num_perm // r
        mid = (1.0 / b) ** (1.0 / r)
        key = (mid > threshold, abs(mid - threshold))
        if best is None or key < best[0]:
            best = (key, b, r)
    return best[1], best[2]


def _shingle_hashes(tokens: pl.Series, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 hashes of the unigram+bigram shingles of each token list, and row offsets."""
    n = len(tokens)
    ex = pl.DataFrame({"tok": tokens}).with_row_index("r").explode("tok", empty_as_null=True)
    ex = ex.with_columns(pl.col("tok").fill_null(""))
    # next token of the same row (a plain shift plus a row check: no window grouping)
    nxt = pl.when(pl.col("r").shift(-1) == pl.col("r")).then(pl.col("tok").shift(-1))
    sh = ex.select(
        "r",
        pl.col("tok").hash(seed).alias("u"),
        pl.when(nxt.is_not_null()).then(pl.col("tok") + " " + nxt).otherwise(None)
        .hash(seed + 1).alias("b"),
        nxt.is_not_null().alias("has_b"),
    )
    r = sh["r"].to_numpy()
    u = sh["u"].to_numpy()
    b = sh["b"].to_numpy()[sh["has_b"].to_numpy()]
    rb = r[sh["has_b"].to_numpy()]
    rows = np.concatenate([r, rb])
    hashes = np.concatenate([u, b])
    order = np.argsort(rows, kind="stable")
    hashes = np.ascontiguousarray(hashes[order], dtype=np.uint64)
    counts = np.bincount(rows, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(counts, out=offsets[1:])
    return hashes, offsets


def _digests(hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    n = len(offsets) - 1
    if n == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    m = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, num_perm, seed)
    rows = m.to_rows()
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.uint32,
                       count=n * num_perm).reshape(n, num_perm)


def _lsh_edges(sig: np.ndarray, bands: int, rows: int, threshold: float) -> np.ndarray:
    """Verified candidate edges (2, E) from banded LSH over signature matrix ``sig``."""
    n = sig.shape[0]
    if n < 2:
        return np.zeros((2, 0), dtype=np.int64)
    src, dst = [], []
    for band in range(bands):
        kk = sig[:, band * rows:(band + 1) * rows].astype(np.uint64)
        code = np.full(n, np.uint64(1469598103934665603))
        for j in range(rows):  # FNV-style mix of the band's values (wraps mod 2**64)
            code = (code ^ kk[:, j]) * np.uint64(1099511628211)
        order = np.argsort(code, kind="stable")
        cs = code[order]
        same = cs[1:] == cs[:-1]
        if not same.any():
            continue
        # star: link every bucket member to the bucket's first member (sorted by row)
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        first = np.repeat(order[starts], np.diff(np.concatenate([starts, [n]])))
        mask = first != order
        src.append(first[mask])
        dst.append(order[mask])
        # chain: consecutive members, so a failed star check can still connect
        src.append(order[:-1][same])
        dst.append(order[1:][same])
    if not src:
        return np.zeros((2, 0), dtype=np.int64)
    # distinct (src, dst) pairs via one int64 key (hash-based; the order of the verified
    # edges does not matter to the connected components)
    key = (pl.Series(np.concatenate(src).astype(np.int64) * n + np.concatenate(dst))
           .unique().to_numpy())
    e = np.stack([key // n, key % n])
    # verify on the full signatures (estimated Jaccard)
    est = np.empty(e.shape[1], dtype=np.float64)
    step = 1 << 16
    for i in range(0, e.shape[1], step):
        a, b = e[0, i:i + step], e[1, i:i + step]
        est[i:i + step] = (sig[a] == sig[b]).mean(axis=1)
    return e[:, est >= threshold]


_CHUNK = 200_000  # distinct prompts normalised and tokenised at a time


def _skeleton_keys(p: pl.Series, head: int, tail: int) -> pl.DataFrame:
    """Joined head / tail token strings (``h``, ``tl``) of the normalised prompts ``p``."""
    toks = pl.DataFrame({"t": normalize_prompts(p)}).select(
        pl.col("t").str.extract_all(_TOKEN).alias("t"))
    short = pl.col("t").list.len() <= head + tail
    return toks.select(
        pl.when(short).then(pl.col("t")).otherwise(pl.col("t").list.head(head))
        .list.join(" ").alias("h"),
        pl.when(short).then(pl.col("t")).otherwise(pl.col("t").list.tail(tail))
        .list.join(" ").alias("tl"),
    )


def mine_templates(
    df: pl.DataFrame,
    *,
    text_col: str = "prompt",
    num_perm: int = 64,
    threshold: float = 0.5,
    head: int = 8,
    tail: int = 8,
    seed: int = 0,
) -> pl.Series:
    """Template id (Int64) per row of ``df``; equal ids = near-duplicate prompt skeletons.

    The id is the smallest row index of a prompt in the template, so ids are stable for a
    given frame and seed. Null prompts are treated as empty text (one shared template).
    """
    if text_col not in df.columns:
        raise KeyError(f"column {text_col!r} not in frame")
    n = df.height
    if n == 0:
        return pl.Series("template_id", [], dtype=pl.Int64)
    # normalise and tokenise each distinct prompt once (replays, shared wrappers), in chunks
    # so that only the head/tail skeleton keys outlive a chunk (bounded memory)
    dist = (pl.DataFrame({"p": df[text_col].cast(pl.String).fill_null("")})
            .with_row_index("row").group_by("p").agg(pl.col("row")))
    key = pl.concat([_skeleton_keys(dist["p"].slice(i, _CHUNK), head, tail)
                     for i in range(0, dist.height, _CHUNK)])
    key = key.with_columns(pl.Series("row", dist["row"]))
    del dist
    # exact skeleton dedupe first (replays and verbatim templates cost nothing more);
    # skeletons ordered by their first row, so LSH sees them in row order
    uniq = (key.group_by(["h", "tl"])
            .agg(pl.col("row").flatten())
            .with_columns(pl.col("row").list.min().alias("rep")).sort("rep"))
    del key
    m = uniq.height
    rep = uniq["rep"].to_numpy()
    # tokens never contain spaces, so splitting the joined key gives the token list back
    rep_tf = uniq.select(
        [pl.when(pl.col(c) == "").then(pl.lit([], dtype=pl.List(pl.String)))
         .otherwise(pl.col(c).str.split(" ")).alias(c) for c in ("h", "tl")])
    bands, rows = _bands(num_perm, threshold)
    edges = []
    for col, salt in (("h", np.uint64(0)), ("tl", _TAIL_SALT)):
        hashes, offs = _shingle_hashes(rep_tf[col], seed)
        hashes ^= salt
        sig = _digests(hashes, offs, num_perm, seed)
        edges.append(_lsh_edges(sig, bands, rows, threshold))
    e = np.concatenate(edges, axis=1)
    g = coo_matrix((np.ones(e.shape[1], dtype=np.int8), (e[0], e[1])), shape=(m, m))
    _, comp = connected_components(g, directed=False)
    # id = smallest original row index in the component
    comp_min = np.full(comp.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(comp_min, comp, rep.astype(np.int64))
    tid_uniq = comp_min[comp]
    out = np.empty(n, dtype=np.int64)
    out[uniq["row"].explode().to_numpy()] = np.repeat(tid_uniq,
                                                      uniq["row"].list.len().to_numpy())
    return pl.Series("template_id", out, dtype=pl.Int64)


def account_template_stats(
    df: pl.DataFrame,
    *,
    template_col: str = "template_id",
    account_col: str = "account_id",
    k: int = 5,
    m: int = 1,
) -> pl.DataFrame:
    """Per-account template features from a frame with account and template-id columns.

    Columns: ``account_id``, ``n_prompts``, ``n_templates`` (distinct), ``template_reuse_share``
    (share of the account's prompts whose template occurs >= ``k`` times in the whole frame),
    ``top_template_share`` (share of its prompts in its most used template),
    ``cross_account_templates`` (its templates also used by >= ``m`` other accounts),
    ``template_ids`` (sorted distinct template ids, List(Int64), for cross-account linking).
    """
    t = df.select(pl.col(account_col).alias("account_id"),
                  pl.col(template_col).cast(pl.Int64).alias("tid"))
    per_t = t.group_by("tid").agg(pl.len().alias("t_count"),
                                  pl.col("account_id").n_unique().alias("t_accounts"))
    per_at = t.group_by("account_id", "tid").agg(pl.len().alias("c")).join(per_t, on="tid")
    out = per_at.group_by("account_id").agg(
        pl.col("c").sum().alias("n_prompts"),
        pl.len().cast(pl.Int64).alias("n_templates"),
        (pl.col("c").filter(pl.col("t_count") >= k).sum() / pl.col("c").sum())
        .alias("template_reuse_share"),
        (pl.col("c").max() / pl.col("c").sum()).alias("top_template_share"),
        (pl.col("t_accounts") - 1 >= m).sum().cast(pl.Int64).alias("cross_account_templates"),
        pl.col("tid").sort().alias("template_ids"),
    )
    return out.with_columns(pl.col("n_prompts").cast(pl.Int64)).sort("account_id")
