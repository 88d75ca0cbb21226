"""Enforcement policies as versioned YAML data, loaded into frozen dataclasses.

A policy file::

    id: default
    version: 1
    default: allow                      # action when no rule matches
    allow_list:                         # customers with written permission to generate data
      - {account_id: acct_lab, permission: "DPA-2025-014", expires: 2026-12-31}
    rules:                              # first match wins, in file order
      - id: block_attack_cluster
        when: {verdict: attack, in_cluster: true}
        action: block
      - id: throttle_suspicious
        when: {verdict: suspicious, score_min: 0.6}
        action: {type: throttle, rate_per_minute: 10}

Conditions of ``when`` (all must hold; an empty ``when`` matches everything): ``verdict``
(one or a list), ``score_min`` (score >= it), ``score_max`` (score < it), ``reasons_any``,
``reasons_all``, ``reasons_none``, ``tier`` (one or a list), ``in_cluster`` (bool),
``exchanges_min``. Actions: ``allow``, ``monitor``, ``step_up``, ``throttle`` (needs
``rate_per_minute``), ``withhold_reasoning``, ``block``.

Errors name the file and line (``policy.yaml:14: rule 'x': unknown condition 'verdit'``);
:func:`lint_policy` collects every problem (errors and warnings) instead of stopping.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import orjson

from ..errors import ConfigError
from ..yamlio import load_with_lines
from ..schema import VERDICTS

DEFAULT_POLICY = "data/policies/default.yaml"

#: actions from least to most restrictive
ACTIONS = ("allow", "monitor", "step_up", "throttle", "withhold_reasoning", "block")
_CONDITIONS = {"verdict", "score_min", "score_max", "reasons_any", "reasons_all",
               "reasons_none", "tier", "in_cluster", "exchanges_min"}
_TOP_KEYS = {"id", "version", "description", "default", "allow_list", "rules"}
_RULE_KEYS = {"id", "description", "when", "action"}
_ALLOW_KEYS = {"account_id", "permission", "expires", "action", "note"}
_ACTION_KEYS = {"type", "rate_per_minute"}


@dataclass(frozen=True)
class Action:
    """An enforcement action; ``rate_per_minute`` only for ``throttle``."""

    type: str
    rate_per_minute: float | None = None

    def __str__(self) -> str:
        return (f"throttle({self.rate_per_minute:g}/min)" if self.type == "throttle"
                else self.type)


@dataclass(frozen=True)
class Rule:
    id: str
    action: Action
    verdict: tuple[str, ...] = ()
    score_min: float | None = None
    score_max: float | None = None
    reasons_any: tuple[str, ...] = ()
    reasons_all: tuple[str, ...] = ()
    reasons_none: tuple[str, ...] = ()
    tier: tuple[str, ...] = ()
    in_cluster: bool | None = None
    exchanges_min: int | None = None
    description: str = ""
    line: int = 0

    @property
    def is_catch_all(self) -> bool:
        return not any((self.verdict, self.score_min is not None, self.score_max is not None,
                        self.reasons_any, self.reasons_all, self.reasons_none, self.tier,
                        self.in_cluster is not None, self.exchanges_min is not None))

    def matches(self, *, score: float, verdict: str, reasons: frozenset[str], tier: str | None,
                in_cluster: bool, exchanges_seen: int | None) -> bool:
        if self.verdict and verdict not in self.verdict:
            return False
        if self.score_min is not None and not score >= self.score_min:
            return False
        if self.score_max is not None and not score < self.score_max:
            return False
        if self.reasons_any and reasons.isdisjoint(self.reasons_any):
            return False
        if self.reasons_all and not reasons.issuperset(self.reasons_all):
            return False
        if self.reasons_none and not reasons.isdisjoint(self.reasons_none):
            return False
        if self.tier and (tier or "unknown") not in self.tier:
            return False
        if self.in_cluster is not None and in_cluster != self.in_cluster:
            return False
        if self.exchanges_min is not None and (exchanges_seen or 0) < self.exchanges_min:
            return False
        return True


@dataclass(frozen=True)
class AllowEntry:
    """An account with written permission to generate training data."""

    account_id: str
    permission: str
    expires: dt.date | None = None
    action: Action = Action("allow")
    note: str = ""
    line: int = 0

    def active(self, on: dt.date) -> bool:
        return self.expires is None or on <= self.expires


@dataclass(frozen=True)
class Policy:
    id: str
    version: int
    default: Action
    rules: tuple[Rule, ...]
    allow_list: dict[str, AllowEntry] = field(default_factory=dict)
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class Decision:
    """What to do with an account's next request, and why. One JSON line per decision."""

    account_id: str
    action: str
    rule: str
    policy_id: str
    policy_version: int
    score: float
    verdict: str
    reasons: tuple[str, ...] = ()
    rate_per_minute: float | None = None
    cluster_id: str | None = None
    tier: str | None = None
    exchanges_seen: int | None = None
    ts: str | None = None

    def to_dict(self) -> dict:
        return {"ts": self.ts, "account_id": self.account_id, "action": self.action,
                "rate_per_minute": self.rate_per_minute, "rule": self.rule,
                "policy_id": self.policy_id, "policy_version": self.policy_version,
                "score": self.score, "verdict": self.verdict, "reasons": list(self.reasons),
                "cluster_id": self.cluster_id, "tier": self.tier,
                "exchanges_seen": self.exchanges_seen}

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()


@dataclass(frozen=True)
class Issue:
    """A lint finding: ``severity`` is ``error`` or ``warning``."""

    severity: str
    message: str
    source: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.severity}: {self.message}"


# -- decision -----------------------------------------------------------------------------

def decide(policy: Policy, *, account_id: str, score: float, verdict: str,
           reasons=(), tier: str | None = None, cluster_id: str | None = None,
           exchanges_seen: int | None = None, ts=None) -> Decision:
    """Apply ``policy`` to one account: allow-list first, then the first matching rule.

    Examples
    --------
    >>> p = load_policy()
    >>> decide(p, account_id="a1", score=0.01, verdict="benign").action
    'allow'
    """
    if isinstance(reasons, str):
        reasons = tuple(r for r in reasons.split(";") if r)
    reasons = tuple(reasons)
    when = _as_date(ts)
    entry = policy.allow_list.get(account_id)
    if entry is not None and entry.active(when):
        action, rule = entry.action, f"allow_list:{entry.permission}"
    else:
        rs = frozenset(reasons)
        for r in policy.rules:
            if r.matches(score=score, verdict=verdict, reasons=rs, tier=tier,
                         in_cluster=bool(cluster_id), exchanges_seen=exchanges_seen):
                action, rule = r.action, r.id
                break
        else:
            action, rule = policy.default, "default"
    return Decision(account_id=account_id, action=action.type, rule=rule, policy_id=policy.id,
                    policy_version=policy.version, score=float(score), verdict=verdict,
                    reasons=reasons, rate_per_minute=action.rate_per_minute,
                    cluster_id=cluster_id or None, tier=tier, exchanges_seen=exchanges_seen,
                    ts=_as_iso(ts))


def _as_date(ts) -> dt.date:
    if ts is None:
        return dt.datetime.now(dt.timezone.utc).date()
    if isinstance(ts, dt.datetime):
        return ts.date()
    if isinstance(ts, (int, float)):
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).date()
    return dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00")).date()


def _as_iso(ts) -> str | None:
    if ts is None:
        return None
    if isinstance(ts, dt.datetime):
        return ts.isoformat()
    if isinstance(ts, (int, float)):
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()
    return str(ts)


# -- loading ------------------------------------------------------------------------------



class _Collector:
    def __init__(self, source: str, collect: bool) -> None:
        self.source, self.collect, self.issues = source, collect, []

    def error(self, line, msg: str) -> None:
        issue = Issue("error", msg, self.source, line)
        if not self.collect:
            raise ConfigError(str(issue).replace(": error: ", ": ", 1))
        self.issues.append(issue)

    def warn(self, line, msg: str) -> None:
        self.issues.append(Issue("warning", msg, self.source, line))


def _read(path) -> tuple[str, str]:
    if path is None:
        ref = resources.files("distillguard").joinpath(DEFAULT_POLICY)
        return ref.read_text(), str(ref)
    try:
        return Path(path).read_text(), str(path)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read policy file: {err.strerror}") from None


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate a policy file (default: the shipped ``default.yaml``).

    Raises :class:`~distillguard.errors.ConfigError` naming ``file:line`` on the first error.
    """
    text, name = _read(path)
    policy, _ = _parse(text, name, collect=False)
    return policy


def lint_policy(path: str | Path | None = None) -> list[Issue]:
    """Every error and warning in a policy file (empty list = clean)."""
    text, name = _read(path)
    try:
        _, issues = _parse(text, name, collect=True)
    except ConfigError as err:  # YAML syntax / duplicate keys stop parsing
        msg = str(err)
        line = None
        head, _, rest = msg.partition(": ")
        if head.startswith(name + ":") and head[len(name) + 1:].isdigit():
            line, msg = int(head[len(name) + 1:]), rest
        elif head == name:
            msg = rest
        return [Issue("error", msg, name, line)]
    return issues


def _tuple_of_str(v) -> tuple[str, ...] | None:
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    return None


def _action(raw, line, where: str, c: _Collector) -> Action | None:
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        c.error(line, f"{where}: action must be a name or a mapping with 'type'")
        return None
    line = raw.get("__line__", line)
    for k in raw:
        if k not in _ACTION_KEYS | {"__line__"}:
            c.error(line, f"{where}: unknown action key '{k}'")
            return None
    kind = raw.get("type")
    if kind not in ACTIONS:
        c.error(line, f"{where}: action must be one of {', '.join(ACTIONS)}; got {kind!r}")
        return None
    rate = raw.get("rate_per_minute")
    if kind == "throttle":
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            c.error(line, f"{where}: throttle needs rate_per_minute > 0; got {rate!r}")
            return None
        return Action("throttle", float(rate))
    if rate is not None:
        c.error(line, f"{where}: rate_per_minute only applies to throttle")
        return None
    return Action(kind)


def _parse(text: str, name: str, *, collect: bool) -> tuple[Policy | None, list[Issue]]:
    c = _Collector(name, collect)
    doc = load_with_lines(text, name)
    if not isinstance(doc, dict):
        raise ConfigError(f"{name}: expected a mapping at the top")
    top = doc["__line__"]
    for k in doc:
        if k not in _TOP_KEYS | {"__line__"}:
            c.error(top, f"unknown top-level key '{k}'")
    pid = doc.get("id")
    if not isinstance(pid, str) or not pid:
        c.error(top, "policy needs a string 'id'")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        c.error(top, f"policy needs an integer 'version' >= 1; got {version!r}")
    default = _action(doc.get("default", "allow"), top, "default", c)

    rules: list[Rule] = []
    ids: dict[str, int] = {}
    raw_rules = doc.get("rules", [])
    if not isinstance(raw_rules, list):
        c.error(top, "'rules' must be a list")
        raw_rules = []
    for raw in raw_rules:
        if not isinstance(raw, dict):
            c.error(top, f"each rule must be a mapping; got {raw!r}")
            continue
        line = raw["__line__"]
        rid = raw.get("id")
        where = f"rule '{rid}'"
        bad = [k for k in raw if k not in _RULE_KEYS | {"__line__"}]
        for k in bad:
            c.error(line, f"{where}: unknown key '{k}'")
        if not isinstance(rid, str) or not rid:
            c.error(line, f"{where}: needs a string 'id'")
            continue
        if rid in ids:
            c.error(line, f"{where}: duplicate rule id (first at line {ids[rid]})")
        ids[rid] = line
        if "action" not in raw:
            c.error(line, f"{where}: missing key 'action'")
            continue
        action = _action(raw["action"], line, where, c)
        when = raw.get("when", {}) or {}
        if not isinstance(when, dict):
            c.error(line, f"{where}: 'when' must be a mapping")
            continue
        wline = when.get("__line__", line)
        vals, ok = {}, not bad
        for k, v in when.items():
            if k == "__line__":
                continue
            if k not in _CONDITIONS:
                c.error(wline, f"{where}: unknown condition '{k}' (known: "
                               f"{', '.join(sorted(_CONDITIONS))})")
                ok = False
            elif k in ("verdict", "tier", "reasons_any", "reasons_all", "reasons_none"):
                t = _tuple_of_str(v)
                if t is None:
                    c.error(wline, f"{where}: '{k}' must be a string or a list of strings")
                    ok = False
                elif k == "verdict" and set(t) - set(VERDICTS):
                    c.error(wline, f"{where}: verdict must be among {', '.join(VERDICTS)}; "
                                   f"got {sorted(set(t) - set(VERDICTS))}")
                    ok = False
                else:
                    vals[k] = t
            elif k in ("score_min", "score_max"):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                    c.error(wline, f"{where}: '{k}' must be a number in 0..1; got {v!r}")
                    ok = False
                else:
                    vals[k] = float(v)
            elif k == "in_cluster":
                if not isinstance(v, bool):
                    c.error(wline, f"{where}: 'in_cluster' must be true or false")
                    ok = False
                else:
                    vals[k] = v
            elif k == "exchanges_min":
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    c.error(wline, f"{where}: 'exchanges_min' must be an integer >= 0")
                    ok = False
                else:
                    vals[k] = v
        if ("score_min" in vals and "score_max" in vals
                and vals["score_min"] >= vals["score_max"]):
            c.error(wline, f"{where}: score_min must be below score_max (matches nothing)")
            ok = False
        if ok and action is not None:
            rules.append(Rule(id=rid, action=action, description=str(raw.get("description", "")),
                              line=line, **vals))

    allow: dict[str, AllowEntry] = {}
    raw_allow = doc.get("allow_list", []) or []
    if not isinstance(raw_allow, list):
        c.error(top, "'allow_list' must be a list")
        raw_allow = []
    today = dt.datetime.now(dt.timezone.utc).date()
    for raw in raw_allow:
        if not isinstance(raw, dict):
            c.error(top, f"each allow_list entry must be a mapping; got {raw!r}")
            continue
        line = raw["__line__"]
        acc = raw.get("account_id")
        where = f"allow_list '{acc}'"
        ok = True
        for k in raw:
            if k not in _ALLOW_KEYS | {"__line__"}:
                c.error(line, f"{where}: unknown key '{k}'")
                ok = False
        if not isinstance(acc, str) or not acc:
            c.error(line, f"{where}: needs a string 'account_id'")
            continue
        perm = raw.get("permission")
        if not isinstance(perm, str) or not perm.strip():
            c.error(line, f"{where}: needs 'permission' (reference to the written permission)")
            ok = False
        exp = raw.get("expires")
        if exp is not None and not isinstance(exp, dt.date):
            c.error(line, f"{where}: 'expires' must be a date (YYYY-MM-DD); got {exp!r}")
            ok = False
        if isinstance(exp, dt.datetime):
            exp = exp.date()
        action = _action(raw.get("action", "allow"), line, where, c)
        if acc in allow:
            c.error(line, f"{where}: listed twice (first at line {allow[acc].line})")
            ok = False
        if ok and action is not None:
            entry = AllowEntry(account_id=acc, permission=perm, expires=exp, action=action,
                               note=str(raw.get("note", "")), line=line)
            allow[acc] = entry
            if exp is not None and exp < today:
                c.warn(line, f"{where}: permission expired on {exp} (entry has no effect)")

    # checks across rules (pySigma's finalize)
    for i, r in enumerate(rules):
        if r.is_catch_all:
            for later in rules[i + 1:]:
                c.warn(later.line, f"rule '{later.id}' is unreachable: rule '{r.id}' "
                                   f"(line {r.line}) matches everything")
            break
    probe = [r for r in rules if not r.verdict or "attack" in r.verdict]
    if default is not None and default.type in ("allow", "monitor") and not probe:
        c.warn(top, "no rule matches verdict 'attack': attacks fall through to the default "
                    f"action '{default.type}'")
    if any(i.severity == "error" for i in c.issues) or pid is None or default is None:
        return None, c.issues
    return Policy(id=pid, version=version, default=default, rules=tuple(rules),
                  allow_list=allow, description=str(doc.get("description", "")),
                  source=name), c.issues
