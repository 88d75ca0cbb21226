"""The ``distillguard`` command: a thin layer over the library API.

Every subcommand parses options, calls one library function, and prints. Errors derived from
:class:`distillguard.errors.DistillguardError` become one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import DistillguardError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DistillguardError as err:
            click.echo(f"distillguard: error: {err}", err=True)
            ctx.exit(err.exit_code)


def _progress_enabled(quiet: bool) -> bool:
    return (not quiet) and sys.stderr.isatty()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="distillguard")
def cli() -> None:
    """Find and stop distillation campaigns in LLM API traffic logs.

    \b
    Pipeline: read -> fingerprint -> link -> cluster -> score -> explain -> act.
    Start with:  distillguard demo --out demo-out
    """


_log_paths = click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
_accounts_opt = click.option("--accounts", type=click.Path(path_type=Path), default=None,
                             help="Accounts table (CSV, Parquet or JSONL).")
_releases_opt = click.option("--releases", type=click.Path(path_type=Path), default=None,
                             help="Model releases CSV: model,released_at.")
_skip_opt = click.option("--skip-invalid", is_flag=True,
                         help="Skip records that break the contract and count them by reason "
                              "(default: stop at the first one, exit 2).")
_quiet_opt = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
_FORMAT_CHOICES = ["auto", "contract", "litellm", "otel", "openai-batch", "anthropic-batch"]


def _source_opts(f):
    """--format / --account-from / --ts-from (see distillguard.formats)."""
    f = click.option("--ts-from", "ts_from", metavar="SPEC", default=None,
                     help="Where ts comes from when the format lacks it: a field path, "
                          "const:RFC3339 or mtime (the file's modification time).")(f)
    f = click.option("--account-from", "account_from", metavar="SPEC", default=None,
                     help="Where account_id comes from: a field path (e.g. "
                          "metadata.user_api_key_team_id) or const:ACCOUNT.")(f)
    return click.option("--format", "log_format", type=click.Choice(_FORMAT_CHOICES),
                        default="auto", show_default=True,
                        help="Log format; auto detects each file by its first record.")(f)


@cli.command()
@_log_paths
@_accounts_opt
@_releases_opt
@_skip_opt
@_source_opts
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def validate(paths, accounts, releases, skip_invalid, log_format, account_from, ts_from, as_json):
    """Check traffic logs against the data contract and summarise them.

    \b
    Example:
      distillguard validate logs/ --accounts accounts.csv --releases releases.csv
      distillguard validate litellm-logs/ --account-from metadata.user_api_key_team_id
    """
    from .validate import validate as run_validate

    summary = run_validate(list(paths), accounts=accounts, releases=releases,
                           skip_invalid=skip_invalid, format=log_format,
                           account_from=account_from, ts_from=ts_from)
    if as_json:
        click.echo(summary.to_json())
    else:
        summary.print()


@cli.command()
@click.option("--scenario", default="demo", show_default=True, help="Scenario name (see --list).")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Stretch the scenario: multiplies accounts and exchanges.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (realisation).")
@click.option("--out", type=click.Path(path_type=Path), help="Output directory.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl", "jsonl.gz", "jsonl.zst"]),
              default="parquet", show_default=True, help="Container of the events.")
@click.option("--list", "list_", is_flag=True, help="List the scenarios and exit.")
@_quiet_opt
def simulate(scenario, scale, seed, out, fmt, list_, quiet):
    """Write a labeled synthetic traffic log (events, accounts, releases, labels, truth).

    \b
    Example:
      distillguard simulate --scenario demo --seed 1 --out sim/
      distillguard simulate --list
    """
    from . import simulate as sim

    if list_:
        for name, description in sim.list_scenarios():
            click.echo(f"{name:16s} {description}")
        return
    if out is None:
        raise click.UsageError("--out is required (or use --list)")
    result = sim.simulate(scenario, scale=scale, seed=seed, out=out, fmt=fmt,
                          progress=_progress_enabled(quiet))
    click.echo(result.summary())


@cli.command()
@_log_paths
@_accounts_opt
@_releases_opt
@_skip_opt
@_source_opts
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Fitted model file (default: the one shipped with the package).")
@click.option("--allowlist", type=click.Path(path_type=Path), default=None,
              help="CSV with account_id: customers allowed to generate training data "
                   "(scored, never given verdict attack).")
@click.option("--profile", "profile", is_flag=True,
              help="Log each stage's time and memory as it ends, and print a per-stage table "
                   "at the end (stderr); the log is always written to OUT/profile.log.")
@click.option("--state", "state", type=click.Path(path_type=Path), default=None,
              help="Incremental runs: directory keeping what later runs need from this and "
                   "earlier logs (read when present, rewritten after); give each day's log "
                   "in time order and the result equals a run over all days at once.")
@_quiet_opt
def detect(paths, accounts, releases, skip_invalid, log_format, account_from, ts_from, out,
           model_path, allowlist, profile, state, quiet):
    """Detect distillation campaigns: writes accounts.csv, clusters.json, report.html.

    \b
    Example:
      distillguard detect sim/events --accounts sim/accounts.csv \\
          --releases sim/releases.csv --out det/
    """
    from .detect import detect as run_detect
    from .profile import StageProfiler

    prof = StageProfiler(echo=sys.stderr if profile else None)
    result = run_detect(list(paths), accounts=accounts, releases=releases, out=out,
                        skip_invalid=skip_invalid, model_path=model_path,
                        format=log_format, account_from=account_from, ts_from=ts_from,
                        allowlist=allowlist, progress=_progress_enabled(quiet), profiler=prof,
                        state=state)
    if profile:
        prof.render(file=sys.stderr, title="detect profile")
    click.echo(result.summary())


@cli.command()
@_log_paths
@_skip_opt
@_source_opts
@click.option("--to", "to", type=click.Choice(["contract"]), default="contract",
              show_default=True, help="Target form.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output Parquet file.")
def convert(paths, skip_invalid, log_format, account_from, ts_from, to, out):
    """Write logs of any accepted format in the contract form (one Parquet file).

    \b
    Example:
      distillguard convert litellm-logs/ --to contract --out events.parquet
      distillguard convert batch_input.jsonl --account-from const:acct_42 \\
          --ts-from mtime --out events.parquet
    """
    from .formats.convert import convert as run_convert

    result = run_convert(list(paths), out, to=to, format=log_format, account_from=account_from,
                         ts_from=ts_from, skip_invalid=skip_invalid)
    click.echo(result.summary())


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--truth", type=click.Path(path_type=Path, exists=True), required=True,
              help="labels.csv or truth.csv of the simulated log.")
@click.option("--baselines", is_flag=True,
              help="Also run the peer detectors on the same log (needs --log).")
@click.option("--log", "log_paths", multiple=True, type=click.Path(path_type=Path),
              help="The log detect ran on (for --baselines).")
@_accounts_opt
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def evaluate(out_dir, truth, baselines, log_paths, accounts, as_json):
    """Grade a detect output directory against ground truth.

    \b
    Example:
      distillguard evaluate det/ --truth sim/truth.csv
      distillguard evaluate det/ --truth sim/truth.csv --baselines --log sim/events \\
          --accounts sim/accounts.csv
    """
    from .evaluate import evaluate as run_evaluate

    result = run_evaluate(out_dir, truth, baselines=baselines, log_paths=list(log_paths),
                          accounts=accounts)
    click.echo(result.to_json() if as_json else result.render())


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-out"),
              show_default=True, help="Where to write the simulated log and the detections.")
@click.option("--seed", type=int, default=0, show_default=True)
@_quiet_opt
def demo(out, seed, quiet):
    """Run the whole job on the built-in demo scenario: simulate, validate, detect, evaluate.

    \b
    Example:
      distillguard demo --out demo-out
    """
    from .demo import run_demo

    run_demo(out, seed=seed, progress=_progress_enabled(quiet))


# -- act / real time (issue 5) ------------------------------------------------------------

@cli.group()
def policy() -> None:
    """Enforcement policies (versioned YAML: rules -> allow / throttle / block ...)."""


@policy.command("lint")
@click.argument("file", required=False, type=click.Path(path_type=Path))
def policy_lint(file):
    """Check a policy file; print every error and warning with its line.

    \b
    Exit status: 0 clean or warnings only, 2 on errors.
    Example:
      distillguard policy lint my-policy.yaml
    """
    from .act import lint_policy

    issues = lint_policy(file)
    for issue in issues:
        click.echo(str(issue), err=issue.severity == "error")
    n_err = sum(i.severity == "error" for i in issues)
    if n_err:
        raise click.exceptions.Exit(2)
    click.echo(f"ok ({len(issues)} warning{'s' if len(issues) != 1 else ''})")


@cli.command()
@_log_paths
@_accounts_opt
@_releases_opt
@_skip_opt
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), default=None,
              help="Enforcement policy YAML (default: the shipped one).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Fitted model file (default: the one shipped with the package).")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="SQLite checkpoint file (default: OUT/checkpoint.sqlite); a rerun resumes.")
@click.option("--chunk-size", type=click.IntRange(1), default=1000, show_default=True,
              help="Events per learning step; alerts are decided at chunk ends, so smaller "
                   "chunks act earlier (leakage) and larger ones replay faster.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=50, show_default=True,
              help="Chunks between checkpoints.")
@_quiet_opt
def stream(paths, accounts, releases, skip_invalid, out, policy_path, model_path, checkpoint,
           chunk_size, checkpoint_every, quiet):
    """Replay logs in time order through the online detector: alerts.jsonl + accounts.csv.

    \b
    Example:
      distillguard stream sim/events --accounts sim/accounts.csv \\
          --releases sim/releases.csv --out live/
    """
    from .stream.replay import replay

    result = replay(list(paths), out=out, accounts=accounts, releases=releases,
                    skip_invalid=skip_invalid, policy_path=policy_path, model_path=model_path,
                    checkpoint=checkpoint, chunk_size=chunk_size,
                    checkpoint_every=checkpoint_every, progress=_progress_enabled(quiet))
    click.echo(result.summary())


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=8787, show_default=True)
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), default=None,
              help="Enforcement policy YAML (default: the shipped one).")
@click.option("--accounts", type=click.Path(path_type=Path), default=None,
              help="Accounts table (tier, verification, payment) for the online state.")
@click.option("--token-env", default="DISTILLGUARD_TOKEN", show_default=True,
              help="Environment variable holding the bearer token clients must send.")
@click.option("--no-auth", is_flag=True, help="Serve without a bearer token (loopback only).")
@click.option("--decision-log", type=click.Path(path_type=Path), default=None,
              help="Append every decision as a JSON line to this file.")
@click.option("--max-body-bytes", type=click.IntRange(1), default=256 * 1024,
              show_default=True)
@click.option("--learner", type=click.Choice(["process", "thread"]), default="process",
              show_default=True,
              help="Learn requests in a child process (off the serving GIL) or a thread.")
@click.option("--learn-interval", type=click.FloatRange(0.01, 60), default=0.5,
              show_default=True,
              help="Seconds between learning batches (larger batches cost less per request; "
                   "decisions reflect the state up to about this old).")
@click.option("--learner-nice", type=click.IntRange(0, 19), default=5, show_default=True,
              help="Lower the learner process's CPU priority by this much (serving first).")
@click.option("--learner-idle/--no-learner-idle", default=True, show_default=True,
              help="Run the learner process in Linux's SCHED_IDLE class (a request waking "
                   "the serving process preempts it at once).")
def serve(host, port, policy_path, accounts, token_env, no_auth, decision_log, max_body_bytes,
          learner, learn_interval, learner_nice, learner_idle):
    """Run the decision service: POST /v1/decide, /healthz, /metrics, /openapi.json.

    \b
    Example:
      DISTILLGUARD_TOKEN=... distillguard serve --port 8787 --decision-log decisions.jsonl
    """
    import os

    import uvicorn

    from .act import load_policy
    from .errors import ConfigError
    from .serve import DecisionEngine
    from .serve.app import create_app, quiet_runtime
    from .stream import OnlineDetector

    token = os.environ.get(token_env)
    if not token and not no_auth:
        raise ConfigError(f"set {token_env} to a bearer token, or pass --no-auth")
    if no_auth and host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError("--no-auth is only allowed on a loopback address")
    acc = None
    if accounts is not None:
        from .read import read_accounts

        acc = read_accounts(accounts)
    engine = DecisionEngine(policy=load_policy(policy_path),
                            detector=OnlineDetector(accounts=acc),
                            decision_log=str(decision_log) if decision_log else None,
                            learner=learner, rescore_interval_s=learn_interval,
                            learner_nice=learner_nice, learner_idle=learner_idle)
    app = create_app(engine, token=None if no_auth else token, max_body_bytes=max_body_bytes)
    quiet_runtime()
    # uvloop + httptools when installed (the serve extra); no access log on the hot path
    uvicorn.run(app,
                host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=False, server_header=False)


@cli.command()
@click.argument("source")
@click.option("--stream", "--topic", "stream_name", required=True,
              help="Redis stream key, or Kafka topic(s), comma-separated.")
@click.option("--group", default="distillguard", show_default=True, help="Consumer group.")
@click.option("--consumer", "consumer_name", default=None,
              help="Redis consumer name, stable across restarts (default: the host name).")
@click.option("--claim-idle-ms", type=click.IntRange(0), default=60_000, show_default=True,
              help="Redis: take over entries pending at another consumer for this long.")
@click.option("--kafka-config", multiple=True, metavar="KEY=VALUE",
              help="Extra confluent-kafka consumer setting (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), default=None,
              help="Enforcement policy YAML (default: the shipped one).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Fitted model file (default: the one shipped with the package).")
@_accounts_opt
@_releases_opt
@_skip_opt
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="SQLite checkpoint (default: OUT/consumer.sqlite); a restart resumes.")
@click.option("--batch", type=click.IntRange(1), default=1000, show_default=True,
              help="Records per poll / learning step.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=10, show_default=True,
              help="Batches between checkpoints (records are acknowledged after them).")
@click.option("--idle-exit", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds without records (default: run until "
                   "SIGINT / SIGTERM).")
def consume(source, stream_name, group, consumer_name, claim_idle_ms, kafka_config, out,
            policy_path, model_path, accounts, releases, skip_invalid, checkpoint, batch,
            checkpoint_every, idle_exit):
    """Consume contract records (one JSON object per message) from Redis Streams or Kafka
    into the online detector: alerts.jsonl, then accounts.csv / clusters.json at the end.

    \b
    Examples:
      distillguard consume redis://127.0.0.1:6379/0 --stream llm-events --out live/
      distillguard consume kafka://broker1:9092,broker2:9092 --topic llm-events --out live/
    """
    import math
    import signal
    import socket
    import threading
    from urllib.parse import urlsplit

    from .errors import ConfigError
    from .stream import OnlineDetector
    from .stream.consumers import KafkaConsumer, RedisStreamConsumer, run_consumer

    scheme = urlsplit(source).scheme
    if scheme in ("redis", "rediss", "unix"):
        cons = RedisStreamConsumer(stream_name, group, consumer_name or socket.gethostname(),
                                   url=source, claim_idle_ms=claim_idle_ms)
    elif scheme == "kafka":
        conf = {}
        for kv in kafka_config:
            k, sep, v = kv.partition("=")
            if not sep:
                raise ConfigError(f"--kafka-config {kv!r}: expected KEY=VALUE")
            conf[k] = v
        cons = KafkaConsumer(stream_name.split(","), group,
                             bootstrap_servers=source.split("://", 1)[1].strip("/"),
                             config=conf)
    else:
        raise ConfigError(f"{source}: expected a redis://, rediss:// or kafka:// address")
    from .read import read_accounts, read_releases

    acc = read_accounts(accounts) if accounts is not None else None
    rel = read_releases(releases) if releases is not None else None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    timeout = 0.5
    try:
        result = run_consumer(cons, OnlineDetector(model_path=model_path, accounts=acc,
                                                   releases=rel),
                              out=out, policy_path=policy_path, checkpoint=checkpoint,
                              max_records=batch, timeout=timeout,
                              checkpoint_every=checkpoint_every, skip_invalid=skip_invalid,
                              idle_polls=math.ceil(idle_exit / timeout) if idle_exit else None,
                              stop=stop)
    finally:
        cons.close()
    click.echo(result.summary())


def main() -> None:
    cli(prog_name="distillguard")


if __name__ == "__main__":
    main()
