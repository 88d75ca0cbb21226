"""Grade a ``detect`` output directory against ground truth.

``evaluate(out_dir, truth)`` reads ``accounts.csv`` (contract.md §2) and a ``truth.csv``
(``account_id,label,campaign,segment,variant``) or a contract ``labels.csv``
(``account_id,label,campaign``), and computes ranking, verdict, per-campaign, per-segment and
clustering figures. ``evaluate_frames(pred, truth)`` does the same on frames, for benchmarks.

Recall at a benign false-positive rate ``a`` is the share of attack accounts whose score is
*strictly above* the ``(k+1)``-th highest benign score, ``k = floor(a * n_benign)``: the most
accounts any score threshold can flag while flagging at most ``k`` benign accounts. Benign
accounts tied with that score are never flagged, so ties cannot make the rate exceed ``a``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from .errors import ConfigError, InputError
from .schema import ACCOUNTS_OUT_COLUMNS, VERDICTS

#: Benign false-positive rates at which recall is reported.
FPR_POINTS = (0.001, 0.01)
_LABELS = ("attack", "benign")


# --------------------------------------------------------------------------- loading


def _read_csv(path: Path, what: str) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema=False)
    except FileNotFoundError:
        raise InputError(f"{what} not found", path=str(path)) from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"unreadable CSV: {first}", path=str(path)) from None


def _require_columns(df: pl.DataFrame, cols, path: Path) -> None:
    for c in cols:
        if c not in df.columns:
            raise InputError(f"missing column (has {', '.join(df.columns) or 'none'})",
                             path=str(path), field=c)


def _first_bad(df: pl.DataFrame, bad: pl.Expr, col: str, path: Path, why: str) -> None:
    """Raise for the first row where ``bad`` holds (row = 1-based data row, header excluded)."""
    hit = df.with_row_index("_row").filter(bad).head(1)
    if hit.height:
        value = hit[col][0]
        raise InputError(f"{why} {value!r}", path=str(path), row=int(hit["_row"][0]) + 1,
                         field=col)


def check_unique_ids(df: pl.DataFrame, path: Path) -> None:
    _first_bad(df, pl.col("account_id").is_null() | (pl.col("account_id") == ""),
               "account_id", path, "empty account id")
    _first_bad(df, ~pl.col("account_id").is_first_distinct(), "account_id", path,
               "duplicate account id")


def load_predictions(path: str | Path) -> pl.DataFrame:
    """Read and validate a detector's ``accounts.csv`` (or the directory holding it).

    Returns ``account_id, score (Float64), verdict, cluster_id (null = none), reasons``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "accounts.csv"
    df = _read_csv(path, "accounts.csv")
    _require_columns(df, ACCOUNTS_OUT_COLUMNS[:3], path)
    if "cluster_id" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias("cluster_id"))
    if "reasons" not in df.columns:
        df = df.with_columns(pl.lit("").alias("reasons"))
    check_unique_ids(df, path)
    score = pl.col("score").str.strip_chars().cast(pl.Float64, strict=False)
    _first_bad(df, score.is_null() | score.is_nan(), "score", path, "score is not a number:")
    _first_bad(df, (score < 0) | (score > 1), "score", path, "score outside 0..1:")
    verdict = pl.col("verdict").str.strip_chars().str.to_lowercase()
    _first_bad(df, ~verdict.is_in(VERDICTS) | verdict.is_null(), "verdict", path,
               f"verdict not one of {'/'.join(VERDICTS)}:")
    cluster = pl.col("cluster_id").str.strip_chars().replace("", None)
    return df.select(
        pl.col("account_id"),
        score.alias("score"),
        verdict.alias("verdict"),
        cluster.alias("cluster_id"),
        pl.col("reasons").fill_null(""),
    )


def load_truth(path: str | Path) -> pl.DataFrame:
    """Read ``truth.csv`` or ``labels.csv`` → ``account_id, label, campaign, segment, variant``.

    Without a ``segment`` column, the segment is the campaign for attack accounts and
    ``benign`` for the others. ``campaign`` is null for benign accounts.
    """
    path = Path(path)
    df = _read_csv(path, "truth file")
    _require_columns(df, ("account_id", "label"), path)
    check_unique_ids(df, path)
    label = pl.col("label").str.strip_chars().str.to_lowercase()
    _first_bad(df, ~label.is_in(_LABELS) | label.is_null(), "label", path,
               "label not attack/benign:")
    for c in ("campaign", "segment", "variant"):
        if c not in df.columns:
            df = df.with_columns(pl.lit(None, pl.String).alias(c))
    df = df.with_columns(label.alias("label"))
    df = df.with_columns(pl.col(c).str.strip_chars().replace("", None)
                         for c in ("campaign", "segment", "variant"))
    attack = pl.col("label") == "attack"
    campaign = pl.when(attack).then(pl.col("campaign").fill_null("attack")).otherwise(None)
    return df.select(
        "account_id", "label", campaign.alias("campaign"),
        pl.col("segment").fill_null(pl.when(attack).then(campaign).otherwise(pl.lit("benign"))),
        "variant",
    )


# --------------------------------------------------------------------------- metrics


def recall_at_fpr(y: np.ndarray, score: np.ndarray, fpr: float) -> tuple[float, float, float]:
    """Recall of attack accounts at benign false-positive rate ``<= fpr``.

    Returns ``(recall, achieved_fpr, threshold)``; flagged means ``score > threshold``.
    ``threshold`` is the ``(k+1)``-th highest benign score with ``k = floor(fpr * n_benign)``
    (``-inf`` when ``k >= n_benign``). NaN recall when there is no attack account.
    """
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=float)
    benign = np.sort(score[~y])[::-1]
    k = math.floor(fpr * benign.size + 1e-9)
    thr = -math.inf if k >= benign.size else float(benign[k])
    achieved = float((benign > thr).mean()) if benign.size else math.nan
    recall = float((score[y] > thr).mean()) if y.any() else math.nan
    return recall, achieved, thr


def cluster_figures(cluster_id: pl.Series, campaign: pl.Series, account_id: pl.Series) -> dict:
    """Purity and adjusted Rand index of clusters vs campaigns (empty cluster = singleton)."""
    from sklearn.metrics import adjusted_rand_score

    n = len(campaign)
    if n == 0:
        return {"cluster_purity": math.nan, "cluster_ari": math.nan, "clustered_share": math.nan}
    frame = pl.DataFrame({
        "c": cluster_id.fill_null("\x00single:" + account_id),
        "t": campaign,
    })
    purity = (frame.group_by("c", "t").len().group_by("c").agg(pl.col("len").max())
              ["len"].sum() / n)
    pred = frame["c"].cast(pl.Categorical).to_physical().to_numpy()
    true = frame["t"].cast(pl.Categorical).to_physical().to_numpy()
    return {
        "cluster_purity": float(purity),
        "cluster_ari": float(adjusted_rand_score(true, pred)),
        "clustered_share": float(cluster_id.is_not_null().mean()),
    }


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def evaluate_frames(pred: pl.DataFrame, truth: pl.DataFrame) -> dict:
    """All figures for predictions ``pred`` (accounts.csv columns) against ``truth``.

    ``truth`` needs ``account_id, label``; ``campaign`` and ``segment`` are optional.
    Every truth account must be in ``pred`` (``InputError`` otherwise); predicted accounts
    absent from truth are counted as ``n_unlabeled`` and otherwise ignored.
    NaN where a figure is undefined (e.g. AUPRC without attack accounts).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    if "campaign" not in truth.columns:
        truth = truth.with_columns(pl.lit(None, pl.String).alias("campaign"))
    if "segment" not in truth.columns:
        truth = truth.with_columns(
            pl.when(pl.col("label") == "attack").then(pl.col("campaign").fill_null("attack"))
            .otherwise(pl.lit("benign")).alias("segment"))
    pred = pred.select("account_id", pl.col("score").cast(pl.Float64), "verdict",
                       pl.col("cluster_id").cast(pl.String), pl.lit(True).alias("_seen"))
    df = truth.select("account_id", "label", "campaign", "segment").join(
        pred, on="account_id", how="left")
    missing = df.filter(pl.col("_seen").is_null())
    if missing.height:
        ids = ", ".join(missing["account_id"].head(5).to_list())
        raise InputError(f"{missing.height} truth account(s) missing from predictions: {ids}",
                         field="account_id")
    n_unlabeled = pred.height - pred.join(truth, on="account_id", how="semi").height
    if df["score"].is_null().any() or df["score"].is_nan().any():
        raise InputError("score missing or NaN in predictions", field="score")

    y = (df["label"] == "attack").to_numpy()
    s = df["score"].to_numpy()
    flag = (df["verdict"] == "attack").to_numpy()
    both = 0 < y.sum() < y.size
    tp = int((flag & y).sum())
    fp = int((flag & ~y).sum())
    fn = int((~flag & y).sum())
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = (2 * precision * recall / (precision + recall)
          if tp and not math.isnan(precision) else (0.0 if tp + fp + fn else math.nan))
    out: dict[str, Any] = {
        "n_accounts": int(df.height),
        "n_attack": int(y.sum()),
        "n_unlabeled": int(n_unlabeled),
        "auprc": float(average_precision_score(y, s)) if both else math.nan,
        "roc_auc": float(roc_auc_score(y, s)) if both else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "benign_fpr": fp / int((~y).sum()) if (~y).any() else math.nan,
    }
    for a in FPR_POINTS:
        r, achieved, _thr = recall_at_fpr(y, s, a)
        out[f"recall_at_{a * 100:g}pct_fpr"] = r
        out[f"achieved_fpr_{a * 100:g}pct"] = achieved

    per_c = (df.filter(pl.col("label") == "attack").group_by("campaign")
             .agg(n=pl.len(), recall=(pl.col("verdict") == "attack").mean(),
                  flagged=(pl.col("verdict") != "benign").mean(),
                  mean_score=pl.col("score").mean())
             .sort("campaign"))
    out["campaigns"] = {r.pop("campaign"): r for r in per_c.to_dicts()}
    per_s = (df.filter(pl.col("label") == "benign").group_by("segment")
             .agg(n=pl.len(), fpr=(pl.col("verdict") == "attack").mean(),
                  suspicious_rate=(pl.col("verdict") == "suspicious").mean(),
                  mean_score=pl.col("score").mean())
             .sort("segment"))
    out["segments"] = {r.pop("segment"): r for r in per_s.to_dicts()}
    out["worst_segment_fpr"] = float(per_s["fpr"].max()) if per_s.height else math.nan

    att = df.filter(pl.col("label") == "attack")
    out.update(cluster_figures(att["cluster_id"], att["campaign"], att["account_id"]))
    attack_clusters = att["cluster_id"].drop_nulls().unique()
    out["benign_in_attack_clusters"] = int(df.filter(
        (pl.col("label") == "benign") & pl.col("cluster_id").is_in(attack_clusters.implode())
    ).height)
    return out


# --------------------------------------------------------------------------- result

#: (key, label, format) of the headline rows of the rendered table.
_ROWS = (
    ("n_accounts", "accounts", "d"), ("n_attack", "attack accounts", "d"),
    ("auprc", "AUPRC", ".3f"), ("roc_auc", "ROC AUC", ".3f"),
    ("precision", "precision (verdict=attack)", ".3f"),
    ("recall", "recall (verdict=attack)", ".3f"), ("f1", "F1", ".3f"),
    ("benign_fpr", "benign FPR", ".4f"),
    ("recall_at_0.1pct_fpr", "recall @ 0.1% benign FPR", ".3f"),
    ("recall_at_1pct_fpr", "recall @ 1% benign FPR", ".3f"),
    ("worst_segment_fpr", "worst benign-segment FPR", ".4f"),
    ("cluster_purity", "cluster purity (attack)", ".3f"),
    ("cluster_ari", "cluster ARI vs campaign", ".3f"),
    ("clustered_share", "attack accounts in a cluster", ".3f"),
    ("benign_in_attack_clusters", "benign in attack clusters", "d"),
)


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


@dataclass
class EvalResult:
    """Figures for the detector (``metrics``) and, optionally, each peer baseline."""

    metrics: dict
    baselines: dict[str, dict] = field(default_factory=dict)
    out_dir: str = ""
    truth: str = ""

    def to_dict(self) -> dict:
        return _nan_to_none({"out_dir": self.out_dir, "truth": self.truth,
                             "metrics": self.metrics, "baselines": self.baselines})

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode()

    def _columns(self) -> list[tuple[str, dict]]:
        return [("distillguard", self.metrics), *self.baselines.items()]

    def render(self, width: int = 120) -> str:
        """The figures as plain-text tables (baselines as extra columns)."""
        from rich.console import Console
        from rich.table import Table

        cols = self._columns()
        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)

        main = Table(title=f"Detection quality: {self.out_dir}", title_justify="left")
        main.add_column("figure")
        for name, _ in cols:
            main.add_column(name, justify="right")
        for key, label, spec in _ROWS:
            main.add_row(label, *(_fmt(m.get(key), spec) for _, m in cols))
        console.print(main)

        for part, title, keys in (
            ("campaigns", "Recall per campaign", ("recall",)),
            ("segments", "Benign FPR / suspicious rate",
             ("fpr", "suspicious_rate")),
        ):
            names = sorted(set().union(*(m.get(part, {}).keys() for _, m in cols)))
            if not names:
                continue
            t = Table(title=title, title_justify="left")
            t.add_column(part[:-1])
            t.add_column("n", justify="right")
            for name, _ in cols:
                t.add_column(name, justify="right")
            for nm in names:
                n = self.metrics.get(part, {}).get(nm, {}).get("n")
                cells = []
                for _, m in cols:
                    row = m.get(part, {}).get(nm, {})
                    cells.append(" / ".join(_fmt(row.get(k), ".3f") for k in keys))
                t.add_row(nm, _fmt(n, "d"), *cells)
            console.print(t)
        return console.export_text().rstrip() + "\n"


def evaluate(out_dir, truth, *, baselines: bool = False, log_paths=(), accounts=None
             ) -> EvalResult:
    """Grade ``out_dir/accounts.csv`` against ``truth``; with ``baselines``, also run the peer
    detectors of :mod:`distillguard.baselines` on the log at ``log_paths``."""
    out_dir = Path(out_dir)
    pred_path = out_dir / "accounts.csv" if out_dir.is_dir() else out_dir
    pred = load_predictions(pred_path)
    tr = load_truth(truth)
    try:
        metrics = evaluate_frames(pred, tr)
    except InputError as err:
        raise InputError(err.message, path=str(pred_path), field=err.field) from None
    result = EvalResult(metrics=metrics, out_dir=str(out_dir), truth=str(truth))
    if baselines:
        if not log_paths:
            raise ConfigError("--baselines needs the log detect ran on (--log PATH)")
        from .baselines import run_all

        try:
            from .read import read_log
        except ImportError as err:  # pragma: no cover - until the reader lands
            raise ConfigError(f"cannot read logs for baselines: {err}") from None
        log = read_log([Path(p) for p in log_paths], accounts=accounts)
        try:
            frames = run_all(log.events, log.accounts)
        finally:
            close = getattr(log, "close", None)
            if close is not None:
                close()
        for name, frame in frames.items():
            try:
                result.baselines[name] = evaluate_frames(frame, tr)
            except InputError as err:
                raise InputError(f"baseline {name}: {err.message}",
                                 path=", ".join(map(str, log_paths)), field=err.field) from None
    return result
