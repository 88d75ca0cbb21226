"""Decision service and ASGI middleware, through FastAPI's TestClient."""

from __future__ import annotations

import json
import os
import time

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from distillguard.act import load_policy
from distillguard.serve import DecisionEngine, TokenBuckets, strip_reasoning
from distillguard.serve.app import create_app
from distillguard.serve.middleware import DistillguardMiddleware

AUTH = {"Authorization": "Bearer s3cret"}

# a policy that acts on volume so tests can drive every action deterministically
POLICY = """\
id: test
version: 7
allow_list:
  - {account_id: partner, permission: "DLA-9"}
rules:
  - id: block_heavy
    when: {exchanges_min: 4, tier: free}
    action: block
  - id: slow
    when: {exchanges_min: 2, tier: startup}
    action: {type: throttle, rate_per_minute: 1}
  - id: verify
    when: {tier: research}
    action: step_up
  - id: no_cot
    when: {tier: education}
    action: withhold_reasoning
"""


@pytest.fixture()
def policy(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    return load_policy(p)


def req(account, i=0, **kw):
    return {"account_id": account, "prompt": f"question number {i}", "model": "m", **kw}


def test_decide_auth_health_metrics_openapi(policy, tmp_path):
    log = tmp_path / "decisions.jsonl"
    eng = DecisionEngine(policy=policy, sync=True, decision_log=str(log))
    with TestClient(create_app(eng, token="s3cret")) as c:
        assert c.post("/v1/decide", json=req("a")).status_code == 401
        assert c.post("/v1/decide", json=req("a"),
                      headers={"Authorization": "Bearer nope"}).status_code == 401
        r = c.post("/v1/decide", json=req("a", tier="free"), headers=AUTH)
        assert r.status_code == 200
        body = r.json()
        assert body["action"] == "allow" and body["exchanges_seen"] == 1
        assert body["policy_id"] == "test" and body["policy_version"] == 7
        for i in range(1, 4):
            body = c.post("/v1/decide", json=req("a", i), headers=AUTH).json()
        assert body["action"] == "block" and body["rule"] == "block_heavy"
        assert body["exchanges_seen"] == 4
        h = c.get("/healthz").json()
        assert h["status"] == "ok" and h["accounts"] == 1
        assert c.get("/metrics").status_code == 401
        m = c.get("/metrics", headers=AUTH).text
        assert 'distillguard_decisions_total{action="block"} 1' in m
        assert 'distillguard_decisions_total{action="allow"} 3' in m
        assert "distillguard_decide_seconds_count 4" in m
        spec = c.get("/openapi.json").json()
        assert "/v1/decide" in spec["paths"]
        assert "DecideResponse" in json.dumps(spec)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["action"] for x in lines] == ["allow"] * 3 + ["block"]
    assert all(x["policy_version"] == 7 for x in lines)


def test_bad_requests(policy):
    eng = DecisionEngine(policy=policy, sync=True)
    with TestClient(create_app(eng, token=None, max_body_bytes=2000)) as c:
        assert c.post("/v1/decide", json={"prompt": "x"}).status_code == 422
        r = c.post("/v1/decide", json=req("a", ts="not a time"))
        assert r.status_code == 422 and "ts" in r.json()["detail"]
        big = req("a", prompt="x" * 5000)
        assert c.post("/v1/decide", json=big).status_code == 413
        assert c.post("/v1/decide", json=req("a")).status_code == 200


def test_allow_list_wins(policy):
    eng = DecisionEngine(policy=policy, sync=True)
    for i in range(6):
        d = eng.decide(req("partner", i, tier="free"))
    assert d.action == "allow" and d.rule == "allow_list:DLA-9"


def test_token_bucket():
    b = TokenBuckets()
    assert b.allow("a", 2.0, now=0.0) and b.allow("a", 2.0, now=0.0)
    assert not b.allow("a", 2.0, now=0.0)
    assert b.allow("a", 2.0, now=30.0)          # one token back after 30 s at 2/min
    assert not b.allow("a", 2.0, now=30.0)


def test_strip_reasoning():
    resp = {"choices": [{"message": {"content": "42", "reasoning_content": "secret",
                                     "thinking_blocks": [{"thinking": "x"}]}}],
            "content": [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "hi"}]}
    out = strip_reasoning(resp)
    assert out["choices"][0]["message"] == {"content": "42"}
    assert out["content"] == [{"type": "text", "text": "hi"}]


def _gateway(policy):
    seen = []

    async def chat(request):
        body = await request.json()
        seen.append(body)
        msg = {"role": "assistant", "content": "answer", "reasoning_content": "step 1..."}
        if body.get("stream"):
            def gen():
                yield "data: " + json.dumps({"choices": [{"delta": msg}]}) + "\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(gen(), media_type="text/event-stream")
        return JSONResponse({"choices": [{"message": msg}]})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                            Route("/other", chat, methods=["POST"])])
    eng = DecisionEngine(policy=policy, sync=True)
    tiers = {"edu": "education", "lab": "research", "st": "startup", "heavy": "free"}
    return DistillguardMiddleware(app, eng, account_info=lambda a: {"tier": tiers.get(a)}), seen


def chat_body(i=0, **kw):
    return {"model": "m", "messages": [{"role": "user", "content": f"q {i}"}], **kw}


def test_middleware_enforces(policy):
    app, seen = _gateway(policy)
    c = TestClient(app)
    h = lambda a: {"x-account-id": a}  # noqa: E731
    # allow: passed through untouched, tagged
    r = c.post("/v1/chat/completions", json=chat_body(), headers=h("fine"))
    assert r.status_code == 200 and r.headers["x-distillguard-action"] == "allow"
    assert r.json()["choices"][0]["message"]["reasoning_content"] == "step 1..."
    # withhold_reasoning: request option and response reasoning removed (JSON and SSE)
    r = c.post("/v1/chat/completions",
               json=chat_body(reasoning_effort="high"),
               headers=h("edu"))
    assert r.status_code == 200 and "reasoning_effort" not in seen[-1]
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": "answer"}
    r = c.post("/v1/chat/completions", json=chat_body(stream=True),
               headers=h("edu"))
    assert "reasoning_content" not in r.text and "answer" in r.text and "[DONE]" in r.text
    # step_up: 403
    r = c.post("/v1/chat/completions", json=chat_body(), headers=h("lab"))
    assert r.status_code == 403 and r.json()["error"] == "verification_required"
    # throttle at 1/min: burst of one, then 429 with Retry-After
    codes = [c.post("/v1/chat/completions", json=chat_body(i),
                    headers=h("st")).status_code for i in range(4)]
    assert codes[:2] == [200, 200] and codes[2:] == [429, 429]
    # block after 4 exchanges: 429, upstream not called
    n = len(seen)
    codes = [c.post("/v1/chat/completions", json=chat_body(i),
                    headers=h("heavy")).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429] and len(seen) == n + 3
    # other paths and missing account header
    assert c.post("/other", json=chat_body(), headers=h("heavy")).status_code == 200
    assert c.post("/v1/chat/completions", json=chat_body()).status_code == 400


def test_default_policy_blocks_a_simulated_campaign_account():
    """End to end with the real scorer: a small hydra (accounts sharing proxy IPs, a client
    and a CoT template) is acted on. A lone account is capped below attack by design."""
    eng = DecisionEngine(sync=True)
    eng.detector.grace = 5
    acts = {}
    d = None
    for i in range(300):
        bot = f"bot{i % 6}"
        d = eng.decide({"account_id": bot, "ts": 1_750_000_000 + 1.0 * i,
                        "prompt": f"Solve step by step and show all reasoning: {i} * 17 = ?",
                        "max_tokens": 8192, "thinking": True, "temperature": 0.0,
                        "tier": "education", "ip": f"203.0.113.{i % 9}",
                        "user_agent": "python-httpx/0.27", "tls_fingerprint": "t13d1516h2_x"})
        acts.setdefault(bot, []).append(d.action)
    assert all(a[0] == "allow" for a in acts.values())
    assert d.verdict in ("suspicious", "attack") and acts[d.account_id][-1] != "allow", d

def test_routes_and_field_errors(policy):
    with TestClient(create_app(DecisionEngine(policy=policy, sync=True))) as c:
        r = c.post("/v1/decide", json=req("a", max_tokens="lots"))
        assert r.status_code == 422 and "max_tokens" in r.json()["detail"]
        r = c.post("/v1/decide", json=req("a", account_id=""))
        assert r.status_code == 422 and "account_id" in r.json()["detail"]
        assert c.post("/v1/decide", content=b"[1, 2]").status_code == 422
        assert c.post("/v1/decide", content=b"{not json").status_code == 422
        assert c.get("/v1/decide").status_code == 405
        # Anthropic's dict form of `thinking` is accepted, as by the contract reader
        for th in ({"type": "enabled", "budget_tokens": 2048}, {"type": "disabled"}, True, 0):
            assert c.post("/v1/decide", json=req("th", thinking=th)).status_code == 200
        det = c.app.engine.detector          # learned as requests with thinking: 2 of 4
        assert det.c_["thinking"][det.index_["th"]] == 2
        r = c.post("/v1/decide", json=req("a", thinking={"type": "enabled",
                                                          "budget_tokens": "many"}))
        assert r.status_code == 422 and "thinking" in r.json()["detail"]
        assert c.get("/nowhere").status_code == 404
        assert c.get("/docs").status_code == 200
        m = c.get("/metrics").text
        assert "distillguard_request_errors_total 5" in m


def test_background_learning_counts_and_publishes(policy):
    """Learner thread (flushed by hand here): the request path counts requests not learned
    yet, so volume rules act at once, and reads learned rows from the table."""
    eng = DecisionEngine(policy=policy)
    ds = [eng.decide(req("a", i, tier="free")) for i in range(3)]
    assert [d.exchanges_seen for d in ds] == [1, 2, 3]
    assert [d.action for d in ds] == ["allow"] * 3 and eng.table == {}
    assert eng.flush() == 3
    assert eng.table["a"][4:] == ("free", 3, 3) and eng.n_accounts == 1
    d = eng.decide(req("a", 3))            # no tier sent: the learned one applies
    assert (d.exchanges_seen, d.tier, d.action) == (4, "free", "block")


def test_learner_process_behind_the_service():
    """``learner="process"``: the detector lives in a child process started with the app;
    its learned verdicts come back to the request path; stopping the app stops it."""
    from distillguard.stream import OnlineDetector

    eng = DecisionEngine(learner="process", detector=OnlineDetector(grace=5),
                         rescore_interval_s=0.05)
    assert eng.detector is None
    with TestClient(create_app(eng)) as c:
        proc = eng._proc
        assert proc.is_alive()
        if hasattr(os, "SCHED_IDLE"):       # learns only when the serving side is idle
            for _ in range(100):
                if os.sched_getscheduler(proc.pid) == os.SCHED_IDLE:
                    break
                time.sleep(0.05)
            assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
        for i in range(300):
            bot = f"bot{i % 6}"
            body = c.post("/v1/decide", json={
                "account_id": bot, "ts": 1_750_000_000 + 1.0 * i,
                "prompt": f"Solve step by step and show all reasoning: {i} * 17 = ?",
                "max_tokens": 8192, "thinking": True, "temperature": 0.0,
                "tier": "education", "ip": f"203.0.113.{i % 9}",
                "user_agent": "python-httpx/0.27", "tls_fingerprint": "t13d1516h2_x"}).json()
            assert body["exchanges_seen"] == i // 6 + 1
            if i % 30 == 29:
                eng.flush()
        h = c.get("/healthz").json()
        assert h["accounts"] == 6 and h["learner"] == "process"
        assert body["verdict"] in ("suspicious", "attack") and body["action"] != "allow"
    assert not proc.is_alive()


def test_a_group_change_republishes_untouched_members():
    """c links to a and b (shared IP, client, system prompt): the group reaches the cluster
    size in a batch holding only c's requests, and a's and b's rows get the cluster too."""
    eng = DecisionEngine()

    def r(a, i):
        return {"account_id": a, "ts": 1_750_000_000 + i, "prompt": f"q {i}",
                "ip": "198.51.100.7", "user_agent": "bot/1", "system": "You are X"}
    for i in range(3):
        eng.decide(r("a", i))
        eng.decide(r("b", i))
    eng.flush()
    assert eng.table["a"][3] is None and eng.table["b"][3] is None
    for i in range(3, 6):
        eng.decide(r("c", i))
    eng.flush()
    cluster = eng.table["c"][3]
    assert cluster is not None and eng.table["a"][3] == eng.table["b"][3] == cluster
    assert eng.decide(r("a", 9)).cluster_id == cluster


def test_quiet_runtime_freezes_and_shortens_the_switch_interval():
    """What ``distillguard serve`` applies before serving: the live objects move to the
    collector's permanent generation, and threads hand back the GIL after 1 ms."""
    import gc
    import sys

    from distillguard.serve.app import quiet_runtime

    old = sys.getswitchinterval()
    try:
        quiet_runtime(0.002)
        assert gc.get_freeze_count() > 1000
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        gc.unfreeze()
        sys.setswitchinterval(old)
    assert gc.get_freeze_count() == 0
