"""LiteLLM proxy hook: ask distillguard before each call and enforce the action.

Add to the proxy's ``config.yaml``::

    litellm_settings:
      callbacks: distillguard.serve.litellm_hook.handler

``handler`` is configured from the environment: ``DISTILLGUARD_POLICY`` (policy YAML; the
packaged default otherwise), ``DISTILLGUARD_MODEL`` / ``DISTILLGUARD_SIGNALS`` (scorer and
signal files), ``DISTILLGUARD_DECISION_LOG`` (JSON Lines of every decision) and
``DISTILLGUARD_SYNC=1`` (learn each request before answering; default: learn in 100 ms
micro-batches on a background thread). For code, build your own
``DistillguardHook(engine=…, account_info=…)`` in a module next to the config.

The account is the key's organisation, else its team (``org_id`` / ``team_id``, the fields
``distillguard read`` maps from ``metadata.user_api_key_org_id`` / ``_team_id``); keys in
neither pass through (``on_missing="allow"``) or are refused (``"reject"``). The account's
``tier`` comes from ``account_info(account_id)`` when given, else from the admin-set
``tier`` of the organisation / team / key metadata. Actions:

- ``block``: HTTP 429 (``Retry-After: 3600``); ``throttle``: the account's token bucket
  at ``rate_per_minute``, 429 when empty; ``step_up``: HTTP 403 ``verification_required``;
- ``withhold_reasoning``: ``thinking`` / ``reasoning_effort`` are dropped from the request
  and ``reasoning_content`` / thinking blocks from the response (whole and streamed);
- ``allow`` / ``monitor``: unchanged;
- a request whose fields break the contract (e.g. ``temperature: "hot"``): HTTP 400 naming
  the field (fail closed: nothing unreadable bypasses the detector).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger

from ..errors import InputError
from .enforce import (
    REASONING_KEYS,
    record_from_request,
    strip_reasoning,
    strip_reasoning_request,
)
from .engine import DecisionEngine

#: where the hook marks a request whose response must lose its reasoning
MARK = "distillguard_action"
_HOOKS = ("async_pre_call_hook", "async_post_call_success_hook",
          "async_post_call_streaming_iterator_hook")


class DistillguardHook(CustomLogger):
    """LiteLLM ``CustomLogger`` enforcing :class:`DecisionEngine` decisions in the proxy."""

    def __init__(self, engine: DecisionEngine | None = None, *, policy_path=None,
                 model_path=None, signals_path=None, sync: bool = False,
                 decision_log: str | None = None,
                 account_info: Callable[[str], dict | None] | None = None,
                 account_fields: tuple[str, ...] = ("org_id", "team_id"),
                 on_missing: str = "allow") -> None:
        super().__init__()
        if on_missing not in ("allow", "reject"):
            raise ValueError("on_missing must be 'allow' or 'reject'")
        self.policy_path = policy_path
        self.model_path = model_path
        self.signals_path = signals_path
        self.sync = sync
        self.decision_log = decision_log
        self.account_info = account_info
        self.account_fields = tuple(account_fields)
        self.on_missing = on_missing
        self._engine = engine
        self.missing_account = 0

    def __init_subclass__(cls, **kw) -> None:
        # LiteLLM only calls the hooks a callback's own class defines (it looks in the leaf
        # class's __dict__): copy them into subclasses so that they are not silently skipped
        super().__init_subclass__(**kw)
        for name in _HOOKS:
            if name not in cls.__dict__:
                setattr(cls, name, getattr(cls, name))

    @property
    def engine(self) -> DecisionEngine:
        """The decision engine (built on first use, so importing the module is cheap)."""
        if self._engine is None:
            from ..act import load_policy
            from ..stream.online import OnlineDetector
            self._engine = DecisionEngine(
                policy=load_policy(self.policy_path),
                detector=OnlineDetector(model_path=self.model_path,
                                        signals_path=self.signals_path),
                sync=self.sync, decision_log=self.decision_log)
            self._engine.start()
        return self._engine

    # -- request side ------------------------------------------------------------------------
    def account_of(self, auth) -> str | None:
        for f in self.account_fields:
            v = getattr(auth, f, None)
            if v:
                return str(v)
        return None

    def record(self, auth, data: dict, account: str) -> dict:
        """The contract record of a proxy request (``data``: the request body + metadata)."""
        md = data.get("metadata") or data.get("litellm_metadata") or {}
        headers = md.get("headers") or {}
        key = getattr(auth, "token", None) or getattr(auth, "api_key", None)
        if key and not getattr(auth, "token", None):
            key = hashlib.sha256(str(key).encode()).hexdigest()
        rec = record_from_request(
            data, account_id=account, ip=md.get("requester_ip_address") or None,
            user_agent=md.get("user_agent") or headers.get("user-agent") or None,
            api_key_id=key or None)
        info = self.account_info(account) if self.account_info is not None else None
        if info is None:
            for m in ("organization_metadata", "team_metadata", "metadata"):
                tier = (getattr(auth, m, None) or {}).get("tier")
                if tier:
                    info = {"tier": tier}
                    break
        rec.update(info or {})
        return rec

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict,
                                  call_type) -> dict | None:
        if not isinstance(data, dict) or (data.get("messages") is None
                                          and data.get("prompt") is None):
            return data                      # not a completion (embeddings, files …)
        account = self.account_of(user_api_key_dict)
        if account is None:
            self.missing_account += 1
            if self.on_missing == "reject":
                raise HTTPException(status_code=403, detail={
                    "error": "distillguard: the key has no organisation or team"})
            return data
        rec = self.record(user_api_key_dict, data, account)
        eng = self.engine
        try:
            d = (await asyncio.to_thread(eng.decide, rec)) if eng.sync else eng.decide(rec)
        except InputError as err:    # fail closed: a request distillguard cannot read
            eng.errors += 1
            raise HTTPException(status_code=400, detail={
                "error": f"distillguard: {err}", "field": err.field}) from None
        act = d.action
        if act == "throttle" and eng.buckets.allow(account, d.rate_per_minute):
            act = "allow"
        if act in ("block", "throttle"):
            retry = "3600" if act == "block" else str(max(1, int(60 / d.rate_per_minute)))
            raise HTTPException(status_code=429, headers={"retry-after": retry}, detail={
                "error": f"distillguard: {d.action}", "rule": d.rule})
        if act == "step_up":
            raise HTTPException(status_code=403, detail={
                "error": "verification_required", "rule": d.rule,
                "message": "verify your identity or organisation to continue"})
        if act == "withhold_reasoning":
            strip_reasoning_request(data)
            md = data.get("metadata")
            if not isinstance(md, dict):
                md = data["metadata"] = {}
            md[MARK] = act
        return data

    # -- response side -----------------------------------------------------------------------
    @staticmethod
    def _withheld(data: dict | None) -> bool:
        md = (data or {}).get("metadata") or {}
        return isinstance(md, dict) and md.get(MARK) == "withhold_reasoning"

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict, response):
        if self._withheld(data):
            strip_response(response)
        return response

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response: Any,
                                                      request_data: dict):
        withhold = self._withheld(request_data)
        async for chunk in response:
            yield strip_response(chunk) if withhold else chunk


def strip_response(resp):
    """Remove reasoning from a LiteLLM ``ModelResponse`` / stream chunk (or a dict), in place."""
    if isinstance(resp, (dict, list)):
        return strip_reasoning(resp)
    for choice in getattr(resp, "choices", None) or ():
        for part in (getattr(choice, "message", None), getattr(choice, "delta", None)):
            if part is None:
                continue
            for k in REASONING_KEYS:
                if getattr(part, k, None) is not None or k in getattr(part, "__dict__", {}):
                    try:
                        delattr(part, k)
                    except AttributeError:
                        setattr(part, k, None)
            psf = getattr(part, "provider_specific_fields", None)
            if isinstance(psf, dict):
                strip_reasoning(psf)
            content = getattr(part, "content", None)
            if isinstance(content, list):
                part.content = strip_reasoning({"content": content})["content"]
    return resp


def _from_env() -> DistillguardHook:
    return DistillguardHook(policy_path=os.environ.get("DISTILLGUARD_POLICY") or None,
                            model_path=os.environ.get("DISTILLGUARD_MODEL") or None,
                            signals_path=os.environ.get("DISTILLGUARD_SIGNALS") or None,
                            sync=os.environ.get("DISTILLGUARD_SYNC", "") in ("1", "true"),
                            decision_log=os.environ.get("DISTILLGUARD_DECISION_LOG") or None,
                            on_missing=os.environ.get("DISTILLGUARD_ON_MISSING", "allow"))


#: the instance named in ``config.yaml`` (``callbacks: distillguard.serve.litellm_hook.handler``)
handler = _from_env()

__all__ = ["DistillguardHook", "handler", "strip_response"]
