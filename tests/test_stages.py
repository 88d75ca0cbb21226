"""Link, cluster, signals and scorer stages on small frames whose answer is known."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from distillguard.cluster import leiden_clusters
from distillguard.errors import ConfigError
from distillguard.link import LinkConfig, edges_from_incidences, incidences
from distillguard.schema import ACCOUNT_SCHEMA, EVENT_SCHEMA, conform
from distillguard.score import Scorer
from distillguard.signals import load_signals

T0 = datetime(2026, 2, 1, tzinfo=timezone.utc)
WEIGHTS = {"ip": 1.0, "ip_prefix": 0.5, "client": 0.5, "payment": 1.5, "email_domain": 0.5}


def _events(rows):
    return conform(pl.DataFrame(rows), EVENT_SCHEMA)


def _graph_fixture():
    """5 hydra accounts share 3 proxy IPs and one card; 40 unrelated users share one CGNAT IP;
    60 loners."""
    ev, acc = [], []
    for i in range(5):
        a = f"hydra{i}"
        for j in range(3):
            ev.append({"ts": T0 + timedelta(minutes=i + j), "account_id": a, "prompt": "x",
                       "ip": f"198.51.100.{j + 1}"})
        acc.append({"account_id": a, "payment_fingerprint": "card-shared"})
    for i in range(40):
        a = f"mobile{i}"
        ev.append({"ts": T0, "account_id": a, "prompt": "y", "ip": "100.64.0.1"})
        acc.append({"account_id": a, "payment_fingerprint": f"card-m{i}"})
    for i in range(60):
        a = f"solo{i}"
        ev.append({"ts": T0, "account_id": a, "prompt": "z", "ip": f"203.0.113.{i}"})
        acc.append({"account_id": a, "payment_fingerprint": f"card-s{i}"})
    return _events(ev), conform(pl.DataFrame(acc), ACCOUNT_SCHEMA)


def test_link_needs_several_rare_kinds_and_ignores_shared_cgnat_ip():
    ev, acc = _graph_fixture()
    cfg = LinkConfig(kind_weights=WEIGHTS, max_share=0.5)
    inc = incidences(ev.lazy(), acc, None, cfg)
    edges = edges_from_incidences(inc, acc.height, cfg)
    linked = set(edges["src"]) | set(edges["dst"])
    assert linked == {f"hydra{i}" for i in range(5)}
    assert edges.height == 10  # all pairs of 5
    assert edges["kinds"].to_list()[0] == ["ip", "payment"]


def test_big_groups_are_linked_by_a_ring_not_all_pairs():
    n = 200
    inc = pl.DataFrame({"account_id": [f"a{i:03d}" for i in range(n)] * 2,
                        "kind": ["ip"] * n + ["payment"] * n,
                        "value": ["1.2.3.4"] * n + ["card"] * n})
    cfg = LinkConfig(kind_weights={"ip": 1.0, "payment": 1.0}, max_share=1.0,
                     full_pairs_max=30, ring_degree=8)
    edges = edges_from_incidences(inc, 10_000, cfg)
    assert edges.height <= n * 8 * 2
    assert edges.height >= n  # still connected-ish, far fewer than n*(n-1)/2 = 19,900
    membership = leiden_clusters(edges, min_size=3)
    assert membership.height == n


def test_leiden_finds_two_groups_deterministically():
    def clique(prefix, k):
        return [(f"{prefix}{i}", f"{prefix}{j}") for i in range(k) for j in range(i + 1, k)]
    pairs = clique("a", 8) + clique("b", 6) + [("a0", "b0")]
    edges = pl.DataFrame({"src": [p[0] for p in pairs], "dst": [p[1] for p in pairs],
                          "weight": [1.0] * (len(pairs) - 1) + [0.1]})
    m1 = leiden_clusters(edges, min_size=3, seed=1)
    m2 = leiden_clusters(edges, min_size=3, seed=1)
    assert m1.equals(m2)
    groups = m1.group_by("cluster_id").agg(pl.col("account_id").sort()).sort("cluster_id")
    assert groups["cluster_id"].to_list() == ["C0001", "C0002"]
    assert groups["account_id"].to_list()[0] == sorted(f"a{i}" for i in range(8))
    assert leiden_clusters(edges.head(0)).is_empty()


def test_default_signal_file_loads_and_errors_name_the_line(tmp_path):
    ss = load_signals()
    assert ss.version >= 1 and len(ss.signals) > 10
    assert set(ss.thresholds) == {"attack", "suspicious"}
    bad = tmp_path / "s.yaml"
    bad.write_text("version: 1\nthresholds: {attack: 0.8, suspicious: 0.5}\nsignals:\n"
                   "  - id: a\n    description: d\n    weight: 1\n    feature: f\n    hgih: 2\n")
    with pytest.raises(ConfigError, match=r"s.yaml:4: signal 'a': unknown key 'hgih'"):
        load_signals(bad)
    bad.write_text("version: 1\nversion: 2\n")
    with pytest.raises(ConfigError, match=r"s.yaml:2: duplicate key 'version'"):
        load_signals(bad)
    bad.write_text("version: 1\nthresholds: {attack: 0.8, suspicious: 0.5}\nsignals:\n"
                   "  - {id: p, description: d, weight: 1, type: product, of: [later]}\n")
    with pytest.raises(ConfigError, match="'of' must name earlier signals"):
        load_signals(bad)


def _feature_frame(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    f = pl.DataFrame({
        "account_id": [f"a{i}" for i in range(n)],
        "c_size": np.where(y == 1, rng.uniform(10, 60, n), rng.choice([1.0, 3.0], n, p=[.97, .03])),
        "c_med_valuable_share": np.where(y == 1, rng.uniform(0.6, 1, n), rng.uniform(0, 0.7, n)),
        "cot_share": np.where(y == 1, rng.uniform(0, 0.6, n), rng.uniform(0, 0.1, n)),
        "per_day_tier_pct": rng.random(n),
    })
    return f, y


def test_scorer_fits_thresholds_for_target_fpr_and_round_trips(tmp_path):
    f, y = _feature_frame()
    s = Scorer(target_fpr=0.001).fit(f, y)
    v = s.decide(s.score(f))
    fpr = ((v == "attack") & (y == 0)).sum() / (y == 0).sum()
    assert fpr <= 0.001
    assert ((v == "attack") & (y == 1)).sum() / y.sum() > 0.8
    path = tmp_path / "m.json"
    s.save(path, trained_on={"test": True})
    s2 = Scorer.load(path)
    np.testing.assert_allclose(s2.score(f), s.score(f))
    assert s2.mode == "learned" and Scorer().mode == "rules"
    reasons = s.reasons(f)
    top = reasons[int(np.argmax(s.score(f)))].split(";")
    assert "coordinated_group" in top or "coordinated_harvest" in top


def test_scorer_rejects_a_model_for_other_signals(tmp_path):
    f, y = _feature_frame(n=500)
    s = Scorer().fit(f, y)
    d = s.to_dict()
    d["signals_version"] = 999
    path = tmp_path / "m.json"
    import json
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="refit"):
        Scorer.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a model file"):
        Scorer.load(path)


def _solo_lift(**kw):
    from distillguard.signals import Lift
    return Lift(name="solo", groups=(("ip",),), reason="rare_ip_shared_with_flagged_accounts",
                solo_only=True, flagged=("attack", "suspicious"), **kw)


def test_solo_lift_needs_a_rare_address_shared_with_a_flagged_account():
    from distillguard.link import rare_values
    from distillguard.score import ScoredAccounts, apply_lifts

    # solo accounts with an attack-level score: "lone" shares a proxy IP with a flagged
    # account, "crowd" only a CGNAT address held by 40 accounts, "quiet" shares its IP with
    # an unflagged account; "flag" is suspicious itself (first pass)
    ids = ["lone", "crowd", "quiet", "flag", "calm"] + [f"m{i}" for i in range(39)]
    inc = pl.DataFrame({
        "account_id": ["lone", "flag", "quiet", "calm", "crowd"] + [f"m{i}" for i in range(39)],
        "kind": ["ip"] * 44,
        "value": ["198.51.100.7", "198.51.100.7", "203.0.113.9", "203.0.113.9"]
        + ["100.64.0.1"] * 40})
    feats = pl.DataFrame({"account_id": ids})
    scorer = Scorer(signals=load_signals())  # rules mode: attack >= 0.8, suspicious >= 0.5
    score = np.array([0.95, 0.95, 0.95, 0.6, 0.1] + [0.1] * 39)
    verdict = np.array(["suspicious"] * 4 + ["benign"] * 40)  # the first three were capped
    scored = ScoredAccounts(score=score, verdict=verdict, reasons=["single_turn"] * 44)
    lift = _solo_lift(max_holders=30, min_flagged_peers=1)
    rare = rare_values(inc, lift.kinds, lift.max_holders)
    assert "100.64.0.1" not in rare["value"].to_list()
    out = apply_lifts(scorer, scored, feats, rare, (lift,))
    got = dict(zip(ids, out.verdict))
    assert got["lone"] == "attack"
    assert got["crowd"] == "suspicious" and got["quiet"] == "suspicious"
    assert got["flag"] == "suspicious"  # below the attack threshold: never lifted
    assert out.reasons[0] == "rare_ip_shared_with_flagged_accounts;single_turn"
    assert out.reasons[1] == "single_turn"
    np.testing.assert_array_equal(out.score, score)
    # two flagged peers required: nobody is lifted
    out2 = apply_lifts(scorer, scored, feats, rare, (_solo_lift(min_flagged_peers=2),))
    assert list(out2.verdict) == list(verdict)
    # no lift configured: unchanged
    assert apply_lifts(scorer, scored, feats, rare, ()) is scored
    # solo_only: the same account with an edge is not the solo lift's business
    linked = feats.with_columns(link_degree=pl.Series([1.0] + [0.0] * 43))
    assert apply_lifts(scorer, scored, linked, rare, (lift,)).verdict[0] == "suspicious"


def test_multi_evidence_lift_counts_independent_kinds_of_ties_to_attack_accounts():
    from distillguard.link import rare_values
    from distillguard.score import ScoredAccounts, apply_lifts
    from distillguard.signals import Lift

    # "x" (clustered, score 0.8) shares a rare IP and its /24, a client stack and a template
    # with attack accounts: three groups. "y" shares the IP, the /24 and the client: two
    # groups (IP and /24 are one). "z" has three groups but with a suspicious account only.
    # "w" has three groups but a score below min_score.
    rows = []
    for acc, peer, kinds in [("x", "a1", ["ip", "ip_prefix"]), ("x", "a2", ["client", "template"]),
                             ("y", "a1", ["ip", "ip_prefix", "client"]),
                             ("z", "s1", ["ip", "client", "template"]),
                             ("w", "a1", ["ip", "client", "template"])]:
        for k in kinds:
            v = f"{k}-{acc}-{peer}"
            rows += [(acc, k, v), (peer, k, v)]
    inc = pl.DataFrame(rows, schema=["account_id", "kind", "value"], orient="row")
    ids = ["x", "y", "z", "w", "a1", "a2", "s1"]
    feats = pl.DataFrame({"account_id": ids, "c_size": [5.0] * 7, "link_degree": [2.0] * 7})
    scorer = Scorer(signals=load_signals())
    score = np.array([0.8, 0.8, 0.8, 0.5, 0.99, 0.99, 0.6])
    verdict = np.array(["suspicious"] * 4 + ["attack", "attack", "suspicious"])
    scored = ScoredAccounts(score=score, verdict=verdict, reasons=[""] * 7)
    lift = Lift(name="m", groups=(("ip", "ip_prefix"), ("client",), ("template",)),
                reason="rare_values_shared_with_flagged_accounts", min_groups=3, min_score=0.7)
    rare = rare_values(inc, lift.kinds, 30)
    out = apply_lifts(scorer, scored, feats, rare, (lift,))
    assert dict(zip(ids, out.verdict)) == {
        "x": "attack", "y": "suspicious", "z": "suspicious", "w": "suspicious",
        "a1": "attack", "a2": "attack", "s1": "suspicious"}
    assert out.reasons[0] == "rare_values_shared_with_flagged_accounts"
    # two groups suffice at min_groups 2: y too; a value held by more accounts than
    # max_holders does not count
    two = Lift(**{**lift.__dict__, "min_groups": 2})
    assert apply_lifts(scorer, scored, feats, rare, (two,)).verdict[1] == "attack"
    few = Lift(**{**lift.__dict__, "min_groups": 2, "max_holders": 1})
    assert list(apply_lifts(scorer, scored, feats, rare, (few,)).verdict) == list(verdict)
    # require: a tie of a required kind must be among them — x has a template tie, y not
    tmpl = Lift(**{**lift.__dict__, "min_groups": 2, "require": ("template",)})
    got = apply_lifts(scorer, scored, feats, rare, (tmpl,)).verdict
    assert got[0] == "attack" and got[1] == "suspicious"


def test_profile_lift_needs_the_flagged_peers_behaviour_too():
    from distillguard.link import rare_values
    from distillguard.score import ScoredAccounts, apply_lifts
    from distillguard.signals import Lift

    # "x" and "y" both share a rare IP, client stack and template with attack accounts a1, a2
    # (three groups). x sends requests like them (thinking on, single turn); y does not.
    # Benign accounts b1..b6 spread the standardisation.
    rows = []
    for acc in ("x", "y"):
        for peer in ("a1", "a2"):
            for k in ("ip", "client", "template"):
                v = f"{k}-{peer}"
                rows += [(acc, k, v), (peer, k, v)]
    inc = pl.DataFrame(rows, schema=["account_id", "kind", "value"], orient="row").unique()
    ids = ["x", "y", "a1", "a2", "b1", "b2", "b3", "b4", "b5", "b6"]
    feats = pl.DataFrame({
        "account_id": ids, "c_size": [1.0] * 10, "link_degree": [0.0] * 10,
        "thinking_share": [0.9, 0.0, 0.95, 0.85, 0.0, 0.1, 0.0, 0.05, 0.0, 0.1],
        "single_turn_share": [1.0, 0.3, 1.0, 1.0, 0.2, 0.5, 0.3, 0.4, 0.6, 0.2]})
    scorer = Scorer(signals=load_signals())
    scored = ScoredAccounts(score=np.array([0.4, 0.4, 0.99, 0.99] + [0.0] * 6),
                            verdict=np.array(["suspicious"] * 2 + ["attack"] * 2
                                             + ["benign"] * 6), reasons=[""] * 10)
    lift = Lift(name="p", groups=(("ip",), ("client",), ("template",)), reason="r",
                min_groups=3, min_score=0.2, profile=("thinking_share", "single_turn_share"),
                max_profile_distance=0.8)
    rare = rare_values(inc, lift.kinds, 30)
    out = apply_lifts(scorer, scored, feats, rare, (lift,))
    assert list(out.verdict[:2]) == ["attack", "suspicious"]
    # without the profile check both are lifted; a missing feature is a clear error
    plain = Lift(**{**lift.__dict__, "profile": (), "max_profile_distance": None})
    assert list(apply_lifts(scorer, scored, feats, rare, (plain,)).verdict[:2]) == ["attack"] * 2
    with pytest.raises(ConfigError, match="profile features not computed"):
        apply_lifts(scorer, scored, feats.drop("thinking_share"), rare, (lift,))


@pytest.mark.parametrize("rule, message", [
    ("    groups: [[ipp]]\n    reason: r\n", r"groups must be lists of link"),
    ("    groups: [[ip]]\n    reason: r\n    min_groups: 2\n", r".*min_groups"),
    ("    groups: [[ip]]\n    reason: r\n    mni_score: 1\n",
     r"unknown key\(s\) \['mni_score'\]"),
    ("    groups: [[ip]]\n", r"needs name, groups and reason"),
    ("    groups: [[ip]]\n    reason: r\n    profile: [cot_share]\n",
     r".*profile and max_profile_distance"),
])
def test_lift_config_errors_name_the_file_and_line(tmp_path, rule, message):
    bad = tmp_path / "s.yaml"
    bad.write_text("version: 1\nthresholds: {attack: 0.8, suspicious: 0.5}\n"
                   "link: {kind_weights: {ip: 1.0}}\nlifts:\n  - name: a\n" + rule)
    with pytest.raises(ConfigError, match=r"s.yaml:5: lift 'a': " + message):
        load_signals(bad)


@pytest.mark.parametrize("stream, message", [
    ("  inherit_lift: nope\n", r"inherit_lift 'nope' is not the name of a lift"),
    ("  inherit_lift: a\n  inherit_lift_require: [ipp]\n",
     r"inherit_lift_require: unknown link kind\(s\) \['ipp'\]"),
])
def test_stream_lift_config_errors_name_the_file_and_line(tmp_path, stream, message):
    bad = tmp_path / "s.yaml"
    bad.write_text("version: 1\nthresholds: {attack: 0.8, suspicious: 0.5}\n"
                   "link: {kind_weights: {ip: 1.0}}\nlifts:\n  - name: a\n"
                   "    groups: [[ip]]\n    reason: r\nstream:\n" + stream)
    with pytest.raises(ConfigError, match=r"s.yaml:\d+: stream: " + message):
        load_signals(bad)


def test_shipped_lifts():
    assert [lf.name for lf in load_signals().lifts] == ["solo_rare_ip", "multi_evidence",
                                                         "profile_match"]



def test_merge_clusters_joins_fragments_that_share_a_proxy_pool():
    from distillguard.cluster import merge_clusters

    # fragments C1..C3 of one campaign draw their IPs from one pool of 12 proxies; C4 is a
    # separate campaign with its own pool and one proxy in common; C5 a benign office
    pool = [f"198.51.100.{i}" for i in range(12)]
    rows, memb = [], []
    for c, (lo, hi) in {"C1": (0, 8), "C2": (2, 10), "C3": (4, 12)}.items():
        for m in range(4):
            a = f"{c}-{m}"
            memb.append((a, c))
            rows += [(a, "ip", pool[lo + (m + j) % (hi - lo)]) for j in range(4)]
    other = [f"203.0.113.{i}" for i in range(8)] + [pool[0]]
    for m in range(4):
        memb.append((f"C4-{m}", "C4"))
        rows += [(f"C4-{m}", "ip", other[(m + j) % 9]) for j in range(4)]
        memb.append((f"C5-{m}", "C5"))
        rows += [(f"C5-{m}", "ip", "192.0.2.1"), (f"C5-{m}", "payment", f"card{m}")]
    rows += [(f"x{i}", "ip", f"10.0.{i}.1") for i in range(200)]  # unclustered population
    inc = pl.DataFrame(rows, schema=["account_id", "kind", "value"], orient="row")
    membership = pl.DataFrame(memb, schema=["account_id", "cluster_id"], orient="row")
    out = merge_clusters(membership, inc, kinds=["ip", "payment"], min_jaccard=0.2, min_size=4)
    groups = {frozenset(g) for g in out.group_by("cluster_id").agg("account_id")["account_id"]
              .to_list()}
    frag = frozenset(a for a, c in memb if c in ("C1", "C2", "C3"))
    assert frag in groups
    assert frozenset(f"C4-{m}" for m in range(4)) in groups
    assert frozenset(f"C5-{m}" for m in range(4)) in groups
    assert out.filter(pl.col("account_id") == "C1-0")["cluster_id"].item() == "C0001"
    assert out.height == membership.height
    # a stricter bar keeps the fragments apart; no kinds: unchanged
    assert out.height == merge_clusters(membership, inc, kinds=["ip"], min_jaccard=0.9).height
    assert merge_clusters(membership, inc, kinds=["ip"], min_jaccard=0.9, min_size=4)[
        "cluster_id"].n_unique() == 5
    # clusters below min_size are never fragments
    assert merge_clusters(membership, inc, kinds=["ip"], min_jaccard=0.2, min_size=5)[
        "cluster_id"].n_unique() == 5
    assert merge_clusters(membership, inc, kinds=[], min_jaccard=0.2).equals(membership)


def test_calibrate_refits_thresholds_on_fresh_accounts_only():
    f, y = _feature_frame(seed=0)
    s = Scorer(target_fpr=0.001).fit(f, y)
    coef = s.coef_.copy()
    fc, yc = _feature_frame(n=6000, seed=7)
    t_in = s.threshold_attack_
    s.calibrate(fc, yc)
    np.testing.assert_array_equal(s.coef_, coef)
    v = s.cap_solo(s.decide(s.score(fc)), fc)
    assert ((v == "attack") & (yc == 0)).sum() <= 0.001 * (yc == 0).sum()
    assert s.threshold_attack_ != t_in
    assert s.to_dict()["n_calibration"] == 6000
    with pytest.raises(ConfigError, match="not fitted"):
        Scorer().calibrate(fc, yc)


def test_attach_flagged_joins_strongly_tied_loose_attack_accounts_only():
    from distillguard.cluster import attach_flagged

    # C0001: a campaign cluster (3 attack members); C0002: a benign office.
    memb = pl.DataFrame({"account_id": ["a1", "a2", "a3", "o1", "o2", "o3"],
                         "cluster_id": ["C0001"] * 3 + ["C0002"] * 3})
    verdict = pl.DataFrame({
        "account_id": ["a1", "a2", "a3", "o1", "o2", "o3", "x", "weak", "calm", "near"],
        "verdict": ["attack"] * 3 + ["benign"] * 3 + ["attack", "attack", "benign", "attack"]})
    # x: strong ties to the campaign; weak: one weak tie; calm: strong ties but not attack;
    # near: strong ties to the office only (not a campaign cluster)
    edges = pl.DataFrame({
        "src": ["a1", "a2", "a1", "a1", "a2", "o1", "o2"],
        "dst": ["x", "x", "weak", "calm", "calm", "near", "near"],
        "weight": [6.0, 5.0, 2.0, 6.0, 6.0, 6.0, 6.0]})
    out = attach_flagged(memb, verdict, edges, min_weight=10)
    assert dict(out.iter_rows()) == {**dict(memb.iter_rows()), "x": "C0001"}
    # a lower bar takes the weak tie too; unchanged without edges
    low = attach_flagged(memb, verdict, edges, min_weight=1)
    assert dict(low.iter_rows())["weak"] == "C0001"
    assert attach_flagged(memb, verdict, edges.head(0), min_weight=1).equals(memb)


def test_attach_flagged_moves_attack_accounts_out_of_small_benign_clusters():
    from distillguard.cluster import attach_flagged

    # C0001: campaign cluster of 3; C0002: a small office cluster holding one attack
    # account ("m") strongly tied to the campaign, and one ("n") tied only weakly
    memb = pl.DataFrame({"account_id": ["a1", "a2", "a3", "m", "n", "o1", "o2", "o3"],
                         "cluster_id": ["C0001"] * 3 + ["C0002"] * 5})
    verdict = pl.DataFrame({"account_id": memb["account_id"],
                            "verdict": ["attack"] * 5 + ["benign"] * 3})
    edges = pl.DataFrame({"src": ["a1", "a2", "a3", "a1"], "dst": ["m", "m", "m", "n"],
                          "weight": [4.0, 4.0, 4.0, 3.0]})
    out = dict(attach_flagged(memb, verdict, edges, min_weight=10).iter_rows())
    assert out["m"] == "C0001" and out["n"] == "C0002"
    # with min_size 4 the 3-member campaign cluster is not a campaign cluster
    assert attach_flagged(memb, verdict, edges, min_weight=10, min_size=4).equals(memb)


def test_assemble_flagged_groups_loose_attack_accounts_by_shared_rare_values():
    from distillguard.cluster import assemble_flagged

    memb = pl.DataFrame({"account_id": ["a1", "a2", "a3", "s1", "o1", "o2"],
                         "cluster_id": ["C0001"] * 3 + ["C0002"] * 3})
    # s1..s4: attack accounts outside the campaign cluster C0001 (s1 inside a benign
    # cluster) sharing a proxy exit, with cards and templates among pairs; s5 is attack
    # but shares nothing; b1 is benign and shares the exit
    verdict = pl.DataFrame({
        "account_id": ["a1", "a2", "a3", "s1", "o1", "o2", "s2", "s3", "s4", "s5", "b1"],
        "verdict": ["attack"] * 4 + ["benign"] * 2 + ["attack"] * 4 + ["benign"]})
    rare = pl.DataFrame({
        "account_id": ["s1", "s2", "s3", "s4", "b1", "s1", "s2", "s3", "s4", "a1", "s5"],
        "kind": ["ip"] * 5 + ["payment", "payment", "template", "template", "ip", "ip"],
        "value": ["1.2.3.4"] * 5 + ["card9", "card9", "t7", "t7", "9.9.9.9", "8.8.8.8"]})
    out = dict(assemble_flagged(memb, verdict, rare, campaign_min_size=3).iter_rows())
    # renumbered by size: the new group of 4 is C0001, the campaign C0002; s1 left the
    # office cluster, which fell below 3 members and is gone
    assert {out[a] for a in ("s1", "s2", "s3", "s4")} == {"C0001"}
    assert {out[a] for a in ("a1", "a2", "a3")} == {"C0002"}
    assert not {"s5", "b1", "o1", "o2"} & set(out)
    # fewer than min_size loose accounts tied: nothing new, the clusters stay
    two = assemble_flagged(memb, verdict, rare.filter(pl.col("kind") == "payment"),
                           campaign_min_size=3)
    assert dict(two.iter_rows()) == dict(memb.iter_rows())
    # with merge kinds, mostly-attack clusters drawing on the same rare addresses join
    pool = pl.concat([rare, pl.DataFrame({"account_id": ["a2", "a3"], "kind": ["ip", "ip"],
                                          "value": ["1.2.3.4", "1.2.3.4"]})])
    merged = assemble_flagged(memb, verdict, pool, campaign_min_size=3,
                              merge_kinds=["ip", "ip_prefix", "payment"], merge_min_jaccard=0.5)
    assert set(merged["cluster_id"]) == {"C0001"} and merged.height == 7


def test_assemble_flagged_without_leiden_clusters_or_rare_values():
    from distillguard.cluster import MEMBERSHIP_SCHEMA, assemble_flagged

    none = pl.DataFrame(schema=MEMBERSHIP_SCHEMA)
    verdict = pl.DataFrame({"account_id": ["s1", "s2", "s3", "b1"],
                            "verdict": ["attack"] * 3 + ["benign"]})
    rare = pl.DataFrame({"account_id": ["s1", "s2", "s3", "b1"], "kind": ["ip"] * 4,
                         "value": ["203.0.113.9"] * 4})
    # no Leiden cluster at all: the tied attack accounts still form one (the benign holder
    # of the same exit does not join)
    assert dict(assemble_flagged(none, verdict, rare).iter_rows()) == {
        "s1": "C0001", "s2": "C0001", "s3": "C0001"}
    # nothing shared, or nobody flagged: a calm log stays without clusters
    assert assemble_flagged(none, verdict, rare.head(0)).is_empty()
    calm = verdict.with_columns(verdict=pl.lit("benign"))
    assert assemble_flagged(none, calm, rare).is_empty()
    assert assemble_flagged(none, verdict, None).is_empty()


def _reference_edges(inc: pl.DataFrame, n_accounts: int, cfg: LinkConfig) -> dict:
    """All pairs of every shared value, summed and capped with plain Python dicts."""
    import math
    from collections import defaultdict

    fam = {k: f for f, ks in cfg.families.items() for k in ks}
    max_k = max(2, int(cfg.max_share * n_accounts))
    groups = defaultdict(set)
    for a, kind, v in inc.iter_rows():
        if cfg.kind_weights.get(kind, 0) > 0:
            groups[(kind, v)].add(a)
    per_kind = defaultdict(float)
    for (kind, _), accs in groups.items():
        if 2 <= len(accs) <= max_k:
            w = cfg.kind_weights[kind] * (math.log(n_accounts) - math.log(len(accs))) \
                / math.log(max(n_accounts, 3))
            accs = sorted(accs)
            for i, x in enumerate(accs):
                for y in accs[i + 1:]:
                    per_kind[(x, y, kind)] += w
    per_fam = defaultdict(float)
    kinds = defaultdict(set)
    for (x, y, kind), w in per_kind.items():
        per_fam[(x, y, fam.get(kind, kind))] += min(w, cfg.kind_cap)
        kinds[(x, y)].add(kind)
    pairs = defaultdict(lambda: [0.0, 0])
    for (x, y, _), w in per_fam.items():
        pairs[(x, y)][0] += min(w, cfg.family_cap)
        pairs[(x, y)][1] += 1
    return {p: (w, sorted(kinds[p])) for p, (w, nf) in pairs.items()
            if nf >= cfg.min_families and w >= cfg.min_weight}


def _random_incidences(seed: int = 3, n: int = 300):
    rng = np.random.default_rng(seed)
    accs = [f"a{i:03d}" for i in range(n)]
    rows = []
    for kind, n_values in (("ip", 120), ("payment", 60), ("template", 40), ("email_domain", 8)):
        for i in range(n):
            for v in rng.choice(n_values, size=rng.integers(1, 4), replace=False):
                rows.append((accs[i], kind, f"{kind}-{v}"))
    return pl.DataFrame(rows, schema=["account_id", "kind", "value"], orient="row").unique()


_FAMILIES = {"network": ["ip"], "identity": ["payment", "email_domain"], "content": ["template"]}
_KIND_WEIGHTS = {"ip": 1.0, "payment": 1.5, "template": 0.8, "email_domain": 0.5}


def test_edges_equal_a_plain_all_pairs_reference_spilled_or_not(monkeypatch):
    """The integer-coded, sort-reduced edges equal a dictionary reference over all pairs
    (groups below full_pairs_max), whatever the buckets, generation chunks and spilling."""
    import distillguard.link as link

    n = 300
    inc = _random_incidences(3, n)
    cfg = LinkConfig(kind_weights=_KIND_WEIGHTS, families=_FAMILIES,
                     min_families=2, full_pairs_max=1000, max_share=0.2, min_weight=0.3)
    ref = _reference_edges(inc, n, cfg)
    assert len(ref) > 100
    first = None
    for chunk, bucket_rows, gen_rows in ((link.PAIR_CHUNK, link.BUCKET_ROWS, link.GEN_ROWS),
                                         (500, 700, 300), (10**9, 1000, 50), (100, 1, 10**6)):
        monkeypatch.setattr(link, "PAIR_CHUNK", chunk)
        monkeypatch.setattr(link, "BUCKET_ROWS", bucket_rows)
        monkeypatch.setattr(link, "GEN_ROWS", gen_rows)
        e = edges_from_incidences(inc, n, cfg)
        got = {(r["src"], r["dst"]): (r["weight"], r["kinds"]) for r in e.iter_rows(named=True)}
        assert got.keys() == ref.keys()
        for p, (w, kinds) in ref.items():
            assert got[p][0] == pytest.approx(w, rel=1e-12) and got[p][1] == kinds
        assert e.select("src", "dst").equals(e.select("src", "dst").sort("src", "dst"))
        if first is None:
            first = e
        assert e.equals(first)  # bit for bit: weights summed in one order whatever the buckets


@pytest.mark.parametrize("full_pairs_max, ring_degree", [(6, 2), (6, 4)])
def test_ring_edges_do_not_depend_on_row_order_or_buckets(monkeypatch, full_pairs_max,
                                                         ring_degree):
    """Ring lattices (groups above full_pairs_max; with ring_degree 4 > 6 / 2 a ring may wrap
    onto a pair twice) give the same edges for shuffled incidences and any bucketing."""
    import distillguard.link as link

    n = 300
    inc = _random_incidences(5, n)
    cfg = LinkConfig(kind_weights=_KIND_WEIGHTS, families=_FAMILIES, min_families=2,
                     full_pairs_max=full_pairs_max, ring_degree=ring_degree, max_share=0.3,
                     min_weight=0.3)
    base = edges_from_incidences(inc, n, cfg)
    assert base.height > 50
    monkeypatch.setattr(link, "BUCKET_ROWS", 97)
    monkeypatch.setattr(link, "GEN_ROWS", 31)
    monkeypatch.setattr(link, "PAIR_CHUNK", 200)
    for seed in (1, 2):
        assert edges_from_incidences(inc.sample(fraction=1.0, shuffle=True, seed=seed), n,
                                     cfg).equals(base)


@pytest.mark.parametrize("bad_hash", ["low_bits_only", "length"])
def test_value_hash_collisions_fall_back_to_exact_groups(monkeypatch, bad_hash):
    """Values whose 64-bit hashes collide (or agree above the kind code's bits) are still
    grouped by their exact strings: the edges equal those of the real hash."""
    import distillguard.link as link

    n = 300
    inc = _random_incidences(3, n)
    cfg = LinkConfig(kind_weights=_KIND_WEIGHTS, families=_FAMILIES, min_families=2,
                     full_pairs_max=1000, max_share=0.2, min_weight=0.3)
    want = edges_from_incidences(inc, n, cfg)
    real = link._value_hash

    def colliding(value, seed):
        if seed != cfg.seed:  # the second hash stays a real one
            return real(value, seed)
        if bad_hash == "low_bits_only":  # equal above the low bits: one key per kind
            return real(value, seed) & 7
        return value.str.len_bytes().cast(pl.UInt64)  # same-length values collide

    monkeypatch.setattr(link, "_value_hash", colliding)
    got = edges_from_incidences(inc, n, cfg)
    assert got.select("src", "dst", "kinds").equals(want.select("src", "dst", "kinds"))
    assert np.allclose(got["weight"].to_numpy(), want["weight"].to_numpy(), rtol=1e-12)
