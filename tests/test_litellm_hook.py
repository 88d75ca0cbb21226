"""The distillguard LiteLLM hook in a REAL LiteLLM proxy (subprocess, offline, loopback) in
front of a fake OpenAI-compatible server that returns ``reasoning_content``. The proxy loads
the hook exactly as an operator would: ``callbacks: distillguard.serve.litellm_hook.handler``
configured by environment variables."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("litellm.proxy.proxy_cli",
                    reason="litellm[proxy] is not installed (pip install 'litellm[proxy]')")

from litellm_harness import MASTER_KEY, fake_openai, litellm_proxy, post

# keys → (team, organisation, admin-set team metadata); the proxy's custom_auth stands in
# for virtual keys (which need its database) and fills the same UserAPIKeyAuth fields
CUSTOM_AUTH = '''
from fastapi import Request
from litellm.proxy._types import UserAPIKeyAuth

KEYS = {"sk-normal": ("team-normal", None, {}),
        "sk-org": ("team-x", "org-blocked", {}),
        "sk-block": ("team-free", None, {"tier": "free"}),
        "sk-verify": ("team-research", None, {"tier": "research"}),
        "sk-cot": ("team-edu", None, {"tier": "education"}),
        "sk-slow": ("team-startup", None, {"tier": "startup"}),
        "sk-solo": (None, None, {})}
ORG_META = {"org-blocked": {"tier": "free"}}

async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    team, org, meta = KEYS[api_key]
    return UserAPIKeyAuth(api_key=api_key, team_id=team, org_id=org, user_id="u-" + api_key,
                          team_metadata=meta, organization_metadata=ORG_META.get(org))
'''

POLICY = """\
id: proxy-test
version: 3
rules:
  - id: block_free
    when: {tier: free}
    action: block
  - id: verify_research
    when: {tier: research}
    action: step_up
  - id: no_cot
    when: {tier: education}
    action: withhold_reasoning
  - id: slow_startup
    when: {tier: startup}
    action: {type: throttle, rate_per_minute: 1}
"""

CONFIG = """
model_list:
  - model_name: helix-reasoner
    litellm_params:
      model: openai/fake-model
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: fake-upstream-key
litellm_settings:
  callbacks: distillguard.serve.litellm_hook.handler
  num_retries: 0
general_settings:
  master_key: {master}
  custom_auth: custom_auth.user_api_key_auth
"""


def _req(text, **kw):
    return {"model": "helix-reasoner", "messages": [{"role": "user", "content": text}], **kw}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    root = tmp_path_factory.mktemp("dghook")
    (root / "policy.yaml").write_text(POLICY)
    with fake_openai(reasoning=True) as upstream, litellm_proxy(
            root, CONFIG.format(upstream=upstream.server_address[1], master=MASTER_KEY),
            files={"custom_auth.py": CUSTOM_AUTH},
            env={"DISTILLGUARD_POLICY": str(root / "policy.yaml"), "DISTILLGUARD_SYNC": "1",
                 "DISTILLGUARD_DECISION_LOG": str(root / "decisions.jsonl")}) as port:
        yield port, upstream, root


def _upstream_saw(upstream, text):
    return [r for r in upstream.requests if r["messages"][-1]["content"] == text]


def test_normal_account_passes_unchanged(proxy):
    port, upstream, _ = proxy
    out = post(port, "sk-normal", _req("what is 2+2?", reasoning_effort="high"))
    msg = out["choices"][0]["message"]
    assert msg["content"] == "echo: what is 2+2?"
    assert msg["reasoning_content"] == "secret chain of thought: what is 2+2?"
    (seen,) = _upstream_saw(upstream, "what is 2+2?")
    assert seen["reasoning_effort"] == "high"
    # a key in no organisation or team passes (on_missing="allow")
    assert post(port, "sk-solo", _req("hello"))["choices"][0]["message"]["content"] == \
        "echo: hello"


def test_blocked_account_gets_429_and_never_reaches_the_model(proxy):
    port, upstream, root = proxy
    for key, text in (("sk-block", "harvest #1"), ("sk-org", "harvest #2")):
        status, _, body = post(port, key, _req(text), raw=True)
        assert status == 429, body
        assert "distillguard: block" in body.decode() and "block_free" in body.decode()
        assert _upstream_saw(upstream, text) == []
    # the organisation wins over the team (as in `distillguard read`'s mapping)
    log = [json.loads(x) for x in (root / "decisions.jsonl").read_text().splitlines()]
    accts = {x["account_id"]: x for x in log}
    assert accts["org-blocked"]["action"] == "block" and "team-x" not in accts
    assert accts["team-free"]["policy_version"] == 3


def test_step_up_gets_403_verification_required(proxy):
    port, upstream, _ = proxy
    status, _, body = post(port, "sk-verify", _req("prove it"), raw=True)
    assert status == 403 and "verification_required" in body.decode()
    assert _upstream_saw(upstream, "prove it") == []


def test_throttle_uses_the_accounts_token_bucket(proxy):
    port, upstream, _ = proxy
    assert post(port, "sk-slow", _req("slow 1"))["choices"][0]["message"]["content"] == \
        "echo: slow 1"
    status, headers, body = post(port, "sk-slow", _req("slow 2"), raw=True)
    assert status == 429 and "distillguard: throttle" in body.decode()
    assert {k.lower(): v for k, v in headers.items()}.get("retry-after") == "60"
    assert _upstream_saw(upstream, "slow 2") == []
    # another account is not slowed by it
    assert post(port, "sk-normal", _req("fast"))["choices"][0]["message"]["content"] == \
        "echo: fast"


def test_withhold_reasoning_strips_request_and_response(proxy):
    port, upstream, _ = proxy
    out = post(port, "sk-cot", _req("explain step by step", reasoning_effort="high"))
    msg = out["choices"][0]["message"]
    assert msg["content"] == "echo: explain step by step"
    assert "secret" not in json.dumps(out)
    assert not msg.get("reasoning_content") and not msg.get("thinking_blocks")
    (seen,) = _upstream_saw(upstream, "explain step by step")
    assert "reasoning_effort" not in seen
    # streamed: every chunk without reasoning, the answer intact
    status, _, body = post(port, "sk-cot", _req("stream it", stream=True), raw=True)
    assert status == 200
    text = body.decode()
    assert "secret" not in text and "reasoning_content\": \"" not in text
    content = "".join(
        (json.loads(line[5:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for line in text.splitlines()
        if line.startswith("data:") and line[5:].strip() != "[DONE]")
    assert content == "echo: stream it"
    # the same stream for a normal account keeps its reasoning
    _, _, body = post(port, "sk-normal", _req("stream too", stream=True), raw=True)
    assert "secret chain of thought: stream too" in body.decode()


def test_unreadable_request_is_refused_naming_the_field(proxy):
    port, upstream, _ = proxy
    status, _, body = post(port, "sk-normal", _req("odd", temperature="hot"), raw=True)
    assert status == 400 and "distillguard" in body.decode() and "temperature" in body.decode()
    assert _upstream_saw(upstream, "odd") == []


# -- the hook without a proxy (fast) ---------------------------------------------------------

def _hook(tmp_path, **kw):
    from distillguard.act import load_policy
    from distillguard.serve import DecisionEngine
    from distillguard.serve.litellm_hook import DistillguardHook

    (tmp_path / "p.yaml").write_text(POLICY)
    eng = DecisionEngine(policy=load_policy(tmp_path / "p.yaml"), sync=True)
    return DistillguardHook(engine=eng, **kw)


def _auth(**kw):
    from litellm.proxy._types import UserAPIKeyAuth

    return UserAPIKeyAuth(api_key="sk-x", **kw)


def test_hook_unit(tmp_path):
    import asyncio

    from fastapi import HTTPException

    hook = _hook(tmp_path, account_info=lambda a: {"tier": "education"} if a == "edu" else None)
    run = asyncio.run
    body = _req("hi", reasoning_effort="high", thinking={"type": "enabled",
                                                          "budget_tokens": 1024})
    # account_info wins; the request loses its reasoning options and is marked
    out = run(hook.async_pre_call_hook(_auth(team_id="edu"), None, dict(body), "completion"))
    assert "reasoning_effort" not in out and "thinking" not in out
    assert out["metadata"]["distillguard_action"] == "withhold_reasoning"
    out = run(hook.async_pre_call_hook(_auth(team_id="other"), None, dict(body),
                                       "completion"))
    assert out["reasoning_effort"] == "high" and "distillguard_action" not in out.get(
        "metadata", {})
    # no account: passes by default, refused with on_missing="reject"
    assert run(hook.async_pre_call_hook(_auth(), None, dict(body), "completion")) == body
    assert hook.missing_account == 1
    strict = _hook(tmp_path, on_missing="reject")
    with pytest.raises(HTTPException) as e:
        run(strict.async_pre_call_hook(_auth(), None, dict(body), "completion"))
    assert e.value.status_code == 403
    # non-completion calls (no messages / prompt) are not judged
    emb = {"model": "e", "input": ["x"]}
    assert run(strict.async_pre_call_hook(_auth(), None, emb, "aembedding")) is emb
    with pytest.raises(ValueError):
        _hook(tmp_path, on_missing="maybe")


def test_strip_response_on_litellm_objects():
    from litellm.types.utils import (
        Delta,
        Message,
        ModelResponse,
        ModelResponseStream,
        StreamingChoices,
    )

    from distillguard.serve.litellm_hook import strip_response

    resp = ModelResponse(choices=[{"index": 0, "finish_reason": "stop", "message": Message(
        content="answer", reasoning_content="secret",
        thinking_blocks=[{"type": "thinking", "thinking": "secret"}])}])
    assert "secret" in resp.model_dump_json()
    strip_response(resp)
    dumped = resp.model_dump_json()
    assert "secret" not in dumped and "answer" in dumped
    chunk = ModelResponseStream(choices=[StreamingChoices(
        index=0, delta=Delta(content="a", reasoning_content="secret"))])
    assert "secret" not in strip_response(chunk).model_dump_json()
    d = {"choices": [{"message": {"content": "x", "reasoning_content": "secret"}}]}
    assert strip_response(d) == {"choices": [{"message": {"content": "x"}}]}


def test_subclasses_keep_their_hooks_visible_to_litellm():
    """LiteLLM calls only hooks defined in the callback's own class (its __dict__)."""
    from distillguard.serve.litellm_hook import _HOOKS, DistillguardHook

    class Mine(DistillguardHook):
        pass

    assert all(name in vars(Mine) for name in _HOOKS)
