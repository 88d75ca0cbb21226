"""Stage 5 — score: combine an account's own signals with its cluster's into 0..1.

:class:`Scorer` follows the scikit-learn contract: parameters in ``__init__``, ``fit`` learns
``coef_``, ``intercept_`` and the verdict thresholds ``threshold_attack_`` /
``threshold_suspicious_``; ``score`` is separate from ``decide``. The model is a logistic
combination of signal strengths (``signals.yaml``), so every score decomposes into per-signal
contributions, and ``reasons`` lists the strongest ones.

Without a fitted model file the scorer runs in *rules mode*: the weights, intercept and
thresholds come from the signal file itself, and outputs say so.

A fitted model is saved as JSON (no pickle): weights by signal id, thresholds, the signal
file version it was fitted against, and what it was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

from .errors import ConfigError
from .signals import Lift, SignalSet, load_signals

MODEL_FORMAT = "distillguard-scorer"
MODEL_FORMAT_VERSION = 1
DEFAULT_MODEL = "data/models/scorer-v1.json"


def _filled(col: pl.Series, value: float) -> np.ndarray:
    """``col.fill_null(value)`` as numpy, without a polars query when there is no null
    (``fill_null`` runs one; this runs at every online rescoring)."""
    x = col.to_numpy()
    return np.where(col.is_null().to_numpy(), value, x) if col.null_count() else x


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class ScoredAccounts:
    score: np.ndarray
    verdict: np.ndarray
    reasons: list[str]


class Scorer:
    """Logistic combination of signal strengths with learned verdict thresholds.

    Parameters
    ----------
    signals : SignalSet or None
        The signal definitions (default: the shipped ``signals.yaml``).
    target_fpr : float
        Benign false-positive rate the ``attack`` threshold is fitted for.
    suspicious_fpr : float
        Benign rate of ``suspicious`` or worse.
    C : float
        Inverse L2 regularisation of the logistic regression.
    max_reasons : int
        Number of signals named in ``reasons``.
    solo_max_verdict : str
        The strongest verdict an account gets with no coordination evidence (no cluster, no
        link to another account). The look-alikes that must not be blocked — an evaluation
        company, a coding product, a researcher — are single accounts; campaigns are many.

    Examples
    --------
    >>> s = Scorer()
    >>> s.is_fitted()
    False
    """

    def __init__(self, *, signals: SignalSet | None = None, target_fpr: float = 0.001,
                 suspicious_fpr: float = 0.01, C: float = 1.0, max_reasons: int = 5,
                 solo_max_verdict: str = "suspicious", seed: int = 0) -> None:
        self.signals = signals
        self.target_fpr = target_fpr
        self.suspicious_fpr = suspicious_fpr
        self.C = C
        self.max_reasons = max_reasons
        self.solo_max_verdict = solo_max_verdict
        self.seed = seed

    # -- helpers -----------------------------------------------------------------------
    def _signals(self) -> SignalSet:
        return self.signals if self.signals is not None else load_signals()

    def is_fitted(self) -> bool:
        return hasattr(self, "coef_")

    def _params(self) -> tuple[np.ndarray, float, float, float]:
        if self.is_fitted():
            return self.coef_, self.intercept_, self.threshold_attack_, self.threshold_suspicious_
        ss = self._signals()
        return (np.array([s.weight for s in ss.signals]), ss.intercept,
                ss.thresholds["attack"], ss.thresholds["suspicious"])

    @property
    def thresholds(self) -> dict[str, float]:
        """The verdict thresholds in force: ``{"attack": t, "suspicious": t}``."""
        _, _, t_att, t_sus = self._params()
        return {"attack": float(t_att), "suspicious": float(t_sus)}

    @property
    def mode(self) -> str:
        return "learned" if self.is_fitted() else "rules"

    # -- estimator API -----------------------------------------------------------------
    def fit(self, features: pl.DataFrame, y: np.ndarray,
            sample_weight: np.ndarray | None = None) -> "Scorer":
        """Learn weights and thresholds from labelled accounts (y: 1 = attack).

        ``sample_weight`` lets rare but important populations (a single evaluation company,
        one coding product) count as much as thousands of casual users; thresholds are still
        fitted on unweighted benign counts.
        """
        from sklearn.linear_model import LogisticRegression

        if not 0 < self.target_fpr < 0.5:
            raise ConfigError(f"The 'target_fpr' parameter of Scorer must be in (0, 0.5). "
                              f"Got {self.target_fpr!r} instead.")
        y = np.asarray(y).astype(int)
        X = self._signals().strengths(features)
        lr = LogisticRegression(C=self.C, class_weight=None if sample_weight is not None
                                else "balanced", max_iter=5000, random_state=self.seed)
        lr.fit(X, y, sample_weight=sample_weight)
        self.coef_ = lr.coef_[0].copy()
        self.intercept_ = float(lr.intercept_[0])
        self._fit_thresholds(features, y)
        self.n_train_ = int(len(y))
        self.n_train_attack_ = int(y.sum())
        return self

    def calibrate(self, features: pl.DataFrame, y: np.ndarray) -> "Scorer":
        """Refit the verdict thresholds on labelled accounts the weights never saw.

        Thresholds fitted on the training accounts are optimistic (the weights were chosen
        to push exactly those benign scores down), so the benign FPR they promise is not what
        new data gets; thresholds from fresh accounts are. Weights are unchanged.
        """
        if not self.is_fitted():
            raise ConfigError("Scorer is not fitted: call fit before calibrate")
        self._fit_thresholds(features, np.asarray(y).astype(int))
        self.n_calibration_ = int(len(y))
        return self

    def _fit_thresholds(self, features: pl.DataFrame, y: np.ndarray) -> None:
        raw = _sigmoid(self._signals().strengths(features) @ self.coef_ + self.intercept_)
        # the attack threshold is fitted where it can act: on accounts with coordination
        # evidence (solo accounts are capped below attack by ``cap_solo``)
        can_attack = ~self.solo(features)
        benign = np.sort(raw[(y == 0) & can_attack])
        self.threshold_attack_ = float(_upper_quantile(benign, self.target_fpr))
        self.threshold_suspicious_ = float(min(
            self.threshold_attack_, _upper_quantile(np.sort(raw[y == 0]), self.suspicious_fpr)))

    def score(self, features: pl.DataFrame) -> np.ndarray:
        """Raw score in 0..1 (higher = more likely part of a campaign)."""
        return self._score(self._signals().strengths(features))

    def _score(self, X: np.ndarray) -> np.ndarray:
        coef, b, _, _ = self._params()
        return _sigmoid(X @ coef + b)

    def decide(self, scores: np.ndarray, *, attack: float | None = None) -> np.ndarray:
        """Verdicts from scores: attack / suspicious / benign.

        ``attack`` replaces the attack threshold (the online detector's own, calibrated on
        online scores); the suspicious threshold is never above it.
        """
        _, _, t_att, t_sus = self._params()
        if attack is not None:
            t_att, t_sus = attack, min(t_sus, attack)
        return np.where(scores >= t_att, "attack",
                        np.where(scores >= t_sus, "suspicious", "benign"))

    def reasons(self, features: pl.DataFrame) -> list[str]:
        """';'-separated ids of the signals that raised each score most, strongest first."""
        return self._reasons(self._signals().strengths(features))

    def _reasons(self, X: np.ndarray) -> list[str]:
        coef, _, _, _ = self._params()
        contrib = X * coef
        ids = np.array(self._signals().ids)
        order = np.argsort(-contrib, axis=1, kind="stable")[:, : self.max_reasons]
        names = ids[order].tolist()
        keep = (np.take_along_axis(contrib, order, axis=1) > 0.05).tolist()
        return [";".join([n for n, k in zip(nr, kr) if k]) for nr, kr in zip(names, keep)]

    def run(self, features: pl.DataFrame) -> ScoredAccounts:
        X = self._signals().strengths(features)       # once for the score and the reasons
        s = self._score(X)
        verdict = self.cap_solo(self.decide(s), features)
        return ScoredAccounts(score=s, verdict=verdict, reasons=self._reasons(X))

    def solo(self, features: pl.DataFrame) -> np.ndarray:
        """Accounts ``cap_solo`` holds below ``attack``: no cluster and no link (none when
        ``solo_max_verdict`` is ``attack``)."""
        if self.solo_max_verdict == "attack":
            return np.zeros(features.height, bool)
        size = (_filled(features["c_size"], 1.0) if "c_size" in features.columns
                else np.ones(features.height))
        deg = (_filled(features["link_degree"], 0.0) if "link_degree" in features.columns
               else np.zeros(features.height))
        return (size <= 1) & (deg <= 0)

    def cap_solo(self, verdict: np.ndarray, features: pl.DataFrame) -> np.ndarray:
        """Lower ``attack`` to ``solo_max_verdict`` for accounts with no coordination."""
        return np.where(self.solo(features) & (verdict == "attack"), self.solo_max_verdict,
                        verdict)

    # -- persistence -------------------------------------------------------------------
    def to_dict(self, *, trained_on: dict | None = None) -> dict:
        if not self.is_fitted():
            raise ConfigError("Scorer is not fitted: nothing to save")
        ss = self._signals()
        return {
            "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
            "signals_version": ss.version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "weights": dict(zip(ss.ids, map(float, self.coef_))),
            "intercept": self.intercept_,
            "thresholds": {"attack": self.threshold_attack_,
                           "suspicious": self.threshold_suspicious_},
            "params": {"target_fpr": self.target_fpr, "suspicious_fpr": self.suspicious_fpr,
                       "C": self.C, "solo_max_verdict": self.solo_max_verdict},
            "n_train": self.n_train_, "n_train_attack": self.n_train_attack_,
            "n_calibration": getattr(self, "n_calibration_", None),
            "trained_on": trained_on or {},
        }

    def save(self, path: str | Path, *, trained_on: dict | None = None) -> None:
        Path(path).write_text(json.dumps(self.to_dict(trained_on=trained_on), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path | None = None, *, signals: SignalSet | None = None) -> "Scorer":
        """Load a fitted model (default: the shipped one). Raises ConfigError if unusable."""
        if path is None:
            ref = resources.files("distillguard").joinpath(DEFAULT_MODEL)
            name = str(ref)
            if not ref.is_file():
                raise ConfigError(f"{name}: no model file")
            text = ref.read_text()
        else:
            name = str(path)
            try:
                text = Path(path).read_text()
            except OSError as err:
                raise ConfigError(f"{path}: cannot read model file: {err.strerror}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{name}: not a model file (invalid JSON: {err})") from None
        if d.get("format") != MODEL_FORMAT or d.get("format_version") != MODEL_FORMAT_VERSION:
            raise ConfigError(f"{name}: not a {MODEL_FORMAT} v{MODEL_FORMAT_VERSION} file")
        ss = signals if signals is not None else load_signals()
        if d["signals_version"] != ss.version or set(d["weights"]) != set(ss.ids):
            raise ConfigError(f"{name}: fitted for signals v{d['signals_version']}, "
                              f"but the signal file is v{ss.version} with other signals; refit "
                              f"with `python tools/fit_scorer.py`")
        s = cls(signals=ss, **d.get("params", {}))
        s.coef_ = np.array([d["weights"][i] for i in ss.ids])
        s.intercept_ = float(d["intercept"])
        s.threshold_attack_ = float(d["thresholds"]["attack"])
        s.threshold_suspicious_ = float(d["thresholds"]["suspicious"])
        s.n_train_ = int(d.get("n_train", 0))
        s.n_train_attack_ = int(d.get("n_train_attack", 0))
        s.trained_on_ = d.get("trained_on", {})
        s.model_file_ = name
        return s


def _upper_quantile(sorted_benign: np.ndarray, fpr: float) -> float:
    """Smallest threshold with at most ``fpr`` of benign scores at or above it."""
    n = len(sorted_benign)
    if n == 0:
        return 0.5
    allowed = int(np.floor(fpr * n))
    # scores >= t flagged; choose t just above the (n - allowed)-th smallest score
    idx = n - allowed - 1
    return float(np.nextafter(sorted_benign[idx], 1.0))


def apply_lifts(scorer: Scorer, scored: ScoredAccounts, features: pl.DataFrame,
                rare: pl.DataFrame | None, lifts: tuple[Lift, ...]) -> ScoredAccounts:
    """Second passes over accounts the first pass left below ``attack`` (see ``Lift``).

    ``rare``: incidences of the lifts' kinds held by few accounts, with their ``holders``
    (``link.rare_values``). Each lift, in order, turns an account into ``attack`` when the
    rare values it shares with accounts flagged so far come from enough evidence groups;
    its reasons start with the lift's ``reason``. Scores do not change: this is a decision
    on coordination evidence the single-account score cannot see, not a new score.
    """
    from .link import peers_among

    if not lifts or rare is None or rare.is_empty():
        return scored
    ids = features["account_id"]
    solo = scorer.solo(features)
    verdict, reasons = scored.verdict, list(scored.reasons)
    for lift in lifts:
        floor = scorer.thresholds["attack"] if lift.min_score is None else lift.min_score
        cand = (verdict != "attack") & (scored.score >= floor)
        if lift.solo_only:
            cand &= solo
        if not cand.any():
            continue
        flagged = ids.filter(pl.Series(np.isin(verdict, list(lift.flagged))))
        # peers_among keeps only the kinds of lift.groups
        peers = peers_among(rare, ids.filter(pl.Series(cand)), flagged, groups=lift.groups,
                            max_holders=lift.max_holders, require=lift.require)
        lifted = peers.filter((pl.col("peers") >= lift.min_flagged_peers)
                              & (pl.col("groups") >= lift.min_groups))["account_id"]
        if lift.profile and not lifted.is_empty():
            lifted = _like_flagged_peers(lifted, flagged, features, rare, lift)
        mask = ids.is_in(lifted.implode()).to_numpy() & cand
        if not mask.any():
            continue
        reasons = [(f"{lift.reason};{r}".rstrip(";") if m else r)
                   for m, r in zip(mask, reasons)]
        verdict = np.where(mask, "attack", verdict)
    return ScoredAccounts(score=scored.score, verdict=verdict, reasons=reasons)


def _like_flagged_peers(accounts: pl.Series, flagged: pl.Series, features: pl.DataFrame,
                        rare: pl.DataFrame, lift: Lift) -> pl.Series:
    """Those of ``accounts`` whose standardised ``lift.profile`` is within
    ``lift.max_profile_distance`` (root mean square) of the mean profile of the flagged
    accounts they share rare values of the lift's kinds with."""
    from .link import shared_peers

    cols = list(lift.profile)
    missing = [c for c in cols if c not in features.columns]
    if missing:
        raise ConfigError(f"lift '{lift.name}': profile features not computed: {missing}")
    def standardised(c: str) -> pl.Expr:
        x = pl.col(c).cast(pl.Float64).fill_null(0.0)
        return ((x - x.mean()) / x.std().fill_null(0.0).replace(0.0, 1.0)).alias(c)

    z = features.select("account_id", *[standardised(c) for c in cols])
    pairs = (shared_peers(rare, accounts, flagged, lift.groups, lift.max_holders)
             .select("account_id", "peer").unique())
    peer_mean = (pairs.join(z.rename({"account_id": "peer"}), on="peer")
                 .group_by("account_id").agg(pl.col(cols).mean()))
    d = (z.join(peer_mean, on="account_id", suffix="_peers")
         .select("account_id", dist=(pl.sum_horizontal([(pl.col(c) - pl.col(f"{c}_peers")) ** 2
                                                        for c in cols]) / len(cols)).sqrt()))
    return d.filter(pl.col("dist") <= lift.max_profile_distance)["account_id"]
