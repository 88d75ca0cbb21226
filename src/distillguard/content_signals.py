"""Content signals per account, from a bounded sample of each account's prompts.

More than a few hundred prompts add nothing to an account's task mix or template profile,
so :func:`sample_prompts` keeps at most ``max_prompts`` per account (a deterministic hash
sample, spread over the account's whole history). :func:`content_features` classifies the
sampled prompts (:mod:`distillguard.content`: task classifier, chain-of-thought and
sensitive-rewrite scores) and mines templates across all accounts, giving per account:

- ``share_<task>`` for every task of ``schema.TASKS``, ``valuable_share`` (tasks worth
  distilling: coding, agentic coding, tool use, reasoning, data analysis, grading, CoT,
  sensitive rewrites), ``top_task_share`` and ``task_entropy`` (capability concentration);
- ``cot_share`` / ``sensitive_share`` (prompts scored as CoT elicitation / sensitive rewrite);
- template reuse: ``template_reuse_share``, ``top_template_share``, ``n_templates``,
  ``cross_account_templates``, ``shared_template_share`` (prompts whose template other
  accounts use too).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from .content import account_template_stats, load_default, mine_templates, predict_tasks
from .read import SAMPLE_COLUMNS, sample_hash
from .schema import TASKS

VALUABLE_TASKS = ("coding", "agentic_coding", "tool_use", "reasoning", "data_analysis",
                  "grading", "sensitive_rewrite", "cot_elicitation")


def sample_prompts(events: pl.LazyFrame | list[pl.LazyFrame], *, max_prompts: int = 200,
                   seed: int = 0, keep_hash: bool = False) -> pl.DataFrame:
    """At most ``max_prompts`` events per account, chosen by a seeded hash (deterministic).

    Two streaming passes keep memory at a few bytes per event: the first reads only the
    account id and the hash key (:func:`distillguard.read.sample_hash`: the prompt's first
    64 characters) and ranks each account's rows by hash; the second reads the text
    columns of the kept rows only. (``detect`` draws the same sample while reading the log
    instead, ``read_log(sample_seed=)``, and its cache holds no text.) ``prompt`` and
    ``system`` come back as ``Categorical``: samples repeat prompts (replays, templates)
    many times over, so each distinct text is held once. ``events`` may be a list of
    account partitions (``Log.parts``), sampled one at a time. ``keep_hash`` keeps the
    sampling hash as ``_h`` (for :func:`merge_samples`).
    """
    if isinstance(events, list):
        if len(events) > 1:
            return _sorted(pl.concat([sample_prompts(e, max_prompts=max_prompts, seed=seed,
                                                     keep_hash=keep_hash)
                                      for e in events]))
        events = events[0]
    h = sample_hash(seed)
    keys = (events.with_row_index("_r").select("_r", "account_id", _h=h)
            .collect(engine="streaming"))
    keep = keys.filter(pl.col("_h").rank("ordinal").over("account_id") <= max_prompts)
    del keys
    out = (events.select(*SAMPLE_COLUMNS).with_row_index("_r")
           .join(keep.lazy().select("_r", "_h"), on="_r", how="inner", maintain_order="left")
           .select(*SAMPLE_COLUMNS, "_h")
           .with_columns(pl.col("prompt").cast(pl.Categorical),
                         pl.col("system").cast(pl.Categorical))
           .collect(engine="streaming"))
    return _sorted(out if keep_hash else out.drop("_h"))


def merge_samples(old: pl.DataFrame, new: pl.DataFrame, *, max_prompts: int) -> pl.DataFrame:
    """The sample of two logs read one after the other, from their ``keep_hash`` samples.

    Each sample holds an account's ``max_prompts`` smallest hashes (a bottom-k sketch), so the
    smallest of their union are exactly those of both logs sampled together.
    """
    both = pl.concat([old, new], how="vertical_relaxed")
    return _sorted(both.filter(pl.col("_h").rank("ordinal").over("account_id") <= max_prompts))


def _sorted(sample: pl.DataFrame) -> pl.DataFrame:
    return sample.sort("account_id", "ts", maintain_order=True)


def _templates(prompt: pl.Series, seed: int) -> pl.Series:
    """:func:`mine_templates` ids per row, mined over the distinct prompts only.

    Distinct prompts are taken in order of first occurrence, so the smallest distinct index
    of a template maps to its smallest row: the ids equal ``mine_templates`` over all rows.
    """
    dist = (prompt.to_frame("p").with_row_index("row").group_by("p")
            .agg(first=pl.col("row").min()).sort("first"))
    tid = mine_templates(dist.select(pl.col("p").cast(pl.String)), text_col="p", seed=seed)
    first = dist["first"].cast(pl.Int64)
    ids = dist.select("p", template_id=first.gather(tid))
    return (prompt.to_frame("p").join(ids, on="p", how="left", maintain_order="left",
                                      nulls_equal=True)["template_id"])


def content_features(sample: pl.DataFrame, *, seed: int = 0, classifier=None, note=None
                     ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-account content features, and the sample with ``task`` / ``template_id`` added.

    ``note``: optional callable given a progress message after each step (the profiler's).
    """
    note = note or (lambda _msg: None)
    if classifier is None:
        classifier = load_default()
    # classify each distinct (prompt, system, tools) once: replays and templates repeat.
    # Keyed on a 64-bit hash of the three columns: a join on the text columns themselves
    # cost ~6 GiB at 16M exchanges.
    key = ["prompt", "system", "tool_names"]
    sample = sample.with_columns(_k=pl.struct(key).hash(seed=0))
    uniq = (sample.filter(pl.col("_k").is_first_distinct()).select("_k", *key)
            .with_columns(pl.col("prompt").cast(pl.String).fill_null(""),
                          pl.col("system").cast(pl.String)))
    pred = predict_tasks(uniq, classifier)
    labels = uniq.select("_k").with_columns(
        task=pred["task"], cot=pred["cot_score"].cast(pl.Float64),
        sensitive=pred["sensitive_score"].cast(pl.Float64))
    note(f"classified {uniq.height:,} distinct prompts")
    sample = sample.join(labels, on="_k", how="left").drop("_k")
    sample = sample.with_columns(template_id=_templates(sample["prompt"], seed))
    note("templates mined")
    shares = (sample.group_by("account_id").agg(
        [(pl.col("task") == t).mean().alias(f"share_{t}") for t in TASKS]
        + [pl.col("cot").gt(0.5).mean().alias("cot_share"),
           pl.col("sensitive").gt(0.5).mean().alias("sensitive_share"),
           pl.col("task").is_in(list(VALUABLE_TASKS)).mean().alias("valuable_share")]))
    share_cols = [f"share_{t}" for t in TASKS]
    mat = shares.select(share_cols).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(mat > 0, mat * np.log(mat), 0.0), axis=1) / math.log(len(TASKS))
    shares = shares.with_columns(top_task_share=pl.Series(mat.max(axis=1)),
                                 task_entropy=pl.Series(ent))
    tstats = account_template_stats(sample).drop("template_ids")
    # share of an account's prompts whose template other accounts use too
    t_acc = sample.group_by("template_id").agg(t_accounts=pl.col("account_id").n_unique())
    shared = (sample.join(t_acc, on="template_id").group_by("account_id")
              .agg(shared_template_share=(pl.col("t_accounts") >= 2).mean()))
    feats = shares.join(tstats, on="account_id", how="left").join(shared, on="account_id",
                                                                 how="left")
    return feats, sample
