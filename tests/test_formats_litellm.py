"""A real LiteLLM proxy in front of a local fake OpenAI-compatible server: its own callback
mechanism writes StandardLoggingPayload JSONL, and distillguard reads and detects on exactly
those files. Loopback only, offline (LITELLM_LOCAL_MODEL_COST_MAP=True)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

pytest.importorskip("litellm.proxy.proxy_cli",
                     reason="litellm[proxy] is not installed (pip install 'litellm[proxy]')")

from litellm_harness import fake_openai, litellm_proxy, post

from distillguard.cli import cli
from distillguard.errors import InputError
from distillguard.read import read_log
from distillguard.validate import validate

# A custom logger class, configured in the proxy's config.yaml, that appends the
# StandardLoggingPayload of every call to a JSONL file.
CAPTURE_LOGGER = '''
import json, os
from litellm.integrations.custom_logger import CustomLogger

class Capture(CustomLogger):
    def _write(self, kwargs):
        payload = kwargs.get("standard_logging_object")
        with open(os.environ["DG_CAPTURE_FILE"], "a") as fh:
            fh.write(json.dumps(payload, default=str) + "\\n")

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._write(kwargs)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._write(kwargs)

handler = Capture()
'''

# Virtual keys need the proxy's database; offline, the proxy's custom_auth hook maps bearer
# keys to team / organisation / user exactly as virtual keys would (same metadata fields).
CUSTOM_AUTH = '''
from fastapi import Request
from litellm.proxy._types import UserAPIKeyAuth

KEYS = {"sk-a1": ("team-a", "org-1"), "sk-a2": ("team-a", "org-1"),
        "sk-b1": ("team-b", None), "sk-b2": ("team-b", None), "sk-b3": ("team-b", None),
        "sk-c1": ("team-c", None),
        "sk-solo": (None, None)}

async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    team, org = KEYS[api_key]
    return UserAPIKeyAuth(api_key=api_key, team_id=team, org_id=org, user_id="u-" + api_key)
'''

CONFIG = """
model_list:
  - model_name: helix-3.5-sonnet
    litellm_params:
      model: openai/fake-model
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: fake-upstream-key
litellm_settings:
  callbacks: capture_logger.handler
  num_retries: 0
general_settings:
  master_key: sk-master-5f1d2c3b4a5968778695a4b3c2d1e0f1
  custom_auth: custom_auth.user_api_key_auth
"""


def _traffic() -> list[tuple[str, dict, str]]:
    """(key, request, user agent): a templated harvesting run from team-b's three keys, a few
    ordinary users in org-1 and team-c, and one key in no team."""
    calls = []
    for i in range(12):
        calls.append((f"sk-b{1 + i % 3}", {
            "model": "helix-3.5-sonnet", "max_tokens": 4096, "temperature": 0.0,
            "messages": [{"role": "system", "content": "You are an expert. Think step by step."},
                         {"role": "user", "content": f"Solve problem #{i}: integrate x^{i} dx. "
                                                     "Show your full reasoning."}]},
            "harvest-bot/2.1"))
    for i, text in enumerate(["hi, can you help me plan a trip?", "fix this SQL: SELEC 1",
                              "write a haiku about rain", "what is a monad?"]):
        calls.append(("sk-a1" if i % 2 else "sk-a2",
                      {"model": "helix-3.5-sonnet", "messages": [{"role": "user",
                                                                  "content": text}]},
                      "OpenAI/Python 1.54.4"))
    calls.append(("sk-c1", {
        "model": "helix-3.5-sonnet", "temperature": 0.7,
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "parameters": {"type": "object", "properties": {}}}}],
        "messages": [{"role": "user", "content": "weather in Paris?"}]}, "curl/8.5"))
    calls.append(("sk-solo", {"model": "helix-3.5-sonnet",
                              "messages": [{"role": "user", "content": "hello"}]}, "curl/8.5"))
    return calls


@pytest.fixture(scope="module")
def proxy_logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("litellm")
    capture = root / "logs" / "litellm.jsonl"
    capture.parent.mkdir()
    calls = _traffic()
    with fake_openai() as upstream, litellm_proxy(
            root, CONFIG.format(upstream=upstream.server_address[1]),
            files={"capture_logger.py": CAPTURE_LOGGER, "custom_auth.py": CUSTOM_AUTH},
            env={"DG_CAPTURE_FILE": str(capture)}) as port:
        for key, req, ua in calls:
            assert post(port, key, req, ua)["choices"][0]["message"]["content"].startswith(
                "echo: ")
        deadline = time.monotonic() + 20  # the logging callback runs after the response
        while time.monotonic() < deadline:
            if capture.exists() and len(capture.read_text().splitlines()) >= len(calls):
                break
            time.sleep(0.2)
    lines = capture.read_text().splitlines()
    assert len(lines) == len(calls), (root / "proxy.log").read_text()[-3000:]
    return capture, calls


def test_proxy_payloads_map_onto_the_contract(proxy_logs):
    capture, calls = proxy_logs
    # the key in no team has no account: the error says which option supplies one
    with pytest.raises(InputError, match="user_api_key_team_id.*--account-from"):
        validate([capture])
    s = validate([capture], skip_invalid=True)
    assert s.records == len(calls) - 1 and s.invalid == {"missing_account_id": 1}
    with read_log(capture, account_from="metadata.user_api_key_user_id") as log:
        ev = log.events.collect()
    assert len(ev) == len(calls)
    assert ev["account_id"].unique().sort().to_list() == [
        "u-sk-a1", "u-sk-a2", "u-sk-b1", "u-sk-b2", "u-sk-b3", "u-sk-c1", "u-sk-solo"]
    with read_log(capture, skip_invalid=True) as log:
        ev = log.events.collect().sort("ts")
    by_acc = dict(ev.group_by("account_id").len().iter_rows())
    assert by_acc == {"team-b": 12, "org-1": 4, "team-c": 1}
    # one api_key_id (LiteLLM's hash of the key) per key used
    keys = ev.group_by("account_id").agg(pl.col("api_key_id").n_unique())
    assert dict(keys.iter_rows()) == {"team-b": 3, "org-1": 2, "team-c": 1}
    assert ev["api_key_id"].str.len_chars().min() >= 32
    assert set(ev["model"]) == {"helix-3.5-sonnet"}
    assert set(ev["ip"]) == {"127.0.0.1"} and set(ev["ip_prefix"]) == {"127.0.0.0/24"}
    assert set(ev["status"]) == {200}
    assert set(ev["input_tokens"]) == {11} and set(ev["output_tokens"]) == {7}
    assert ev["request_id"].n_unique() == len(ev)
    b = ev.filter(pl.col("account_id") == "team-b")
    assert set(b["user_agent"]) == {"harvest-bot/2.1"}
    assert set(b["system"]) == {"You are an expert. Think step by step."}
    assert set(b["max_tokens"]) == {4096} and set(b["temperature"]) == {0.0}
    assert set(b["n_turns"]) == {1} and b["system_hash"].n_unique() == 1
    assert all(r.startswith("echo: Solve problem #") for r in b["response"])
    assert min(b["prompt"]).startswith("Solve problem #0: integrate")
    c = ev.filter(pl.col("account_id") == "team-c").row(0, named=True)
    assert c["tool_names"] == ["get_weather"] and c["temperature"] == 0.7
    assert ev["ts"].is_sorted() and ev["ts"].dt.year().min() >= 2024


def _detect(args):
    r = CliRunner().invoke(cli, ["detect", *args])
    assert r.exit_code == 0, (r.output, r.exception)


def test_detect_on_the_proxy_files(proxy_logs, tmp_path):
    capture, calls = proxy_logs
    _detect([str(capture.parent), "--out", str(tmp_path / "det"), "-q",
             "--account-from", "metadata.user_api_key_user_id"])
    acc = pl.read_csv(tmp_path / "det" / "accounts.csv")
    assert sorted(acc["account_id"]) == ["u-sk-a1", "u-sk-a2", "u-sk-b1", "u-sk-b2", "u-sk-b3",
                                         "u-sk-c1", "u-sk-solo"]
    assert acc["score"].is_between(0, 1).all()
    # the default mapping (organisation / team), the no-team record skipped and counted
    _detect([str(capture), "--out", str(tmp_path / "det2"), "-q", "--skip-invalid"])
    acc = pl.read_csv(tmp_path / "det2" / "accounts.csv")
    assert sorted(acc["account_id"]) == ["org-1", "team-b", "team-c"]
    run = json.loads((tmp_path / "det2" / "run.json").read_text())
    assert run["invalid"] == {"missing_account_id": 1} and run["n_events"] == len(calls) - 1
    assert Path(run["inputs"][0]) == capture
