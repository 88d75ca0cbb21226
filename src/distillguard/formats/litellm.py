"""LiteLLM ``StandardLoggingPayload`` records (one JSON object per line).

What LiteLLM's custom loggers and logging integrations receive as
``kwargs["standard_logging_object"]``. Mapping (see docs/formats/litellm.md):
``startTime`` → ts; ``metadata.user_api_key_org_id``, else
``metadata.user_api_key_team_id`` → account_id; ``metadata.user_api_key_hash`` → api_key_id;
``litellm_call_id``, else ``id`` → request_id; ``model_group``, else ``model`` → model; ``messages`` (list → messages,
string → prompt); ``response`` (chat completion) → response text; ``prompt_tokens`` /
``completion_tokens``; ``model_parameters.{max_tokens|max_completion_tokens, temperature,
tools, thinking|reasoning_effort, logprobs, top_logprobs}``; ``status`` success → 200,
failure → ``error_information.error_code``; ``requester_ip_address`` → ip; ``user_agent``
(top level or ``metadata.user_agent``).
"""

from __future__ import annotations

from collections.abc import Iterator

from ._base import RecordError, chat_response_text, thinking_from

ACCOUNT_HINT = ("the LiteLLM record has neither metadata.user_api_key_org_id nor "
                "metadata.user_api_key_team_id (the key is in no team or organisation); name the "
                "field that identifies the account with --account-from FIELD (e.g. "
                "--account-from metadata.user_api_key_user_id or "
                "--account-from metadata.user_api_key_hash)")
TS_HINT = "the LiteLLM record has no startTime; name a field with --ts-from FIELD"


def sniff(rec: dict) -> bool:
    return "startTime" in rec and ("call_type" in rec or "model_parameters" in rec)


def _status(rec: dict) -> object:
    st = rec.get("status")
    if st == "success":
        return 200
    info = rec.get("error_information")
    code = info.get("error_code") if type(info) is dict else None
    if type(code) is int or (type(code) is str and code.strip().isdigit()):
        return int(code)
    return None


def records(rec: dict) -> Iterator[tuple[dict, dict]]:
    md = rec.get("metadata")
    if md is None:
        md = {}
    elif type(md) is not dict:
        raise RecordError("bad_type:metadata", "metadata", "expected an object")
    mp = rec.get("model_parameters")
    if mp is None:
        mp = {}
    elif type(mp) is not dict:
        raise RecordError("bad_type:model_parameters", "model_parameters",
                          "expected an object")
    msgs = rec.get("messages")
    out = {
        "ts": rec.get("startTime"),
        "account_id": md.get("user_api_key_org_id") or md.get("user_api_key_team_id"),
        "request_id": rec.get("litellm_call_id") or rec.get("id"),
        "api_key_id": md.get("user_api_key_hash"),
        "model": rec.get("model_group") or rec.get("model"),
        "response": chat_response_text(rec.get("response")),
        "input_tokens": rec.get("prompt_tokens"),
        "output_tokens": rec.get("completion_tokens"),
        "max_tokens": mp.get("max_tokens", mp.get("max_completion_tokens")),
        "temperature": mp.get("temperature"),
        "thinking": thinking_from(mp),
        "logprobs": mp.get("logprobs"),
        "top_logprobs": mp.get("top_logprobs"),
        "tools": mp.get("tools"),
        "status": _status(rec),
        "ip": rec.get("requester_ip_address") or md.get("requester_ip_address"),
        "user_agent": rec.get("user_agent") or md.get("user_agent"),
    }
    if type(msgs) is str:
        out["prompt"] = msgs
    elif type(msgs) is dict and type(msgs.get("messages")) is list:
        out["messages"] = msgs["messages"]
    else:
        out["messages"] = msgs
    if "system" in mp:
        out["system"] = mp["system"]
    yield out, rec
