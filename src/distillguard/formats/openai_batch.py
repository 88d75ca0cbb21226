"""OpenAI Batch API input files: ``{custom_id, method, url, body}`` per line.

``body`` is a Chat Completions request (``messages``) or a Responses request (``input``,
``instructions``). Batch files name neither the account that submitted them nor a time:
give ``--account-from`` (``const:ACCOUNT`` or a field path such as ``body.metadata.account``)
and ``--ts-from`` (``mtime``, ``const:RFC3339`` or a field path). Batch *output* files
(``{custom_id, response, error}``) hold no prompt and are rejected with a message.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._base import RecordError, thinking_from

ACCOUNT_HINT = ("OpenAI batch files name no account: give the account that submitted the batch "
                "with --account-from const:ACCOUNT, or a field that holds it with "
                "--account-from FIELD (e.g. --account-from body.metadata.account_id)")
TS_HINT = ("OpenAI batch files carry no request time: give --ts-from mtime (the file's "
           "modification time), --ts-from const:2025-01-01T00:00:00Z, or --ts-from FIELD "
           "(e.g. body.metadata.ts)")


def sniff(rec: dict) -> bool:
    return "custom_id" in rec and ("body" in rec or ("response" in rec and "error" in rec))


def records(rec: dict) -> Iterator[tuple[dict, dict]]:
    body = rec.get("body")
    if body is None and "response" in rec:
        raise RecordError("missing_prompt", "body", "an OpenAI batch output (results) line "
                          "holds no request: read the batch input file instead")
    if type(body) is not dict:
        raise RecordError("bad_type:body", "body", "expected the request body object")
    out = {
        "request_id": rec.get("custom_id"),
        "model": body.get("model"),
        "max_tokens": body.get("max_completion_tokens",
                               body.get("max_tokens", body.get("max_output_tokens"))),
        "temperature": body.get("temperature"),
        "tools": body.get("tools"),
        "thinking": thinking_from(body),
        "logprobs": body.get("logprobs"),
        "top_logprobs": body.get("top_logprobs"),
    }
    if "messages" in body:
        out["messages"] = body["messages"]
    else:
        inp = body.get("input")
        if type(inp) is str:
            out["prompt"] = inp
        else:
            out["messages"] = inp
        if body.get("instructions") is not None:
            out["system"] = body["instructions"]
    yield out, rec
