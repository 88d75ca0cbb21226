"""validate(): the summary and the CLI command."""

from __future__ import annotations

import orjson
from click.testing import CliRunner

from distillguard.cli import cli
from distillguard.validate import validate
from test_read import GOOD, write_jsonl


def test_validate_summary(tmp_path):
    recs = [dict(GOOD, ts=10, model="m"), dict(GOOD, ts=5, account_id="b", ip="1.2.3.4")]
    s = validate([write_jsonl(tmp_path / "l.jsonl", recs)])
    assert s.records == 2 and s.accounts == 2 and s.models == 1
    assert s.first_ts == "1970-01-01T00:00:05+00:00" and s.last_ts.endswith("00:10+00:00")
    assert s.presence["prompt"] == 2 and s.presence["messages"] == 0
    assert s.presence["ip"] == 1 and s.presence_pct()["ip"] == 50.0
    assert orjson.loads(s.to_json())["invalid_total"] == 0


def test_validate_cli_table_and_skip(tmp_path):
    p = write_jsonl(tmp_path / "l.jsonl", [GOOD, {"ts": 1, "account_id": "a"}, GOOD])
    acc = tmp_path / "acc.csv"
    acc.write_text("account_id,tier\na,free\n")
    res = CliRunner().invoke(cli, ["validate", str(p), "--skip-invalid", "--accounts", str(acc)])
    assert res.exit_code == 0, res.output
    assert "valid records" in res.output and "missing_prompt" in res.output
    assert "accounts table rows" in res.output
    res = CliRunner().invoke(cli, ["validate", str(p), "--skip-invalid", "--json"])
    out = orjson.loads(res.output)
    assert out["records"] == 2 and out["invalid_total"] == 1
    assert ":2:" in out["invalid_examples"]["missing_prompt"]
    res = CliRunner().invoke(cli, ["validate", str(p)])
    assert res.exit_code == 2 and f"{p}:2: field 'prompt'" in res.output
