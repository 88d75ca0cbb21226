"""Online detector: River-style ``learn_one`` / ``score_one`` over bounded per-account state.

State is columnar (one numpy row per account, grown by doubling): counters, sums, an hour
and a weekday histogram, HyperLogLog registers for distinct keys / IPs / prefixes / ASNs /
countries / clients / models, per-release pivot windows, task counts of a bounded prompt
sample and a small heavy-hitter sketch of the account's prompt templates. From it
:meth:`OnlineDetector.features` rebuilds the batch feature columns of
:func:`distillguard.fingerprint.account_features` and
:func:`distillguard.content_signals.content_features`; cluster features come from the batch
:func:`distillguard.cluster.cluster_features` over live groups, and scoring is the batch
:class:`distillguard.score.Scorer` — one scoring code path for batch and stream.

Cross-account linking is online: every (kind, value) of shared infrastructure (IP, prefix,
client, payment, e-mail domain, sign-up hour, system prompt, tool set, prompt template) keeps
the few accounts that used it (values used by more than ``max_group`` accounts are common and
dropped); two accounts that share values of ``min_families`` different families are joined in
a union-find forest, whose groups of ``min_size`` or more accounts are the live clusters.

Hot path: :meth:`learn_many` takes a time-ordered batch of normalised events
(``schema.EVENT_SCHEMA``) and updates everything with numpy/polars group operations;
:meth:`learn_one` wraps it for one event dict.
"""

from __future__ import annotations

import io
import math

import numpy as np
import polars as pl
import pyarrow as pa

from ..cluster import cluster_features, member_aggregates, member_columns_read
from ..content import load_default, normalize_prompts, predict_tasks
from ..content_signals import VALUABLE_TASKS
from ..detect import CLUSTER_PREFIX, attach_cluster_features, load_scorer
from ..fingerprint import DAILY_MAX_MIN_COUNT, DAILY_MAX_MIN_DAYS, LIGHTLY_VERIFIED_TIERS
from ..schema import EVENT_SCHEMA, TASKS, conform
from ..signals import kind_mask, load_signals

HLL_P = 6
HLL_M = 1 << HLL_P
HLL_KINDS = ("keys", "ips", "prefixes", "asns", "countries", "clients", "models")
COUNTERS = ("n", "days", "single", "tool", "tool_result", "thinking", "logprobs", "cap_count",
            "fast", "session", "mismatch", "cls_n", "cot", "sens",
            "day_n", "day_max", "day_atmax")   # exchanges today; max / days at max before
FLOATS = ("first_ts", "last_ts", "last_day", "cap_max", "temp_n", "temp_sum", "temp_sq",
          "in_tok", "out_tok", "in_n", "out_n", "gap_sum", "gap_sq", "created_at",
          "score", "next_check")
HH_K = 8                      # templates tracked per account
MAX_RELEASES = 16
CACHE_MAX = 1 << 15           # classifier answers / template ids cached (by text hash)
VERDICT_CODE = {"benign": 0, "suspicious": 1, "attack": 2}
VERDICT_NAME = np.array(["benign", "suspicious", "attack"])
# feature columns computed for every member of a rescored account's live cluster
MEMBER_COLUMNS = frozenset({"n_exchanges", "n_ips", "pivot_share", "pivot_window_n", "tier",
                            "verified", "age_days_at_first_use", "valuable_share",
                            "payment_fingerprint", "email_domain"})
KINDS = ("ip", "ip_prefix", "client", "payment", "email_domain", "signup_burst",
         "system_prompt", "tool_schema", "template")
# reason of an account flagged by the pre-score rule (stream.prescore_*)
PRESCORE_REASON = "rare_values_shared_with_flagged_before_scoring"
_US = 1_000_000
_DAY_US = 86400 * _US


_POW2 = np.power(2.0, -np.arange(256, dtype=np.float64))     # 2**-rank for uint8 registers


def _hll_estimate(reg: np.ndarray) -> np.ndarray:
    """Cardinality estimates for HyperLogLog registers (last axis; linear counting when
    small)."""
    m = reg.shape[-1]
    alpha = 0.709 if m == 64 else 0.7213 / (1 + 1.079 / m)
    est = alpha * m * m / _POW2[reg].sum(axis=-1)
    zeros = (reg == 0).sum(axis=-1)
    with np.errstate(divide="ignore"):
        lin = m * np.log(m / np.maximum(zeros, 1))
    return np.where((est <= 2.5 * m) & (zeros > 0), lin, est)


def _hll_parts(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = (h & np.uint64(HLL_M - 1)).astype(np.int64)
    w = h >> np.uint64(HLL_P)
    bits = np.where(w > 0, np.floor(np.log2(np.maximum(w, 1).astype(np.float64))) + 1, 0)
    rank = (64 - HLL_P) - bits + 1
    return idx, rank.astype(np.uint8)


def _entropy_rows(counts: np.ndarray, k: int) -> np.ndarray:
    tot = counts.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = counts / tot
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1) / math.log(k)
    return np.nan_to_num(ent)


class OnlineDetector:
    """Streaming distillation detector with the batch detector's features and scorer.

    Parameters
    ----------
    signals_path, model_path : path or None
        Signal file and fitted scorer (defaults: the shipped ones), as for ``detect``.
    accounts : polars.DataFrame or None
        Accounts table (``schema.ACCOUNT_SCHEMA``) for tier, verification, sign-up time.
    releases : polars.DataFrame or None
        Model releases (``schema.RELEASE_SCHEMA``) for the model-pivot signal.
    grace : int or None
        Exchanges before an account is scored at all (its verdict is ``benign`` until then);
        None: ``stream.grace`` of the signal file.
    rescore_factor : float or None
        An account is rescored when its exchange count has grown by this factor; None:
        ``stream.rescore_factor`` of the signal file.
    max_prompts : int
        Prompts classified per account before sampling thins out (about
        ``max_prompts * (1 + ln(n / max_prompts))`` in all).
    max_group : int
        Accounts kept per shared value; beyond that a value is common and links nothing.
    protect : bool
        Accounts flagged ``attack`` stop feeding the shared-value indexes (River's
        ``protect_anomaly_detector``), so they cannot dilute a value into "common".

    Examples
    --------
    >>> det = OnlineDetector(grace=1)
    >>> det.learn_one({"ts": "2025-01-01T00:00:00Z", "account_id": "a", "prompt": "hi"})
    >>> det.score_one("a")["exchanges_seen"]
    1
    """

    def __init__(self, *, signals_path=None, model_path=None, accounts=None, releases=None,
                 grace: int | None = None, rescore_factor: float | None = None,
                 max_prompts: int = 32,
                 max_group: int = 30, min_size: int | None = None, protect: bool = True,
                 seed: int = 0) -> None:
        self.signals_path = signals_path
        self.model_path = model_path
        self.accounts = accounts
        self.releases = releases
        self.grace = grace
        self.rescore_factor = rescore_factor
        self.max_prompts = max_prompts
        self.max_group = max_group
        self.min_size = min_size
        self.protect = protect
        self.seed = seed

    def _grace(self) -> int:
        return int(self.grace if self.grace is not None else self.signals_.stream.grace)

    def _rescore_factor(self) -> float:
        return float(self.rescore_factor if self.rescore_factor is not None
                     else self.signals_.stream.rescore_factor)

    # -- lazy set-up -----------------------------------------------------------------------
    def _init(self) -> None:
        if hasattr(self, "n_accounts_"):
            return
        self.signals_ = load_signals(self.signals_path)
        self.scorer_ = load_scorer(self.model_path, self.signals_)
        self.classifier_ = load_default()
        if self.classifier_ is not None:
            # column-major, so that the transposed copy the classifier makes of its weights
            # on every call (16 MB, ~4 ms: half the cost of classifying a chunk) is a view
            self.classifier_.coef_ = np.asfortranarray(self.classifier_.coef_)
        cfg = self.signals_.link
        fam_of = {k: i for i, (_, ks) in enumerate(sorted(cfg.families.items())) for k in ks}
        self.kind_family_ = np.array([fam_of.get(k, 7) for k in KINDS], dtype=np.int64)
        self.min_families_ = int(cfg.min_families)
        # pairs keep link-*kind* bits; the number of families a kind mask spans, by table
        self.fam_n_ = _groups_spanned(
            [sum(1 << int(k) for k in np.flatnonzero(self.kind_family_ == f))
             for f in np.unique(self.kind_family_)]).tolist()
        self._lift_rule()
        self.min_size_ = int(self.min_size or self.signals_.cluster.get("min_size", 3))
        self.signup_us_ = int(cfg.signup_bucket_minutes) * 60 * _US
        # accounts table rows by id, for accounts not seen yet (an account's fields are
        # read once, when its first event registers it, and its entry is dropped then)
        self._meta: dict[str, int] = {}
        if self.accounts is not None and not self.accounts.is_empty():
            ids = self.accounts["account_id"].to_list()
            self._meta = dict(zip(ids, range(len(ids))))          # the last row wins
        rel = self.releases
        self.releases_ = ([] if rel is None or rel.is_empty() else
                          sorted((int(r[1].timestamp() * _US), r[0])
                                 for r in rel.select("model", "released_at").iter_rows()
                                 if r[1] is not None))[:MAX_RELEASES]
        self.n_accounts_ = 0
        self.ids_: list[str] = []
        self.index_: dict[str, int] = {}
        cap = 1024
        self.c_ = {k: np.zeros(cap, np.int64) for k in COUNTERS}
        self.f_ = {k: np.zeros(cap, np.float64) for k in FLOATS}
        self.hour_ = np.zeros((cap, 24), np.uint32)
        self.wday_ = np.zeros((cap, 7), np.uint32)
        self.hll_ = np.zeros((len(HLL_KINDS), cap, HLL_M), np.uint8)
        self.win_ = np.zeros((cap, max(len(self.releases_), 1), 2), np.uint32)
        self.task_ = np.zeros((cap, len(TASKS)), np.uint32)
        self.hh_id_ = np.zeros((cap, HH_K), np.uint64)
        self.hh_cnt_ = np.zeros((cap, HH_K), np.uint32)
        # per slot, what is already known of its template (1: used ≥ 5 times, 2: by ≥ 2
        # accounts; both only ever become true): a cache, not saved with the state
        self.hh_flag_ = np.zeros((cap, HH_K), np.uint8)
        # per tier, the sorted per-day volumes of its accounts (for per_day_tier_pct), each
        # account's value in it, and whether it learned since (caches, not saved)
        self.pd_pop_: dict[int, np.ndarray] = {}
        self.pd_val_ = np.zeros(cap, np.float64)
        self.pd_dirty_ = np.zeros(cap, bool)
        self.pd_n_ = 0
        self.meta_ = {"tier": np.zeros(cap, np.int8), "verified": np.zeros(cap, bool),
                      "billing": np.zeros(cap, np.uint64), "paykey": np.zeros(cap, np.uint64),
                      "emailkey": np.zeros(cap, np.uint64)}
        self.verdict_ = np.zeros(cap, np.int8)
        self.seed_ = np.zeros(cap, bool)              # attack on its own evidence (a seed)
        self.conf_ = np.zeros(cap, bool)              # a seed scoring >= inherit_seed_min_score
        self.conf_set_: set[int] = set()
        self.sev_ = np.zeros(cap, np.uint16)          # kinds of rare values shared with such
        self.tie_n_ = np.zeros((cap, len(KINDS)), np.uint8)   # ... and their count per kind
        self.parent_ = np.arange(cap, dtype=np.int64)
        self.gkinds_ = np.zeros(cap, np.int64)        # link-kind bits per union-find root
        self.reasons_: list[str] = []
        self.reason_strs_: dict[str, str] = {"": ""}
        self.tiers_: list[str] = ["unknown"]
        self.vindex_: dict[int, list[int] | None] = {}
        self.pairs_ = PairBits()
        self.templates_: dict[int, list[int]] = {}    # tid -> [count, first account, n_acc]
        self.strong_: dict[int, list[int]] = {}       # direct links (min_families families)
        self.members_: dict[int, list[int]] = {}
        self.t0_ = None
        self.task_cache_: dict[int, tuple[int, int, int]] = {}
        self.tid_cache_: dict[int, int] = {}

    def _grow(self, need: int) -> None:
        cap = len(self.parent_)
        if need <= cap:
            return
        # grow by a quarter (rows are allocated, used or not: doubling would leave up to
        # half of them empty at a large account count)
        new = max(need + need // 8, cap + cap // 4)

        def g(a):
            out = np.zeros((new,) + a.shape[1:], a.dtype)
            out[:len(a)] = a
            return out
        self.c_ = {k: g(v) for k, v in self.c_.items()}
        self.f_ = {k: g(v) for k, v in self.f_.items()}
        self.meta_ = {k: g(v) for k, v in self.meta_.items()}
        self.hour_, self.wday_ = g(self.hour_), g(self.wday_)
        hll = np.zeros((len(HLL_KINDS), new, HLL_M), np.uint8)
        hll[:, :cap] = self.hll_
        self.hll_ = hll
        self.win_, self.task_ = g(self.win_), g(self.task_)
        self.hh_id_, self.hh_cnt_ = g(self.hh_id_), g(self.hh_cnt_)
        self.hh_flag_ = g(self.hh_flag_)
        self.pd_val_, self.pd_dirty_ = g(self.pd_val_), g(self.pd_dirty_)
        self.verdict_, self.seed_ = g(self.verdict_), g(self.seed_)
        self.conf_, self.sev_, self.tie_n_ = g(self.conf_), g(self.sev_), g(self.tie_n_)
        parent = np.arange(new, dtype=np.int64)
        parent[:cap] = self.parent_
        self.parent_, self.gkinds_ = parent, g(self.gkinds_)

    def _tier_code(self, tier) -> int:
        t = tier or "unknown"
        if t not in self.tiers_:
            self.tiers_.append(t)
        return self.tiers_.index(t)

    def _add_accounts(self, ids: list[str], first_ts: np.ndarray, tiers=None) -> list[tuple]:
        """Register new accounts; returns their account-level link incidences."""
        start = self.n_accounts_
        self._grow(start + len(ids))
        inc = []
        metas = self._account_rows(ids)
        strs = sorted({m[k] for m in metas for k in ("billing_country", "payment_fingerprint",
                                                      "email_domain") if m.get(k)})
        hv = dict(zip(strs, pl.Series(strs, dtype=pl.String).hash(seed=0).to_list()))
        for j, aid in enumerate(ids):
            i = start + j
            self.index_[aid] = i
            self.ids_.append(aid)
            self.reasons_.append("")
            m = metas[j]
            tier = m.get("tier") or (tiers[j] if tiers is not None else None)
            self.meta_["tier"][i] = self._tier_code(tier)
            self.meta_["verified"][i] = bool(m.get("verified") or False)
            bc = m.get("billing_country")
            self.meta_["billing"][i] = hv[bc] if bc else 0
            ca = m.get("created_at")
            self.f_["created_at"][i] = ca.timestamp() * _US if ca is not None else np.nan
            self.f_["next_check"][i] = self._grace()
            if m.get("payment_fingerprint"):
                inc.append((i, 3, hv[m["payment_fingerprint"]]))
                self.meta_["paykey"][i] = _vkey(3, inc[-1][2])
            if m.get("email_domain"):
                inc.append((i, 4, hv[m["email_domain"]]))
                self.meta_["emailkey"][i] = _vkey(4, inc[-1][2])
            if ca is not None:
                inc.append((i, 5, int(ca.timestamp() * _US) // self.signup_us_))
        self.n_accounts_ += len(ids)
        return inc

    def _account_rows(self, ids: list[str]) -> list[dict]:
        """Accounts-table rows of new accounts ``ids`` ({} when absent), dropped from the
        lookup (an account is registered once)."""
        rows = [self._meta.pop(a, None) for a in ids]
        if not self._meta:
            self._meta = {}                   # a dict keeps its table when emptied
        have = [r for r in rows if r is not None]
        if not have:
            return [{} for _ in ids]
        got = iter(self.accounts[have].to_dicts())
        return [next(got) if r is not None else {} for r in rows]

    # -- learning --------------------------------------------------------------------------
    def learn_one(self, event: dict) -> None:
        """Update the state with one event (a contract record or a normalised event dict)."""
        self.learn_many(events_from_dicts([event]))

    def learn_many(self, events: pl.DataFrame) -> np.ndarray:
        """Update the state with a time-ordered batch of normalised events.

        Returns the account indices whose exchange count reached their next rescoring point.
        """
        self._init()
        if events.is_empty():
            return np.zeros(0, np.int64)
        ev = events
        aid = ev["account_id"]
        ids = aid.to_list()
        # a dict lookup per event (polars' replace_strict turns the whole index, up to
        # millions of accounts, into a Series on every call)
        index = self.index_
        known = np.fromiter((index.get(a, -1) for a in ids), np.int64, len(ids))
        ts = ev["ts"].dt.epoch("us").to_numpy().astype(np.int64)
        inc: list[tuple] = []
        if (known == -1).any():
            # new accounts in order of first appearance, each with its first event's row
            rows = np.flatnonzero(known == -1).tolist()
            first_row: dict[str, int] = {}
            for j in rows:
                first_row.setdefault(ids[j], j)
            tiers = None
            if "tier" in ev.columns:             # an account's first non-null tier
                tl = ev["tier"].to_list()
                tier_of: dict[str, str] = {}
                for j in rows:
                    if tl[j] is not None:
                        tier_of.setdefault(ids[j], tl[j])
                tiers = [tier_of.get(a) for a in first_row]
            inc += self._add_accounts(list(first_row), ts[list(first_row.values())], tiers)
            known = np.fromiter((index[a] for a in ids), np.int64, len(ids))
        acc = known
        if self.t0_ is None:
            self.t0_ = int(ts.min())
        X = self._event_columns(ev)
        # group by account keeping time order inside each group
        order = np.argsort(acc, kind="stable")
        a_s, ts_s = acc[order], ts[order]
        u, start, cnt = np.unique(a_s, return_index=True, return_counts=True)
        first = np.zeros(len(a_s), bool)
        first[start] = True
        pos = np.arange(len(a_s)) - np.repeat(start, cnt)          # position within group
        C, F = self.c_, self.f_
        n_before = C["n"][u]
        pre = self._prescore_on()
        # ties to confident seeds made by this batch's events: (account, kind bit, event)
        self.tie_log_ = [] if pre else None
        self.flagged_ = None
        sev0, tie0 = (self.sev_[u].copy(), self.tie_n_[u].copy()) if pre else (None, None)
        if inc:       # account-level incidences come with the account's first event
            ks = start[np.searchsorted(u, [t[0] for t in inc])].tolist()
            inc = [t + (k,) for t, k in zip(inc, ks)]
        seen_before = np.repeat(n_before > 0, cnt)
        prev_ts = np.empty_like(ts_s)
        prev_ts[1:] = ts_s[:-1]
        prev_ts[first] = F["last_ts"][u].astype(np.int64)
        has_gap = ~first | seen_before
        gap = (ts_s - prev_ts) / _US
        day = ts_s // _DAY_US
        prev_day = np.empty_like(day)
        prev_day[1:] = day[:-1]
        prev_day[first] = F["last_day"][u].astype(np.int64)
        new_day = (~first | seen_before) & (day != prev_day) | (first & ~seen_before)

        def seg(x):  # per-account sums of a per-event array in sorted order
            return np.add.reduceat(np.asarray(x, dtype=np.float64), start)

        self._learn_days(a_s, first, new_day, seen_before)
        F["first_ts"][u] = np.where(n_before > 0, F["first_ts"][u], ts_s[start])
        F["last_ts"][u] = ts_s[start + cnt - 1]
        F["last_day"][u] = day[start + cnt - 1]
        C["n"][u] += cnt
        self.pd_dirty_[u] = True
        C["days"][u] += seg(new_day).astype(np.int64)
        g = gap[has_gap]
        if len(g):
            # sums per account of the chunk (bins over the chunk's accounts, not all rows)
            gu = np.repeat(np.arange(len(u)), cnt)[has_gap]
            C["fast"][u] += np.bincount(gu, g < 2.0, minlength=len(u)).astype(np.int64)
            C["session"][u] += np.bincount(gu, g > 1800.0, minlength=len(u)).astype(np.int64)
            F["gap_sum"][u] += np.bincount(gu, g, minlength=len(u))
            F["gap_sq"][u] += np.bincount(gu, g * g, minlength=len(u))
        C["single"][u] += seg(X["nut"][order] <= 1).astype(np.int64)
        C["tool"][u] += seg(X["ntools"][order] > 0).astype(np.int64)
        C["tool_result"][u] += seg(X["tool_result"][order]).astype(np.int64)
        C["thinking"][u] += seg(X["thinking"][order] > 0).astype(np.int64)
        C["logprobs"][u] += seg(X["logprobs"][order] > 0).astype(np.int64)
        # max_tokens at the account's cap: count of events equal to the running maximum
        mt = X["max_tokens"][order].astype(np.float64)
        bmax = np.maximum.reduceat(mt, start)
        old = F["cap_max"][u]
        newmax = np.maximum(old, bmax)
        at = seg(mt == np.repeat(newmax, cnt))
        C["cap_count"][u] = np.where(newmax > old, 0, C["cap_count"][u]) + at.astype(np.int64)
        F["cap_max"][u] = newmax
        tmp = X["temperature"][order]
        ok = ~np.isnan(tmp.astype(np.float64))
        F["temp_n"][u] += seg(ok)
        F["temp_sum"][u] += seg(np.where(ok, tmp, 0.0))
        F["temp_sq"][u] += seg(np.where(ok, tmp * tmp, 0.0))
        for name, cname in (("in", "input_tokens"), ("out", "output_tokens")):
            x = X[cname][order].astype(np.float64)
            ok = ~np.isnan(x)
            F[f"{name}_tok"][u] += seg(np.where(ok, x, 0.0))
            F[f"{name}_n"][u] += seg(ok)
        hours = (ts_s // (3600 * _US)) % 24
        wd = ((ts_s // _DAY_US) + 3) % 7          # 1970-01-01 was a Thursday (Mon = 0)
        np.add.at(self.hour_, (a_s, hours), 1)
        np.add.at(self.wday_, (a_s, wd), 1)
        # country mismatch against the billing country
        ch = X["country_h0"][order]
        bill = self.meta_["billing"][a_s]
        C["mismatch"][u] += seg((bill != 0) & X["countries_nn"][order]
                                & (ch != bill)).astype(np.int64)
        # distinct counts: HyperLogLog registers
        hashes = {}
        for k, name in enumerate(HLL_KINDS):
            h = X[f"{name}_h"][order]
            nn = X[f"{name}_nn"][order]
            hashes[name] = (h, nn)
            idx, rank = _hll_parts(h[nn])
            reg = self.hll_[k]
            np.maximum.at(reg, (a_s[nn], idx), rank)
        # model pivot: exchanges in the 24 h after each release, and those on the new model
        if self.releases_:
            model = X["model"][order]
            for r, (rts, rmodel) in enumerate(self.releases_):
                if rts <= self.t0_:
                    continue
                w = (ts_s >= rts) & (ts_s < rts + _DAY_US)
                if w.any():
                    np.add.at(self.win_[:, r, 0], a_s[w], 1)
                    np.add.at(self.win_[:, r, 1], a_s[w & (model == rmodel)], 1)
        # content: classify a bounded sample of prompts
        n_at = np.repeat(n_before, cnt) + pos + 1
        ph = X["prompt_h"][order]
        pick = ((C["cls_n"][a_s] + pos) < self.max_prompts) | (
            (ph % np.maximum(n_at, 1).astype(np.uint64)) < np.uint64(self.max_prompts))
        if pick.any():
            self._learn_content(ev, order[pick], a_s[pick], ph[pick], np.flatnonzero(pick))
        # shared-value incidences for online linking
        lc = (X["link_h"][order], X["link_nn"][order])
        ev_inc = [(0, hashes["ips"]), (1, hashes["prefixes"]), (2, lc)]
        for kind, cname in ((6, "system_hash"), (7, "tools_hash")):
            ev_inc.append((kind, (X[cname][order], X[f"{cname}_nn"][order])))
        for kind, (h, nn) in ev_inc:
            if nn.any():
                a, v, k = _unique_pairs(a_s[nn], h[nn].astype(np.uint64))
                inc += zip(a.tolist(), [kind] * len(a), v.tolist(),
                           np.flatnonzero(nn)[k].tolist())
        if inc:
            self._link(inc)
        if pre:
            self._prescore(u, start, cnt, n_before, sev0, tie0, ts_s)
        due = u[C["n"][u] >= F["next_check"][u]]
        return due

    def _prescore(self, u, start, cnt, n_before, sev0, tie0, ts_s) -> None:
        """The pre-score rule (``stream.prescore_*``): accounts of the batch (``u``, their
        events at ``start`` .. ``start + cnt`` of the sorted batch, times ``ts_s``) not
        ``attack`` whose ties to confident seeds now meet it are ``attack`` from the event
        that completed them (their first of the batch when the ties were there before it:
        ``sev0``, ``tie0``); kept in ``flagged_`` (indices, exchanges at that event, its time
        in µs) for the alerts."""
        hit = np.flatnonzero(self._pre_ok(self.sev_[u], self.tie_n_[u])
                             & (self.verdict_[u] != 2))
        if not len(hit):
            return
        at = start[hit] + cnt[hit] - 1           # ties made without an event: its last one
        before = self._pre_ok(sev0[hit], tie0[hit])
        at[before] = start[hit][before]
        where = {int(a): j for j, a in enumerate(u[hit].tolist()) if not before[j]}
        ties: dict[int, list[tuple[int, int]]] = {}
        for a, bit, k in self.tie_log_:
            if a in where:
                ties.setdefault(a, []).append((k, bit))
        for a, lst in ties.items():
            j = where[a]
            mask = sev0[hit[j]:hit[j] + 1].copy()
            count = tie0[hit[j]:hit[j] + 1].astype(np.int64)      # (no uint8 wrap)
            for k, bit in sorted(lst):
                mask |= bit
                count[0, bit.bit_length() - 1] += 1
                if self._pre_ok(mask, count)[0]:
                    at[j] = k
                    break
        idx = u[hit]
        self.verdict_[idx] = 2
        for i in idx.tolist():
            self.reasons_[i] = PRESCORE_REASON
        self.flagged_ = (idx, (n_before[hit] + at - start[hit] + 1).astype(np.int64), ts_s[at])

    def flagged_rows(self) -> pl.DataFrame | None:
        """Accounts the last :meth:`learn_many` flagged before scoring (pre-score rule), as
        :meth:`score_many` rows plus ``ts_us`` (the deciding event's time), in time order;
        None when none."""
        if getattr(self, "flagged_", None) is None:
            return None
        idx, seen, ts = self.flagged_
        o = np.lexsort((idx, ts))
        idx, seen, ts = idx[o], seen[o], ts[o]
        return pl.DataFrame({
            "account_id": pl.Series([self.ids_[i] for i in idx.tolist()], dtype=pl.String),
            "idx": idx, "score": self.f_["score"][idx],
            "verdict": pl.Series(VERDICT_NAME[self.verdict_[idx]], dtype=pl.String),
            "reasons": pl.Series([self.reasons_[i] for i in idx.tolist()], dtype=pl.String),
            "cluster_id": pl.Series([self.state_of(self.ids_[i])["cluster_id"]
                                     for i in idx.tolist()], dtype=pl.String),
            "exchanges_seen": seen, "ts_us": ts})

    def _learn_days(self, a_s: np.ndarray, first: np.ndarray, new_day: np.ndarray,
                    seen_before: np.ndarray) -> None:
        """Daily counts for ``daily_max_share``, in three counters per account: exchanges on
        the current day, and the maximum daily count of the completed days with the number
        of days at it. ``a_s`` sorted by account in time order; ``first`` marks each
        account's first event of the batch; ``new_day`` an event opening a day."""
        C = self.c_
        run = np.flatnonzero(new_day | first)             # each run: one account, one day
        racc = a_s[run]
        rcnt = np.diff(np.r_[run, len(a_s)])
        cont = first[run] & ~new_day[run]                   # continues the stored current day
        rtot = rcnt + np.where(cont, C["day_n"][racc], 0)
        last = np.r_[racc[1:] != racc[:-1], True]           # the account's last run: today
        ended = first[run] & new_day[run] & seen_before[run]  # the stored day is over
        done_acc = np.r_[racc[~last], racc[ended]]
        done_tot = np.r_[rtot[~last], C["day_n"][racc[ended]]]
        if len(done_acc):
            ua, inv = np.unique(done_acc, return_inverse=True)
            top = np.zeros(len(ua), np.int64)
            np.maximum.at(top, inv, done_tot)
            old = C["day_max"][ua]
            new = np.maximum(old, top)
            C["day_atmax"][ua] = (np.where(old == new, C["day_atmax"][ua], 0)
                                  + np.bincount(inv, done_tot == new[inv], minlength=len(ua))
                                  .astype(np.int64))
            C["day_max"][ua] = new
        C["day_n"][racc[last]] = rtot[last]

    def _event_columns(self, ev: pl.DataFrame) -> dict[str, np.ndarray]:
        """Every per-event column ``learn_many`` reads, as numpy arrays in event order, from
        one polars query (a Series method each would cost one query each: ~40 a chunk)."""
        # n_clients counts user agent + TLS pairs (as fingerprint.py); linking uses ASN + both
        cexpr = pl.concat_str([pl.col("user_agent"), pl.col("tls_fingerprint")],
                              separator="|", ignore_nulls=True)
        lexpr = pl.concat_str([pl.col("asn").cast(pl.String), cexpr], separator="|",
                              ignore_nulls=True)
        has_client = cexpr.str.len_chars() > 0
        hll_cols = {"keys": pl.col("api_key_id"), "ips": pl.col("ip"),
                    "prefixes": pl.col("ip_prefix"), "asns": pl.col("asn").cast(pl.String),
                    "countries": pl.col("country"),
                    "clients": pl.when(has_client).then(cexpr), "models": pl.col("model")}
        link = pl.when(has_client).then(lexpr)
        exprs = [pl.col("n_user_turns").fill_null(1).alias("nut"),
                 pl.col("tool_names").list.len().fill_null(0).alias("ntools"),
                 pl.col("has_tool_results").fill_null(False).alias("tool_result"),
                 pl.col("thinking").fill_null(0), pl.col("logprobs").fill_null(0),
                 pl.col("max_tokens").fill_null(-1), pl.col("temperature"),
                 pl.col("input_tokens"), pl.col("output_tokens"),
                 pl.col("country").hash(seed=0).alias("country_h0"),
                 pl.col("prompt").hash(seed=self.seed).alias("prompt_h"),
                 link.hash(seed=17).alias("link_h"), link.is_not_null().alias("link_nn"),
                 pl.col("system_hash"), pl.col("system_hash").is_not_null().alias(
                     "system_hash_nn"),
                 pl.col("tools_hash"), pl.col("tools_hash").is_not_null().alias(
                     "tools_hash_nn")]
        for name, e in hll_cols.items():
            exprs += [e.hash(seed=17).alias(f"{name}_h"), e.is_not_null().alias(f"{name}_nn")]
        if self.releases_:
            exprs.append(pl.col("model"))
        out = ev.select(exprs)
        return {c: out[c].to_numpy() for c in out.columns}

    def _learn_content(self, ev: pl.DataFrame, rows: np.ndarray, acc: np.ndarray,
                       ph: np.ndarray, ks: np.ndarray) -> None:
        """Classify the sampled prompts ``rows`` of ``ev`` (accounts ``acc``, prompt hashes
        ``ph``, positions ``ks`` in ``learn_many``'s sorted batch) and count their tasks and
        templates.

        The classifier's answer for a (prompt, system, tools) and the template id of a
        prompt are kept in bounded caches (``CACHE_MAX`` entries, emptied when full): both
        are functions of the text alone, so a cached answer is the one a new call would give,
        and campaigns and tools resend the same texts (a third of the classified texts and
        half of the prompts of the demo log were seen in an earlier chunk).
        """
        sub = ev.select("prompt", "system", "tool_names")[rows]
        key = sub.select(pl.struct("prompt", "system", "tool_names").hash(seed=1)) \
            .to_series().to_list()
        cache = self.task_cache_
        if len(cache) + len(key) > CACHE_MAX:
            cache.clear()
        todo = list(dict.fromkeys(k for k in key if k not in cache))
        if todo:
            first: dict[int, int] = {}
            for j, k in enumerate(key):
                first.setdefault(k, j)
            usub = sub[[first[k] for k in todo]]
            pred = predict_tasks(usub, self.classifier_)     # null prompts count as ""
            code = {t: i for i, t in enumerate(TASKS)}
            for k, t, c, sn in zip(todo, pred["task"].to_list(),
                                   pred["cot_score"].to_list(),
                                   pred["sensitive_score"].to_list()):
                cache[k] = (code.get(t, len(TASKS) - 1), int(c > 0.5), int(sn > 0.5))
        got = np.array([cache[k] for k in key], dtype=np.int64).reshape(-1, 3)
        np.add.at(self.task_, (acc, got[:, 0]), 1)
        np.add.at(self.c_["cls_n"], acc, 1)
        np.add.at(self.c_["cot"], acc, got[:, 1])
        np.add.at(self.c_["sens"], acc, got[:, 2])
        tids = self._template_ids(sub["prompt"], ph)
        inc = []
        first_k: dict[tuple, int] = {}
        for a, t, k in zip(acc.tolist(), tids, ks.tolist()):
            first_k.setdefault((a, 8, t), k)
            rec = self.templates_.get(t)
            if rec is None:
                self.templates_[t] = [1, a, 1]
            else:
                rec[0] += 1
                if rec[2] == 1 and rec[1] != a:
                    rec[2] = 2
            inc.append((a, 8, t))
        self._hh_add_many(acc.tolist(), tids)
        self._link([t + (first_k[t],) for t in set(inc)])

    def _template_ids(self, prompts: pl.Series, ph: np.ndarray) -> list[int]:
        """Template ids (hash of the normalised prompt) of ``prompts``, whose hashes are
        ``ph``; normalises only the prompts not in the cache."""
        cache = self.tid_cache_
        ph = ph.tolist()
        if len(cache) + len(ph) > CACHE_MAX:
            cache.clear()
        first: dict[int, int] = {}                # a prompt sent twice is normalised once
        for j, h in enumerate(ph):
            if h not in cache:
                first.setdefault(h, j)
        if first:
            new = normalize_prompts(prompts.gather(list(first.values()))).hash(seed=3)
            cache.update(zip(first, new.to_list()))
        return [cache[h] for h in ph]

    def _hh_add_many(self, acc: list[int], tids: list[int]) -> None:
        """Misra-Gries heavy hitters of each account's templates (HH_K counters), fed the
        templates in order: a known one counts up, a new one takes a free slot, and with
        none free every counter counts down."""
        ua = list(dict.fromkeys(acc))
        rows = dict(zip(ua, zip(self.hh_id_[ua].tolist(), self.hh_cnt_[ua].tolist())))
        new_a: list[int] = []
        new_j: list[int] = []
        for a, t in zip(acc, tids):
            ids, cnt = rows[a]
            if t in ids:
                # the first live slot holding t (a slot counted down to 0 may hold it too)
                j = ids.index(t)
                while j < HH_K and not (cnt[j] > 0 and ids[j] == t):
                    j += 1
                if j < HH_K:
                    cnt[j] += 1
                    continue
            if 0 in cnt:
                j = cnt.index(0)
                ids[j], cnt[j] = t, 1
                new_a.append(a)
                new_j.append(j)
            else:
                cnt[:] = [c - 1 for c in cnt]
        self.hh_id_[ua] = [rows[a][0] for a in ua]
        self.hh_cnt_[ua] = [rows[a][1] for a in ua]
        if new_a:
            self.hh_flag_[new_a, new_j] = 0

    # -- linking ---------------------------------------------------------------------------
    def _find(self, x: int) -> int:
        p = self.parent_
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return int(root)

    def _link(self, inc: list[tuple]) -> None:
        """Index incidences ``(account, kind, value, event)`` (``event``: the position in
        ``learn_many``'s sorted batch of the first event that carried the value)."""
        vindex, pairs, need, fam_n = self.vindex_, self.pairs_, self.min_families_, self.fam_n_
        conf = self.conf_set_ if self._lift_rule() is not None else None
        log = getattr(self, "tie_log_", None)
        if self.protect and inc:
            a_all = np.fromiter((t[0] for t in inc), np.int64, len(inc))
            keep = self.verdict_[a_all] != 2
            if not keep.all() and self._prescore_on():
                # an account attack by the pre-score rule alone keeps feeding the indexes:
                # its ties are why it is flagged, and its later values tie its mates
                off = np.flatnonzero(~keep)
                keep[off] = [self.reasons_[x].startswith(PRESCORE_REASON)
                             for x in a_all[off].tolist()]
            inc = [t for t, ok in zip(inc, keep.tolist()) if ok]
        for a, kind, value, k in inc:
            key = _vkey(kind, value)
            lst = vindex.get(key, 0)
            if lst is None:
                continue
            if lst == 0:
                vindex[key] = [a]
                continue
            if a in lst:
                continue
            if len(lst) >= self.max_group:
                vindex[key] = None
                continue
            if kind == 3 and self.seed_[lst].any():
                self._due_now([a])                    # shares a payment with a seed
            bit = 1 << kind
            if conf:                                  # a rare value shared with a confident seed
                if not conf.isdisjoint(lst):
                    self._seed_evidence([a], [bit])
                    if log is not None:
                        log.append((a, bit, k))
                if a in conf:                         # (only without `protect`)
                    self._seed_evidence(np.array(lst), np.full(len(lst), bit, np.uint16),
                                        value=False)
            olds = pairs.or_many([(a << 32) | b if a < b else (b << 32) | a for b in lst], bit)
            for b, old in zip(lst, olds):
                if fam_n[old | bit] >= need:
                    self._union(a, b, bit)
                    if fam_n[old] < need:
                        self.strong_.setdefault(a, []).append(b)
                        self.strong_.setdefault(b, []).append(a)
                        if self.seed_[b] or self.seed_[a]:
                            self._due_now([b if self.seed_[a] else a])
            lst.append(a)

    def _lift_rule(self):
        """The online lift (``stream.inherit_lift``, None: off); keeps ``sev_groups_``, the
        number of its evidence groups each link-kind mask spans, in step with it."""
        cfg = self.signals_.stream
        key = (cfg.inherit_lift, cfg.inherit_lift_require, cfg.prescore_require,
               cfg.prescore_ties, cfg.inherit_solo)
        if getattr(self, "ilift_key_", None) != key:
            self.ilift_key_ = key
            name = cfg.inherit_lift
            self.ilift_ = lift = next((x for x in self.signals_.lifts if x.name == name), None)
            spanned = _groups_spanned(lift.group_masks(KINDS) if lift else [])
            self.sev_groups_ = spanned.copy()
            require = (cfg.inherit_lift_require if cfg.inherit_lift_require is not None
                       else lift.require if lift else ())
            need = kind_mask(require, KINDS)
            masks = np.arange(len(spanned))
            if need:                    # evidence without a required kind counts no group
                self.sev_groups_[(masks & need) == 0] = 0
            # the pre-score rule: the same groups, each of its requirements met
            self.pre_groups_ = spanned
            for req in cfg.prescore_require:
                self.pre_groups_[(masks & kind_mask(req, KINDS)) == 0] = 0
            # the solo lift online (stream.inherit_solo): its kinds as a mask
            self.solo_ = next((x for x in self.signals_.lifts if x.name == cfg.inherit_solo),
                              None)
            self.solo_kinds_ = kind_mask(self.solo_.kinds if self.solo_ else (), KINDS)
            self.pre_ties_ = np.zeros(len(KINDS), np.int64)     # 0: no rule for the kind
            for k, c in cfg.prescore_ties:
                if k in KINDS:
                    self.pre_ties_[KINDS.index(k)] = c
        return self.ilift_

    def _prescore_on(self) -> bool:
        """Whether a pre-score rule is set (``stream.prescore_*``; needs the online lift)."""
        cfg = self.signals_.stream
        return bool(cfg.prescore_min_groups or cfg.prescore_ties) and \
            self._lift_rule() is not None

    def _pre_ok(self, sev: np.ndarray, ties: np.ndarray) -> np.ndarray:
        """Whether seed-evidence masks ``sev`` with tie counts ``ties`` (rows) meet the
        pre-score rule: enough evidence groups, or enough ties of one kind."""
        need = self.signals_.stream.prescore_min_groups
        ok = self.pre_groups_[sev] >= need if need else np.zeros(len(sev), bool)
        if self.pre_ties_.any():
            ok |= ((ties >= self.pre_ties_) & (self.pre_ties_ > 0)).any(axis=1)
        return ok

    def _lift_min_groups(self) -> int:
        g = self.signals_.stream.inherit_lift_min_groups
        return int(g if g is not None else self.ilift_.min_groups)

    def _seed_evidence(self, idx: np.ndarray, bits: np.ndarray, value: bool = True) -> None:
        """Add link-kind ``bits`` to the seed evidence of accounts ``idx`` (ties through rare
        values to confident seeds); those that reach the online lift's ``min_groups`` and are
        not flagged yet become due for rescoring at their next exchange.

        ``tie_n_`` counts the values (``value``: one a call, from a request) per kind; ties
        through pairs with a new confident seed (``value=False``) count as one at most (a
        pair may share one value or many)."""
        if value:                         # one account, one kind bit (from _link)
            a, bit = int(idx[0]), int(bits[0])
            self.sev_[a] |= bit
            b = bit.bit_length() - 1
            self.tie_n_[a, b] = min(int(self.tie_n_[a, b]) + 1, 255)
            if (self.sev_groups_[self.sev_[a]] >= self._lift_min_groups()
                    and self.verdict_[a] != 2):
                self._due_now([a])
            return
        np.bitwise_or.at(self.sev_, idx, bits.astype(np.uint16))
        idx, inv = np.unique(idx, return_inverse=True)
        agg = np.zeros(len(idx), np.int64)
        np.bitwise_or.at(agg, inv, bits.astype(np.int64))
        has = (agg[:, None] >> np.arange(len(KINDS))) & 1 > 0
        self.tie_n_[idx] = np.where(has, np.maximum(self.tie_n_[idx], 1), self.tie_n_[idx])
        hit = idx[(self.sev_groups_[self.sev_[idx]] >= self._lift_min_groups())
                  & (self.verdict_[idx] != 2)]
        if len(hit):
            self._due_now(hit)

    def _due_now(self, idx) -> None:
        """Make accounts due for rescoring at their next exchange (group evidence changed)."""
        idx = np.asarray(idx, dtype=np.int64)
        nc = self.f_["next_check"]
        nc[idx] = np.minimum(nc[idx], np.maximum(self.c_["n"][idx], 1))

    def _union(self, a: int, b: int, kind_bit: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            self.gkinds_[ra] |= kind_bit
            return
        ma = self.members_.pop(ra, None) or [ra]
        mb = self.members_.pop(rb, None) or [rb]
        if len(ma) < len(mb):
            ra, rb, ma, mb = rb, ra, mb, ma
        self.parent_[rb] = ra
        self.gkinds_[ra] |= self.gkinds_[rb] | kind_bit
        ma.extend(mb)
        self.members_[ra] = ma
        if len(ma) >= self.min_size_:
            # a new or grown cluster: its members are rescored at the next round
            self.f_["next_check"][np.array(ma)] = np.minimum(
                self.f_["next_check"][np.array(ma)], self._grace())

    def groups(self) -> dict[int, list[int]]:
        """Live clusters: union-find root -> member indices (groups of ``min_size`` or more)."""
        return {r: m for r, m in self.members_.items() if len(m) >= self.min_size_}

    # -- features and scoring --------------------------------------------------------------
    def features(self, idx: np.ndarray, columns: set[str] | None = None) -> pl.DataFrame:
        """Batch feature columns (fingerprint + content) for account indices ``idx`` (only
        ``account_id`` and ``columns`` when given)."""
        self._init()
        idx = np.asarray(idx, dtype=np.int64)
        C = {k: v[idx].astype(np.float64) for k, v in self.c_.items()}
        F = {k: v[idx] for k, v in self.f_.items()}
        n = np.maximum(C["n"], 1)
        days = np.maximum(C["days"], 1)
        ngap = np.maximum(C["n"] - 1, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            gmean = F["gap_sum"] / ngap
            gvar = (F["gap_sq"] - ngap * gmean ** 2) / np.maximum(ngap - 1, 1)
            gap_cv = np.nan_to_num(np.sqrt(np.maximum(gvar, 0)) / gmean)
            tmean = F["temp_sum"] / F["temp_n"]
            tvar = (F["temp_sq"] - F["temp_n"] * tmean ** 2) / (F["temp_n"] - 1)
            tstd = np.where(F["temp_n"] > 1, np.sqrt(np.maximum(tvar, 0)), 0.0)
            out_in = np.nan_to_num(F["out_tok"] / F["in_tok"], posinf=0.0)
        est = dict(zip(HLL_KINDS, np.round(_hll_estimate(self.hll_[:, idx]))))
        hour = self.hour_[idx].astype(np.float64)
        mc = self._member_columns(idx)
        tiers = np.array(self.tiers_, dtype=object)[self.meta_["tier"][idx]]
        cls, task = self._task_shares(idx)
        reuse, shared = self._template_shares(idx, cls)
        per_day = C["n"] / days
        # daily_max_share as fingerprint.rhythm: the current day counts as it stands
        top = np.maximum(C["day_max"], C["day_n"])
        at_top = np.where(C["day_max"] == top, C["day_atmax"], 0) + (C["day_n"] == top)
        daily_max = np.where((C["days"] >= DAILY_MAX_MIN_DAYS) & (top >= DAILY_MAX_MIN_COUNT),
                             at_top / days, 0.0)
        cols = {
            "account_id": pl.Series([self.ids_[i] for i in idx], dtype=pl.String),
            "n_exchanges": mc["n_exchanges"], "active_days": C["days"].astype(np.int64),
            "per_day": per_day,
            "per_day_tier_pct": self._tier_pct(idx, per_day),
            "daily_max_share": daily_max,
            # whole seconds, as polars' total_seconds() in the batch features
            "span_days": np.trunc((F["last_ts"] - F["first_ts"]) / _US) / 86400.0,
            "hour_entropy": _entropy_rows(hour, 24),
            "weekday_entropy": _entropy_rows(self.wday_[idx].astype(np.float64), 7),
            "active_hours": ((hour / np.maximum(hour.sum(1, keepdims=True), 1)) >= 0.02).sum(1),
            "gap_cv": gap_cv, "median_gap_s": np.nan_to_num(gmean),
            "fast_gap_share": np.where(ngap > 0, C["fast"] / np.maximum(ngap, 1), 0.0),
            "session_gap_share": np.where(ngap > 0, C["session"] / np.maximum(ngap, 1), 0.0),
            "single_turn_share": C["single"] / n, "tool_share": C["tool"] / n,
            "tool_result_share": C["tool_result"] / n,
            "max_tokens_cap_share": np.where(F["cap_max"] >= 4096, C["cap_count"] / n, 0.0),
            "thinking_share": C["thinking"] / n, "logprobs_share": C["logprobs"] / n,
            "temperature_std": tstd, "out_in_ratio": out_in,
            "mean_input_tokens": np.where(F["in_n"] > 0, F["in_tok"] / np.maximum(F["in_n"], 1),
                                          np.nan),
            "mean_output_tokens": np.where(F["out_n"] > 0,
                                           F["out_tok"] / np.maximum(F["out_n"], 1), np.nan),
            "n_keys": est["keys"], "n_ips": mc["n_ips"], "n_prefixes": est["prefixes"],
            "n_asns": est["asns"], "n_countries": est["countries"],
            "n_clients": est["clients"], "n_models": est["models"],
            "keys_per_100": 100.0 * est["keys"] / n, "ips_per_100": 100.0 * mc["n_ips"] / n,
            "pivot_share": mc["pivot_share"], "pivot_window_n": mc["pivot_window_n"],
            "tier": mc["tier"],
            "risky_tier": np.isin(tiers, LIGHTLY_VERIFIED_TIERS).astype(np.float64),
            "verified": mc["verified"], "age_days_at_first_use": mc["age_days_at_first_use"],
            "country_mismatch_share": C["mismatch"] / n,
            "cot_share": C["cot"] / cls, "sensitive_share": C["sens"] / cls,
            "valuable_share": mc["valuable_share"], "top_task_share": task.max(axis=1),
            "task_entropy": _entropy_rows(task, len(TASKS)),
            "template_reuse_share": reuse, "shared_template_share": shared,
            **{f"share_{t}": task[:, i] for i, t in enumerate(TASKS)},
            "payment_fingerprint": mc["payment_fingerprint"],
            "email_domain": mc["email_domain"],
        }
        # from Series: a dict of numpy arrays costs ~4x as much to turn into a frame
        return pl.DataFrame([pl.Series(k, v) for k, v in cols.items()
                             if columns is None or k in columns or k == "account_id"])

    def _task_shares(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(classified prompts, at least 1; task shares) of accounts ``idx``."""
        cls = np.maximum(self.c_["cls_n"][idx].astype(np.float64), 1)
        return cls, self.task_[idx].astype(np.float64) / cls[:, None]

    def _member_columns(self, idx: np.ndarray) -> dict:
        """Feature columns :data:`MEMBER_COLUMNS` of accounts ``idx`` (those the scorer's
        live-cluster aggregates read): computed for every member of a rescored account's
        cluster, and the same code gives :meth:`features` these columns."""
        F = self.f_
        win = self.win_[idx].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            shares = np.where(win[:, :, 0] > 0, win[:, :, 1] / win[:, :, 0], np.nan)
        pivot = np.nan_to_num(np.nanmax(np.where(np.isnan(shares), -1, shares), axis=1),
                              nan=0.0).clip(min=0.0)
        task = self._task_shares(idx)[1]
        cols = {
            "n_exchanges": self.c_["n"][idx].astype(np.int64),
            "n_ips": np.round(_hll_estimate(self.hll_[HLL_KINDS.index("ips"), idx])),
            "pivot_share": pivot, "pivot_window_n": win[:, :, 0].max(axis=1),
            "tier": pl.Series(np.array(self.tiers_, dtype=object)[self.meta_["tier"][idx]]
                              .tolist(), dtype=pl.String),
            "verified": self.meta_["verified"][idx],
            "age_days_at_first_use": np.trunc((F["first_ts"][idx] - F["created_at"][idx])
                                              / _US) / 86400.0,
            "valuable_share": task[:, [TASKS.index(t) for t in VALUABLE_TASKS]].sum(axis=1),
        }
        # account fields the batch cluster features read (compared for equality only:
        # their 64-bit hashes stand in for the strings, null when absent)
        for name, key in (("payment_fingerprint", "paykey"), ("email_domain", "emailkey")):
            k = self.meta_[key][idx]
            cols[name] = pl.Series(name, pa.array(k, mask=k == 0))
        return cols

    def _template_shares(self, idx, cls) -> tuple[np.ndarray, np.ndarray]:
        ids, cnt = self.hh_id_[idx], self.hh_cnt_[idx].astype(np.float64)
        live = cnt > 0                       # a slot counted down to 0 holds a stale id
        flag = self.hh_flag_[idx]
        todo = live & (flag != 3)            # look up only what may have changed
        if todo.any():
            uq, inv = np.unique(ids[todo], return_inverse=True)
            recs = [self.templates_.get(t) or (0, 0, 0) for t in uq.tolist()]
            flag[todo] = np.array([(r[0] >= 5) | ((r[2] >= 2) << 1) for r in recs],
                                  np.uint8)[inv]
            self.hh_flag_[idx] = flag
        big, shr = live & (flag & 1 > 0), live & (flag & 2 > 0)
        return ((cnt * big).sum(1) / cls).clip(0, 1), ((cnt * shr).sum(1) / cls).clip(0, 1)

    def _sync_per_day(self) -> None:
        """Bring the sorted per-tier populations of per-day volume up to date: the accounts
        learned since the last call leave with their old value and come back with the new
        one (O(accounts) memory moves, instead of sorting every account at every scoring)."""
        n, old_n = self.n_accounts_, self.pd_n_
        dirty = np.flatnonzero(self.pd_dirty_[:old_n])
        upd = np.concatenate([dirty, np.arange(old_n, n)])
        if not len(upd):
            return
        vals = self.c_["n"][upd] / np.maximum(self.c_["days"][upd], 1)
        tier_upd, tier_old = self.meta_["tier"][upd], self.meta_["tier"][dirty]
        old_vals = self.pd_val_[dirty]
        for t in np.unique(tier_upd).tolist():
            pop = self.pd_pop_.get(t, np.zeros(0))
            rm = np.sort(old_vals[tier_old == t])
            if len(rm):     # one copy per value removed: equal values sit side by side
                k = np.arange(len(rm)) - np.searchsorted(rm, rm, "left")
                pop = np.delete(pop, np.searchsorted(pop, rm, "left") + k)
            add = np.sort(vals[tier_upd == t])
            self.pd_pop_[t] = np.insert(pop, np.searchsorted(pop, add), add)
        self.pd_val_[upd] = vals
        self.pd_dirty_[dirty] = False
        self.pd_n_ = n

    def _tier_pct(self, idx, per_day) -> np.ndarray:
        """Percentile of per-day volume within the tier, among all accounts seen so far."""
        self._sync_per_day()
        out = np.zeros(len(idx))
        t_idx = self.meta_["tier"][idx]
        for t in np.unique(t_idx):
            pop = self.pd_pop_.get(int(t), np.zeros(0))
            sel = t_idx == t
            lo = np.searchsorted(pop, per_day[sel], "left")
            hi = np.searchsorted(pop, per_day[sel], "right")
            out[sel] = (lo + (hi - lo + 1) / 2.0) / max(len(pop), 1)
        return out

    def _cluster_frame(self, idx: np.ndarray) -> pl.DataFrame:
        """The features the scorer reads of accounts ``idx`` (sorted, distinct), with their
        live clusters' ``c_*``.

        Only the cluster features the scorer reads are computed (``c_size`` always), and
        the other members of the clusters contribute only the columns those read
        (:meth:`_member_columns`; every feature when the signal file asks for more): a
        live group has up to hundreds of members, rescored one at a time.
        """
        groups = self.groups()
        roots = np.array([self._find(int(i)) for i in idx], dtype=np.int64)
        in_grp = sorted({int(r) for r in roots if int(r) in groups})
        extra = np.array([m for r in in_grp for m in groups[r]], dtype=np.int64)
        need, read = self._cluster_columns()
        feats = self.features(idx, self._score_columns())
        names = [self.cluster_name(r) for r in in_grp]
        membership = pl.DataFrame({
            "account_id": pl.Series([self.ids_[i] for i in extra.tolist()], dtype=pl.String),
            "cluster_id": pl.Series([nm for r, nm in zip(in_grp, names)
                                     for _ in groups[r]], dtype=pl.String)})
        if membership.is_empty():
            cf = cluster_features(feats, membership, pl.DataFrame(), None)
        elif MEMBER_COLUMNS.issuperset(read):
            # the members' rows in membership order: the frame cluster_features would join
            mc = self._member_columns(extra)
            cf = member_aggregates(membership.hstack([pl.Series(k, mc[k]) for k in read]),
                                   need)
        else:
            cf = cluster_features(self.features(np.unique(np.concatenate([idx, extra]))),
                                  membership, pl.DataFrame(), None, columns=need)
        if not membership.is_empty():
            online = {"mean_edge_kinds": lambda r: float(bin(int(self.gkinds_[r])).count("1")),
                      "shared_template_share": lambda r: self._group_template_share(groups[r])}
            # in cf's row order (its clusters are exactly in_grp): columns, not a join
            root_of = dict(zip(names, in_grp))
            order = [root_of[c] for c in cf["cluster_id"].to_list()]
            cf = cf.hstack([pl.Series(k, [f(r) for r in order], dtype=pl.Float64)
                            for k, f in online.items() if k in need])
        return attach_cluster_features(feats, membership, cf)

    def _score_columns(self) -> set[str]:
        """Account feature columns the scorer's signals read."""
        if not hasattr(self, "score_columns_"):
            self.score_columns_ = {s.feature for s in self.scorer_._signals().signals
                                   if s.feature and not s.feature.startswith(CLUSTER_PREFIX)}
        return self.score_columns_

    def _cluster_columns(self) -> tuple[set[str], list[str]]:
        """Cluster features the scorer's signals read (without the ``c_`` prefix) with
        ``size`` (``Scorer.cap_solo``), and the member feature columns they read."""
        if not hasattr(self, "cluster_columns_"):
            need = {"size"} | {
                s.feature[len(CLUSTER_PREFIX):] for s in self.scorer_._signals().signals
                if s.feature and s.feature.startswith(CLUSTER_PREFIX)}
            self.cluster_columns_ = (need, sorted(member_columns_read(need)
                                                  - {"cluster_id", "account_id"}))
        return self.cluster_columns_

    def _group_template_share(self, members: list[int]) -> float:
        m = np.array(members)
        ids, cnt = self.hh_id_[m].ravel(), self.hh_cnt_[m].ravel()
        keep = cnt > 0
        if not keep.any():
            return 0.0
        uq, inv = np.unique(ids[keep], return_inverse=True)
        n = np.bincount(inv, weights=cnt[keep], minlength=len(uq)).astype(np.int64)
        # accounts per template: an account's sketch holds a template in one live slot at
        # most (_hh_add_many counts up the live slot before it takes a free one)
        n_acc = np.bincount(inv, minlength=len(uq))
        tot = int(n.sum())
        return float(int(n[n_acc >= 2].sum()) / tot) if tot else 0.0

    def cluster_name(self, root: int) -> str:
        """Live cluster id: ``L`` + the lowest account index of the group (stable on merge)."""
        return f"L{min(self.members_.get(int(root), [int(root)])):07d}"

    def score_many(self, idx: np.ndarray) -> pl.DataFrame:
        """Score accounts ``idx`` through the batch scorer; updates their stored verdicts.

        Returns ``account_id, idx, score, verdict, reasons, cluster_id, exchanges_seen``.
        """
        self._init()
        idx = np.unique(np.asarray(idx, dtype=np.int64))
        if len(idx) == 0:
            return pl.DataFrame(schema={"account_id": pl.String, "idx": pl.Int64,
                                        "score": pl.Float64, "verdict": pl.String,
                                        "reasons": pl.String, "cluster_id": pl.String,
                                        "exchanges_seen": pl.Int64})
        feats = self._cluster_frame(idx)
        res = self.scorer_.run(feats)
        t_att = self.signals_.stream.attack_threshold
        if t_att is not None:  # calibrated on online scores (tools/fit_stream.py)
            res.verdict = self.scorer_.cap_solo(self.scorer_.decide(res.score, attack=t_att),
                                                feats)
        score = np.round(res.score, 6)
        self.f_["score"][idx] = score
        n = self.c_["n"][idx]
        code, reasons, soon = self._group_verdicts(
            idx, score, np.array([VERDICT_CODE[v] for v in res.verdict], dtype=np.int8),
            list(res.reasons))
        self.verdict_[idx] = code
        intern = self.reason_strs_
        for i, r in zip(idx.tolist(), reasons):
            self.reasons_[i] = intern.setdefault(r, r)      # one object per distinct text
        self.f_["next_check"][idx] = np.where(
            soon > 0, np.maximum(soon, n + 1),
            np.maximum(n + 1, np.ceil(n * self._rescore_factor())))
        return pl.DataFrame({
            "account_id": feats["account_id"], "idx": idx, "score": score,
            "verdict": pl.Series(VERDICT_NAME[code], dtype=pl.String),
            "reasons": pl.Series(reasons, dtype=pl.String),
            "cluster_id": feats["cluster_id"], "exchanges_seen": n.astype(np.int64)})

    def _group_verdicts(self, idx: np.ndarray, score: np.ndarray, code: np.ndarray,
                        reasons: list[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Minimum own evidence, then group inheritance (``stream`` of the signal file).

        An account is a *seed* while its own score says ``attack`` with at least
        ``min_exchanges_attack`` exchanges (fewer: ``suspicious``), and below
        ``early_exchanges`` exchanges a score of at least ``early_attack_threshold``. A non-seed is ``attack``
        when ``inherit_payment`` seeds share its payment instrument, or its rare values tie it
        to confident seeds (score >= ``inherit_seed_min_score``) through enough evidence
        groups of the online lift (``inherit_lift``) and its own score reaches
        ``inherit_lift_min_score``, or ``inherit_linked`` seeds are directly linked to it and
        its own score reaches ``inherit_linked_min_score``. New seeds make their payment mates
        and direct links due for rescoring at their next exchange; new confident seeds pass
        their ties (``sev_``) to all their pair partners.

        Also returns, per account, an earlier next rescoring point than the growth schedule
        (0: none): ``min_exchanges_attack`` for one held back by the minimum, the next
        exchange for one with enough linked seeds whose own score is still too low.
        """
        cfg = self.signals_.stream
        code = code.copy()
        n = self.c_["n"][idx]
        held = (code == 2) & (n < cfg.min_exchanges_attack)
        early = (code == 2) & ~held & (n < cfg.early_exchanges) & (
            score < cfg.early_attack_threshold)
        code[held | early] = 1
        soon = np.where(held, cfg.min_exchanges_attack, 0).astype(np.float64)
        was = self.seed_[idx].copy()
        self.seed_[idx] = code == 2
        new_seeds = idx[(code == 2) & ~was]
        vindex, seed = self.vindex_, self.seed_
        lift = self._lift_rule()
        if lift is not None:
            conf = (code == 2) & (score >= cfg.inherit_seed_min_score)
            new_conf = idx[conf & ~self.conf_[idx]]
            self.conf_[idx] = conf
            self.conf_set_.difference_update(idx[~conf].tolist())
            if len(new_conf):
                self.conf_set_.update(new_conf.tolist())
                partner, bits = self.pairs_.partners(new_conf)
                if len(partner):
                    self._seed_evidence(partner, bits, value=False)
            lift_min = (cfg.inherit_lift_min_score if cfg.inherit_lift_min_score is not None
                        else lift.min_score if lift.min_score is not None else 0.0)
            lift_ok = ((self.sev_groups_[self.sev_[idx]] >= self._lift_min_groups())
                       & (score >= lift_min)).tolist()
            pre_ok = (self._pre_ok(self.sev_[idx], self.tie_n_[idx]) if self._prescore_on()
                      else np.zeros(len(idx), bool)).tolist()
            solo = self.solo_
            if solo is not None:        # solo: no direct link (strong_), so no live cluster
                solo_min = solo.min_score if solo.min_score is not None else (
                    cfg.attack_threshold or 0.0)
                solo_ok = ((score >= solo_min) & ((self.sev_[idx] & self.solo_kinds_) > 0)
                           ).tolist()
        for j, i in enumerate(idx.tolist()):
            if code[j] == 2:
                continue
            why = None
            key = int(self.meta_["paykey"][i])
            lst = vindex.get(key) if cfg.inherit_payment and key else None
            # only a confident seed passes its flag on (one false seed would otherwise flag
            # every colleague on a company card)
            strong = (seed[lst] & (self.f_["score"][lst] >= cfg.inherit_seed_min_score)
                      if lst else None)
            if lst and int(strong.sum()) - int(seed[i] and self.f_["score"][i]
                                                >= cfg.inherit_seed_min_score) \
                    >= cfg.inherit_payment:
                why = "payment_shared_with_flagged"
            elif lift is not None and lift_ok[j]:
                why = lift.reason
            elif lift is not None and pre_ok[j]:
                why = PRESCORE_REASON
            elif lift is not None and solo is not None and solo_ok[j] and i not in self.strong_:
                why = solo.reason
            elif (cfg.inherit_linked and i in self.strong_
                  and int(seed[self.strong_[i]].sum()) >= cfg.inherit_linked):
                if score[j] >= cfg.inherit_linked_min_score:
                    why = "linked_to_flagged"
                else:
                    soon[j] = 1           # watched: rescored at every exchange
            if why:
                code[j] = 2
                reasons[j] = ";".join([why] + [r for r in reasons[j].split(";") if r])
        if len(new_seeds):
            mates = [m for i in new_seeds.tolist() for m in self.strong_.get(i, ())]
            for i in new_seeds.tolist():
                key = int(self.meta_["paykey"][i])
                mates += (vindex.get(key) or []) if key else []
            if mates:
                self._due_now(np.setdiff1d(np.array(mates, dtype=np.int64), new_seeds))
        return code, reasons, soon

    def score_one(self, account_id: str) -> dict:
        """Score one account now: ``{account_id, score, verdict, reasons, cluster_id, ...}``."""
        self._init()
        i = self.index_.get(account_id)
        if i is None:
            return {"account_id": account_id, "score": 0.0, "verdict": "benign", "reasons": "",
                    "cluster_id": None, "exchanges_seen": 0}
        row = self.score_many(np.array([i])).row(0, named=True)
        row.pop("idx")
        return row

    def state_of(self, account_id: str) -> dict:
        """Last stored verdict of an account without rescoring (O(1), for the decision path)."""
        self._init()
        i = self.index_.get(account_id)
        if i is None:
            return {"account_id": account_id, "score": 0.0, "verdict": "benign", "reasons": "",
                    "cluster_id": None, "exchanges_seen": 0, "tier": None}
        r = self._find(i)
        grp = self.members_.get(r)
        return {"account_id": account_id, "score": float(self.f_["score"][i]),
                "verdict": str(VERDICT_NAME[self.verdict_[i]]), "reasons": self.reasons_[i],
                "cluster_id": (self.cluster_name(r) if grp and len(grp) >= self.min_size_
                               else None),
                "exchanges_seen": int(self.c_["n"][i]),
                "tier": self.tiers_[self.meta_["tier"][i]]}

    def score_all(self) -> pl.DataFrame:
        """Score every account seen (the end-of-replay state)."""
        self._init()
        return self.score_many(np.arange(self.n_accounts_))

    # -- memory and persistence ------------------------------------------------------------
    def _memory_usage(self) -> dict:
        """Bytes of per-account state (allocated rows) and of the shared indexes."""
        n = max(self.n_accounts_, 1)
        arrays = (list(self.c_.values()) + list(self.f_.values()) + list(self.meta_.values())
                  + [self.hour_, self.wday_, self.hll_, self.win_, self.task_, self.hh_id_,
                     self.hh_cnt_, self.verdict_, self.seed_, self.parent_, self.gkinds_,
                     self.conf_, self.sev_, self.tie_n_])
        per_row = sum(a.nbytes // (a.shape[1] if a is self.hll_ else a.shape[0])
                      for a in arrays)
        ids = sum(len(s) + 49 for s in self.ids_) / n + 8 + 64   # str objects + dict slot
        shared = (sum(8 + (len(v) * 8 + 56 if v else 0) for v in self.vindex_.values())
                  + self.pairs_.nbytes() + len(self.templates_) * 120
                  + sum(156 + 8 * len(v) for v in self.strong_.values()))
        return {"per_account_bytes": per_row + ids, "shared_index_bytes": shared,
                "shared_per_account_bytes": shared / n, "accounts": self.n_accounts_}

    def to_bytes(self) -> bytes:
        """Serialise the learned state (numpy ``.npz``, no pickle)."""
        self._init()
        n = self.n_accounts_
        arr = {f"c_{k}": v[:n] for k, v in self.c_.items()}
        arr |= {f"f_{k}": v[:n] for k, v in self.f_.items()}
        arr |= {f"m_{k}": v[:n] for k, v in self.meta_.items()}
        arr |= {"hour": self.hour_[:n], "wday": self.wday_[:n], "hll": self.hll_[:, :n],
                "win": self.win_[:n], "task": self.task_[:n], "hh_id": self.hh_id_[:n],
                "hh_cnt": self.hh_cnt_[:n], "verdict": self.verdict_[:n], "seed": self.seed_[:n],
                "parent": self.parent_[:n], "gkinds": self.gkinds_[:n],
                "conf": self.conf_[:n], "sev": self.sev_[:n], "tie_n": self.tie_n_[:n],
                "pair_bits": np.array(["kinds"]),
                "ids": np.array(self.ids_, dtype=str), "reasons": np.array(self.reasons_,
                                                                           dtype=str),
                "tiers": np.array(self.tiers_, dtype=str),
                "t0": np.array([-1 if self.t0_ is None else self.t0_], np.int64)}
        vk = np.array(list(self.vindex_.keys()), dtype=np.uint64)
        vl = [v for v in self.vindex_.values()]
        arr["v_keys"] = vk
        arr["v_len"] = np.array([-1 if v is None else len(v) for v in vl], np.int64)
        arr["v_flat"] = np.array([a for v in vl if v for a in v], np.int64)
        arr["p_keys"], arr["p_vals"] = self.pairs_.arrays()
        arr["t_keys"] = np.array(list(self.templates_.keys()), np.uint64)
        arr["t_vals"] = np.array(list(self.templates_.values()), np.int64).reshape(-1, 3)
        buf = io.BytesIO()
        np.savez(buf, **arr)
        return buf.getvalue()

    def load_bytes(self, data: bytes) -> "OnlineDetector":
        """Restore a state written by :meth:`to_bytes` (same parameters expected)."""
        for k in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, k)
        self._init()
        z = np.load(io.BytesIO(data), allow_pickle=False)
        if "pair_bits" not in z:
            from ..errors import ConfigError
            raise ConfigError("checkpoint: online state written by an older distillguard "
                              "(pair bits by link family, no seed evidence); it cannot be "
                              "resumed: remove the checkpoint file and replay from the start")
        n = len(z["ids"])
        self._grow(n)
        for k in self.c_:
            self.c_[k][:n] = z[f"c_{k}"]
        for k in self.f_:
            self.f_[k][:n] = z[f"f_{k}"]
        for k in self.meta_:
            self.meta_[k][:n] = z[f"m_{k}"]
        for name in ("hour", "wday", "win", "task", "hh_id", "hh_cnt", "verdict", "seed",
                     "parent", "gkinds", "conf", "sev"):
            getattr(self, name + "_")[:n] = z[name]
        self.hll_[:, :n] = z["hll"]
        if "tie_n" in z:                # (states before the pre-score rule: no ties counted)
            self.tie_n_[:n] = z["tie_n"]
        self.ids_ = z["ids"].tolist()
        self.index_ = {a: i for i, a in enumerate(self.ids_)}
        for a in self.ids_:
            self._meta.pop(a, None)
        intern = self.reason_strs_
        self.reasons_ = [intern.setdefault(r, r) for r in z["reasons"].tolist()]
        self.tiers_ = z["tiers"].tolist()
        self.n_accounts_ = n
        t0 = int(z["t0"][0])
        self.t0_ = None if t0 == -1 else t0
        flat, off = z["v_flat"].tolist(), 0
        self.vindex_ = {}
        for k, ln in zip(z["v_keys"].tolist(), z["v_len"].tolist()):
            if ln < 0:
                self.vindex_[k] = None
            else:
                self.vindex_[k] = flat[off:off + ln]
                off += ln
        self.pairs_ = PairBits(z["p_keys"], z["p_vals"])
        self.conf_set_ = set(np.flatnonzero(self.conf_[:n]).tolist())
        self.templates_ = {k: list(v) for k, v in zip(z["t_keys"].tolist(),
                                                      z["t_vals"].tolist())}
        self.strong_ = {}
        for pk, bits in self.pairs_.items():
            if self.fam_n_[bits] >= self.min_families_:
                a, b = pk >> 32, pk & 0xFFFFFFFF
                self.strong_.setdefault(a, []).append(b)
                self.strong_.setdefault(b, []).append(a)
        members: dict[int, list[int]] = {}
        for i in range(n):
            members.setdefault(self._find(i), []).append(i)
        self.members_ = {r: m for r, m in members.items() if len(m) > 1}
        return self


class PairBits:
    """Link-kind bits (``1 << KINDS.index(kind)``) of every linked account pair, keyed
    ``min << 32 | max``.

    A dict costs ≈ 100 bytes a pair (a key object, a slot, spare room); pairs are the largest
    shared index (≈ 20 a account), so settled pairs live in two sorted numpy arrays (8-byte
    key + 2 bytes of bits) and only recently created ones in a dict, merged into the arrays
    when it holds more than 1/16 of them (at least ``MIN_RECENT``).
    """

    MIN_RECENT = 1 << 16

    def __init__(self, keys=None, bits=None) -> None:
        self.recent: dict[int, int] = {}
        self.keys = np.zeros(0, np.int64) if keys is None else np.asarray(keys, np.int64)
        self.bits = np.zeros(0, np.uint16) if bits is None else np.asarray(bits, np.uint16)
        if len(self.keys) > 1 and (np.diff(self.keys) <= 0).any():
            o = np.argsort(self.keys, kind="stable")
            self.keys, self.bits = self.keys[o], self.bits[o]

    def __len__(self) -> int:
        return len(self.recent) + len(self.keys)

    def or_many(self, pks: list[int], bit: int) -> list[int]:
        """Set ``bit`` on the distinct pairs ``pks`` (created if new); their old bits."""
        rec = self.recent
        olds = [rec.get(k, -1) for k in pks]
        need = [j for j, o in enumerate(olds) if o < 0]
        for j, o in enumerate(olds):
            if o >= 0:
                rec[pks[j]] = o | bit
        if need and len(self.keys):
            arr = np.array([pks[j] for j in need], np.int64)
            pos = np.minimum(self.keys.searchsorted(arr), len(self.keys) - 1)
            hit = self.keys[pos] == arr
            found = np.where(hit, self.bits[pos], 0).tolist()
            self.bits[pos[hit]] |= np.uint16(bit)
            for j, h, o in zip(need, hit.tolist(), found):
                olds[j] = o
                if not h:
                    rec[pks[j]] = bit
        else:
            for j in need:
                olds[j] = 0
                rec[pks[j]] = bit
        if len(rec) > max(self.MIN_RECENT, len(self.keys) >> 4):
            self._merge()
        return olds

    def _merge(self) -> None:
        k = np.fromiter(self.recent.keys(), np.int64, len(self.recent))
        b = np.fromiter(self.recent.values(), np.uint16, len(self.recent))
        o = np.argsort(k)
        k, b = k[o], b[o]
        pos = self.keys.searchsorted(k)
        self.keys, self.bits = np.insert(self.keys, pos, k), np.insert(self.bits, pos, b)
        self.recent.clear()

    def items(self):
        """(key, bits) of every pair: arrays, then recent ones."""
        yield from zip(self.keys.tolist(), self.bits.tolist())
        yield from self.recent.items()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        self._merge()
        return self.keys, self.bits

    def nbytes(self) -> int:
        return self.keys.nbytes + self.bits.nbytes + len(self.recent) * 100

    def partners(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(partner, bits) of every pair with one end in ``nodes`` (one pass over all pairs)."""
        k = np.concatenate([self.keys, np.fromiter(self.recent.keys(), np.int64,
                                                   len(self.recent))])
        b = np.concatenate([self.bits, np.fromiter(self.recent.values(), np.uint16,
                                                   len(self.recent))])
        lo, hi = k >> 32, k & 0xFFFFFFFF
        m_lo, m_hi = np.isin(lo, nodes), np.isin(hi, nodes)
        return np.concatenate([hi[m_lo], lo[m_hi]]), np.concatenate([b[m_lo], b[m_hi]])


def _groups_spanned(group_masks: list[int]) -> np.ndarray:
    """For every link-kind bit mask (index), how many of the groups (each a bit mask of
    kinds) it touches."""
    masks = np.arange(1 << len(KINDS))
    out = np.zeros(len(masks), np.int64)
    for m in group_masks:
        out += (masks & m) != 0
    return out


def _unique_pairs(a: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (a, v) pairs sorted by a, then v (as ``np.unique(..., axis=0)``, faster), and
    the index of each pair's first occurrence in the input."""
    o = np.lexsort((v, a))
    a, v = a[o], v[o]
    keep = np.ones(len(a), bool)
    keep[1:] = (a[1:] != a[:-1]) | (v[1:] != v[:-1])
    return a[keep], v[keep], o[keep]


def _vkey(kind: int, value: int) -> int:
    """Key of a (link kind, value) in the shared-value index."""
    return (kind << 58) ^ (value & ((1 << 58) - 1))


def _h(s: str) -> int:
    return int(pl.Series([s]).hash(seed=0)[0])


def events_from_dicts(records: list[dict]) -> pl.DataFrame:
    """Normalise contract records (or already-normalised dicts) into an EVENT_SCHEMA frame."""
    from .normalize import normalize_records

    return normalize_records(records)


__all__ = ["OnlineDetector", "events_from_dicts", "EVENT_SCHEMA", "conform"]
