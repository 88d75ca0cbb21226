"""The normalised schemas every stage after ``read`` works on.

The reader turns any accepted container (contract.md §1) into frames with exactly these
columns and dtypes; everything downstream may rely on them. Optional input fields that are
absent become all-null columns, so code never has to test for a column's presence.
"""

from __future__ import annotations

import polars as pl

UTC = "UTC"
TS = pl.Datetime("us", UTC)

#: Required contract fields of an event (one of messages / prompt is required too).
REQUIRED_EVENT_FIELDS = ("ts", "account_id")

#: Optional contract fields of an event, as named in contract.md §1.
OPTIONAL_EVENT_FIELDS = (
    "request_id", "api_key_id", "model", "messages", "prompt", "system", "tools", "response",
    "input_tokens", "output_tokens", "max_tokens", "temperature", "thinking", "logprobs",
    "status", "ip", "asn", "country", "user_agent", "tls_fingerprint",
)

#: Account fields that may also appear inline on events (first non-null per account wins).
ACCOUNT_FIELDS = (
    "created_at", "tier", "email_domain", "payment_fingerprint", "billing_country", "verified",
)

#: Normalised event frame. One row per exchange.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "ts": TS,                          # request start, UTC
    "account_id": pl.String,
    "request_id": pl.String,
    "api_key_id": pl.String,
    "model": pl.String,
    "prompt": pl.String,               # `prompt`, else text of the last user turn of `messages`
    "system": pl.String,               # `system`, else the text of system-role messages
    "system_hash": pl.UInt64,          # stable 64-bit hash of `system`, null when absent
    "n_turns": pl.Int32,               # number of messages (1 when only `prompt` is given)
    "n_user_turns": pl.Int32,
    "tool_names": pl.List(pl.String),  # names of the tools defined in the request, sorted
    "tools_hash": pl.UInt64,           # stable hash of the sorted tool-name set, null if none
    "has_tool_results": pl.Boolean,    # any tool_result part / role=tool message
    "has_image": pl.Boolean,           # any image part
    "response": pl.String,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "max_tokens": pl.Int64,
    "temperature": pl.Float64,
    "thinking": pl.Int64,              # 0 = not requested, 1 = requested, >1 = budget tokens
    "logprobs": pl.Int64,              # 0 = not requested, 1 = requested, k = top-k
    "status": pl.Int32,
    "ip": pl.String,
    "ip_prefix": pl.String,            # /24 for IPv4, /48 for IPv6
    "asn": pl.Int64,
    "country": pl.String,
    "user_agent": pl.String,
    "tls_fingerprint": pl.String,
}

#: Normalised accounts frame. One row per account (from the accounts table and/or inline).
ACCOUNT_SCHEMA: dict[str, pl.DataType] = {
    "account_id": pl.String,
    "created_at": TS,
    "tier": pl.String,
    "email_domain": pl.String,
    "payment_fingerprint": pl.String,
    "billing_country": pl.String,
    "verified": pl.Boolean,
}

RELEASE_SCHEMA: dict[str, pl.DataType] = {"model": pl.String, "released_at": TS}

LABEL_SCHEMA: dict[str, pl.DataType] = {
    "account_id": pl.String, "label": pl.String, "campaign": pl.String,
}

#: accounts.csv columns (contract.md §2), in order.
ACCOUNTS_OUT_COLUMNS = ("account_id", "score", "verdict", "cluster_id", "reasons")
VERDICTS = ("attack", "suspicious", "benign")

#: Task classes of the content classifier.
TASKS = (
    "coding", "agentic_coding", "tool_use", "reasoning", "data_analysis", "grading",
    "sensitive_rewrite", "cot_elicitation", "creative", "chat", "other",
)


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENT_SCHEMA)


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Add missing columns as nulls, cast, and order columns as ``schema`` (extra dropped)."""
    exprs = []
    for name, dtype in schema.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype, strict=False))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(exprs)
