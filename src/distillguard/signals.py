"""Signals as versioned data: ``data/signals.yaml`` loaded into typed, frozen objects.

A *signal* turns one feature column into a strength in 0..1 (a ramp between ``lo`` and
``hi``; ``direction: low`` inverts it; ``type: product`` multiplies other signals). The scorer
combines strengths with weights (from the file in rules mode, or learned), and the signals
with the largest contributions become an account's ``reasons``. The same file holds the
linking parameters and the rules-mode thresholds, so tuning never edits code.

Errors name the file and line (``signals.yaml:12: signal 'x': unknown key 'hgih'``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl
from .errors import ConfigError
from .link import LinkConfig
from .yamlio import load_with_lines, strip_lines

DEFAULT_SIGNALS = "data/signals.yaml"


@dataclass(frozen=True)
class Signal:
    id: str
    description: str
    weight: float
    type: str = "ramp"
    feature: str | None = None
    lo: float = 0.0
    hi: float = 1.0
    direction: str = "high"
    of: tuple[str, ...] = ()
    level: str = "account"  # account | cluster

    def strength(self, values: np.ndarray) -> np.ndarray:
        v = np.nan_to_num(values.astype(np.float64), nan=0.0)
        s = np.clip((v - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        return 1.0 - s if self.direction == "low" else s


@dataclass(frozen=True)
class Lift:
    """A second look at accounts the first pass left below ``attack`` (``score.apply_lifts``).

    An account whose verdict is not ``attack``, whose score is at least ``min_score`` (None:
    the attack threshold) and — with ``solo_only`` — that has no cluster and no edge, becomes
    ``attack`` when it shares *rare* values (held by 2..``max_holders`` accounts) with
    accounts whose verdict is in ``flagged``, in at least ``min_groups`` of the evidence
    ``groups`` (each a list of link kinds that say the same thing: a shared IP implies a
    shared /24), one of them of a kind in ``require`` (if given), and with at least
    ``min_flagged_peers`` such accounts in all. With ``profile`` (feature columns) and
    ``max_profile_distance``, the account must also *behave* like those flagged peers: the
    root-mean-square difference between its standardised profile and their mean profile
    (features standardised over all accounts of the log) is at most that distance. Its reasons
    then start with ``reason``; its score does not change. Lifts run in file order, each on
    the verdicts the previous ones left.
    """

    name: str
    groups: tuple[tuple[str, ...], ...]
    reason: str
    min_groups: int = 1
    solo_only: bool = False
    #: lowest score considered (None: the attack threshold, i.e. only accounts the cap held)
    min_score: float | None = None
    max_holders: int = 30
    min_flagged_peers: int = 1
    flagged: tuple[str, ...] = ("attack",)
    #: link kinds of which at least one must be among the shared values (empty: none)
    require: tuple[str, ...] = ()
    #: account feature columns compared with the flagged peers' (empty: no profile check)
    profile: tuple[str, ...] = ()
    #: largest RMS difference of standardised profiles (None: no profile check)
    max_profile_distance: float | None = None
    #: what ``reason`` means, for the report's glossary
    description: str = ""

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for g in self.groups for k in g)

    def group_masks(self, kinds: tuple[str, ...]) -> list[int]:
        """Per evidence group, the bit mask of its link kinds in the ordering ``kinds``
        (kinds not in ``kinds`` are left out)."""
        return [kind_mask(g, kinds) for g in self.groups]


def kind_mask(names, kinds: tuple[str, ...]) -> int:
    """Bit mask of the link kinds ``names`` in the ordering ``kinds`` (bit ``i`` for
    ``kinds[i]``; names not in ``kinds`` are left out)."""
    return sum(1 << kinds.index(k) for k in set(names) if k in kinds)


@dataclass(frozen=True)
class StreamConfig:
    """When the online detector scores, and how an account inherits its group's flag.

    ``grace``: exchanges before an account is first scored; ``rescore_factor``: it is
    rescored when its count has grown by this factor. ``min_exchanges_attack``: an account's
    own score makes it ``attack`` only from this many exchanges on (few exchanges give noisy
    features; below, it is at most ``suspicious``), and below ``early_exchanges`` exchanges
    only with a score of at least ``early_attack_threshold`` (fitted by
    ``tools/fit_stream.py``) — accounts flagged this way are *seeds*.
    An account inherits ``attack`` (whatever its count) when at least ``inherit_payment``
    seeds share its payment instrument, or when at least ``inherit_linked`` seeds are linked
    to it directly (shared values of ``link.min_families`` families) and its own score is at
    least ``inherit_linked_min_score``; a seed passes its flag on through a payment instrument
    only with a score of at least ``inherit_seed_min_score``. 0 turns a rule off.
    ``inherit_lift`` names a lift of the ``lifts:`` list to apply online as soon as an
    account is scored: it inherits ``attack`` when its rare values tie it to such confident
    seeds through at least ``inherit_lift_min_groups`` (None: the lift's ``min_groups``)
    of its evidence groups and its own score is at least ``inherit_lift_min_score`` (None: the
    lift's own ``min_score``); with ``inherit_lift_require`` (link kinds; None: the lift's own
    ``require``), one of the ties must be of one of those kinds. ``attack_threshold`` (if set)
    replaces the scorer's attack threshold online: the online features (sketches, partial
    histories) score differently from batch ones, so the threshold is calibrated on online
    scores of fresh seeds by ``tools/fit_stream.py``.
    ``prescore_min_groups`` (0: off) decides before any scoring, per event: an account not
    ``attack`` whose ties through rare values to confident seeds (as for ``inherit_lift``,
    which it needs) span at least this many of that lift's evidence groups is ``attack`` from
    the event that completed them on, whatever its count or score; each entry of
    ``prescore_require`` (a list of link kinds) must then be among the ties' kinds.
    ``inherit_solo`` names a ``solo_only`` lift to apply online: an account below ``attack``
    with no direct link to another account (so no live cluster either), whose own score is at
    least that lift's ``min_score`` and whose rare values tie it to a confident seed through
    one of that lift's link kinds, is ``attack`` with the lift's reason.
    ``prescore_ties`` (link kind -> count) does the same when the account has at least that
    many *ties* of that kind: values of its requests shared, when sent, with a confident seed
    (and pairs with an account that becomes one).
    """

    grace: int = 20
    rescore_factor: float = 1.5
    min_exchanges_attack: int = 1
    early_exchanges: int = 0
    early_attack_threshold: float = 0.0
    attack_threshold: float | None = None
    inherit_payment: int = 0
    inherit_seed_min_score: float = 0.0
    inherit_linked: int = 0
    inherit_linked_min_score: float = 0.5
    inherit_lift: str | None = None
    inherit_lift_min_score: float | None = None
    inherit_lift_min_groups: int | None = None
    inherit_lift_require: tuple[str, ...] | None = None
    inherit_solo: str | None = None
    prescore_min_groups: int = 0
    prescore_require: tuple[tuple[str, ...], ...] = ()
    prescore_ties: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.grace < 1 or self.min_exchanges_attack < 1:
            raise TypeError("grace and min_exchanges_attack must be >= 1")
        if self.rescore_factor <= 1.0:
            raise TypeError("rescore_factor must be > 1")
        if self.inherit_payment < 0 or self.inherit_linked < 0:
            raise TypeError("inherit_payment and inherit_linked must be >= 0")
        if self.early_exchanges < 0 or not 0.0 <= self.early_attack_threshold <= 1.0:
            raise TypeError("early_exchanges must be >= 0, early_attack_threshold in 0..1")
        if not 0.0 <= self.inherit_linked_min_score <= 1.0:
            raise TypeError("inherit_linked_min_score must be in 0..1")
        if not 0.0 <= self.inherit_seed_min_score <= 1.0:
            raise TypeError("inherit_seed_min_score must be in 0..1")
        if self.attack_threshold is not None and not 0.0 < self.attack_threshold <= 1.0:
            raise TypeError("attack_threshold must be in (0, 1]")
        if (self.inherit_lift_min_score is not None
                and not 0.0 <= self.inherit_lift_min_score <= 1.0):
            raise TypeError("inherit_lift_min_score must be in 0..1")
        if self.inherit_lift_min_groups is not None and self.inherit_lift_min_groups < 1:
            raise TypeError("inherit_lift_min_groups must be >= 1")
        if self.inherit_lift_require is not None:
            object.__setattr__(self, "inherit_lift_require", tuple(self.inherit_lift_require))
        if self.prescore_min_groups < 0:
            raise TypeError("prescore_min_groups must be >= 0 (0: off)")
        ties = strip_lines(dict(self.prescore_ties or {}))
        if any(not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 255
               for v in ties.values()):
            raise TypeError("prescore_ties: counts must be integers in 1..255")
        object.__setattr__(self, "prescore_ties", tuple(sorted(ties.items())))
        if (self.prescore_min_groups or ties or self.inherit_solo) and self.inherit_lift is None:
            raise TypeError("prescore_min_groups / prescore_ties / inherit_solo need "
                            "inherit_lift (its confident seeds)")
        req = self.prescore_require or ()
        if isinstance(req, str) or any(isinstance(r, str) or not r for r in req):
            raise TypeError("prescore_require must be a list of non-empty lists of link kinds")
        object.__setattr__(self, "prescore_require", tuple(tuple(r) for r in req))


@dataclass(frozen=True)
class SignalSet:
    version: int
    signals: tuple[Signal, ...]
    intercept: float
    thresholds: dict[str, float]
    link: LinkConfig
    cluster: dict = field(default_factory=dict)
    #: when an account below ``attack`` is judged ``attack`` after all (score.apply_lifts)
    lifts: tuple[Lift, ...] = ()
    source: str = ""
    stream: StreamConfig = field(default_factory=StreamConfig)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.signals]

    def strengths(self, features: pl.DataFrame) -> np.ndarray:
        """Matrix (accounts × signals) of strengths in 0..1; missing features count 0."""
        out: dict[str, np.ndarray] = {}
        n = features.height
        # every feature column in one query (a Series cast each costs one query each)
        used = dict.fromkeys(s.feature for s in self.signals
                             if s.type != "product" and s.feature in features.columns)
        vals = features.select(pl.col(f).cast(pl.Float64).fill_null(np.nan) for f in used)
        for s in self.signals:
            if s.type == "product":
                col = np.ones(n)
                for o in s.of:
                    col = col * out[o]
                out[s.id] = col
            elif s.feature in used:
                out[s.id] = s.strength(vals[s.feature].to_numpy())
            else:
                out[s.id] = np.zeros(n)
        return np.column_stack([out[i] for i in self.ids]) if self.signals else np.zeros((n, 0))


_SIGNAL_KEYS = {"id", "description", "weight", "type", "feature", "lo", "hi", "direction",
                "of", "level"}
_TOP_KEYS = {"version", "signals", "intercept", "thresholds", "link", "cluster", "lifts",
             "stream"}


def load_signals(path: str | Path | None = None) -> SignalSet:
    """Load and validate a signal file (default: the one shipped with the package)."""
    if path is None:
        ref = resources.files("distillguard").joinpath(DEFAULT_SIGNALS)
        text, name = ref.read_text(), str(ref)
    else:
        try:
            text, name = Path(path).read_text(), str(path)
        except OSError as err:
            raise ConfigError(f"{path}: cannot read signal file: {err.strerror}") from None
    doc = load_with_lines(text, name)
    if not isinstance(doc, dict):
        raise ConfigError(f"{name}: expected a mapping at the top")
    for k in doc:
        if k not in _TOP_KEYS | {"__line__"}:
            raise ConfigError(f"{name}:{doc['__line__']}: unknown top-level key '{k}'")
    signals: list[Signal] = []
    seen: set[str] = set()
    for raw in doc.get("signals", []):
        line = raw.get("__line__", "?")
        where = f"{name}:{line}: signal '{raw.get('id', '?')}'"
        for k in raw:
            if k not in _SIGNAL_KEYS | {"__line__"}:
                raise ConfigError(f"{where}: unknown key '{k}'")
        for k in ("id", "description", "weight"):
            if k not in raw:
                raise ConfigError(f"{where}: missing key '{k}'")
        if raw["id"] in seen:
            raise ConfigError(f"{where}: duplicate signal id")
        kind = raw.get("type", "ramp")
        if kind == "ramp" and not raw.get("feature"):
            raise ConfigError(f"{where}: a ramp signal needs 'feature'")
        if kind == "product":
            missing = [o for o in raw.get("of", []) if o not in seen]
            if missing or not raw.get("of"):
                raise ConfigError(f"{where}: 'of' must name earlier signals (missing: {missing})")
        if kind not in ("ramp", "product"):
            raise ConfigError(f"{where}: type must be ramp or product, got '{kind}'")
        if raw.get("direction", "high") not in ("high", "low"):
            raise ConfigError(f"{where}: direction must be high or low")
        if kind == "ramp" and float(raw.get("hi", 1.0)) <= float(raw.get("lo", 0.0)):
            raise ConfigError(f"{where}: hi must be greater than lo")
        vals = strip_lines(raw)
        vals["of"] = tuple(vals.get("of", ()))
        vals["weight"] = float(vals["weight"])
        for k in ("lo", "hi"):
            if k in vals:
                vals[k] = float(vals[k])
        signals.append(Signal(**vals))
        seen.add(raw["id"])
    link_raw = strip_lines(doc.get("link", {}) or {})
    try:
        for k in ("kind_weights", "families"):
            if k in link_raw:
                link_raw[k] = strip_lines(link_raw[k])
        link = LinkConfig(**link_raw)
    except TypeError as err:
        raise ConfigError(f"{name}: link: {err}") from None
    stream_raw = doc.get("stream", {}) or {}
    try:
        stream = StreamConfig(**strip_lines(stream_raw))
    except TypeError as err:
        raise ConfigError(f"{name}:{stream_raw.get('__line__', '?')}: stream: {err}") from None
    thresholds = strip_lines(doc.get("thresholds", {}) or {})
    if set(thresholds) != {"attack", "suspicious"}:
        raise ConfigError(f"{name}: thresholds must give 'attack' and 'suspicious'")
    lifts = _lifts(doc.get("lifts") or [], link, name)
    if stream.inherit_lift is not None and stream.inherit_lift not in {x.name for x in lifts}:
        raise ConfigError(f"{name}:{stream_raw.get('__line__', '?')}: stream: inherit_lift "
                          f"'{stream.inherit_lift}' is not the name of a lift in lifts:")
    if stream.inherit_solo is not None and stream.inherit_solo not in {
            x.name for x in lifts if x.solo_only}:
        raise ConfigError(f"{name}:{stream_raw.get('__line__', '?')}: stream: inherit_solo "
                          f"'{stream.inherit_solo}' is not the name of a solo_only lift in "
                          f"lifts:")
    for key, kinds in (("inherit_lift_require", stream.inherit_lift_require or ()),
                       ("prescore_require", [k for r in stream.prescore_require for k in r]),
                       ("prescore_ties", [k for k, _ in stream.prescore_ties])):
        bad = [k for k in kinds if k not in link.kind_weights]
        if bad:
            raise ConfigError(f"{name}:{stream_raw.get('__line__', '?')}: stream: "
                              f"{key}: unknown link kind(s) {bad}")
    return SignalSet(version=int(doc.get("version", 1)), signals=tuple(signals),
                     intercept=float(doc.get("intercept", 0.0)),
                     thresholds={k: float(v) for k, v in thresholds.items()}, link=link,
                     cluster=strip_lines(doc.get("cluster", {}) or {}), lifts=lifts,
                     source=name, stream=stream)


_LIFT_KEYS = {f.name for f in fields(Lift)}


def _lifts(raw: list, link: LinkConfig, name: str) -> tuple[Lift, ...]:
    """Validate the ``lifts:`` list into :class:`Lift` objects (errors name the line)."""
    if not isinstance(raw, list):
        raise ConfigError(f"{name}: lifts must be a list of lift rules")
    out = []
    for item in raw:
        line = item.get("__line__", "?") if isinstance(item, dict) else "?"
        where = f"{name}:{line}: lift '{item.get('name', '?') if isinstance(item, dict) else item}'"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a mapping")
        vals = strip_lines(item)
        unknown = sorted(set(vals) - _LIFT_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}")
        try:
            groups = tuple(tuple(g) for g in vals.pop("groups"))
            lift = Lift(groups=groups, **{k: (tuple(v) if isinstance(v, list) else v)
                                          for k, v in vals.items()})
        except (KeyError, TypeError) as err:
            raise ConfigError(f"{where}: needs name, groups and reason ({err})") from None
        bad = [k for k in lift.kinds + lift.require if k not in link.kind_weights]
        if (bad or not lift.groups or not 1 <= lift.min_groups <= len(lift.groups)
                or lift.min_flagged_peers < 1 or lift.max_holders < 2
                or bool(lift.profile) != (lift.max_profile_distance is not None)
                or (lift.max_profile_distance is not None and lift.max_profile_distance <= 0)):
            raise ConfigError(f"{where}: groups must be lists of link kinds (unknown: {bad}), "
                              f"1 <= min_groups <= number of groups, min_flagged_peers >= 1, "
                              f"max_holders >= 2, profile and max_profile_distance (> 0) "
                              f"together")
        out.append(lift)
    return tuple(out)
