"""Anthropic Message Batches request files: ``{custom_id, params}`` per line.

``params`` is a Messages API request (``model``, ``max_tokens``, ``messages``, ``system``,
``tools``, ``temperature``, ``thinking``, ``metadata.user_id``). Like OpenAI batch files
they name no account and no time: give ``--account-from`` and ``--ts-from``. Result files
(``{custom_id, result}``) hold no prompt and are rejected with a message.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._base import RecordError

ACCOUNT_HINT = ("Anthropic batch files name no account: give the account that submitted the "
                "batch with --account-from const:ACCOUNT, or a field that holds it with "
                "--account-from FIELD (e.g. --account-from params.metadata.user_id)")
TS_HINT = ("Anthropic batch files carry no request time: give --ts-from mtime (the file's "
           "modification time), --ts-from const:2025-01-01T00:00:00Z, or --ts-from FIELD")


def sniff(rec: dict) -> bool:
    return "custom_id" in rec and ("params" in rec or "result" in rec)


def records(rec: dict) -> Iterator[tuple[dict, dict]]:
    p = rec.get("params")
    if p is None and "result" in rec:
        raise RecordError("missing_prompt", "params", "an Anthropic batch result line holds "
                          "no request: read the batch request file instead")
    if type(p) is not dict:
        raise RecordError("bad_type:params", "params", "expected the request params object")
    yield {
        "request_id": rec.get("custom_id"),
        "model": p.get("model"),
        "messages": p.get("messages"),
        "system": p.get("system"),
        "tools": p.get("tools"),
        "max_tokens": p.get("max_tokens"),
        "temperature": p.get("temperature"),
        "thinking": p.get("thinking"),
    }, rec
