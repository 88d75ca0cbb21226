"""The batch pipeline: read → fingerprint → link → cluster → score → explain.

:func:`detect` is the library entry point behind ``distillguard detect``; each stage is a pure
function of the previous stage's frames (see ``docs/ARCHITECTURE.md``). :func:`build_features`
stops before scoring and is what ``tools/fit_scorer.py`` fits the scorer on, so training and
detection share one feature path.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console

from . import __version__
from .cluster import (assemble_flagged, attach_flagged, cluster_features, leiden_clusters,
                      merge_clusters, neighbour_features)
from .content_signals import content_features, merge_samples, sample_prompts
from .errors import ConfigError
from .fingerprint import account_features
from .link import edges_from_incidences, incidences, rare_values
from .profile import StageProfiler
from .read import Log, auto_partitions, read_log
from .score import Scorer, apply_lifts
from .signals import SignalSet, load_signals
from .state import load_state, write_state


@dataclass
class Features:
    """Everything the scorer and the report need, for one log."""

    accounts: pl.DataFrame          # one row per account: fingerprint + content + c_* cluster
    membership: pl.DataFrame        # account_id, cluster_id
    clusters: pl.DataFrame          # one row per cluster
    edges: pl.DataFrame
    sample: pl.DataFrame            # sampled events with task / template ids
    #: the prompt sample with its sampling hash ``_h`` (what ``--state`` keeps)
    hashed_sample: pl.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    rare: pl.DataFrame | None = None  # rare linking values (for score.apply_lifts)


@dataclass
class DetectResult:
    out: Path
    n_events: int
    n_accounts: int
    n_clusters: int
    verdicts: dict[str, int]
    cluster_verdicts: dict[str, int]
    mode: str
    invalid: dict[str, int]
    runtime_s: float

    def summary(self) -> str:
        lines = [
            f"read {self.n_events:,} exchanges from {self.n_accounts:,} accounts"
            + (f" (skipped {sum(self.invalid.values()):,} invalid: "
               + ", ".join(f"{k}={v}" for k, v in self.invalid.items()) + ")"
               if self.invalid else ""),
            "accounts: " + ", ".join(f"{k} {self.verdicts.get(k, 0):,}"
                                     for k in ("attack", "suspicious", "benign")),
            f"clusters: {self.n_clusters:,} ("
            + ", ".join(f"{k} {v:,}" for k, v in sorted(self.cluster_verdicts.items())) + ")",
            f"scoring: {self.mode}",
            f"wrote {self.out / 'accounts.csv'}, {self.out / 'clusters.json'}, "
            f"{self.out / 'report.html'} in {self.runtime_s:.1f}s",
        ]
        return "\n".join(lines)


CLUSTER_PREFIX = "c_"


class _Stages:
    """Times each stage (and its peak memory) and, on a terminal, shows which one runs."""

    def __init__(self, profiler: StageProfiler, progress: bool) -> None:
        self.profiler = profiler
        self.console = Console(stderr=True) if progress else None

    @contextmanager
    def __call__(self, name: str, what: str):
        with self.profiler.stage(name):
            if self.console is None:
                yield
            else:
                with self.console.status(f"{what}…"):
                    yield
                self.console.log(f"{name}: done")


def build_features(log: Log, signals: SignalSet, *, max_prompts: int = 64, seed: int = 0,
                   profiler: StageProfiler | None = None, progress: bool = False,
                   prior_sample: pl.DataFrame | None = None) -> Features:
    """Fingerprint, content, link and cluster stages over a read log.

    ``prior_sample``: the hashed prompt sample of earlier logs (``--state``), merged with
    this log's (``log.new_parts``) as if all had been sampled together.
    """
    prof = profiler if profiler is not None else StageProfiler()
    stage = _Stages(prof, progress)
    with stage("fingerprint", "per-account behavioural features"):
        feats = account_features(log.parts, log.accounts, log.releases)
    with stage("content", f"classifying and template-mining ≤ {max_prompts} prompts/account"):
        if log.sample is not None:  # drawn while reading: the cache holds no prompt text
            if (log.sample_seed, log.sample_max) != (seed, max_prompts):
                raise ValueError(
                    f"the log's prompt sample was drawn while reading with seed="
                    f"{log.sample_seed}, max_prompts={log.sample_max}; read it with "
                    f"sample_seed={seed}, sample_max={max_prompts} for these features")
            hashed = log.sample
        else:
            hashed = sample_prompts(log.new_parts, max_prompts=max_prompts, seed=seed,
                                    keep_hash=True)
        if prior_sample is not None:
            hashed = merge_samples(prior_sample, hashed, max_prompts=max_prompts)
        sample = hashed.drop("_h")
        prof.note(f"sampled {sample.height:,} prompts")
        content, sample = content_features(sample, seed=seed, note=prof.note)
        feats = feats.join(content, on="account_id", how="left")
    with stage("link", "linking accounts by shared rare attributes"):
        cfg = signals.link
        seen = log.accounts.join(feats.select("account_id"), on="account_id", how="semi")
        inc = incidences(log.parts, seen, sample.select("account_id", "ts", "template_id"),
                         cfg)
        prof.note(f"{inc.height:,} incidences")
        edges = edges_from_incidences(inc, feats.height, cfg, note=prof.note)
        prof.note(f"{edges.height:,} edges")
        lifts = signals.lifts
        rare = (rare_values(inc, sorted({k for lf in lifts for k in lf.kinds}),
                            max(lf.max_holders for lf in lifts)) if lifts else None)
    with stage("cluster", "Leiden clusters and group features"):
        cl = signals.cluster
        membership = leiden_clusters(edges, min_size=int(cl.get("min_size", 3)),
                                     resolution=float(cl.get("resolution", 1.0)),
                                     objective=str(cl.get("objective", "modularity")),
                                     n_iterations=int(cl.get("n_iterations", -1)), seed=seed)
        prof.note(f"Leiden: {membership['cluster_id'].n_unique():,} clusters")
        if cl.get("merge"):
            membership = merge_clusters(membership, inc, kinds=list(cl["merge"]["kinds"]),
                                        min_jaccard=float(cl["merge"]["min_jaccard"]),
                                        min_size=int(cl["merge"].get("min_size", 10)),
                                        max_share=cfg.max_share)
        del inc
        cfeats = cluster_features(feats, membership, edges, sample)
        nbr = neighbour_features(feats, edges)
        feats = attach_cluster_features(feats, membership, cfeats).join(nbr, on="account_id",
                                                                        how="left")
    return Features(accounts=feats, membership=membership, clusters=cfeats, edges=edges,
                    sample=sample, hashed_sample=hashed, timings=prof.timings(), rare=rare)


def attach_cluster_features(feats: pl.DataFrame, membership: pl.DataFrame,
                            cfeats: pl.DataFrame) -> pl.DataFrame:
    """Copy cluster features to member accounts as ``c_*`` (0 for accounts in no cluster)."""
    cols = [c for c in cfeats.columns if c != "cluster_id" and cfeats[c].dtype.is_numeric()]
    if membership.is_empty():
        return feats.with_columns(pl.lit(None, dtype=pl.String).alias("cluster_id"),
                                  *[pl.lit(1.0 if c == "size" else 0.0).alias(CLUSTER_PREFIX + c)
                                    for c in cols])
    c = cfeats.select("cluster_id", *[pl.col(x).cast(pl.Float64).alias(CLUSTER_PREFIX + x)
                                      for x in cols])
    out = (feats.join(membership, on="account_id", how="left")
           .join(c, on="cluster_id", how="left"))
    return out.with_columns(
        [pl.col(CLUSTER_PREFIX + x).fill_null(0.0) for x in cols]
    ).with_columns(pl.col(CLUSTER_PREFIX + "size").replace(0.0, 1.0))


def assemble_campaigns(f: Features, verdict: pl.DataFrame, cl: dict, *,
                       seed: int = 0) -> pl.DataFrame:
    """The final membership: Leiden's, with ``attack`` accounts outside every campaign cluster
    attached to the one they are strongly tied to (``cluster.attach``) and the rest grouped by
    the rare values they share (``cluster.assemble``); see :mod:`distillguard.cluster`."""
    membership = f.membership
    attach, assemble = cl.get("attach"), cl.get("assemble")
    if attach:
        membership = attach_flagged(membership, verdict, f.edges,
                                    min_weight=float(attach["min_weight"]),
                                    min_attack_share=float(attach.get("min_attack_share", 0.5)),
                                    min_size=int(attach.get("min_size", 1)))
    if assemble:
        membership = assemble_flagged(
            membership, verdict, f.rare,
            min_attack_share=float(assemble.get("min_attack_share", 0.5)),
            campaign_min_size=int(assemble.get("campaign_min_size", 1)),
            min_size=int(assemble.get("min_size", cl.get("min_size", 3))),
            objective=str(assemble.get("objective", "modularity")),
            resolution=float(assemble.get("resolution", 0.5)),
            merge_kinds=list(assemble.get("merge_kinds", [])),
            merge_min_jaccard=float(assemble.get("merge_min_jaccard", 0.15)), seed=seed)
    return membership


def read_allowlist(path: Path) -> set[str]:
    """Account ids from a CSV with an ``account_id`` column."""
    from .errors import InputError

    try:
        df = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise InputError(f"cannot read allow-list: {err}".splitlines()[0], path=str(path)) \
            from None
    if "account_id" not in df.columns:
        raise InputError("allow-list needs an 'account_id' column", path=str(path), row=1,
                         field="account_id")
    return set(df["account_id"].drop_nulls().to_list())


def load_scorer(model_path: Path | None, signals: SignalSet) -> Scorer:
    """The fitted model file if usable; rules mode when the default one is absent."""
    if model_path is not None:
        return Scorer.load(model_path, signals=signals)
    try:
        return Scorer.load(signals=signals)
    except ConfigError:
        return Scorer(signals=signals)


def detect(paths: list, *, accounts=None, releases=None, out: Path, skip_invalid: bool = False,
           model_path: Path | None = None, signals_path: Path | None = None,
           max_prompts: int = 64, progress: bool = False, seed: int = 0,
           format: str = "auto", account_from: str | None = None,
           ts_from: str | None = None, allowlist: Path | None = None,
           profiler: StageProfiler | None = None, partitions: int | None = None,
           state: Path | None = None) -> DetectResult:
    """Run the batch pipeline and write accounts.csv, clusters.json and report.html.

    ``format`` / ``account_from`` / ``ts_from`` select and complete the input format (see
    ``docs/formats``); the default ``auto`` recognises each file by its content.
    ``allowlist``: CSV with an ``account_id`` column — customers with written permission to
    generate training data; they keep their score but get verdict ``benign`` and the reason
    ``allowlisted``. ``profiler`` collects per-stage time and peak memory (``--profile``).
    ``partitions``: account partitions of the per-account stages (None: about one per 2M
    events, :func:`~distillguard.read.auto_partitions`); results do not depend on it.
    ``state``: directory of the incremental state (:mod:`distillguard.state`): loaded when
    present, so this log is detected together with all earlier ones, and rewritten after.
    """
    from .explain import render_report
    from .outputs import build_clusters_json, write_accounts_csv

    started = time.perf_counter()
    prof = profiler if profiler is not None else StageProfiler()
    stage = _Stages(prof, progress)
    out = Path(out)
    signals = load_signals(signals_path)
    allowed = read_allowlist(allowlist) if allowlist is not None else set()
    scorer = load_scorer(model_path, signals)
    out.mkdir(parents=True, exist_ok=True)
    if prof.log_path is None:
        prof.set_log(out / "profile.log")  # live: a killed run still shows where it was
    with prof.stage("read"):
        if partitions is None:
            partitions = auto_partitions(paths, format=format)
        prof.note(f"{partitions} account partition(s)")
        history = (load_state(state, max_prompts=max_prompts, seed=seed)
                   if state is not None else None)
        if history is not None:
            prof.note(f"state {state}: {history.n_events:,} earlier exchanges")
        log = read_log(paths, accounts=accounts, releases=releases, skip_invalid=skip_invalid,
                       progress=progress, format=format, account_from=account_from,
                       ts_from=ts_from, partitions=partitions, history=history,
                       sample_seed=seed, sample_max=max_prompts)
    with log:
        f = build_features(log, signals, max_prompts=max_prompts, seed=seed, profiler=prof,
                           progress=progress,
                           prior_sample=history.sample if history is not None else None)
        with stage("score", "scoring"):
            scored = apply_lifts(scorer, scorer.run(f.accounts), f.accounts, f.rare,
                                 signals.lifts)
        acc = f.accounts.with_columns(
            score=pl.Series(np.round(scored.score, 6)),
            verdict=pl.Series(scored.verdict, dtype=pl.String),
            reasons=pl.Series(scored.reasons, dtype=pl.String),
        )
        if allowed:
            listed = pl.col("account_id").is_in(list(allowed))
            acc = acc.with_columns(
                verdict=pl.when(listed).then(pl.lit("benign")).otherwise("verdict"),
                reasons=pl.when(listed).then(pl.concat_str([pl.lit("allowlisted"),
                                                            pl.col("reasons")],
                                                           separator=";", ignore_nulls=True)
                                             .str.strip_chars(";"))
                .otherwise("reasons"))
        with stage("assemble", "grouping flagged accounts into campaigns"):
            membership = assemble_campaigns(f, acc, signals.cluster, seed=seed)
            if not membership.equals(f.membership):
                prof.note(f"campaign assembly: {f.membership['cluster_id'].n_unique():,} → "
                          f"{membership['cluster_id'].n_unique():,} clusters, "
                          f"{f.membership.height:,} → {membership.height:,} clustered accounts")
                acc = acc.drop("cluster_id").join(membership, on="account_id", how="left")
                # the evidence describes the final groups (scores used Leiden's)
                f = replace(f, membership=membership,
                            clusters=cluster_features(f.accounts, membership, f.edges, f.sample))
        with stage("explain", "building cluster evidence"):
            clusters = build_clusters_json(acc, f, log, scorer)
        # accounts known only from the accounts table (no traffic) are listed too
        dormant = (log.accounts.join(acc.select("account_id"), on="account_id", how="anti")
                   .select("account_id", score=pl.lit(0.0), verdict=pl.lit("benign"),
                           cluster_id=pl.lit(None, dtype=pl.String),
                           reasons=pl.lit("no_traffic")))
        invalid = log.invalid.as_dict()
        n_events = log.n_events
        if state is not None:
            with prof.stage("state"):
                write_state(state, events=pl.concat(log.parts), sample=f.hashed_sample,
                            inline_accounts=log.inline_accounts, first_seen=log.first_seen,
                            n_events=n_events, invalid=invalid, max_prompts=max_prompts,
                            seed=seed)
    # accounts in no cluster and accounts whose cluster is benign keep their own verdicts
    write_accounts_csv(pl.concat([acc.select(dormant.columns), dormant]), out / "accounts.csv")
    (out / "clusters.json").write_text(json.dumps(clusters, indent=1, default=str) + "\n")
    runtime = time.perf_counter() - started
    meta = {
        "version": __version__,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": [str(p) for p in paths],
        "n_events": n_events,
        "n_accounts": acc.height,
        "invalid": invalid,
        "model": (f"learned model ({getattr(scorer, 'model_file_', 'fitted')})"
                  if scorer.mode == "learned" else
                  "rules only: no fitted model file, weights from signals.yaml"),
        "thresholds": scorer.thresholds,
        "runtime_s": round(runtime, 2),
        "timings": {k: round(v, 2) for k, v in prof.timings().items()},
        # largest per-stage peak: the process's own peak mark is reset at each stage start
        "peak_rss_gib": round(prof.max_peak() / 2**30, 3) if prof.enabled else None,
    }
    (out / "run.json").write_text(json.dumps(meta, indent=1) + "\n")
    with prof.stage("report"):
        render_report(out / "report.html", accounts=acc, clusters=clusters, meta=meta)
    verdicts = dict(zip(*np.unique(acc["verdict"].to_numpy(), return_counts=True)))
    cv: dict[str, int] = {}
    for c in clusters:
        cv[c["verdict"]] = cv.get(c["verdict"], 0) + 1
    return DetectResult(out=out, n_events=n_events, n_accounts=acc.height,
                        n_clusters=len(clusters), verdicts={k: int(v) for k, v in verdicts.items()},
                        cluster_verdicts=cv, mode=scorer.mode, invalid=invalid,
                        runtime_s=runtime)
