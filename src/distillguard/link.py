"""Stage 3 — link: a weighted graph of accounts that share rare attributes.

Each *kind* of attribute (IP, /24 prefix, ASN + user agent + TLS client, payment fingerprint,
e-mail domain, sign-up burst, system-prompt hash, tool-schema set, prompt template, template
used in the same time bucket) gives account–value incidences. A value shared by ``k``
accounts links them with weight ``kind_weight * idf`` where ``idf = log(N / k) / log(N)``,
so a big cloud ASN, the default SDK client or a mobile CGNAT address counts little.

Work stays linear: a value shared by at most ``full_pairs_max`` accounts links all their pairs;
a larger group is linked as a ring lattice (each account to its ``ring_degree`` successors in
one seeded hash order of accounts shared by all values), which keeps a dense group connected without all pairs. Values shared by
more than ``max_share`` of all accounts carry no information and are dropped.

The result is an edge list ``src, dst, weight, n_kinds, kinds`` (``src < dst``) over account
ids. Kind weights and the linking parameters are data (``signals.yaml``), not literals here.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

#: pair rows (account pair, kind, weight) kept in memory; more are spilled to disk between
#: their generation and their reduction
PAIR_CHUNK = 20_000_000
#: pair rows per bucket: a bucket (pairs of the accounts with one lower index mod the
#: buckets) is sorted and reduced on its own, so the cost per row does not grow with the log
BUCKET_ROWS = 2_000_000
#: pair rows generated at a time (a chunk of group members), routed to their buckets
GEN_ROWS = 1_000_000

INCIDENCE_SCHEMA = {"account_id": pl.String, "kind": pl.String, "value": pl.String}


@dataclass(frozen=True)
class LinkConfig:
    kind_weights: dict[str, float] = field(default_factory=dict)
    #: kinds that say the same thing (a shared IP implies a shared prefix) form a family; an
    #: edge needs evidence from ``min_families`` different families
    families: dict[str, list[str]] = field(default_factory=dict)
    min_families: int = 2
    kind_cap: float = 3.0
    family_cap: float = 3.0
    full_pairs_max: int = 30
    ring_degree: int = 8
    max_share: float = 0.05
    min_weight: float = 0.5
    signup_bucket_minutes: int = 60
    sync_bucket_minutes: int = 10
    seed: int = 0


def _event_incidences(ev: pl.LazyFrame, cfg: LinkConfig) -> list[pl.LazyFrame]:
    parts: list[pl.LazyFrame] = []

    def _ev(kind: str, expr: pl.Expr) -> None:
        if cfg.kind_weights.get(kind, 0) > 0:
            parts.append(ev.select(pl.col("account_id"), pl.lit(kind).alias("kind"),
                                   expr.cast(pl.String).alias("value"))
                         .drop_nulls("value").unique())

    _ev("ip", pl.col("ip"))
    _ev("ip_prefix", pl.col("ip_prefix"))
    _ev("client", pl.concat_str([pl.col("asn").cast(pl.String), pl.col("user_agent"),
                                 pl.col("tls_fingerprint")], separator="|"))
    _ev("system_prompt", pl.col("system_hash"))
    _ev("tool_schema", pl.col("tools_hash"))
    return parts


def incidences(events: pl.LazyFrame | list[pl.LazyFrame], accounts: pl.DataFrame,
               templates: pl.DataFrame | None, cfg: LinkConfig) -> pl.DataFrame:
    """Distinct (account_id, kind, value) rows for every linking kind.

    ``templates``: sampled events with ``account_id, ts, template_id`` (or None).
    ``events`` may be a list of account partitions (``Log.parts``): their incidences are
    collected one partition at a time (an account's values never span partitions).
    """
    if isinstance(events, list) and len(events) > 1:
        parts: list[pl.LazyFrame] = []
        for ev in events:
            got = _event_incidences(ev, cfg)
            if got:
                parts.append(pl.concat([p.select(list(INCIDENCE_SCHEMA)) for p in got])
                             .collect(engine="streaming").lazy())
    else:
        parts = _event_incidences(events[0] if isinstance(events, list) else events, cfg)

    acc = accounts.lazy()

    def _acc(kind: str, expr: pl.Expr) -> None:
        if cfg.kind_weights.get(kind, 0) > 0:
            parts.append(acc.select(pl.col("account_id"), pl.lit(kind).alias("kind"),
                                    expr.cast(pl.String).alias("value"))
                         .drop_nulls("value"))

    _acc("payment", pl.col("payment_fingerprint"))
    _acc("email_domain", pl.col("email_domain"))
    _acc("signup_burst", pl.concat_str([
        pl.col("tier"),
        pl.col("created_at").dt.truncate(f"{cfg.signup_bucket_minutes}m").cast(pl.String)],
        separator="@"))

    if templates is not None and not templates.is_empty():
        t = templates.lazy().drop_nulls("template_id")
        if cfg.kind_weights.get("template", 0) > 0:
            parts.append(t.select(pl.col("account_id"), pl.lit("template").alias("kind"),
                                  pl.col("template_id").cast(pl.String).alias("value")).unique())
        if cfg.kind_weights.get("sync", 0) > 0:
            parts.append(t.select(
                pl.col("account_id"), pl.lit("sync").alias("kind"),
                pl.concat_str([pl.col("template_id").cast(pl.String),
                               pl.col("ts").dt.truncate(f"{cfg.sync_bucket_minutes}m")
                               .cast(pl.String)], separator="@").alias("value")).unique())
    if not parts:
        return pl.DataFrame(schema=INCIDENCE_SCHEMA)
    return pl.concat([p.select(list(INCIDENCE_SCHEMA)) for p in parts]).collect(
        engine="streaming")


def edges_from_incidences(inc: pl.DataFrame, n_accounts: int, cfg: LinkConfig,
                          note=None) -> pl.DataFrame:
    """Account–account edges from shared values, linear in the number of incidences.

    Works on integer codes (accounts numbered in sorted-id order, members grouped by one
    integer sort on (kind, value hash), pair rows generated with numpy rank arithmetic, kinds
    carried as a bit mask), because string-keyed pair rows cost ~1 KB each and took > 11 GiB
    at 4M exchanges. Pair rows are partitioned by the lower account's index into buckets of
    ~``BUCKET_ROWS`` rows, each reduced on its own by a sort and segment sums, so the cost
    per row does not grow with the log. ``note``: optional callable given the number of pair
    rows (the stage's work: linear in them).
    """
    schema = {"src": pl.String, "dst": pl.String, "weight": pl.Float64,
              "n_kinds": pl.UInt32, "kinds": pl.List(pl.String)}
    if inc.is_empty() or n_accounts < 2:
        return pl.DataFrame(schema=schema)
    max_k = max(2, int(cfg.max_share * n_accounts))
    log_n = math.log(max(n_accounts, 3))
    kinds = sorted(k for k, v in cfg.kind_weights.items() if v > 0)  # code order = name order
    kw = np.array([float(cfg.kind_weights[k]) for k in kinds])
    fam_of = {k: f for f, ks in cfg.families.items() for k in ks}
    fams = sorted({fam_of.get(k, k) for k in kinds})
    kfam = [fams.index(fam_of.get(k, k)) for k in kinds]
    ids = inc["account_id"].unique().sort()
    n_ids = len(ids)
    got = _group_members(inc, ids, kinds, cfg, max_k)
    if got is None:
        return pl.DataFrame(schema=schema)
    a, kc, k, gid = got
    n = len(a)
    # a value shared by at most full_pairs_max accounts links all pairs (each once: an account
    # to the members after it); a larger group is a ring lattice: each account to its
    # ring_degree successors (wrapping). Spans, ranks and weights per member, pairs by index
    # arithmetic on the group-sorted members.
    gfirst = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    gstart = np.repeat(gfirst, np.diff(np.r_[gfirst, n]))
    rank = np.arange(n) - gstart
    full = k <= cfg.full_pairs_max
    span = np.where(full, k - 1 - rank, min(cfg.ring_degree, cfg.full_pairs_max))
    wpos = kw[kc] * (math.log(n_accounts) - np.log(k)) / log_n
    n_pairs = int(span.sum())
    n_buckets = min(max(1, math.ceil(n_pairs / BUCKET_ROWS)), 2**16 - 1)
    spill = n_pairs > PAIR_CHUNK
    if note is not None:
        note(f"{n_pairs:,} pair rows from {n:,} group members ({n_buckets} bucket(s)"
             + (", spilled to disk)" if spill else ")"))
    ring_wraps = 2 * min(cfg.ring_degree, cfg.full_pairs_max) > cfg.full_pairs_max
    members = _Members(a=a, kc=kc, k=k, gstart=gstart, rank=rank, span=span, full=full,
                       wpos=wpos, gid=gid if ring_wraps else None)
    codes = _KindCodes.of(kinds, kfam)
    # pair rows are made a member chunk at a time and routed to buckets by the lower
    # account's index (mod the buckets); each bucket is sorted and reduced on its own, so the
    # work per row is that of a bucket of ~BUCKET_ROWS rows whatever the log's size. Rows
    # keep their generation order within a bucket, so the sums do not depend on the bucketing.
    csum = np.cumsum(span)
    cuts = sorted({0, n, *np.searchsorted(
        csum, np.arange(GEN_ROWS, n_pairs, GEN_ROWS), side="right").tolist()})
    with _Buckets(n_buckets, spill) as buckets:
        for s0, s1 in zip(cuts[:-1], cuts[1:]):
            buckets.add(_pair_rows(members, s0, s1, n_ids, codes, n_buckets))
        e = [_reduce_bucket(rows, b, n_buckets, n_ids, codes, cfg)
             for b, rows in buckets.items()]
    lo, hi = np.concatenate([x[0] for x in e]), np.concatenate([x[1] for x in e])
    order = np.argsort(lo * np.uint64(n_ids) + hi)  # (src, dst) order: ids are sorted
    out = pl.DataFrame({"src": ids.gather(lo[order]), "dst": ids.gather(hi[order]),
                        "weight": np.concatenate([x[2] for x in e])[order],
                        "m": np.concatenate([x[3] for x in e])[order]})
    # kind lists decoded once per distinct bit mask (few), then joined on the mask
    masks = out.select(pl.col("m").unique())["m"].to_list()
    kinds_of = pl.DataFrame({"m": masks, "kinds": [[kd for b, kd in enumerate(kinds)
                                                    if (mk >> b) & 1] for mk in masks]},
                            schema={"m": out.schema["m"], "kinds": pl.List(pl.String)})
    return (out.join(kinds_of, on="m", how="left", maintain_order="left")
            .with_columns(n_kinds=pl.col("kinds").list.len())
            .select(list(schema)).cast(schema))


def _value_hash(value: pl.Expr, seed: int) -> pl.Expr:
    """The 64-bit hash that groups a kind's values (a function of its own for the tests)."""
    return value.hash(seed=seed)


def _group_members(inc: pl.DataFrame, ids: pl.Series, kinds: list[str], cfg: LinkConfig,
                   max_k: int) -> tuple[np.ndarray, ...] | None:
    """Members of the values shared by 2..``max_k`` accounts, grouped by value.

    Returns (account index in ``ids``, kind code, group size, group id) per member, the
    groups in (kind, value hash) order; a ring group's members (more than
    ``full_pairs_max``) in one global seeded order of accounts (not per value), so that the
    rings of two values with the same members coincide and their pairs keep both kinds (the
    order of a full group's members changes no pair). One ``arg_sort`` of a uint64 key (kind
    code in the top bits, the value hash below) instead of a multi-column sort carrying the
    value strings (7.4 s CPU at 16M exchanges, against ~1 s). A second, independent hash of
    the value must agree within every group and so must the full first hash; otherwise (two
    values whose hashes collide) the exact dense rank of the (kind, value) strings is the key.
    """
    f = inc.filter(pl.col("kind").is_in(kinds)).select(
        a=pl.col("account_id").cast(pl.Enum(ids)).to_physical(),
        kc=pl.col("kind").cast(pl.Enum(kinds)).to_physical(),
        h=_value_hash(pl.col("value"), cfg.seed), h2=_value_hash(pl.col("value"), cfg.seed + 1))
    kc_bits = max(1, (len(kinds) - 1).bit_length())
    shift = np.uint64(64 - kc_bits)

    def sort_key(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = (f["kc"].to_numpy().astype(np.uint64) << shift) | (h >> np.uint64(kc_bits))
        order = pl.Series(key).arg_sort().to_numpy()
        return key[order], order

    key, order = sort_key(f["h"].to_numpy())
    same = np.r_[False, key[1:] == key[:-1]]
    for col in ("h", "h2"):
        v = f[col].to_numpy()[order]
        if (same[1:] & (v[1:] != v[:-1])).any():  # a collision: exact ranks
            rank = inc.filter(pl.col("kind").is_in(kinds)).select(
                pl.struct("kind", "value").rank("dense").cast(pl.UInt64))
            key, order = sort_key(rank.to_series().to_numpy() << np.uint64(kc_bits))
            same = np.r_[False, key[1:] == key[:-1]]
            break
    gid = np.cumsum(~same) - 1
    k = np.bincount(gid)[gid]
    keep = (k >= 2) & (k <= max_k)
    if not keep.any():
        return None
    a = f["a"].to_numpy()[order[keep]].astype(np.uint64)
    kc = f["kc"].to_numpy()[order[keep]]
    k, gid = k[keep].astype(np.int64), gid[keep]
    ring = np.flatnonzero(k > cfg.full_pairs_max)
    if len(ring):  # ring members by (group, account's rank in the seeded account order)
        o = ids.hash(seed=cfg.seed).to_numpy()
        by_o = np.argsort(o, kind="stable")
        rank_o = np.empty(len(ids), np.uint64)
        rank_o[by_o] = np.arange(len(ids), dtype=np.uint64)
        bits = max(1, (len(ids) - 1).bit_length())
        if int(gid[ring[-1]]).bit_length() + bits <= 64:
            ranked = pl.Series((gid[ring].astype(np.uint64) << np.uint64(bits))
                               | rank_o[a[ring]]).sort(multithreaded=False).to_numpy()
            a[ring] = by_o[(ranked & np.uint64((1 << bits) - 1)).astype(np.int64)]
        else:
            a[ring] = a[ring][np.lexsort((rank_o[a[ring]], gid[ring]))]
    return a, kc, k, gid


@dataclass(frozen=True)
class _Members:
    """Group members in group order (arrays of one row per member)."""

    a: np.ndarray       # account index (uint64)
    kc: np.ndarray      # kind code (name order)
    k: np.ndarray       # size of the member's group
    gstart: np.ndarray  # first member of its group
    rank: np.ndarray    # position in its group
    span: np.ndarray    # pair rows it makes (with the members after it, or ring successors)
    full: np.ndarray    # its group links all pairs (else: a ring lattice)
    wpos: np.ndarray    # weight of one shared value of its group
    gid: np.ndarray | None  # group id, when a ring may wrap onto the same pair twice


@dataclass(frozen=True)
class _KindCodes:
    """Kinds coded family by family, so that a pair's kinds of one family are adjacent once
    its rows are sorted by (pair, code); ``bit``: the kind's bit in the mask (name order).
    A code takes the low ``bits`` bits of a pair row's key."""

    code: np.ndarray    # kind (name order) -> code
    fam: np.ndarray     # code -> family
    bit: np.ndarray     # code -> bit of the kind
    bits: int

    @classmethod
    def of(cls, kinds: list[str], kfam: list[int]) -> "_KindCodes":
        by_fam = sorted(range(len(kinds)), key=lambda c: (kfam[c], c))
        code = np.empty(len(kinds), np.uint64)
        code[by_fam] = np.arange(len(kinds), dtype=np.uint64)
        return cls(code=code, fam=np.array([kfam[c] for c in by_fam], np.int64),
                   bit=np.array([1 << c for c in by_fam], np.int64),
                   bits=max(1, (len(kinds) - 1).bit_length()))


def _pair_rows(m: _Members, s0: int, s1: int, n_ids: int, codes: _KindCodes,
               n_buckets: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pair rows of members ``s0:s1``: (bucket per row, columns ``key, w`` [, ``gid``]).

    A member of a full group pairs with the members after it, one of a ring group with its
    ``span`` successors (wrapping). ``key`` = ((lo // n_buckets) * n_ids + hi) << code bits
    | code and bucket = lo % n_buckets, where lo < hi are the pair's account indices.
    """
    sp = m.span[s0:s1]
    i = np.repeat(np.arange(s0, s1), sp)
    d = np.arange(len(i)) - np.repeat(np.cumsum(sp) - sp, sp) + 1
    j = i + d  # full groups: the next members
    ring = np.flatnonzero(~m.full[i])
    if len(ring):
        ir = i[ring]
        j[ring] = m.gstart[ir] + (m.rank[ir] + d[ring]) % m.k[ir]
    ai, aj = m.a[i], m.a[j]
    lo, hi = np.minimum(ai, aj), np.maximum(ai, aj)
    nb = np.uint64(n_buckets)
    rows = {"key": (((lo // nb) * np.uint64(n_ids) + hi) << np.uint64(codes.bits))
            | codes.code[m.kc[i]],
            "w": m.wpos[i]}
    if m.gid is not None:
        rows["gid"] = m.gid[i]
    return lo % nb, rows


class _Buckets:
    """Pair rows routed to ``n`` buckets, kept in generation order within each: in memory,
    or (``spill``) appended to one file per bucket and column, so that memory is bounded by
    a bucket rather than by the log."""

    def __init__(self, n: int, spill: bool) -> None:
        self.n, self.spill = n, spill
        self.parts: list[dict[str, list[np.ndarray]]] = [{} for _ in range(n)]
        self.dtypes: dict[str, np.dtype] = {}
        self.tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> "_Buckets":
        if self.spill:
            self.tmp = tempfile.TemporaryDirectory(prefix="distillguard-pairs-")
        return self

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()

    def _file(self, b: int, col: str) -> Path:
        return Path(self.tmp.name) / f"b{b:05d}-{col}.bin"

    def add(self, routed: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
        bucket, rows = routed
        if self.n == 1:
            parts = [rows]
        else:  # a stable counting sort by bucket (radix on 16 bits)
            order = np.argsort(bucket.astype(np.uint16), kind="stable")
            bounds = np.r_[0, np.cumsum(np.bincount(bucket.astype(np.int64),
                                                    minlength=self.n))]
            rows = {c: v[order] for c, v in rows.items()}
            parts = [{c: v[bounds[b]:bounds[b + 1]] for c, v in rows.items()}
                     for b in range(self.n)]
        for b, part in enumerate(parts):
            for col, v in part.items():
                self.dtypes[col] = v.dtype
                if self.spill:
                    with open(self._file(b, col), "ab") as f:
                        v.tofile(f)
                else:
                    self.parts[b].setdefault(col, []).append(v)

    def items(self):
        """(bucket, its rows) one bucket at a time (the rows of a spilled bucket are loaded
        then, and its files removed)."""
        for b in range(self.n):
            if self.spill:
                rows = {}
                for col, dt in self.dtypes.items():
                    f = self._file(b, col)
                    rows[col] = np.fromfile(f, dtype=dt) if f.exists() else np.empty(0, dt)
                    f.unlink(missing_ok=True)
            else:
                rows = {col: np.concatenate(v) for col, v in self.parts[b].items()}
                self.parts[b] = {}
            yield b, rows


def _segments(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segment id per row, first row per segment) of a sorted key."""
    new = np.r_[True, key[1:] != key[:-1]]
    return np.cumsum(new) - 1, np.flatnonzero(new)


def _reduce_bucket(rows: dict[str, np.ndarray], b: int, n_buckets: int, n_ids: int,
                   codes: _KindCodes, cfg: LinkConfig
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges (lo, hi, weight, kind mask) of one bucket's pair rows.

    One stable sort by (pair, kind) and sequential segment sums (``bincount``): a row's
    weight is summed in generation order, so the result does not depend on the buckets.
    """
    none = (np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0), np.empty(0, np.int64))
    if not len(rows.get("key", ())):
        return none
    if "gid" in rows:  # a ring may wrap: each (pair, kind, group) once
        df = pl.DataFrame(rows).unique(["key", "gid"], maintain_order=True)
        rows = {c: df[c].to_numpy() for c in df.columns}
    key, w = rows["key"], rows["w"]
    # stable sort: the row number under the key makes every key distinct, so a plain sort
    # of one uint64 (no index array; polars' single-threaded sort of integers, ~3x numpy's)
    # is stable; when the bits do not fit, an argsort
    n_rows, nb = len(key), np.uint64(n_buckets)
    row_bits = max(1, (n_rows - 1).bit_length())
    key_bits = ((n_ids - 1) // n_buckets * n_ids + n_ids - 1).bit_length() + codes.bits
    if key_bits + row_bits <= 64:
        packed = pl.Series((key << np.uint64(row_bits))
                           | np.arange(n_rows, dtype=np.uint64)).sort(multithreaded=False)
        packed = packed.to_numpy()
        w = w[(packed & np.uint64((1 << row_bits) - 1)).astype(np.intp)]
        key = packed >> np.uint64(row_bits)
        del packed
    else:
        order = np.argsort(key, kind="stable")
        key, w = key[order], w[order]
        del order
    # every shared rare value adds evidence, up to a cap per kind and per family, so a
    # pair sharing many proxy IPs and many templates outweighs one sharing one address
    seg, first = _segments(key)
    wk = np.minimum(np.bincount(seg, weights=w), cfg.kind_cap)
    key = key[first]
    pk, ck = key >> np.uint64(codes.bits), (key & np.uint64((1 << codes.bits) - 1))
    fam = codes.fam[ck.astype(np.intp)]
    # most pairs share values of one family only: they are dropped before the sums
    new_pair = np.r_[True, pk[1:] != pk[:-1]]
    new_fam = new_pair | np.r_[True, fam[1:] != fam[:-1]]
    pair = np.cumsum(new_pair) - 1
    sel = np.flatnonzero((np.bincount(pair, weights=new_fam) >= cfg.min_families)[pair])
    if not len(sel):
        return none
    pk, ck, wk, new_fam = pk[sel], ck[sel].astype(np.intp), wk[sel], new_fam[sel]
    seg = np.cumsum(new_fam) - 1
    wf = np.minimum(np.bincount(seg, weights=wk), cfg.family_cap)
    mf = np.bincount(seg, weights=codes.bit[ck]).astype(np.int64)
    seg, first = _segments(pk[np.flatnonzero(new_fam)])
    weight = np.bincount(seg, weights=wf)
    m = np.bincount(seg, weights=mf).astype(np.int64)
    keep = weight >= cfg.min_weight
    p = pk[np.flatnonzero(new_fam)][first][keep]
    return ((p // np.uint64(n_ids)) * nb + np.uint64(b), p % np.uint64(n_ids), weight[keep],
            m[keep])


def rare_values(inc: pl.DataFrame, kinds: tuple[str, ...] | list[str],
                max_holders: int) -> pl.DataFrame:
    """Incidences of ``kinds`` whose value is held by 2..``max_holders`` accounts.

    Small (rare values only), with each value's ``holders``; kept after linking so that a
    later pass can ask which accounts share such a value (see ``score.apply_lifts``) without
    re-reading the events.
    """
    if inc.is_empty():
        return inc.select("account_id", "kind", "value", holders=pl.lit(0, pl.UInt32))
    return (inc.filter(pl.col("kind").is_in(list(kinds)))
            .with_columns(holders=pl.len().over("kind", "value").cast(pl.UInt32))
            .filter((pl.col("holders") >= 2) & (pl.col("holders") <= max_holders))
            .select("account_id", "kind", "value", "holders"))


def shared_rare(rare: pl.DataFrame, accounts: pl.Series | list[str],
                among: pl.Series | list[str]) -> pl.DataFrame:
    """Rows of ``rare`` of ``accounts`` with a ``peer`` column: each other account of
    ``among`` holding the same (kind, value)."""
    left = rare.filter(pl.col("account_id").is_in(pl.Series(accounts, dtype=pl.String)
                                                  .implode()))
    right = (rare.filter(pl.col("account_id").is_in(pl.Series(among, dtype=pl.String)
                                                    .implode()))
             .select("kind", "value", peer="account_id"))
    return (left.join(right, on=["kind", "value"])
            .filter(pl.col("account_id") != pl.col("peer")))


def shared_peers(rare: pl.DataFrame, accounts: pl.Series | list[str],
                 among: pl.Series | list[str], groups: tuple[tuple[str, ...], ...] | None = None,
                 max_holders: int | None = None) -> pl.DataFrame:
    """:func:`shared_rare` over the values of ``groups``' kinds (default: every kind, each
    its own group) held by at most ``max_holders`` accounts, with each row's ``group``."""
    if max_holders is not None and "holders" in rare.columns:
        rare = rare.filter(pl.col("holders") <= max_holders)
    if groups is None:
        groups = tuple((k,) for k in rare["kind"].unique().sort().to_list())
    group_of = pl.DataFrame({"kind": [k for g in groups for k in g],
                             "group": [i for i, g in enumerate(groups) for _ in g]},
                            schema={"kind": pl.String, "group": pl.UInt32})
    return shared_rare(rare.join(group_of, on="kind"), accounts, among)


def peers_among(rare: pl.DataFrame, accounts: pl.Series | list[str],
                among: pl.Series | list[str], groups: tuple[tuple[str, ...], ...] | None = None,
                max_holders: int | None = None, require: tuple[str, ...] = ()) -> pl.DataFrame:
    """For each of ``accounts``: the other accounts of ``among`` it shares a rare value with.

    Returns ``account_id, peers`` (distinct such accounts) and ``groups`` (how many of
    ``groups`` — lists of kinds — the shared values come from; default: each kind its own
    group) for the accounts with at least one such peer. ``max_holders`` narrows ``rare``.
    With ``require`` (link kinds), ``groups`` counts 0 for an account none of whose shared
    values is of those kinds.
    """
    return (shared_peers(rare, accounts, among, groups, max_holders)
            .group_by("account_id").agg(
                peers=pl.col("peer").n_unique(),
                groups=pl.col("group").n_unique()
                * (pl.col("kind").is_in(list(require)).any() if require else pl.lit(True))))
