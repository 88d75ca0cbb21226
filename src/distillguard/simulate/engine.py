"""Vectorised traffic generation: accounts -> sessions -> exchanges (chunked Arrow tables).

Per-account parameters are numpy arrays; sessions are drawn per account x day; exchanges are
expanded from sessions by repeat/cumsum one chunk at a time, so memory is bounded by the chunk.
Text stays integer ids until a chunk is turned into strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from .config import Scenario, Segment
from .content import TOOLS_TYPE, ContentBank

DAY = 86400.0
ROLES = pa.array(["system", "user", "assistant", "tool"], pa.string())
MSG_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.large_string())]))
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_SYL = np.array(["ka", "lo", "mi", "nex", "tor", "va", "zen", "qu", "ri", "sol", "tek", "ba",
                 "dyn", "flo", "gri", "hal", "ion", "jet", "lum", "ora", "pix", "syn", "tra"])
_TLD = np.array([".com", ".io", ".ai", ".dev", ".co", ".net", ".org", ".tech"])


def hex_ids(prefix: str, values: np.ndarray, width: int = 16) -> pl.Series:
    """``prefix`` + lower-case hex of uint64 ``values`` (vectorised)."""
    b = np.ascontiguousarray(values.astype(">u8")).view(np.uint8).reshape(-1, 8)
    out = np.empty((len(values), 16), np.uint8)
    out[:, 0::2] = _HEX[b >> 4]
    out[:, 1::2] = _HEX[b & 15]
    out = out[:, 16 - width:]
    arr = pa.Array.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(out.tobytes())])
    s = pl.Series(arr.cast(pa.binary()).cast(pa.string()))
    return prefix + s


def _choice(rng, weights: dict, n: int, keys=None):
    keys = list(weights) if keys is None else keys
    p = np.array([weights.get(k, 0.0) for k in keys], float)
    return rng.choice(len(keys), size=n, p=p / p.sum())


def _lognormal(rng, r, n):
    return rng.lognormal(r[0], r[1], n)


def _uniform(rng, r, n):
    return rng.uniform(r[0], r[1], n) if r[1] > r[0] else np.full(n, float(r[0]))


@dataclass
class Sessions:
    acct: np.ndarray   # int32
    start: np.ndarray  # float64 seconds since window start
    n: np.ndarray      # int32 exchanges
    src: np.ndarray    # int16 source index
    day: np.ndarray    # int16 UTC day


class Engine:
    """Builds the world for one (scenario, seed) and yields event chunks."""

    def __init__(self, sc: Scenario, seed: int):
        self.sc = sc
        self.seed = seed
        ss = np.random.SeedSequence([seed, 20260223])
        self._ss = ss.spawn(8)
        self.content = ContentBank({k: v.files for k, v in sc.sources.items()},
                                   np.random.default_rng(self._ss[0]))
        self.src_names = list(sc.sources)
        self.src_idx = {k: i for i, k in enumerate(self.src_names)}
        self.models = list(sc.old_models) + [sc.new_model]
        self.client_names = list(sc.clients)
        self.countries = list(sc.countries)
        self.asn_names = list(sc.asns)
        self._build_sources()
        self._build_ip_registry_base()
        self._build_accounts(np.random.default_rng(self._ss[1]))
        self.sessions = self._build_sessions(np.random.default_rng(self._ss[2]))

    # ------------------------------------------------------------------ tables
    def _build_sources(self):
        c, sc = self.content, self.sc
        srcs = list(sc.sources.values())
        self.src_mode = np.array([("batch", "chat", "agentic").index(s.mode) for s in srcs],
                                 np.int8)
        fams = [c.family[s.templates] for s in srcs]
        self.src_fam_start = np.array([f[0] for f in fams], np.int64)
        self.src_fam_len = np.array([f[1] for f in fams], np.int64)
        self.src_daily_pool = np.array([s.daily_pool for s in srcs], np.int64)
        self.src_out = np.array([s.output_tokens for s in srcs], float)
        # tools: -2 = from corpus row, -1 = none, else toolset id
        self.src_tools = np.array([-2 if s.tools == "corpus" else
                                   (-1 if not s.tools else c.toolset_id[s.tools]) for s in srcs],
                                  np.int64)
        self.filler_src = self.src_idx.get("filler", -1)

    def _build_ip_registry_base(self):
        sc = self.sc
        self.asn_num = np.array([a.asn for a in sc.asns.values()], np.int64)
        self.asn_country = np.array([a.country for a in sc.asns.values()])
        self.asn_kind = np.array([a.kind for a in sc.asns.values()])
        # each ASN owns one /16 (deterministic from the ASN number)
        first = 11 + (self.asn_num * 2654435761 % 200)
        first = np.where(np.isin(first, [100, 127, 169, 172, 192, 198]), first + 1, first)
        second = (self.asn_num * 40503) % 256
        self.asn_base = (first << 24) | (second << 16)
        self.ip_u32: list[np.ndarray] = []
        self.ip_asn: list[np.ndarray] = []
        self.n_ips = 0
        rng = np.random.default_rng(self._ss[3])
        self._ip_rng = rng
        # shared mobile CGNAT pools per country
        self.mobile_pool: dict[str, np.ndarray] = {}
        for ctry in self.countries:
            asns = np.flatnonzero((self.asn_kind == "mobile") & (self.asn_country == ctry))
            if len(asns) == 0 or sc.mobile_pool_per_country == 0:
                continue
            a = rng.choice(asns, sc.mobile_pool_per_country)
            self.mobile_pool[ctry] = self._new_ips(a)

    def _new_ips(self, asn_idx: np.ndarray, same24: bool = False) -> np.ndarray:
        rng = self._ip_rng
        n = len(asn_idx)
        if same24:
            third = np.full(n, rng.integers(256))
            host = rng.choice(np.arange(10, 250), n, replace=n > 240)
        else:
            third = rng.integers(0, 256, n)
            host = rng.integers(1, 255, n)
        ips = self.asn_base[asn_idx] | (third << 8) | host
        self.ip_u32.append(ips.astype(np.int64))
        self.ip_asn.append(asn_idx.astype(np.int64))
        idx = np.arange(self.n_ips, self.n_ips + n)
        self.n_ips += n
        return idx

    def _asn_for(self, rng, kind: str, country: np.ndarray) -> np.ndarray:
        cand_all = np.flatnonzero(self.asn_kind == kind)
        out = rng.choice(cand_all, len(country))
        for ctry in np.unique(country):
            cand = np.flatnonzero((self.asn_kind == kind) & (self.asn_country == ctry))
            m = country == ctry
            if len(cand):
                out[m] = rng.choice(cand, m.sum())
        return out

    # ------------------------------------------------------------------ accounts
    def _build_accounts(self, rng: np.random.Generator):
        sc = self.sc
        segs = [s for s in sc.segments if s.accounts > 0]
        # benign first so attack proxies can reuse benign residential IPs
        segs.sort(key=lambda s: s.label == "attack")
        self.segments: list[Segment] = segs
        n_total = sum(s.accounts for s in segs)
        S = len(segs)
        self.seg = np.repeat(np.arange(S), [s.accounts for s in segs]).astype(np.int32)
        n_src = len(self.src_names)
        cols: dict[str, list] = {k: [] for k in (
            "tier", "email", "pay", "country", "verified", "birth", "life", "tz",
            "client1", "client2", "p_client2", "nkeys", "sys", "temp", "maxtok", "p_think",
            "budget", "lpk", "adopt_t", "adopt_share", "filler", "p_active", "rate",
            "ip_lists", "mix")}
        benign_res_ips: list[np.ndarray] = []
        start_s = 0.0
        for si, s in enumerate(segs):
            n = s.accounts
            c = cols
            c["tier"].append(np.array(list(s.tiers))[_choice(rng, s.tiers, n)])
            c["verified"].append(rng.random(n) < s.verified)
            cw = s.countries or {k: v.weight for k, v in sc.countries.items()}
            ctry = np.array(list(cw))[_choice(rng, cw, n)]
            c["country"].append(ctry)
            tz = np.array([sc.countries[x].tz for x in ctry]) + rng.normal(0, 1, n) * s.tz_jitter_h
            c["tz"].append(tz)
            groups = rng.integers(0, s.groups, n) if s.groups > 0 else np.zeros(n, np.int64)
            # e-mail domains
            dom = np.array(list(s.email_domains) or ["gmail.com"])[
                _choice(rng, s.email_domains or {"gmail.com": 1}, n)]
            custom = rng.random(n) < s.custom_domain_share
            names = (_SYL[rng.integers(0, len(_SYL), n)].astype(object)
                     + _SYL[rng.integers(0, len(_SYL), n)] + _TLD[rng.integers(0, len(_TLD), n)])
            dom = np.where(custom, names, dom).astype(object)
            if s.group_email and s.groups > 0:
                gdom = (_SYL[rng.integers(0, len(_SYL), s.groups)].astype(object)
                        + _SYL[rng.integers(0, len(_SYL), s.groups)] + "corp.com")
                if s.email_domains and len(s.email_domains) == 1 and s.groups == 1:
                    gdom = np.array(list(s.email_domains), object)
                dom = gdom[groups]
            c["email"].append(dom)
            n_fp = max(1, int(np.ceil(n * s.payment_ratio)))
            fp = rng.integers(0, 2**63, n_fp, dtype=np.int64).astype(np.uint64)
            assign = np.concatenate([np.arange(min(n, n_fp)),
                                     rng.integers(0, n_fp, max(0, n - n_fp))])
            c["pay"].append(fp[rng.permutation(assign)])
            # sign-up and lifetime (days relative to the window start)
            lo, hi = s.created_days_before
            before = -np.exp(rng.uniform(np.log(max(lo, 1e-3)), np.log(max(hi, lo + 1e-3)), n))
            inwin = rng.random(n) < s.created_in_window
            if s.signup_bursts > 0:
                bursts = rng.uniform(0, sc.days - 1, s.signup_bursts)
                when = bursts[rng.integers(0, s.signup_bursts, n)] + rng.uniform(0, 0.25, n)
            else:
                when = rng.uniform(0, sc.days - 0.5, n)
            birth = np.where(inwin, when, before)
            c["birth"].append(birth)
            life = _uniform(rng, s.lifetime_days, n) if s.lifetime_days[1] > 0 \
                else np.full(n, np.inf)
            c["life"].append(life)
            # clients / keys / prompts
            cl = list(s.clients)
            c1 = _choice(rng, s.clients, n)
            c2 = _choice(rng, s.clients, n)
            two = _uniform(rng, s.clients_per_account, n).round() >= 2
            c["client1"].append(np.array([self.client_names.index(cl[i]) for i in c1])
                                if n < 50 else np.vectorize(self.client_names.index)(
                                    np.array(cl)[c1]))
            c["client2"].append(np.vectorize(self.client_names.index)(np.array(cl)[c2]))
            c["p_client2"].append(np.where(two, 0.3, 0.0))
            c["nkeys"].append(np.maximum(1, _uniform(rng, s.keys_per_account, n).round())
                              .astype(np.int64))
            sysn = list(s.system_prompts) or ["helpful"]
            c["sys"].append(np.array([self.content.system_id[k] for k in sysn])[
                _choice(rng, s.system_prompts or {"helpful": 1}, n)])
            c["temp"].append(np.array(list(s.temperature), float)[
                _choice(rng, s.temperature, n)])
            c["maxtok"].append(np.array(list(s.max_tokens), np.int64)[
                _choice(rng, s.max_tokens, n)])
            c["p_think"].append(_uniform(rng, s.p_thinking, n))
            c["budget"].append(np.array(list(s.thinking_budgets) or [1024], np.int64)[
                _choice(rng, s.thinking_budgets or {1024: 1}, n)])
            c["lpk"].append(np.array(list(s.logprobs_k) or [1], np.int64)[
                _choice(rng, s.logprobs_k or {1: 1}, n)])
            rel = (sc.release_us - sc.start_us) / 1e6
            adopt = rel + _lognormal(rng, s.adopt_delay_h, n) * 3600
            c["adopt_t"].append(np.where(rng.random(n) < s.p_adopt, adopt, np.inf))
            c["adopt_share"].append(_uniform(rng, s.adopt_share, n))
            c["filler"].append(_uniform(rng, s.filler_share, n))
            c["p_active"].append(_uniform(rng, s.p_active, n))
            c["rate"].append(_lognormal(rng, s.sessions_per_day, n) * s.volume_multiplier)
            mix = np.zeros((n, n_src))
            base = np.array([s.tasks.get(k, 0.0) for k in self.src_names])
            base = base / base.sum()
            if s.task_concentration > 0:
                nz = base > 0
                mix[:, nz] = rng.dirichlet(base[nz] * s.task_concentration * nz.sum(), n)
            else:
                mix[:] = base
            c["mix"].append(mix)
            c["ip_lists"].append(self._account_ips(rng, s, ctry, groups, benign_res_ips))
        self.n_accounts = n_total
        a = {k: (np.concatenate(v) if k not in ("ip_lists", "mix") else v)
             for k, v in cols.items()}
        self.acc = a
        self.mix_cum = np.cumsum(np.concatenate(cols["mix"]), axis=1)
        ip_lists = [lst for seg_lists in cols["ip_lists"] for lst in seg_lists]
        self.ip_cnt = np.array([len(x) for x in ip_lists], np.int64)
        self.ip_off = np.concatenate([[0], np.cumsum(self.ip_cnt)[:-1]]).astype(np.int64)
        self.ip_flat = np.concatenate(ip_lists).astype(np.int64)
        ids = rng.integers(0, 2**63, n_total, dtype=np.int64).astype(np.uint64)
        while len(np.unique(ids)) < n_total:  # astronomically rare
            ids = rng.integers(0, 2**63, n_total, dtype=np.int64).astype(np.uint64)
        self.account_ids = hex_ids("acct_", ids, 12)
        self.key_prefix = hex_ids("key_", rng.integers(0, 2**63, n_total, dtype=np.int64)
                                  .astype(np.uint64), 10)
        self.created_s = np.minimum(a["birth"] * DAY - rng.uniform(60, 6 * 3600, n_total),
                                    a["birth"] * DAY)
        ips = np.concatenate(self.ip_u32)
        self.ip_str = (((ips >> 24) & 255).astype(str).astype(object) + "."
                       + ((ips >> 16) & 255).astype(str) + "." + ((ips >> 8) & 255).astype(str)
                       + "." + (ips & 255).astype(str))
        self.ip_str = pl.Series("ip", self.ip_str.astype(str), pl.String)
        asn_i = np.concatenate(self.ip_asn)
        self.ip_asn_num = self.asn_num[asn_i]
        self.ip_country = pl.Series("country", self.asn_country[asn_i], pl.String)
        self.ip_kind = self.asn_kind[asn_i]
        # per-segment tables
        self.seg_gap = np.array([s.gap_s for s in segs], float)
        self.seg_max_turns = np.array([s.max_turns for s in segs], np.int64)
        self.seg_p_system = np.array([s.p_system for s in segs])
        self.seg_temp_jitter = np.array([s.temp_jitter for s in segs])
        self.seg_p_logprobs = np.array([s.p_logprobs for s in segs])
        self.seg_out_scale = np.array([s.output_scale for s in segs])
        self.seg_p429 = np.array([s.p_429 for s in segs])
        self.seg_p5xx = np.array([s.p_5xx for s in segs])
        self.seg_primary = np.array([s.network.primary_p if "proxy" not in s.network.kinds
                                     else 0.0 for s in segs])
        self.seg_toolset = np.array([self.content.toolset_id[s.agent_toolset]
                                     if s.agent_toolset else -1 for s in segs], np.int64)
        n_old = len(self.sc.old_models)
        mw = np.array([[s.models.get(m, 0.0) for m in self.sc.old_models] for s in segs])
        self.seg_model_cum = np.cumsum(mw / mw.sum(1, keepdims=True), axis=1)
        self.n_old = n_old
        tv = [list(s.temperature) for s in segs]
        tw = [np.array(list(s.temperature.values()), float) for s in segs]
        width = max(len(t) for t in tv)
        self.seg_temp_vals = np.array([t + [t[-1]] * (width - len(t)) for t in tv], float)
        self.seg_temp_cum = np.array([np.concatenate([np.cumsum(w / w.sum()),
                                                      np.ones(width - len(w))]) for w in tw])
        # template variants allowed per (segment, family start)
        self.tmpl_allowed: dict[tuple[int, int], np.ndarray] = {}
        for si, s in enumerate(segs):
            for fs, fl in set(zip(self.src_fam_start.tolist(), self.src_fam_len.tolist())):
                k = fl if s.template_variants <= 0 else min(fl, s.template_variants)
                self.tmpl_allowed[(si, fs)] = fs + np.sort(rng.choice(fl, k, replace=False))

    def _account_ips(self, rng, s: Segment, ctry, groups, benign_res_ips) -> list[np.ndarray]:
        n = len(ctry)
        net = s.network
        kinds = list(net.kinds)
        kind = np.array(kinds)[_choice(rng, net.kinds, n)]
        k_ips = np.maximum(1, _uniform(rng, net.ips_per_account, n).round().astype(np.int64))
        out: list[np.ndarray | None] = [None] * n
        # residential / cloud: fresh IPs per account
        for kname in ("residential", "cloud", "datacenter"):
            m = np.flatnonzero(kind == kname)
            if len(m) == 0:
                continue
            per = k_ips[m]
            asn = self._asn_for(rng, kname, ctry[m])
            idx = self._new_ips(np.repeat(asn, per))
            if s.label == "benign" and kname == "residential":
                benign_res_ips.append(idx)
            for j, (lo, hi) in enumerate(zip(np.cumsum(per) - per, np.cumsum(per))):
                out[m[j]] = idx[lo:hi]
        m = np.flatnonzero(kind == "mobile")
        for j in m:
            pool = self.mobile_pool.get(ctry[j])
            if pool is None:
                pool = next(iter(self.mobile_pool.values()))
            out[j] = rng.choice(pool, min(len(pool), k_ips[j]), replace=False)
        if s.label == "benign" and len(m):
            benign_res_ips.append(np.unique(np.concatenate([out[j] for j in m])))
        m = np.flatnonzero(kind == "group")
        if len(m):
            n_groups = max(1, s.groups)
            for g in range(n_groups):
                gm = m[groups[m] == g]
                if len(gm) == 0:
                    continue
                cand = np.flatnonzero(self.asn_kind == net.group_asn_kind)
                asn = int(rng.choice(cand))
                gips = self._new_ips(np.full(net.group_ips, asn), same24=True)
                for j in gm:
                    out[j] = rng.choice(gips, min(len(gips), k_ips[j]), replace=False)
        m = np.flatnonzero(kind == "proxy")
        if len(m):
            pools = []
            if net.proxy_datacenter:
                dc = np.flatnonzero(self.asn_kind == "datacenter")
                n24 = max(1, net.proxy_datacenter // 20)
                for blk in np.array_split(np.arange(net.proxy_datacenter), n24):
                    pools.append(self._new_ips(np.full(len(blk), rng.choice(dc)), same24=True))
            if net.proxy_residential and benign_res_ips:
                cand = np.unique(np.concatenate(benign_res_ips))
                pools.append(rng.choice(cand, min(len(cand), net.proxy_residential),
                                        replace=False))
            pool = np.concatenate(pools) if pools else self._new_ips(
                rng.choice(np.flatnonzero(self.asn_kind == "cloud"), 10))
            per = np.maximum(1, _uniform(rng, net.proxy_per_account, len(m)).round()
                             .astype(np.int64))
            for j, p in zip(m, per):
                out[j] = rng.choice(pool, min(len(pool), p), replace=False)
        return [np.asarray(x, np.int64) for x in out]

    # ------------------------------------------------------------------ sessions
    def _build_sessions(self, rng: np.random.Generator) -> Sessions:
        sc = self.sc
        D = sc.days
        a = self.acc
        start_dow = (sc.start_us // 1_000_000 // 86400 + 3) % 7  # 0 = Monday
        dow = (start_dow + np.arange(D)) % 7
        weekend = dow >= 5
        parts = []
        offset = 0
        for si, s in enumerate(self.segments):
            n = s.accounts
            sl = slice(offset, offset + n)
            offset += n
            acct_ids = np.arange(sl.start, sl.stop)
            p = a["p_active"][sl][:, None] * np.where(weekend, s.weekend_factor, 1.0)[None, :]
            mask = rng.random((n, D)) < np.clip(p, 0, 1)
            birth, life = a["birth"][sl], a["life"][sl]
            d = np.arange(D)[None, :]
            mask &= (d + 1 > birth[:, None]) & (d < birth[:, None] + life[:, None])
            counts = rng.poisson(a["rate"][sl][:, None] * mask)
            ai, di = np.nonzero(counts)
            reps = counts[ai, di]
            acct = np.repeat(acct_ids[ai], reps)
            day = np.repeat(di, reps)
            m = len(acct)
            prof = np.array(sc.profiles[s.profile], float)
            if s.sync is not None:
                W = max(1, s.sync.waves_per_day)
                hours = rng.choice(24, (D, W), p=prof / prof.sum())
                waves = np.arange(D)[:, None] * DAY + hours * 3600 + rng.integers(0, 60, (D, W)) * 60
                start = waves[day, rng.integers(0, W, m)] + rng.uniform(0, s.sync.jitter_s, m)
            else:
                h = rng.choice(24, m, p=prof / prof.sum()) + rng.random(m)
                start = day * DAY + (h - a["tz"][acct]) * 3600
            start = np.maximum(start, self.created_s[acct] + 60)
            keep = (start >= 0) & (start < D * DAY)
            life_end = (birth[acct - sl.start] + life[acct - sl.start]) * DAY
            keep &= start < life_end
            acct, start = acct[keep], start[keep]
            m = len(acct)
            nex = np.maximum(1, np.rint(_lognormal(rng, s.session_len, m))).astype(np.int64)
            u = rng.random(m)
            src = (self.mix_cum[acct] < u[:, None]).sum(1)
            src = np.minimum(src, len(self.src_names) - 1)
            if self.filler_src >= 0 and s.filler_share[1] > 0:
                src = np.where(rng.random(m) < a["filler"][acct], self.filler_src, src)
            order = np.lexsort((start, acct))
            acct, start, nex, src = acct[order], start[order], nex[order], src[order]
            uday = np.floor(start / DAY).astype(np.int64)
            if s.daily_cap > 0 and m:
                key = acct.astype(np.int64) * (D + 1) + uday
                cum = np.cumsum(nex)
                first = np.r_[True, key[1:] != key[:-1]]
                grp_start = np.maximum.accumulate(np.where(first, np.arange(m), 0))
                before = cum - nex - (cum[grp_start] - nex[grp_start])
                nex = np.clip(s.daily_cap - before, 0, nex)
                k2 = nex > 0
                acct, start, nex, src, uday = acct[k2], start[k2], nex[k2], src[k2], uday[k2]
            parts.append((acct, start, nex, src, uday))
        cat = [np.concatenate([p[i] for p in parts]) for i in range(5)]
        return Sessions(cat[0].astype(np.int32), cat[1], cat[2].astype(np.int32),
                        cat[3].astype(np.int16), cat[4].astype(np.int16))

    # ------------------------------------------------------------------ chunks
    def chunk_bounds(self) -> list[tuple[int, int]]:
        cum = np.cumsum(self.sessions.n, dtype=np.int64)
        target = self.sc.chunk_rows
        cuts = np.searchsorted(cum, np.arange(target, cum[-1] if len(cum) else 0, target),
                               side="left") + 1
        cuts = np.unique(np.concatenate([[0], cuts, [len(cum)]]))
        return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

    @property
    def n_exchanges(self) -> int:
        return int(self.sessions.n.sum())

    def chunk(self, index: int, lo: int, hi: int) -> pa.Table:
        """Expand sessions [lo, hi) into a time-sorted Arrow table of exchanges."""
        rng = np.random.default_rng([self.seed, 7, index])
        S, c, a = self.sessions, self.content, self.acc
        n = S.n[lo:hi].astype(np.int64)
        R = int(n.sum())
        first = np.concatenate([[0], np.cumsum(n)[:-1]])
        sidx = np.repeat(np.arange(hi - lo), n)
        k = np.arange(R) - first[sidx]
        acct = S.acct[lo:hi][sidx].astype(np.int64)
        seg = self.seg[acct]
        gaps = rng.lognormal(self.seg_gap[seg, 0], self.seg_gap[seg, 1])
        gaps[k == 0] = 0.0
        cg = np.cumsum(gaps)
        t = S.start[lo:hi][sidx] + (cg - cg[first][sidx])
        src = S.src[lo:hi][sidx].astype(np.int64)
        mode = self.src_mode[src]
        j = np.where(mode == 0, 0, k % self.seg_max_turns[seg])
        cs = np.arange(R) - j  # conversation start row
        day = np.clip((t // DAY).astype(np.int64), 0, self.sc.days - 1)
        # content of the first user turn
        x = c.draw(src, rng.random(R))
        dp = self.src_daily_pool[src]
        pooled = dp > 0
        if pooled.any():
            ps, pl_ = c.pool_start[src[pooled]], c.pool_len[src[pooled]]
            dpp = dp[pooled]
            item = (day[pooled] * dpp + rng.integers(0, 1 << 30, pooled.sum()) % dpp) % pl_
            x[pooled] = c.pool_ids[ps + item]
        tmpl = np.zeros(R, np.int64)
        ur = rng.random(R)
        for (si, fs), allowed in self.tmpl_allowed.items():
            m = (seg == si) & (self.src_fam_start[src] == fs)
            if m.any():
                tmpl[m] = allowed[(ur[m] * len(allowed)).astype(np.int64)]
        x0, t0 = x[cs], tmpl[cs]
        u_conv = rng.random(R)[cs]
        has_sys = u_conv < self.seg_p_system[seg]
        sys_id = a["sys"][acct]
        tools = self.src_tools[src]
        tools = np.where(tools >= 0, np.where(self.seg_toolset[seg] >= 0, self.seg_toolset[seg],
                                              tools), tools)
        tools = np.where(tools == -2, c.tools_of_text[np.minimum(x0, c.n_prompts - 1)], tools)
        # model, with adoption of the new model after its release
        um = rng.random(R)[cs]
        model = (self.seg_model_cum[seg] < um[:, None]).sum(1)
        model = np.minimum(model, self.n_old - 1)
        t_conv = t[cs]
        adopt = (t_conv >= a["adopt_t"][acct]) & (rng.random(R)[cs] < a["adopt_share"][acct])
        model = np.where(adopt, self.n_old, model)
        # request shape
        temp = a["temp"][acct].copy()
        jit = rng.random(R) < self.seg_temp_jitter[seg]
        if jit.any():
            uj = rng.random(jit.sum())
            col = (self.seg_temp_cum[seg[jit]] < uj[:, None]).sum(1)
            col = np.minimum(col, self.seg_temp_vals.shape[1] - 1)
            temp[jit] = self.seg_temp_vals[seg[jit], col]
        maxtok = a["maxtok"][acct]
        think = np.where(rng.random(R) < a["p_think"][acct], a["budget"][acct], 0)
        think = np.where((maxtok > 0) & (think >= maxtok), maxtok // 2, think)
        think = np.where(think < 1024, 0, think)
        lp = np.where(rng.random(R) < self.seg_p_logprobs[seg], a["lpk"][acct], 0)
        out = rng.lognormal(self.src_out[src, 0] + np.log(self.seg_out_scale[seg]),
                            self.src_out[src, 1])
        out = out + think * rng.uniform(0.2, 1.0, R) * (think > 0)
        cap = np.where(maxtok > 0, maxtok, self.sc.max_tokens_cap)
        out = np.minimum(np.rint(out), cap).astype(np.int64)
        us = rng.random(R)
        status = np.where(us < self.seg_p429[seg], 429,
                          np.where(us < self.seg_p429[seg] + self.seg_p5xx[seg], 529, 200))
        out = np.where(status == 200, out, 0)
        # infrastructure
        cnt = self.ip_cnt[acct]
        pick = np.where(rng.random(R) < self.seg_primary[seg], 0,
                        (rng.random(R) * cnt).astype(np.int64))
        ip = self.ip_flat[self.ip_off[acct] + pick]
        client = np.where(rng.random(R)[cs] < a["p_client2"][acct], a["client2"][acct],
                          a["client1"][acct])
        key = (rng.random(R) * a["nkeys"][acct]).astype(np.int64)
        req = rng.integers(0, 2**63, R, dtype=np.int64).astype(np.uint64)

        order = np.argsort(t, kind="stable")
        cols = dict(t=t, acct=acct, seg=seg, mode=mode, j=j, x0=x0, t0=t0, has_sys=has_sys,
                    sys_id=sys_id, tools=tools, model=model, temp=temp, maxtok=maxtok,
                    think=think, lp=lp, out=out, status=status, ip=ip, client=client, key=key,
                    req=req, cs=cs)
        cols = {name: v[order] for name, v in cols.items()}
        return self._to_arrow(cols)

    def _to_arrow(self, v: dict) -> pa.Table:
        c = self.content
        R = len(v["t"])
        style_anth = np.array([self.sc.clients[n].style == "anthropic"
                               for n in self.client_names])[v["client"]]
        sys_in_msgs = v["has_sys"] & ~style_anth
        sys_in_col = v["has_sys"] & style_anth
        # conversation key to vary assistant/tool/follow-up turns deterministically
        ckey = (v["x0"] * 7919 + v["acct"] * 104729).astype(np.int64)
        nm = sys_in_msgs.astype(np.int64) + 1 + 2 * v["j"]
        offs = np.concatenate([[0], np.cumsum(nm)]).astype(np.int32)
        M = int(offs[-1])
        row = np.repeat(np.arange(R), nm)
        pos = np.arange(M) - offs[:-1][row]
        p = pos - sys_in_msgs[row]
        agentic = v["mode"][row] == 2
        kk = (p + 1) // 2
        h = (ckey[row] + kk * 31) % 1_000_003
        role = np.where(p < 0, 0, np.where(p == 0, 1, np.where(p % 2 == 1, 2,
                                                                  np.where(agentic, 3, 1))))
        fu = c.followup_of[np.minimum(v["x0"][row], c.n_prompts - 1)]
        text = np.select(
            [p < 0, p == 0, (p % 2 == 1) & agentic, p % 2 == 1, agentic,
             (kk == 1) & (fu >= 0)],
            [v["sys_id"][row], v["x0"][row],
             c.assistant_agent[0] + h % c.assistant_agent[1],
             c.assistant_chat[0] + h % c.assistant_chat[1],
             c.tool_results[0] + h % c.tool_results[1], fu],
            c.followups[0] + h % c.followups[1])
        tmpl = np.where(p == 0, v["t0"][row], 0)
        content = c.strings(tmpl, text).to_arrow().cast(pa.large_string())
        msgs = pa.ListArray.from_arrays(
            pa.array(offs, pa.int32()),
            pa.StructArray.from_arrays([ROLES.take(pa.array(role)), content],
                                       names=["role", "content"]))
        chars = c.text_chars[text] + c.tmpl_chars[tmpl]
        in_chars = np.add.reduceat(chars, offs[:-1]) if M else np.zeros(R, np.int64)
        in_chars = in_chars + np.where(sys_in_col, c.text_chars[v["sys_id"]], 0)
        has_tools = v["tools"] >= 0
        in_chars = in_chars + np.where(has_tools, c.tools_chars[np.maximum(v["tools"], 0)], 0)
        in_tok = (in_chars / 3.8).astype(np.int64) + 4 * nm + 3
        sys_col = c.texts.gather(v["sys_id"]).to_arrow().cast(pa.string())
        sys_col = pc.if_else(pa.array(sys_in_col), sys_col,
                                     pa.scalar(None, pa.string()))
        tools = c.tools.take(pa.array(np.maximum(v["tools"], 0), mask=~has_tools))
        ts = (self.sc.start_us + np.rint(v["t"] * 1e6)).astype(np.int64)
        clients = [self.sc.clients[n] for n in self.client_names]
        ua = pa.array([x.user_agent for x in clients], pa.string()).take(pa.array(v["client"]))
        tls = pa.array([x.tls for x in clients], pa.string()).take(pa.array(v["client"]))
        acct_id = self.account_ids.gather(v["acct"])
        key_id = self.key_prefix.gather(v["acct"]) + "_" + pl.Series(v["key"]).cast(pl.String)
        models = pa.array(self.models, pa.string()).take(pa.array(v["model"]))

        def s(series: pl.Series) -> pa.Array:
            return series.to_arrow().cast(pa.string())

        return pa.table({
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "account_id": s(acct_id),
            "request_id": s(hex_ids("req_", v["req"])),
            "api_key_id": s(key_id),
            "model": models,
            "messages": msgs.cast(MSG_TYPE),
            "system": sys_col,
            "tools": tools.cast(TOOLS_TYPE),
            "input_tokens": pa.array(in_tok, pa.int64()),
            "output_tokens": pa.array(v["out"], pa.int64()),
            "max_tokens": pa.array(v["maxtok"], pa.int64(), mask=v["maxtok"] <= 0),
            "temperature": pa.array(v["temp"], pa.float64()),
            "thinking": pa.array(v["think"], pa.int64()),
            "logprobs": pa.array(v["lp"], pa.int64()),
            "status": pa.array(v["status"], pa.int32()),
            "ip": s(self.ip_str.gather(v["ip"])),
            "asn": pa.array(self.ip_asn_num[v["ip"]], pa.int64()),
            "country": s(self.ip_country.gather(v["ip"])),
            "user_agent": ua,
            "tls_fingerprint": tls,
        })

    # ------------------------------------------------------------------ tables out
    def accounts_frame(self) -> pl.DataFrame:
        a = self.acc
        created = (self.sc.start_us + np.rint(self.created_s * 1e6)).astype(np.int64)
        return pl.DataFrame({
            "account_id": self.account_ids,
            "created_at": pl.Series(created).cast(pl.Datetime("us", "UTC")),
            "tier": a["tier"].astype(str),
            "email_domain": a["email"].astype(str),
            "payment_fingerprint": hex_ids("pm_", a["pay"]),
            "billing_country": a["country"].astype(str),
            "verified": a["verified"],
        })

    def truth_frame(self) -> pl.DataFrame:
        segs = self.segments
        label = np.array([s.label for s in segs])[self.seg]
        name = np.array([s.name for s in segs])[self.seg]
        return pl.DataFrame({
            "account_id": self.account_ids,
            "label": label,
            "campaign": np.where(label == "attack", name, ""),
            "segment": name,
            "variant": np.array([s.variant for s in segs])[self.seg],
        })

    def allowlisted(self) -> pl.Series:
        allow = np.array([s.allowlisted for s in self.segments])[self.seg]
        return self.account_ids.filter(pl.Series(allow))
