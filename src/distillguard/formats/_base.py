"""Helpers shared by the format modules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class RecordError(Exception):
    """A source record that cannot be mapped onto the contract (located by the reader)."""

    def __init__(self, reason: str, field: str | None, msg: str) -> None:
        super().__init__(msg)
        self.reason, self.field, self.msg = reason, field, msg


def get_path(obj: object, path: str) -> object:
    """Value at a dotted ``path`` (keys and list indices) in ``obj``; ``None`` when absent.

    A key that itself contains dots (an OTel attribute such as ``enduser.id``) is found
    before descending.
    """
    if type(obj) is dict and path in obj:
        return obj[path]
    parts = path.split(".")
    cur = obj
    i = 0
    while i < len(parts):
        if type(cur) is dict:
            # longest dotted key first, so 'a.b.c' finds {'a': {'b.c': 1}}
            for j in range(len(parts), i, -1):
                k = ".".join(parts[i:j])
                if k in cur:
                    cur, i = cur[k], j
                    break
            else:
                return None
        elif type(cur) is list and parts[i].lstrip("-").isdigit():
            try:
                cur = cur[int(parts[i])]
            except IndexError:
                return None
            i += 1
        else:
            return None
    return cur


def iso_from_ns(ns: int) -> str:
    """RFC 3339 UTC string with microseconds from Unix epoch nanoseconds (exact)."""
    return (_EPOCH + timedelta(microseconds=ns // 1000)).isoformat()


def text_of(content: object) -> str | None:
    """Text of an OpenAI/Anthropic message content (string or list of text parts)."""
    if content is None or type(content) is str:
        return content
    if type(content) is list:
        texts = [p.get("text") for p in content if type(p) is dict and type(p.get("text")) is str]
        texts += [p for p in content if type(p) is str]
        return "\n".join(texts) if texts else None
    return None


def chat_response_text(resp: object) -> str | None:
    """Assistant text of an OpenAI chat completion / Responses / Anthropic message body."""
    if resp is None or type(resp) is str:
        return resp
    if type(resp) is not dict:
        return None
    choices = resp.get("choices")
    if type(choices) is list and choices:
        c = choices[0]
        if type(c) is dict:
            msg = c.get("message")
            if type(msg) is dict:
                return text_of(msg.get("content"))
            if type(c.get("text")) is str:
                return c["text"]
        return None
    if type(resp.get("output_text")) is str:
        return resp["output_text"]
    out = resp.get("output")
    if type(out) is list:
        texts = [text_of(o.get("content")) for o in out if type(o) is dict
                 and o.get("type") == "message"]
        texts = [t for t in texts if t]
        return "\n".join(texts) if texts else None
    if resp.get("type") == "message":
        return text_of(resp.get("content"))
    return None


def thinking_from(params: dict) -> object:
    """Contract ``thinking`` from request parameters (Anthropic ``thinking`` or OpenAI
    ``reasoning_effort`` / ``reasoning: {effort}``)."""
    th = params.get("thinking")
    if th is not None:
        return th
    eff = params.get("reasoning_effort")
    if eff is None and type(params.get("reasoning")) is dict:
        eff = params["reasoning"].get("effort")
    if eff is None:
        return None
    return 0 if str(eff).lower() in ("none", "") else 1
