"""Scenario definitions: YAML files loaded into frozen, validated dataclasses.

A scenario file may name a ``base`` scenario it extends (deep merge, the child wins); every
file implicitly extends ``_defaults.yaml``, which holds the shared tables (sources, clients,
ASNs, countries, diurnal profiles) and ``segment_defaults``. Unknown keys raise
:class:`ConfigError` naming the file and the key path.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..yamlio import load_plain

Range = tuple[float, float]
MODES = ("batch", "chat", "agentic")
LABELS = ("benign", "attack")
NET_KINDS = ("residential", "mobile", "cloud", "datacenter", "group", "proxy")




@dataclass(frozen=True)
class Client:
    """An API client stack: user agent, TLS fingerprint, message style (openai|anthropic)."""

    user_agent: str
    tls: str
    style: str
    weight: float


@dataclass(frozen=True)
class Asn:
    asn: int
    country: str
    kind: str  # residential | mobile | cloud | datacenter | campus | corporate


@dataclass(frozen=True)
class Country:
    tz: float
    weight: float


@dataclass(frozen=True)
class Source:
    """A content source: corpus files (or authored sets, names starting with ``_``)."""

    files: dict[str, float]
    mode: str = "batch"            # batch: independent single turns; chat / agentic: conversations
    templates: str = "none"        # template family wrapping the first user message
    tools: str = ""                # "" none, "corpus" (the row's own tools) or a toolset name
    daily_pool: int = 0            # >0: only this many items are in use each day (a course)
    output_tokens: Range = (5.5, 0.9)  # lognormal mu, sigma of the answer length


@dataclass(frozen=True)
class Sync:
    """Sessions start on shared campaign-wide 'waves' (minute buckets) plus jitter."""

    waves_per_day: int
    jitter_s: float


@dataclass(frozen=True)
class Network:
    """Where an account's requests come from."""

    kinds: dict[str, float]        # residential / mobile / cloud / datacenter (VPN) / group / proxy
    ips_per_account: Range = (1, 2)
    primary_p: float = 0.8         # share of requests from the account's first IP
    group_ips: int = 4             # kind 'group': IPs of each group (one /24)
    group_asn_kind: str = "corporate"
    proxy_datacenter: int = 0      # kind 'proxy': datacenter proxy IPs in the campaign pool
    proxy_residential: int = 0     # ... residential IPs also used by benign accounts
    proxy_per_account: Range = (5, 20)


@dataclass(frozen=True)
class Segment:
    """One population of accounts (benign segment or attack campaign arm)."""

    name: str
    label: str
    accounts: int
    description: str = ""
    variant: str = ""
    allowlisted: bool = False        # the customer has written permission to generate data
    min_accounts: int = 1
    volume_multiplier: float = 1.0   # set by scaling; multiplies session rates
    # --- sign-up / account table
    tiers: dict[str, float] = dataclasses.field(default_factory=dict)
    verified: float = 0.5
    email_domains: dict[str, float] = dataclasses.field(default_factory=dict)
    custom_domain_share: float = 0.0
    groups: int = 0                  # >0: accounts split into groups sharing domain/IPs/payment
    group_email: bool = False
    payment_ratio: float = 1.0       # distinct payment instruments per account
    countries: dict[str, float] = dataclasses.field(default_factory=dict)
    created_days_before: Range = (30, 900)   # log-uniform, before the window start
    created_in_window: float = 0.0   # share of accounts created inside the window
    signup_bursts: int = 0           # >0: in-window sign-ups happen in this many bursts
    lifetime_days: Range = (0, 0)    # >0: accounts are used only this long after sign-up
    # --- activity
    profile: str = "human"
    weekend_factor: float = 0.5
    tz_jitter_h: float = 0.0
    p_active: Range = (0.2, 0.8)     # per-account probability of being active on a day
    sessions_per_day: Range = (0.0, 1.0)  # lognormal mu, sigma of sessions per active day
    session_len: Range = (0.5, 0.8)  # lognormal mu, sigma of exchanges per session (>= 1)
    max_turns: int = 12
    gap_s: Range = (3.5, 1.0)        # lognormal mu, sigma of seconds between exchanges
    daily_cap: int = 0               # >0: at most this many exchanges per account per UTC day
    sync: Sync | None = None
    # --- content
    tasks: dict[str, float] = dataclasses.field(default_factory=dict)
    task_concentration: float = 0.0  # >0: each account's mix ~ Dirichlet(c * tasks)
    filler_share: Range = (0.0, 0.0)
    template_variants: int = 0       # >0: the segment uses this many wordings per template
    system_prompts: dict[str, float] = dataclasses.field(default_factory=dict)
    p_system: float = 0.0
    agent_toolset: str = ""
    # --- request shape
    temperature: dict[float, float] = dataclasses.field(default_factory=dict)
    temp_jitter: float = 0.0
    max_tokens: dict[int, float] = dataclasses.field(default_factory=dict)  # 0 = not set
    p_thinking: Range = (0.0, 0.0)
    thinking_budgets: dict[int, float] = dataclasses.field(default_factory=dict)
    p_logprobs: float = 0.0
    logprobs_k: dict[int, float] = dataclasses.field(default_factory=dict)
    output_scale: float = 1.0
    p_429: float = 0.005
    p_5xx: float = 0.002
    # --- models
    models: dict[str, float] = dataclasses.field(default_factory=dict)
    p_adopt: float = 0.3
    adopt_delay_h: Range = (4.5, 1.0)    # lognormal mu, sigma of hours after the release
    adopt_share: Range = (0.3, 0.7)
    # --- infrastructure
    network: Network = dataclasses.field(default_factory=lambda: Network({"residential": 1.0}))
    clients: dict[str, float] = dataclasses.field(default_factory=dict)
    clients_per_account: Range = (1, 2)
    keys_per_account: Range = (1, 2)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    start: str
    days: int
    old_models: dict[str, str]
    new_model: str
    new_model_release_day: float
    chunk_rows: int
    max_tokens_cap: int
    mobile_pool_per_country: int
    countries: dict[str, Country]
    asns: dict[str, Asn]
    clients: dict[str, Client]
    profiles: dict[str, tuple[float, ...]]
    sources: dict[str, Source]
    segments: tuple[Segment, ...]
    scale: float = 1.0
    seed: int = 0

    @property
    def start_us(self) -> int:
        return _parse_ts(self.start, "start")

    @property
    def release_us(self) -> int:
        return self.start_us + int(self.new_model_release_day * 86400e6)

    def to_dict(self) -> dict:
        """Plain data; loading it back (a ``.yaml`` path) gives an equal scenario."""
        d = _plain(dataclasses.asdict(self))
        d["segments"] = {s.pop("name"): s for s in d["segments"]}
        return d


def _plain(obj):
    if isinstance(obj, dict):
        return {(k if isinstance(k, str | int | float) else str(k)): _plain(v)
                for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _parse_ts(value: str, where: str) -> int:
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as err:
        raise ConfigError(f"{where}: bad timestamp {value!r}") from err
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1_000_000)


# ----------------------------------------------------------------------------- loading

def _convert(tp, value, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        return _convert(tp, value, where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args
        return {_convert(kt, k, f"{where}.{k}"): _convert(vt, v, f"{where}.{k}")
                for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if tp is int and float(value) != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{key}'")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing key '{f.name}'")
    return cls(**kwargs)


#: Weight tables: a child replaces them whole instead of merging key by key.
_REPLACE = {"tiers", "email_domains", "tasks", "system_prompts", "temperature", "max_tokens",
            "thinking_budgets", "logprobs_k", "models", "kinds", "files", "old_models"}
_REPLACE_IN_SEGMENT = {"countries", "clients"}


def _merge(base: Any, over: Any, path: tuple = ()) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        in_seg = bool({"segments", "segment_defaults"} & set(path))
        for k, v in over.items():
            if k in base and not (k in _REPLACE or (in_seg and k in _REPLACE_IN_SEGMENT)):
                out[k] = _merge(base[k], v, path + (k,))
            else:
                out[k] = v
        return out
    return over


def scenario_dir():
    return resources.files("distillguard").joinpath("scenarios")


def scenario_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in scenario_dir().iterdir()
                  if p.name.endswith(".yaml") and not p.name.startswith("_"))


def _read_yaml(name: str) -> tuple[dict, str]:
    if name.endswith(".yaml") and Path(name).is_file():  # a scenario file outside the package
        path = Path(name)
    else:
        path = scenario_dir().joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(f"unknown scenario '{name}' (known: {', '.join(scenario_names())})")
    text = path.read_text()
    data = load_plain(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level")
    return data, str(path)


def _resolve_raw(name: str, depth: int = 0) -> tuple[dict, str]:
    if depth > 8:
        raise ConfigError(f"scenario '{name}': 'base' chain too deep")
    data, path = _read_yaml(name)
    base = data.pop("base", "_defaults" if name != "_defaults" else None)
    if base is None:
        return data, path
    parent, _ = _resolve_raw(str(base), depth + 1)
    return _merge(parent, data), path


def load_scenario(name: str, *, scale: float = 1.0, seed: int = 0) -> Scenario:
    """Load, validate and scale a scenario: a shipped name or a path to a ``.yaml`` file."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) \
            or scale <= 0 or scale > 1000:
        raise ConfigError(f"--scale must be a number in (0, 1000], got {scale!r}")
    if not name.endswith(".yaml") and (name.startswith("_") or "/" in name or "\\" in name):
        raise ConfigError(f"unknown scenario '{name}' (known: {', '.join(scenario_names())})")
    raw, path = _resolve_raw(name)
    seg_defaults = raw.pop("segment_defaults", {}) or {}
    segs_raw = raw.pop("segments", None)
    if not isinstance(segs_raw, dict) or not segs_raw:
        raise ConfigError(f"{path}: 'segments' must be a non-empty mapping")
    segments = []
    for seg_name, seg in segs_raw.items():
        if seg is None:  # a child may drop a segment by setting it to null
            continue
        merged = _merge(seg_defaults, dict(seg, name=seg_name), ("segments",))
        segments.append(_build(Segment, merged, f"{path}: segments.{seg_name}"))
    raw["segments"] = segments
    raw.setdefault("name", name)
    sc = _build(Scenario, {k: v for k, v in raw.items() if k != "segments"} | {"segments": []},
                path)
    sc = dataclasses.replace(sc, segments=tuple(segments))
    _validate(sc, path)
    return _apply_scale(sc, scale, seed)


def _validate(sc: Scenario, path: str) -> None:
    def err(msg):
        raise ConfigError(f"{path}: {msg}")

    sc.start_us  # noqa: B018 - parses
    if sc.days < 1:
        err("days must be >= 1")
    if not 0 < sc.new_model_release_day < sc.days:
        err("new_model_release_day must fall inside the window")
    if sc.chunk_rows < 1000:
        err("chunk_rows must be >= 1000")
    for m, ts in sc.old_models.items():
        _parse_ts(ts, f"{path}: old_models.{m}")
    for name, p in sc.profiles.items():
        if len(p) != 24 or min(p) < 0 or sum(p) <= 0:
            err(f"profiles.{name}: need 24 non-negative weights")
    for name, src in sc.sources.items():
        if src.mode not in MODES:
            err(f"sources.{name}.mode must be one of {MODES}")
    for s in sc.segments:
        w = f"segments.{s.name}"
        if s.label not in LABELS:
            err(f"{w}.label must be one of {LABELS}")
        if s.accounts < 0:
            err(f"{w}.accounts must be >= 0")
        if s.profile not in sc.profiles:
            err(f"{w}.profile: unknown profile '{s.profile}'")
        for t in s.tasks:
            if t not in sc.sources:
                err(f"{w}.tasks: unknown source '{t}'")
        if not s.tasks or sum(s.tasks.values()) <= 0:
            err(f"{w}.tasks: need positive weights")
        for c in s.clients:
            if c not in sc.clients:
                err(f"{w}.clients: unknown client '{c}'")
        for c in list(s.countries):
            if c not in sc.countries:
                err(f"{w}.countries: unknown country '{c}'")
        for m in s.models:
            if m not in sc.old_models:
                err(f"{w}.models: unknown model '{m}'")
        for k in s.network.kinds:
            if k not in NET_KINDS:
                err(f"{w}.network.kinds: unknown kind '{k}' (known: {NET_KINDS})")
        for field_name in ("tiers", "clients", "models", "temperature", "max_tokens"):
            d = getattr(s, field_name)
            if not d or sum(d.values()) <= 0 or min(d.values()) < 0:
                err(f"{w}.{field_name}: need non-negative weights summing > 0")
        lo, hi = s.filler_share
        if not 0 <= lo <= hi < 1:
            err(f"{w}.filler_share: need 0 <= lo <= hi < 1")
        if s.filler_share[1] > 0 and "filler" not in sc.sources:
            err(f"{w}: filler_share needs a 'filler' source")
        for name, v in (("verified", s.verified), ("p_system", s.p_system),
                        ("p_logprobs", s.p_logprobs), ("temp_jitter", s.temp_jitter),
                        ("p_adopt", s.p_adopt), ("created_in_window", s.created_in_window)):
            if not 0 <= v <= 1:
                err(f"{w}.{name} must be in [0, 1]")
        if s.max_turns < 1:
            err(f"{w}.max_turns must be >= 1")
        if s.payment_ratio <= 0 or s.payment_ratio > 1:
            err(f"{w}.payment_ratio must be in (0, 1]")
    if len({s.name for s in sc.segments}) != len(sc.segments):
        err("duplicate segment names")


def _apply_scale(sc: Scenario, scale: float, seed: int) -> Scenario:
    segs = []
    for s in sc.segments:
        n = s.accounts
        n_scaled = 0 if n == 0 else max(s.min_accounts, int(round(n * scale)))
        mult = s.volume_multiplier * (scale * n / n_scaled if n_scaled else 1.0)
        net = s.network
        net = dataclasses.replace(
            net,
            proxy_datacenter=_scale_pool(net.proxy_datacenter, scale),
            proxy_residential=_scale_pool(net.proxy_residential, scale),
        )
        segs.append(dataclasses.replace(s, accounts=n_scaled, volume_multiplier=round(mult, 6),
                                        network=net))
    return dataclasses.replace(
        sc, segments=tuple(segs), scale=float(scale), seed=int(seed),
        mobile_pool_per_country=_scale_pool(sc.mobile_pool_per_country, scale),
    )


def _scale_pool(n: int, scale: float) -> int:
    return 0 if n == 0 else max(3, int(round(n * min(1.0, scale) ** 0.5 * max(1.0, scale))))


def dump_scenario(sc: Scenario, path: Path) -> None:
    path.write_text(yaml.safe_dump(sc.to_dict(), sort_keys=False, allow_unicode=True))
