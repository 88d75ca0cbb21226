"""Task classifier for prompts: which capability a request is harvesting.

Classes are :data:`distillguard.schema.TASKS`. Two *wrapper* classes describe what is asked
of the model rather than the payload's domain:

* ``cot_elicitation`` — the prompt asks the model to spell out its reasoning ("show your
  reasoning step by step", "think aloud before answering") around any payload;
* ``sensitive_rewrite`` — the prompt asks to rewrite a politically sensitive question or text
  into a "safe"/neutral version.

They take precedence in the single label (a wrapped maths problem is ``cot_elicitation``).
Because the detector needs both the task mix and a per-prompt CoT signal,
:func:`predict_tasks` also returns ``task_base`` (best class among the payload classes, i.e.
excluding the two wrapper classes), ``cot_score`` and ``sensitive_score`` (the model's
probabilities of the wrapper classes, or 0/1 keyword rules without a model).

Features are stateless (hashed word 1-2-grams of the first/last characters plus hashed
UTF-8 byte 3-4-grams of the first characters); the model is linear. Tokenising and hashing
are done in numpy over the Arrow buffers of a whole batch (word tokens: those of the regex
``_WORD``, found on the bytes, each distinct character's class asked of polars' regex engine
once; FNV-1a for byte n-grams, tabulation hashing for words; fixed constants, so a model file
gives the same features on any platform and library version); there is no Python loop per
text.
The file format is an ``.npz`` with no pickled objects: ``coef`` (float16), ``intercept``
and a JSON ``header``.
"""

from __future__ import annotations

import datetime as _dt
import json
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp

from ..errors import InputError
from ..schema import TASKS
from .templates import WS_RUNS

__all__ = [
    "TaskClassifier", "load_default", "rule_based_task", "cot_score", "sensitive_score",
    "predict_tasks", "compose_texts", "FORMAT_VERSION", "DEFAULT_MODEL",
]

FORMAT_VERSION = 2  # 2: numpy byte/word hashing (1: sklearn HashingVectorizer)
DEFAULT_MODEL = "task_classifier-v1.npz"
WRAPPER_CLASSES = ("cot_elicitation", "sensitive_rewrite")

# --------------------------------------------------------------------------- rules
_COT = (
    r"(?i)step[- ]by[- ]step|one step at a time|show(?:ing)? (?:all )?(?:of )?(?:your|the) (?:work|working|reasoning|steps|"
    r"thought|thinking|derivation)|explain your (?:reasoning|thinking|thought process)|"
    r"chain[- ]of[- ]thought|think (?:carefully|it through|through|aloud|out loud)|"
    r"reason(?:ing)? (?:through|process|trace|steps)|walk me through your|"
    r"before (?:giving|stating|you give) (?:the|your) (?:final )?answer|"
    r"<think>|scratchpad|inner monologue|逐步|一步一步|推理步骤|推理过程|思考过程"
)
_SENSITIVE = (
    r"(?i)(?:rewrite|rephrase|reword|paraphrase|reformulate|transform|turn|convert|sanitiz|"
    r"neutraliz|soften|tone down).{0,80}(?:sensitive|political|politically|controversial|"
    r"taboo|censor|safe|neutral|harmless|inoffensive|non-controversial|compliant)|"
    r"(?:sensitive|political|controversial).{0,60}(?:into|to) (?:a )?(?:safe|neutral|harmless|"
    r"compliant|acceptable)"
)
_RULES: tuple[tuple[str, str], ...] = (
    ("grading", r"(?i)score rubric|\brubric\b|grade (?:the|this) (?:following )?(?:answer|response|essay)|"
                r"evaluate the (?:quality of the )?(?:response|answer)|impartial judge|"
                r"rate the (?:response|answer)|\[\[rating\]\]|on a scale (?:of|from) 1"),
    ("agentic_coding", r"(?i)\b(?:repository|repo|pull request|traceback|stack trace|failing test|"
                       r"git diff|patch|codebase|str_replace_editor|bash tool|edit_file|"
                       r"run the tests?)\b"),
    ("data_analysis", r"(?i)\b(?:csv|dataframe|pandas|dataset|spreadsheet|pivot table|"
                      r"correlation|regression|standard deviation|median|outliers?|"
                      r"column[s]?)\b"),
    ("coding", r"(?i)```|\bdef \w+\(|\bfunction\b|\bclass \w+|\bpython\b|javascript|typescript|"
               r"\bjava\b|c\+\+|\brust\b|golang|\bsql\b|\bcode\b|\bscript\b|regex|\bcompile|"
               r"#include|\breturn\b|\bimplement"),
    ("tool_use", r"(?i)__tools__|toolformer|\bapi\b|function call|\btools?\b"),
    ("creative", r"(?i)\b(?:poem|story|stories|song|lyrics|haiku|limerick|sonnet|screenplay|"
                 r"fiction|novel|fairy tale|rap|slogan|act as|role-?play|in the style of)\b"),
    ("reasoning", r"(?i)\$|\\frac|\bsolve\b|\bprove\b|how many|how much|probability|equation|"
                  r"integer|\bsum\b|calculate|puzzle|riddle|percent"),
    ("other", r"(?i)^\s*(?:translate|summari[sz]e|extract|classify|paraphrase|rewrite|proofread|"
              r"correct|convert|fix the grammar|tl;?dr)"),
)


def _as_series(texts) -> pl.Series:
    if isinstance(texts, pl.Series):
        return texts.cast(pl.String).fill_null("")
    return pl.Series("text", list(texts), dtype=pl.String).fill_null("")


def rule_based_task(texts) -> np.ndarray:
    """Keyword-rule fallback label per text (first matching rule wins; default ``chat``).

    Order: cot_elicitation, sensitive_rewrite, grading, agentic_coding, data_analysis,
    coding, tool_use, creative, reasoning, other.
    """
    s = _as_series(texts)
    e = pl.when(pl.col("t").str.contains(_COT)).then(pl.lit("cot_elicitation"))
    e = e.when(pl.col("t").str.contains(_SENSITIVE)).then(pl.lit("sensitive_rewrite"))
    for label, pat in _RULES:
        e = e.when(pl.col("t").str.contains(pat)).then(pl.lit(label))
    out = pl.DataFrame({"t": s}).select(e.otherwise(pl.lit("chat")).alias("y"))["y"]
    return out.to_numpy().astype(object)


def _rule_flag(texts, pat: str) -> np.ndarray:
    s = _as_series(texts)
    return s.str.contains(pat).fill_null(False).to_numpy().astype(np.float64)


def cot_score(texts, model: "TaskClassifier | None" = None) -> np.ndarray:
    """Per-prompt chain-of-thought-elicitation score in [0, 1] (model probability, else 0/1)."""
    if model is None:
        return _rule_flag(texts, _COT)
    return model.predict_proba(texts)[:, model.class_index("cot_elicitation")]


def sensitive_score(texts, model: "TaskClassifier | None" = None) -> np.ndarray:
    """Per-prompt sensitive-rewrite score in [0, 1] (model probability, else 0/1 rule)."""
    if model is None:
        return _rule_flag(texts, _SENSITIVE)
    return model.predict_proba(texts)[:, model.class_index("sensitive_rewrite")]


# --------------------------------------------------------------------------- model
def compose_texts(prompt, system=None, tool_names=None) -> pl.Series:
    """Classifier input: ``__tools__ <names> __system__ <first 300 chars> `` + prompt.

    ``prompt``/``system`` are string Series (or lists), ``tool_names`` a List(String) Series;
    missing parts are left out. Vectorised.
    """
    n = len(prompt)
    df = pl.DataFrame({
        "p": _as_series(prompt),
        "s": (pl.Series(list(system), dtype=pl.String) if system is not None and
              not isinstance(system, pl.Series) else
              (system.cast(pl.String) if system is not None else pl.Series([None] * n,
                                                                           dtype=pl.String))),
        "t": (tool_names.cast(pl.List(pl.String)) if isinstance(tool_names, pl.Series) else
              pl.Series(list(tool_names) if tool_names is not None else [None] * n,
                        dtype=pl.List(pl.String))),
    })
    tools = pl.when(pl.col("t").list.len() > 0).then(
        pl.lit("__tools__ ") + pl.col("t").list.join(" ").str.replace_all(r"[_.\-]", " ")
        + pl.lit(" ")).otherwise(pl.lit(""))
    system_ = pl.when(pl.col("s").str.len_chars() > 0).then(
        pl.lit("__system__ ") + pl.col("s").str.slice(0, 300) + pl.lit(" __user__ ")
    ).otherwise(pl.lit(""))
    return df.select((tools.fill_null("") + system_.fill_null("") + pl.col("p")).alias("text"))[
        "text"]


_WORD = r"\w+|[^\w\s]"
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_TOKEN_BYTES = 24  # a word token is hashed on its first 24 bytes and its length


def _avalanche(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 arrays, wraps): spreads FNV's low-entropy bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _arrow_bytes(s: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 offsets of len(s)+1) of a non-null string Series, zero-copy."""
    a = s.to_arrow()
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    a = a.cast(pa.large_string())
    _, ob, db = a.buffers()
    offs = np.frombuffer(ob, dtype=np.int64, count=len(a) + 1, offset=a.offset * 8)
    data = np.frombuffer(db, dtype=np.uint8) if db is not None else np.zeros(0, np.uint8)
    return data, offs


def _tab_table() -> np.ndarray:
    """Fixed (TOKEN_BYTES + 1, 256) uint64 table for tabulation hashing (splitmix64 of index)."""
    return _avalanche(np.arange((_TOKEN_BYTES + 1) * 256, dtype=np.uint64)
                      * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
                      ).reshape(_TOKEN_BYTES + 1, 256)


_TAB = _tab_table()
# flat copy whose row _TOKEN_BYTES is 0 (XOR's identity): bytes past a token's cap add nothing
_TAB_WORDS = np.concatenate([_TAB[:_TOKEN_BYTES].ravel(), np.zeros(256, np.uint64)])


def _byte_ngrams(s: pl.Series, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(count per row, hash per n-gram in row order) of the UTF-8 byte n-grams of each string.

    Tabulation hashing on rows ``n .. 2n-1`` of the table (so 3- and 4-grams differ).
    """
    data, offs = _arrow_bytes(s.fill_null(""))
    lo, hi = int(offs[0]), int(offs[-1])
    m = hi - lo - n + 1
    if m <= 0:
        return np.zeros(len(offs) - 1, np.int64), np.zeros(0, np.uint64)
    d = data[lo:hi]
    h = _TAB[n][d[:m]].copy()
    for k in range(1, n):
        h ^= _TAB[n + k][d[k:k + m]]
    valid = np.ones(m, dtype=bool)
    start, end = offs[:-1] - lo, offs[1:] - lo
    for j in range(1, n):  # n-grams crossing into the next string
        p = end - j
        valid[p[(p >= start) & (p < m)]] = False
    return np.maximum(end - start - n + 1, 0), h[valid]


class _CharClasses:
    """Class of each character for the ``_WORD`` tokens: 0 space (``\\s``), 1 word
    (``\\w``), 2 other — as polars' regex engine says, asked once per distinct character.

    ``ascii`` is a table by byte; other characters are keyed by their UTF-8 bytes packed
    little-endian into an int, the known ones in one sorted array, grown when a batch brings
    new ones.
    """

    def __init__(self) -> None:
        # (sorted keys, their classes) in one attribute: replaced whole, never mutated, so
        # that a thread reading it while another adds characters sees a consistent pair
        self.known = (np.zeros(0, np.int64), np.zeros(0, np.int8))
        ascii_ = np.zeros(256, np.int8)
        ascii_[:128] = self._ask(np.arange(128, dtype=np.int64))
        self.ascii = ascii_

    @staticmethod
    def _ask(keys: np.ndarray) -> np.ndarray:
        chars = pl.Series([int(k).to_bytes(4, "little").rstrip(b"\0").decode("utf-8")
                           if k else "\0" for k in keys.tolist()], dtype=pl.String)
        return np.where(chars.str.contains(r"^\w$").to_numpy(), 1,
                        np.where(chars.str.contains(r"^\s$").to_numpy(), 0, 2)).astype(np.int8)

    def classify(self, keys: np.ndarray) -> np.ndarray:
        """Classes of the non-ASCII characters ``keys`` (any order, repeats allowed)."""
        uq, inv = np.unique(keys, return_inverse=True)
        known_keys, known_cls = self.known
        pos = np.minimum(known_keys.searchsorted(uq), max(len(known_keys) - 1, 0))
        hit = (known_keys[pos] == uq) if len(known_keys) else np.zeros(len(uq), bool)
        if not hit.all():
            keys_all = np.concatenate([known_keys, uq[~hit]])
            o = np.argsort(keys_all, kind="stable")
            known_keys = keys_all[o]
            known_cls = np.concatenate([known_cls, self._ask(uq[~hit])])[o]
            self.known = (known_keys, known_cls)
            pos = known_keys.searchsorted(uq)
        return known_cls[pos][inv]


_CHAR_CLASSES: _CharClasses | None = None


def _word_tokens(s: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``_WORD`` tokens of each string (as ``str.extract_all(_WORD)``: runs of word
    characters and single other characters, whitespace dropped), found in numpy on the UTF-8
    bytes: (tokens per row, token lengths in bytes, the tokens' bytes one after another)."""
    global _CHAR_CLASSES
    if _CHAR_CLASSES is None:
        _CHAR_CLASSES = _CharClasses()
    data, offs = _arrow_bytes(s.fill_null(""))
    lo, hi = int(offs[0]), int(offs[-1])
    d = data[lo:hi]
    nb = hi - lo
    cls = _CHAR_CLASSES.ascii[d]                       # each byte: its character's class
    lead = d < 0x80                                    # first byte of a character
    wide = np.flatnonzero(d >= 0xC0)                   # first bytes of multi-byte characters
    if len(wide):
        lead |= d >= 0xC0
        pad = np.concatenate([d, np.zeros(3, np.uint8)]).astype(np.int64)
        ln = np.where(d[wide] >= 0xF0, 4, np.where(d[wide] >= 0xE0, 3, 2))
        key = pad[wide].copy()
        for j in (1, 2, 3):
            key |= np.where(ln > j, pad[wide + j], 0) << (8 * j)
        cls[np.repeat(wide, ln) + (np.arange(int(ln.sum())) - np.repeat(np.cumsum(ln) - ln,
                                                                        ln))] = \
            np.repeat(_CHAR_CLASSES.classify(key), ln)
    # a token begins at an "other" character and at a word character that opens a run (at a
    # string start or after a non-word character); tokens cover exactly the non-space bytes,
    # so the i-th token ends at the i-th byte followed by a space, a new token, a new string
    # or the end
    row_start = np.zeros(nb + 1, bool)
    row_start[offs - lo] = True
    in_tok = cls != 0
    prev_word = np.zeros(nb, bool)
    prev_word[1:] = cls[:-1] == 1
    begin = lead & ((cls == 2) | ((cls == 1) & (row_start[:nb] | ~prev_word)))
    stop = np.ones(nb + 1, bool)
    stop[:nb] = begin | ~in_tok
    stop |= row_start
    tstart = np.flatnonzero(begin)
    tend = np.flatnonzero(in_tok & stop[1:]) + 1
    counts = np.diff(np.searchsorted(tstart, offs - lo)).astype(np.int64)
    return counts, tend - tstart, d[in_tok]


def _word_ngrams(s: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Word unigrams and bigrams of each string's ``_WORD`` tokens: (uni counts per row, uni
    hashes, bi counts per row, bi hashes), hashes in row order.

    A token's hash is the XOR of table entries for (position, byte) of its first
    ``_TOKEN_BYTES`` bytes and one for its length (tabulation hashing, vectorised with
    ``bitwise_xor.reduceat``).
    """
    counts, tlen, data = _word_tokens(s)
    if len(tlen) == 0:
        z = np.zeros(len(counts), np.int64)
        return z, np.zeros(0, np.uint64), z, np.zeros(0, np.uint64)
    # the tokens' bytes, one after another, and each byte's position in its token
    cum = np.zeros(len(tlen) + 1, np.int64)
    np.cumsum(tlen, out=cum[1:])
    nb = int(cum[-1])
    k = np.arange(nb, dtype=np.int32) - np.repeat(cum[:-1].astype(np.int32), tlen)
    np.minimum(k, _TOKEN_BYTES, out=k)
    k <<= 8
    k += data
    h = np.bitwise_xor.reduceat(_TAB_WORDS[k], cum[:-1])
    h = _avalanche(h ^ (np.minimum(tlen, 4095).astype(np.uint64) << np.uint64(52)))
    row = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    same = row[1:] == row[:-1]
    bi = _avalanche(h[:-1][same] * np.uint64(0x9E3779B97F4A7C15) + h[1:][same])
    return counts, h, np.maximum(counts - 1, 0), bi


def _piece(c: np.ndarray, h: np.ndarray, off: int, width: int, n_cols: int) -> sp.csr_matrix:
    """Unsorted CSR matrix of one piece of hashed n-grams: ``c`` per row, hashes ``h`` in row
    order, value 1 per occurrence (repeats are separate entries)."""
    indptr = np.zeros(len(c) + 1, dtype=np.int64)
    np.cumsum(c, out=indptr[1:])
    idx = ((h % np.uint64(width)).astype(np.int64) + off).astype(np.int32)
    return sp.csr_matrix((np.ones(len(idx), np.float32), idx, indptr), shape=(len(c), n_cols))


def _l2(x: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit l2 norm in place (empty rows stay 0); ``x`` has no duplicates.

    Entries are integer counts, so the squared norms are exact integers (summed as int64
    through one cumulative sum; any summation order gives the same value).
    """
    x = x.tocsr()
    lens = np.diff(x.indptr)
    c = x.data.astype(np.int64)
    cs = np.zeros(len(c) + 1, np.int64)
    np.cumsum(c * c, out=cs[1:])
    sq = (cs[x.indptr[1:]] - cs[x.indptr[:-1]]).astype(np.float64)
    x.data *= np.repeat((1.0 / np.sqrt(np.maximum(sq, 1e-30))).astype(np.float32), lens)
    return x


class TaskClassifier:
    """Hashed n-gram features + linear one-vs-rest logistic model (scikit-learn style).

    Parameters: ``n_features`` (hash space, split evenly between word and char n-grams),
    ``head_chars``/``tail_chars`` (text kept for word n-grams: first + last characters),
    ``char_chars`` (first characters used for char n-grams), ``alpha`` and ``max_iter`` of
    the SGD fit, ``seed``. Learned: ``classes_``, ``coef_`` (float16 precision),
    ``intercept_``, ``meta_`` (training provenance written into the model file).
    """

    def __init__(self, *, n_features: int = 2**18, head_chars: int = 500,
                 tail_chars: int = 150, char_chars: int = 200, alpha: float = 2e-6,
                 max_iter: int = 30, seed: int = 0) -> None:
        self.n_features = n_features
        self.head_chars = head_chars
        self.tail_chars = tail_chars
        self.char_chars = char_chars
        self.alpha = alpha
        self.max_iter = max_iter
        self.seed = seed

    # -- features
    def _blocks(self, texts, narrow: bool = False) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(word block, byte block): each (n_texts, n_features), counts l2-normalised per row.

        ``transform`` is their sum. Each block is the sum of two unsorted CSR pieces
        (uni/bigrams, 3/4-grams), which scipy's general CSR addition folds into one entry per
        feature, so the l2 norms are exact without any sort. ``narrow``: each block only as
        wide as its half of the features (columns from 0), the same entries in the same order
        — scipy's addition takes a workspace as wide as the matrix.
        """
        s = _as_series(texts)
        h, t = self.head_chars, self.tail_chars
        df = pl.DataFrame({"t": s}).select(
            pl.when(pl.col("t").str.len_chars() > h + t)
            .then(pl.col("t").str.slice(0, h) + pl.lit(" … ") + pl.col("t").str.slice(-t))
            .otherwise(pl.col("t")).str.to_lowercase().alias("w"),
            (pl.lit(" ") + pl.col("t").str.slice(0, self.char_chars).str.to_lowercase()
             .str.replace_all(WS_RUNS, " ") + pl.lit(" ")).alias("c"),
        )
        half, n = self.n_features // 2, self.n_features
        c1, h1, c2, h2 = _word_ngrams(df["w"])
        (c3, h3), (c4, h4) = _byte_ngrams(df["c"], 3), _byte_ngrams(df["c"], 4)
        ww, wc, off = (half, n - half, 0) if narrow else (n, n, half)
        xw = _piece(c1, h1, 0, half, ww) + _piece(c2, h2, 0, half, ww)
        xc = _piece(c3, h3, off, n - half, wc) + _piece(c4, h4, off, n - half, wc)
        return _l2(xw), _l2(xc)

    def transform(self, texts) -> sp.csr_matrix:
        """Sparse feature matrix (n_texts, n_features): hashed word and byte n-gram blocks."""
        xw, xc = self._blocks(texts)
        return (xw + xc).tocsr()

    # -- fit / predict
    def fit(self, texts, y, sample_weight=None) -> "TaskClassifier":
        from sklearn.linear_model import SGDClassifier

        y = np.asarray(y, dtype=object)
        unknown = sorted(set(y) - set(TASKS))
        if unknown:
            raise ValueError(f"labels not in schema.TASKS: {unknown}")
        x = self.transform(texts)
        clf = SGDClassifier(loss="log_loss", alpha=self.alpha, max_iter=self.max_iter,
                            tol=1e-4, class_weight="balanced", random_state=self.seed,
                            average=False)
        clf.fit(x, y, sample_weight=sample_weight)
        self.classes_ = np.asarray(clf.classes_, dtype=object)
        coef, icpt = clf.coef_, clf.intercept_
        if coef.shape[0] == 1:  # binary: one row per class, [-w, w]
            coef, icpt = np.vstack([-coef, coef]), np.concatenate([-icpt, icpt])
        # store at float16 precision so a saved/loaded model predicts identically
        self.coef_ = coef.astype(np.float16).astype(np.float32)
        self.intercept_ = icpt.astype(np.float32)
        self.meta_ = {}
        return self

    def decision_function(self, texts) -> np.ndarray:
        coef_t = np.ascontiguousarray(self.coef_.T)
        half = self.n_features // 2
        xw, xc = self._blocks(texts, narrow=True)
        return (np.asarray(xw @ coef_t[:half]) + np.asarray(xc @ coef_t[half:])
                + self.intercept_)

    def predict_proba(self, texts) -> np.ndarray:
        """One-vs-rest sigmoid scores normalised to sum to 1 (as scikit-learn's SGD)."""
        d = self.decision_function(texts)
        p = 1.0 / (1.0 + np.exp(-np.clip(d, -30, 30)))
        p /= np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
        return p

    def predict(self, texts) -> np.ndarray:
        if len(texts) == 0:
            return np.array([], dtype=object)
        return self.classes_[np.argmax(self.decision_function(texts), axis=1)]

    def class_index(self, label: str) -> int:
        return int(np.flatnonzero(self.classes_ == label)[0])

    # -- persistence (no pickle)
    def _params(self) -> dict:
        return {k: getattr(self, k) for k in ("n_features", "head_chars", "tail_chars",
                                               "char_chars", "alpha", "max_iter", "seed")}

    def save(self, path) -> Path:
        """Write the ``.npz`` model file (float16 coef, JSON header; no pickle)."""
        path = Path(path)
        header = {
            "format": "distillguard-task-classifier", "version": FORMAT_VERSION,
            "classes": [str(c) for c in self.classes_], "params": self._params(),
            "features": {"words": "hashed word 1-2-grams (lower-cased, _WORD tokens) of "
                                  "first head_chars + last tail_chars, l2",
                         "chars": "hashed UTF-8 byte 3-4-grams of first char_chars "
                                  "(lower-cased, whitespace collapsed, space-padded), l2",
                         "hashing": "distillguard.content.classify: bytes FNV-1a 64, words tabulation; splitmix64 finaliser"},
            "saved": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
            **getattr(self, "meta_", {}),
        }
        with path.open("wb") as fh:
            np.savez_compressed(
                fh, coef=self.coef_.astype(np.float16), intercept=self.intercept_,
                header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
        return path

    @classmethod
    def load(cls, path) -> "TaskClassifier":
        """Read a model file written by :meth:`save`; bad files raise ``InputError``."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                coef = z["coef"].astype(np.float32)
                intercept = z["intercept"].astype(np.float32)
        except FileNotFoundError:
            raise InputError("model file not found", path=str(path)) from None
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"not a task-classifier model file ({err})",
                             path=str(path)) from None
        if header.get("format") != "distillguard-task-classifier":
            raise InputError("not a task-classifier model file", path=str(path))
        if header.get("version") != FORMAT_VERSION:
            raise InputError(f"unsupported model version {header.get('version')!r}",
                             path=str(path), field="version")
        model = cls(**header["params"])
        model.classes_ = np.asarray(header["classes"], dtype=object)
        if coef.shape != (len(model.classes_), model.n_features):
            raise InputError(f"coef shape {coef.shape} does not match header",
                             path=str(path), field="coef")
        model.coef_, model.intercept_ = coef, intercept
        model.meta_ = {k: v for k, v in header.items()
                       if k not in ("format", "version", "classes", "params", "features")}
        return model


def default_model_path() -> Path:
    return Path(str(resources.files("distillguard").joinpath("data/models", DEFAULT_MODEL)))


def load_default() -> TaskClassifier | None:
    """The shipped model, or None when the file is absent (then use :func:`rule_based_task`)."""
    p = default_model_path()
    return TaskClassifier.load(p) if p.is_file() else None


def predict_tasks(events: pl.DataFrame, model: TaskClassifier | None = None, *,
                  batch_size: int = 20000) -> pl.DataFrame:
    """Per-row ``task``, ``task_base``, ``cot_score``, ``sensitive_score`` for an events frame.

    Uses ``prompt`` plus ``system`` and ``tool_names`` when those columns exist. Without a
    model, keyword rules give the task and 0/1 scores (``task_base`` = ``task`` unless a
    wrapper rule fired, then the first payload rule).
    """
    n = events.height
    get = (lambda c: events[c] if c in events.columns else None)
    if "prompt" not in events.columns:
        raise KeyError("events frame has no 'prompt' column")
    if model is None:
        texts = compose_texts(events["prompt"], get("system"), get("tool_names"))
        task = rule_based_task(texts)
        cot = _rule_flag(texts, _COT)
        sens = _rule_flag(texts, _SENSITIVE)
        base_rules = pl.DataFrame({"t": texts}).select(
            _payload_rule_expr().alias("y"))["y"].to_numpy().astype(object)
        base = np.where(np.isin(task, WRAPPER_CLASSES), base_rules, task)
    else:
        # classifier input composed per batch: no second copy of all texts at once
        parts = {"task": [], "base": [], "cot": [], "sens": []}
        payload = np.array([c not in WRAPPER_CLASSES for c in model.classes_])
        for i in range(0, n, batch_size):
            b = events.slice(i, batch_size)
            getb = (lambda c, b=b: b[c] if c in b.columns else None)
            p = model.predict_proba(compose_texts(b["prompt"], getb("system"),
                                                  getb("tool_names")))
            parts["task"].append(p.argmax(axis=1))
            parts["base"].append(np.where(payload, p, -1.0).argmax(axis=1))
            parts["cot"].append(p[:, model.class_index("cot_elicitation")])
            parts["sens"].append(p[:, model.class_index("sensitive_rewrite")])
        cat = (lambda k, dt: np.concatenate(parts[k]) if n else np.array([], dtype=dt))
        task, base = model.classes_[cat("task", np.int64)], model.classes_[cat("base", np.int64)]
        cot, sens = cat("cot", np.float64), cat("sens", np.float64)
    return pl.DataFrame({
        "task": pl.Series(task, dtype=pl.String), "task_base": pl.Series(base, dtype=pl.String),
        "cot_score": pl.Series(cot, dtype=pl.Float64),
        "sensitive_score": pl.Series(sens, dtype=pl.Float64),
    })


def _payload_rule_expr() -> pl.Expr:
    e = None
    for label, pat in _RULES:
        e = (pl.when if e is None else e.when)(pl.col("t").str.contains(pat)).then(pl.lit(label))
    return e.otherwise(pl.lit("chat"))
