"""Policy engine: loading, validation with file:line, decisions, lint, CLI."""

from __future__ import annotations

import datetime as dt
import json
import textwrap

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.act import ACTIONS, decide, lint_policy, load_policy
from distillguard.cli import cli
from distillguard.errors import ConfigError

GOOD = """\
id: test
version: 3
default: monitor
allow_list:
  - {account_id: lab, permission: "DLA-1", expires: 2999-01-01}
  - {account_id: old, permission: "DLA-0", expires: 2001-01-01}
rules:
  - id: block_cluster
    when: {verdict: attack, in_cluster: true}
    action: block
  - id: slow
    when: {verdict: [attack, suspicious], score_min: 0.5, reasons_any: [single_turn]}
    action: {type: throttle, rate_per_minute: 12}
  - id: cot
    when: {reasons_all: [cot_elicitation, thinking_requested]}
    action: withhold_reasoning
  - id: paid_fine
    when: {tier: [enterprise], score_max: 0.3}
    action: allow
"""


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_default_policy_loads_and_lints_clean():
    p = load_policy()
    assert p.id == "default" and p.version >= 1
    assert lint_policy() == []
    assert decide(p, account_id="x", score=0.01, verdict="benign").action == "allow"
    d = decide(p, account_id="x", score=0.9, verdict="attack", cluster_id="C0001")
    assert d.action == "block" and d.rule == "block_coordinated_attack"


def test_first_match_and_conditions(tmp_path):
    p = load_policy(write(tmp_path, GOOD))
    assert p.version == 3
    d = decide(p, account_id="a", score=0.9, verdict="attack", cluster_id="C1")
    assert (d.action, d.rule) == ("block", "block_cluster")
    d = decide(p, account_id="a", score=0.9, verdict="attack", reasons="single_turn;ip_spread")
    assert (d.action, d.rate_per_minute, d.rule) == ("throttle", 12.0, "slow")
    # reasons_any not met -> falls through; reasons_all needs both
    d = decide(p, account_id="a", score=0.9, verdict="attack", reasons=["cot_elicitation"])
    assert d.rule == "default" and d.action == "monitor"
    d = decide(p, account_id="a", score=0.1, verdict="benign",
               reasons=["cot_elicitation", "thinking_requested"])
    assert d.action == "withhold_reasoning"
    assert decide(p, account_id="a", score=0.2, verdict="benign", tier="enterprise").rule \
        == "paid_fine"
    assert decide(p, account_id="a", score=0.3, verdict="benign", tier="enterprise").rule \
        == "default"


def test_allow_list_and_expiry(tmp_path):
    p = load_policy(write(tmp_path, GOOD))
    d = decide(p, account_id="lab", score=0.99, verdict="attack", cluster_id="C1")
    assert d.action == "allow" and d.rule == "allow_list:DLA-1"
    d = decide(p, account_id="old", score=0.99, verdict="attack", cluster_id="C1")
    assert d.action == "block"
    # the entry applies up to its expiry date, judged at the decision's event time
    d = decide(p, account_id="old", score=0.99, verdict="attack", cluster_id="C1",
               ts=dt.datetime(2000, 6, 1, tzinfo=dt.timezone.utc))
    assert d.action == "allow"
    issues = lint_policy(write(tmp_path, GOOD))
    assert [(i.severity, i.line) for i in issues] == [("warning", 6)]


def test_decision_json_line():
    p = load_policy()
    d = decide(p, account_id="a", score=0.7, verdict="suspicious", reasons="x;y",
               tier="free", exchanges_seen=12, ts="2025-01-01T00:00:00+00:00")
    row = json.loads(d.to_json())
    assert row["policy_id"] == "default" and row["policy_version"] == p.version
    assert row["reasons"] == ["x", "y"] and row["exchanges_seen"] == 12
    assert row["action"] in ACTIONS and "\n" not in d.to_json()


@pytest.mark.parametrize("text,line,needle", [
    ("id: t\nversion: 1\nrules:\n  - id: r\n    when: {verdit: attack}\n    action: block\n",
     5, "unknown condition 'verdit'"),
    ("id: t\nversion: 1\nrules:\n  - id: r\n    action: throttle\n", 4, "rate_per_minute"),
    ("id: t\nversion: 1\nrules:\n  - id: r\n    action: nuke\n", 4, "action must be one of"),
    ("id: t\nversion: 1\nrules:\n  - id: r\n    action: block\n  - id: r\n    action: allow\n",
     6, "duplicate rule id"),
    ("id: t\nversion: 1\nversion: 2\n", 3, "duplicate key 'version'"),
    ("id: t\nversion: 1\nrules:\n  - id: r\n    when: {verdict: evil}\n    action: block\n",
     5, "verdict must be among"),
    ("id: t\nversion: 1\nrules:\n  - id: r\n    when: {score_min: 2}\n    action: block\n",
     5, "score_min"),
    ("id: t\nversion: 1\nallow_list:\n  - {account_id: a}\n", 4, "permission"),
    ("id: t\nversion: x\n", 1, "version"),
    ("id: t\nversion: 1\nrules: [\n", 4, "invalid YAML"),
])
def test_errors_name_file_and_line(tmp_path, text, line, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert needle in str(err.value)
    issues = lint_policy(path)
    assert any(i.severity == "error" and i.line == line and needle in i.message for i in issues)


def test_lint_collects_all_errors_and_warnings(tmp_path):
    path = write(tmp_path, """\
        id: t
        version: 1
        rules:
          - id: everything
            action: monitor
          - id: never
            when: {verdict: attack}
            action: {type: block, rate_per_minute: 3}
          - id: bad
            when: {in_cluster: maybe}
            action: block
        """)
    issues = lint_policy(path)
    errors = [i for i in issues if i.severity == "error"]
    assert {i.line for i in errors} == {8, 10}
    assert str(errors[0]).startswith(f"{path}:8: error: ")


def test_lint_warns_unreachable_and_no_attack_rule(tmp_path):
    path = write(tmp_path, """\
        id: t
        version: 1
        rules:
          - id: all
            action: monitor
          - id: late
            when: {verdict: suspicious}
            action: block
        """)
    w = lint_policy(path)
    assert any("unreachable" in i.message and i.line == 6 for i in w)
    path = write(tmp_path, "id: t\nversion: 1\nrules:\n  - id: s\n    when: {verdict: "
                           "suspicious}\n    action: block\n", "p2.yaml")
    assert any("no rule matches verdict 'attack'" in i.message for i in lint_policy(path))


def test_cli_policy_lint(tmp_path):
    r = CliRunner().invoke(cli, ["policy", "lint"])
    assert r.exit_code == 0 and "ok" in r.output
    bad = write(tmp_path, "id: t\nversion: 1\nrules:\n  - id: r\n    action: nuke\n")
    r = CliRunner().invoke(cli, ["policy", "lint", str(bad)])
    assert r.exit_code == 2 and f"{bad}:4: error:" in r.output


@settings(max_examples=200, deadline=None)
@given(score=st.floats(0, 1), verdict=st.sampled_from(["attack", "suspicious", "benign"]),
       reasons=st.lists(st.sampled_from(["single_turn", "cot_elicitation",
                                         "thinking_requested", "ip_spread"]), max_size=4),
       cluster=st.sampled_from([None, "C0001"]),
       tier=st.sampled_from([None, "free", "enterprise"]))
def test_decide_total_and_first_match(score, verdict, reasons, cluster, tier):
    p = load_policy()
    d = decide(p, account_id="acc", score=score, verdict=verdict, reasons=reasons,
               cluster_id=cluster, tier=tier)
    assert d.action in ACTIONS
    # oracle: the first rule whose conditions hold
    expect = next((r for r in p.rules if r.matches(
        score=score, verdict=verdict, reasons=frozenset(reasons), tier=tier,
        in_cluster=cluster is not None, exchanges_seen=None)), None)
    assert d.rule == (expect.id if expect else "default")
    if verdict == "benign":
        assert d.action == "allow"
    if verdict == "attack":
        assert d.action in ("block", "step_up")
