"""Enforcing a decision on an OpenAI/Anthropic-style request or response."""

from __future__ import annotations

#: response keys that carry raw chain-of-thought (OpenAI-compatible, LiteLLM, DeepSeek style)
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking_blocks", "reasoning_details")
#: request keys that ask for reasoning
REASONING_REQUEST_KEYS = ("thinking", "reasoning_effort", "reasoning")


def strip_reasoning(obj):
    """Remove reasoning content from a response object, in place; returns it.

    Drops :data:`REASONING_KEYS` from every mapping, and ``thinking`` / ``redacted_thinking``
    / ``reasoning`` parts from content lists (Anthropic blocks).
    """
    if isinstance(obj, dict):
        for k in REASONING_KEYS:
            obj.pop(k, None)
        for k, v in list(obj.items()):
            if isinstance(v, list) and k == "content":
                obj[k] = [p for p in v if not (isinstance(p, dict) and p.get("type") in
                                                ("thinking", "redacted_thinking", "reasoning"))]
            strip_reasoning(obj[k])
    elif isinstance(obj, list):
        for x in obj:
            strip_reasoning(x)
    return obj


def strip_reasoning_request(body: dict) -> dict:
    """Drop the request options that ask for reasoning (in place); returns ``body``."""
    for k in REASONING_REQUEST_KEYS:
        body.pop(k, None)
    return body


def record_from_request(body: dict, *, account_id: str, ip: str | None = None,
                        user_agent: str | None = None, api_key_id: str | None = None) -> dict:
    """A contract record (contract.md §1) from a chat/completions request body."""
    rec = {"account_id": account_id, "ip": ip, "user_agent": user_agent,
           "api_key_id": api_key_id}
    for k in ("model", "messages", "prompt", "system", "tools", "max_tokens", "temperature",
              "logprobs", "top_logprobs"):
        if body.get(k) is not None:
            rec[k] = body[k]
    if rec.get("max_tokens") is None and body.get("max_completion_tokens") is not None:
        rec["max_tokens"] = body["max_completion_tokens"]
    think = body.get("thinking")
    if isinstance(think, dict):
        rec["thinking"] = int(think.get("budget_tokens") or 1) if think.get("type") != \
            "disabled" else 0
    elif think is not None:
        rec["thinking"] = think
    elif body.get("reasoning_effort") is not None:
        rec["thinking"] = 1
    if isinstance(rec.get("prompt"), list):
        rec["prompt"] = "\n".join(map(str, rec["prompt"]))
    return {k: v for k, v in rec.items() if v is not None}
