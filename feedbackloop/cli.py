"""The `feedbackloop` command: local stack, table jobs, retraining, demo, replay and benchmarks.
Thin: parse, call, print."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from glue_jobs.build_tables import JOB_NAMES


def _local_up(args: argparse.Namespace) -> int:
    from feedbackloop.local.runtime import LocalRuntime, serve_until_interrupted

    console = sys.stdout
    runtime = LocalRuntime(api_port=args.api_port, moto_port=args.moto_port,
                           adjust_interval=args.adjust_minutes * 60 if args.adjust_minutes else None,
                           resets_on_signal=True).start()
    try:
        console.write(
            f"local stack up\n  API        {runtime.api.url}  (POST /events, header x-api-key)\n"
            f"  API key    {runtime.api_key}\n  AWS        {runtime.moto.endpoint} (moto server)\n"
            f"  endpoints  {runtime.state_dir / 'endpoints.json'}\n  logs       {runtime.log_file}\n"
            "Ctrl-C stops it.\n"
        )
        console.flush()
        serve_until_interrupted(console, reset=runtime.reset)
    finally:
        runtime.stop()
    return 0


def _local_reset(args: argparse.Namespace) -> int:
    """Ask the running `local up` to empty its stores (SIGHUP), and wait until it serves again."""
    import time

    from feedbackloop.local.environment import LocalEndpoints
    from feedbackloop.local.runtime import RESET_SIGNAL

    before = LocalEndpoints.load()
    if RESET_SIGNAL is None or not before.pid:
        print("error: no `feedbackloop local up` process is recorded in .feedbackloop/endpoints.json",
              file=sys.stderr)
        return 2
    try:  # the recorded process, if it is still a `feedbackloop` one (where /proc says: not another with its pid)
        command = Path(f"/proc/{before.pid}/cmdline")
        alive = b"feedbackloop" in command.read_bytes() if Path("/proc").is_dir() else os.kill(before.pid, 0) is None
    except OSError:
        alive = False
    if not alive:
        print(f"error: `local up` (pid {before.pid}) is not running", file=sys.stderr)
        return 1
    os.kill(before.pid, RESET_SIGNAL)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            after = LocalEndpoints.load()
        except (FileNotFoundError, ValueError, TypeError):  # being rewritten
            continue
        if after.started_at > before.started_at:
            print(f"reset: every store emptied; API {after.api_url}, same key")
            return 0
    print(f"error: `local up` did not report a reset within {args.timeout:.0f} s (see its output)", file=sys.stderr)
    return 1


def _demo(args: argparse.Namespace) -> int:
    from feedbackloop.closed_loop import LoopPlan
    from feedbackloop.demo import run_demo

    plan = LoopPlan(days=args.days, users=args.users, visits_per_day=args.visits,
                    shift_day=min(args.days - 1, LoopPlan.shift_day))
    return run_demo(limit=args.limit, console=sys.stdout, plan=plan)


def _replay(args: argparse.Namespace) -> int:
    import os

    import boto3

    from feedbackloop import wiring
    from feedbackloop.local.environment import (
        LocalEndpoints,
        cleaner_settings,
        replay_settings,
        use_endpoint,
    )
    from feedbackloop.replay import raw_records, replay
    from feedbackloop.settings import ReplaySettings

    if args.local:
        use_endpoint(LocalEndpoints.load().aws_endpoint)
        os.environ.update(cleaner_settings().to_env() | replay_settings().to_env())
    bucket = ReplaySettings.from_env(os.environ).raw_bucket
    outcome = replay(wiring.cleaner_service(), raw_records(boto3.client("s3"), bucket, args.since))
    print(f"replayed {outcome.records_in} records: clean {outcome.clean}, duplicates {outcome.duplicates}, "
          f"quarantined {dict(outcome.quarantined)}, failed {len(outcome.failed_sources)}")
    return 1 if outcome.failed_sources else 0


def _run_job(args: argparse.Namespace) -> int:
    from datetime import timedelta

    import boto3

    from feedbackloop.local.environment import LocalEndpoints, use_endpoint
    from feedbackloop.local.sql_engine import local_engine
    from feedbackloop.models.contract import HALF_LIFE_DAYS
    from glue_jobs.build_tables import DataQualityError, run_job

    endpoint = LocalEndpoints.load().aws_endpoint
    use_endpoint(endpoint)
    engine = local_engine(endpoint, boto3.Session())
    for name in JOB_NAMES if args.name == "all" else [args.name]:
        try:
            reports = run_job(name, engine, full=args.full, settle=timedelta(minutes=args.settle_minutes),
                              half_life_days=HALF_LIFE_DAYS)
        except DataQualityError as error:
            print(f"job {name} failed its data-quality checks: {error}", file=sys.stderr)
            return 1
        for report in reports:
            outcome = f"skipped: {report.skipped}" if report.skipped else (
                f"{report.rows:,} rows in {len(report.partitions)} partitions")
            print(f"{name:<12} {report.table:<16} {outcome}  (data up to {report.until})")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    import boto3

    if not args.local:
        if not args.state_machine_arn:
            print("error: --state-machine-arn (or FEEDBACKLOOP_STATE_MACHINE_ARN) names the workflow to start; "
                  "the FeedbackLoopTraining stack outputs it. Use --local for the local stand-in.", file=sys.stderr)
            return 2
        execution = boto3.client("stepfunctions").start_execution(stateMachineArn=args.state_machine_arn)
        print(f"started {execution['executionArn']}")
        return 0

    from feedbackloop.local.environment import LocalEndpoints, use_endpoint
    from feedbackloop.local.retrain import LOCAL_TRAINING, run_retraining

    endpoint = LocalEndpoints.load().aws_endpoint
    use_endpoint(endpoint)
    run = run_retraining(endpoint, boto3.Session(), LOCAL_TRAINING, args.margin)
    print(" > ".join(run.steps))
    return 0


def _openapi(args: argparse.Namespace) -> int:
    from feedbackloop import ingest_api, serving_api

    document = (ingest_api if args.api == "ingest" else serving_api).openapi_document()
    if args.output:
        Path(args.output).write_text(document + "\n")
    else:
        print(document)
    return 0


def _rules_check(args: argparse.Namespace) -> int:
    import json

    from feedbackloop.adjust.rules import InvalidRulesError, packaged_rules, parse_rules

    try:
        rules = parse_rules(json.loads(Path(args.file).read_text())) if args.file else packaged_rules()
    except (InvalidRulesError, json.JSONDecodeError) as error:
        print(f"invalid rules: {error}", file=sys.stderr)
        return 1
    for rule in rules.rules:
        scope = rule.scope.kind + ("" if rule.scope.kind == "global" else
                                   f" {rule.scope.segment if rule.scope.kind == 'segment' else rule.scope.experiment}")
        print(f"{rule.name:<24} {rule.metric.source}:{rule.metric.name} {rule.comparator.value} {rule.threshold:g} "
              f"over {rule.window_minutes} min, {scope}, min {rule.min_samples} samples -> {rule.action.type}"
              + ("" if rule.enabled else "  (disabled)"))
    print(f"drift: {'on' if rules.drift.enabled else 'off'}, delta {rules.drift.delta}, "
          f"retrain {'on' if rules.drift.retrain else 'off'}")
    return 0


def _rules_schema(args: argparse.Namespace) -> int:
    import json

    from feedbackloop.adjust.rules import rules_json_schema

    text = json.dumps(rules_json_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def _decisions(args: argparse.Namespace) -> int:
    from datetime import datetime

    import boto3

    from feedbackloop.adapters.control import DynamoDecisionLog
    from feedbackloop.resources import DECISIONS_TABLE

    if args.local:
        from feedbackloop.local.environment import LocalEndpoints, physical_name, use_endpoint

        use_endpoint(LocalEndpoints.load().aws_endpoint)
        args.table = physical_name(DECISIONS_TABLE.key)
    if not args.table:
        print("error: --table (or FEEDBACKLOOP_DECISIONS_TABLE) names the decisions table; the FeedbackLoopData "
              "stack outputs it. Use --local for the local stand-in.", file=sys.stderr)
        return 2
    log = DynamoDecisionLog(boto3.Session(), args.table, ttl_days=1)
    since = datetime.fromisoformat(args.since) if args.since else None
    subjects = [args.subject] if args.subject else log.subjects()
    for subject in subjects:
        for record in log.query(subject, since):
            if record.get("kind") == "drift":
                print(f"{record['detected_at']}  {subject:<28} drift: mean {record['mean_before']:.4g} -> "
                      f"{record['mean_after']:.4g} after {record['values_seen']:,} values"
                      + (f"; retraining {record['retraining']}" if record.get("retraining") else ""))
            elif args.all or record["outcome"] not in ("ok", "no_data", "insufficient_sample"):
                value = "-" if record.get("value") is None else f"{record['value']:.4g}"
                print(f"{record['decided_at']}  {subject:<28} {record['scope']:<28} {record['metric']} = {value} "
                      f"({record['samples']} samples) {record['comparator']} {record['threshold']:g}: "
                      f"{record['outcome']}" + (f" -> {record['result']}" if record.get("result") else ""))
    return 0


def _experiment_report(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from feedbackloop.experiments.analysis import USER_COLUMNS, analyze, render, users_sql
    from feedbackloop.uiconfig import default_document

    end = datetime.fromisoformat(args.end) if args.end else datetime.now(UTC)
    start = datetime.fromisoformat(args.start) if args.start else end - timedelta(days=args.days)
    pre_start = start - timedelta(days=args.pre_days)
    if args.local:
        from feedbackloop.local.environment import LocalEndpoints
        from feedbackloop.local.lake_reader import connect
        from feedbackloop.local.sql_engine import to_duckdb

        con = connect(LocalEndpoints.load().aws_endpoint)

        def frame(sql: str):
            return con.execute(to_duckdb(sql)[0]).df()
    else:
        import awswrangler as wr

        def frame(sql: str):
            return wr.athena.read_sql_query(sql, database=args.database, workgroup=args.workgroup,
                                            ctas_approach=False)
    document = default_document()
    experiment = document["experiments"].get(args.name)
    if experiment is None:
        print(f"error: no experiment {args.name!r} in the UI config (known: {', '.join(document['experiments'])})",
              file=sys.stderr)
        return 2
    users = frame(users_sql(args.name, start, end))[list(USER_COLUMNS)]
    pre = frame(users_sql(args.name, pre_start, start))[list(USER_COLUMNS)] if args.pre_days else None
    try:
        report = analyze(args.name, users, pre, experiment["variants"], control=args.control,
                         treatment=args.treatment, minimum_detectable_effect=args.mde)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(render(report))
    _print_gate_off_policy(args)
    return 0


def _print_gate_off_policy(args: argparse.Namespace) -> None:
    """The published model's off-policy estimates at its gate (IPS, SNIPS, DR with intervals), from the
    registry's current record."""
    import boto3

    from feedbackloop.adapters.aws import DynamoModelRegistry
    from feedbackloop.models import ope

    if args.local:
        from feedbackloop.local.environment import LocalEndpoints, physical_name, use_endpoint
        from feedbackloop.resources import REGISTRY_TABLE

        use_endpoint(LocalEndpoints.load().aws_endpoint)
        table = physical_name(REGISTRY_TABLE.key)
    elif args.registry_table:
        table = args.registry_table
    else:
        return
    current = DynamoModelRegistry(boto3.Session(), table).current()
    off_policy = ope.from_registry_record(current)
    print(f"\nThe published model ({current['version'] if current else 'none'}) at its gate:")
    text = ope.render(off_policy) if off_policy else "no off-policy estimates (no exposures with propensities logged)"
    print("  " + text.replace("\n", "\n  "))


def _report(args: argparse.Namespace) -> int:
    import boto3

    from feedbackloop.local.environment import LocalEndpoints, use_endpoint
    from feedbackloop.local.report_data import collect_local
    from feedbackloop.report import render

    endpoint = LocalEndpoints.load().aws_endpoint
    use_endpoint(endpoint)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(collect_local(endpoint, boto3.Session())))
    print(output.resolve())
    return 0


def _fuzz(args: argparse.Namespace) -> int:
    import json
    import time

    from feedbackloop.bench import commit, machine_details
    from feedbackloop.local.environment import STATE_DIR
    from feedbackloop.local.fuzz import run_fuzz
    from feedbackloop.local.runtime import LocalRuntime

    console = sys.stdout  # the runtime sends the handlers' output to its log file
    run = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(),
           "machine": machine_details()}
    with LocalRuntime(state_dir=STATE_DIR / "fuzz") as runtime:
        console.write(f"fuzzing {runtime.api.url} with {args.requests:,} requests or more (seed {args.seed})\n")
        report = run_fuzz(runtime, args.requests, seed=args.seed, workers=args.workers, console=console)
    console.write(report.render() + "\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(run | report.as_dict(), indent=2) + "\n")
    return 0 if report.ok else 1


def _bench(args: argparse.Namespace) -> int:
    from feedbackloop.bench import run_benchmark, run_suite

    if args.name == "load":  # not in `bench all`: it runs for --seconds, on a local stack of its own
        from feedbackloop.bench.load import run

        return run(args.json, sys.stdout, seconds=args.seconds)
    if args.name == "model" and (args.interactions or args.tuning_minutes is not None):
        from feedbackloop.bench.model import TUNING_MINUTES, run

        return run(args.json, sys.stdout, interactions=args.interactions, protocol=args.protocol,
                   tuning_minutes=args.tuning_minutes if args.tuning_minutes is not None else TUNING_MINUTES)
    if args.name == "soak":  # not in `bench all`: it runs for --minutes, on a local stack of its own
        import json
        import time

        from feedbackloop.bench import commit, machine_details
        from feedbackloop.local.soak import render, run_soak

        run = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(),
               "machine": machine_details()}
        figures = run_soak(args.minutes, args.clients, baseline_seconds=min(60.0, args.minutes * 60 / 5),
                           console=sys.stdout)
        print(render(figures))
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(run | figures, indent=2) + "\n")
        return 0 if figures["ok"] else 1
    if args.name == "all":
        return run_suite(args.json, args.markdown or str(Path(args.json).with_suffix(".md")), sys.stdout)
    return run_benchmark(args.name, args.json, sys.stdout)


def _faults(args: argparse.Namespace) -> int:
    import json

    from feedbackloop.local.faults import format_table, run_faults, to_json

    console = sys.stdout  # the local runtime sends stdout to its log while it runs

    def say(line: str) -> None:
        console.write(line + "\n")
        console.flush()

    say("injecting faults into a local stack of their own (about a minute)...")
    figures = run_faults(say=say, **({"events_per_fault": args.events} if args.events else {}))
    print(format_table(figures))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(to_json(figures), indent=2, default=str) + "\n")
    return 0 if all(f.ok for f in figures) else 1


def _smoke(args: argparse.Namespace) -> int:
    from feedbackloop.smoke import SmokeFailure, run_smoke

    try:
        if args.local:
            from feedbackloop.local.environment import STATE_DIR, LocalEndpoints
            from feedbackloop.local.smoke import local_target

            target = local_target(LocalEndpoints.load(Path(args.state_dir) if args.state_dir else STATE_DIR))
        else:
            import boto3

            from feedbackloop.adapters.deployment import aws_target

            target = aws_target(boto3.Session(), args.stage)
    except (SmokeFailure, FileNotFoundError) as failure:
        print(f"FAIL  finding the deployment: {failure}", file=sys.stderr)
        return 1
    report = run_smoke(target, timeout=args.timeout, out=sys.stdout)
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    from feedbackloop.closed_loop import LoopPlan

    parser = argparse.ArgumentParser(prog="feedbackloop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="the embedded local stand-in")
    local = local.add_subparsers(dest="action", required=True)
    up = local.add_parser("up", help="start moto server, the local API and the stream consumers; Ctrl-C stops")
    up.add_argument("--api-port", type=int, default=8787)
    up.add_argument("--moto-port", type=int, default=None)
    up.add_argument("--adjust-minutes", type=float, default=5,
                    help="run the adjust function (rules, drift) this often, as the schedule does in AWS; 0: never")
    up.set_defaults(func=_local_up)

    reset = local.add_parser("reset", help="empty every store of the running `local up` (the stand-in keeps all it "
                                           "is sent in memory): a fresh stack on the same ports, with the same key")
    reset.add_argument("--timeout", type=float, default=180, help="seconds to wait for the stack to serve again")
    reset.set_defaults(func=_local_reset)

    job = local.add_parser("run-job", help="run a table job (Glue in AWS) on DuckDB against a running local stack")
    job.add_argument("name", choices=[*JOB_NAMES, "all"], help="the job, or all of them in order")
    job.add_argument("--full", action="store_true", help="rebuild every partition instead of the new ones")
    job.add_argument("--settle-minutes", type=int, default=0,
                     help="leave rows the cleaner processed this recently for the next run")
    job.set_defaults(func=_run_job)

    demo = commands.add_parser("demo", help="replay Online Retail through the local API and show the result")
    demo.add_argument("--limit", type=int, default=None,
                      help="send only the last N invoice lines (default 60,000; 0: all 541,909)")
    demo.add_argument("--days", type=int, default=LoopPlan.days, help="simulated days of the closed loop")
    demo.add_argument("--users", type=int, default=LoopPlan.users, help="simulated users")
    demo.add_argument("--visits", type=int, default=LoopPlan.visits_per_day, help="visits per simulated day")
    demo.set_defaults(func=_demo)

    rp = commands.add_parser("replay", help="re-run cleaning from the raw archive")
    rp.add_argument("--since", help="first day to replay, yyyy-mm-dd (default: everything)")
    rp.add_argument("--local", action="store_true", help="against a running `feedbackloop local up`")
    rp.set_defaults(func=_replay)

    oa = commands.add_parser("openapi", help="an API's OpenAPI document (serving: from its handler; ingest: from the "
                                              "event schema)")
    oa.add_argument("--api", choices=["serving", "ingest"], default="serving")
    oa.add_argument("--output", help="write it here instead of printing it")
    oa.set_defaults(func=_openapi)

    from feedbackloop.settings import RetrainSettings

    rt = commands.add_parser("retrain", help="the retraining workflow: start it in AWS, or run it locally (--local)")
    rt.add_argument("--local", action="store_true", help="in process, against a running `feedbackloop local up`")
    rt.add_argument("--state-machine-arn", default=os.environ.get("FEEDBACKLOOP_STATE_MACHINE_ARN"))
    rt.add_argument("--margin", type=float, default=RetrainSettings.model_fields["gate_margin"].default,
                    help="relative NDCG@10 gain a candidate needs over the published model (local runs)")
    rt.set_defaults(func=_retrain)

    rules = commands.add_parser("rules", help="the trigger rules of the adjust function")
    rules = rules.add_subparsers(dest="action", required=True)
    check = rules.add_parser("check", help="validate a rule file (default: the shipped one) and list its rules")
    check.add_argument("file", nargs="?", help="a rule file; exit status 1 with the failing rule and field")
    check.set_defaults(func=_rules_check)
    schema = rules.add_parser("schema", help="the rule file's JSON Schema (generated from the rule models)")
    schema.add_argument("--output", help="write it here instead of printing it")
    schema.set_defaults(func=_rules_schema)

    dc = commands.add_parser("decisions", help="what the adjust function decided: rule decisions and drift events")
    dc.add_argument("--subject", help="rule#<name> or drift#<stream> (default: all)")
    dc.add_argument("--since", help="ISO time (default: everything kept)")
    dc.add_argument("--all", action="store_true", help="also the evaluations that found nothing to do")
    dc.add_argument("--table", default=os.environ.get("FEEDBACKLOOP_DECISIONS_TABLE"))
    dc.add_argument("--local", action="store_true", help="against a running `feedbackloop local up`")
    dc.set_defaults(func=_decisions)

    from feedbackloop.demo import REPORT_FILE

    ex = commands.add_parser("experiment", help="A/B experiments over the interaction and engagement layers")
    ex = ex.add_subparsers(dest="action", required=True)
    er = ex.add_parser("report", help="the verdict and why: per-arm figures, tests, SRM, planned size, guardrails")
    er.add_argument("name", help="the experiment, as the UI config names it (e.g. ranking)")
    er.add_argument("--control", default="popularity")
    er.add_argument("--treatment", default="personalized")
    er.add_argument("--days", type=float, default=14, help="the experiment period: this many days up to --end")
    er.add_argument("--start", help="ISO time (instead of --days)")
    er.add_argument("--end", help="ISO time (default now)")
    er.add_argument("--pre-days", type=float, default=0, help="a pre-period this long before the start, for CUPED")
    er.add_argument("--mde", type=float, default=0.10, help="relative minimum detectable effect for the plan")
    er.add_argument("--local", action="store_true", help="against a running `feedbackloop local up`")
    er.add_argument("--database", default=os.environ.get("FEEDBACKLOOP_GLUE_DATABASE", "feedbackloop"))
    er.add_argument("--workgroup", default=os.environ.get("FEEDBACKLOOP_ATHENA_WORKGROUP"))
    er.add_argument("--registry-table", default=os.environ.get("FEEDBACKLOOP_REGISTRY_TABLE"),
                    help="the model registry table: show the published model's off-policy estimates at its gate")
    er.set_defaults(func=_experiment_report)

    rep = commands.add_parser("report", help="an HTML report with plots from a running `feedbackloop local up`")
    rep.add_argument("--output", default=str(REPORT_FILE), help=f"where to write it (default {REPORT_FILE})")
    rep.set_defaults(func=_report)

    fz = commands.add_parser("fuzz", help="fuzz every API route from its OpenAPI document, on a local stack of its "
                                          "own")
    fz.add_argument("--requests", type=int, default=10_000, help="at least this many requests, valid and invalid")
    fz.add_argument("--seed", type=int, default=0)
    fz.add_argument("--workers", type=int, default=1, help="schemathesis workers (operations fuzzed at once)")
    fz.add_argument("--json", help="write the report here too")
    fz.set_defaults(func=_fuzz)

    bench = commands.add_parser("bench", help="benchmarks: print a table and write JSON")
    from feedbackloop.bench import BENCHMARKS

    bench.add_argument("name", choices=[*BENCHMARKS, "load", "soak", "all"],
                       help="a benchmark, or all of them (`make bench`)")
    bench.add_argument("--json", required=True, help="where to write the results")
    bench.add_argument("--markdown", help="all: where to write the Markdown table (default: beside the JSON)")
    bench.add_argument("--seconds", type=float, default=30, help="load: how long the measured run sends")
    bench.add_argument("--interactions", help="model: a Parquet table of user_id, item_id, timestamp[, rating] "
                       "instead of the shipped data")
    bench.add_argument("--protocol", default="random-per-item",
                       choices=["random-per-item", "temporal-per-user", "temporal-global"],
                       help="model --interactions: how the table is split (default random-per-item)")
    bench.add_argument("--tuning-minutes", type=float, default=None,
                       help="model: each model's tuning budget on the validation split (default 2)")
    bench.add_argument("--minutes", type=float, default=10, help="soak: how long the clients send")
    bench.add_argument("--clients", type=int, default=16, help="soak: clients at once, each on its own connection")
    bench.set_defaults(func=_bench)

    faults = commands.add_parser("faults", help="inject faults into a local stack: nothing lost, nothing doubled, "
                                               "the failure seen, the previous model or config serving")
    faults.add_argument("--json", help="also write the figures here")
    faults.add_argument("--events", type=int, help="valid events each fault sends (default: faults.EVENTS_PER_FAULT)")
    faults.set_defaults(func=_faults)

    smoke = commands.add_parser("smoke", help="check a deployment end to end with a fresh test user: events in, "
                                             "the curated lake, recommendations, config, erasure")
    smoke.add_argument("--local", action="store_true", help="a running `feedbackloop local up` instead of AWS")
    smoke.add_argument("--stage", help="the deployment's stage (`-c stage=...` at deploy time)")
    smoke.add_argument("--state-dir", help="--local: the stand-in's state folder (default .feedbackloop/)")
    smoke.add_argument("--timeout", type=float, default=600, help="seconds each waiting step may take")
    smoke.set_defaults(func=_smoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
