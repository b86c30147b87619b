"""`make demo`: the loop on real data, on the embedded local stand-in: ingestion, cleaning, the
modelled tables, retraining with its gate, and serving (feedback changing a ranking within seconds,
an opt-out, an erasure), each effect read back from the stores."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from feedbackloop import resources
from feedbackloop.adapters.aws import DynamoOnlineStore
from feedbackloop.closed_loop import LoopPlan, run_loop, summarize
from feedbackloop.datasets import online_retail
from feedbackloop.local.client import EventsClient, SendReport
from feedbackloop.local.environment import STATE_DIR, physical_name
from feedbackloop.local.lake_reader import connect
from feedbackloop.local.phases import PhaseClock
from feedbackloop.local.retrain import DEMO_TRAINING, describe, run_retraining
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.local.sql_engine import local_engine
from feedbackloop.local.stream import MappingConfig
from feedbackloop.models.contract import HALF_LIFE_DAYS
from feedbackloop.models.training import TrainingParams
from feedbackloop.names import METRICS_NAMESPACE, SERVICE, Metric
from feedbackloop.replay import raw_records
from feedbackloop.resources import MODELLED_LAKE_TABLES, ONLINE_TABLE, RAW_BUCKET
from feedbackloop.schemas.registry import CURRENT_VERSION
from feedbackloop.settings import RetrainSettings
from feedbackloop.uiconfig import RANKING_EXPERIMENT, assign, default_document
from glue_jobs.build_tables import JOB_NAMES, DataQualityError, run_job

# The dataset spans 374 days, shifted to end where the simulated days begin: accept a year of late data.
DEMO_MAX_EVENT_AGE_DAYS = 400
# The real data the demo replays by default: the last invoice lines (about three weeks of the busiest
# season). `--limit 0` replays all 541,909. The demo prints where its time went (wall and CPU seconds
# per phase) at the end.
DEFAULT_LIMIT = 60_000
REPORT_FILE = STATE_DIR / "report.html"
APPCONFIG_TIME_SCALE = 60  # the UI config's 5-minute rollout and 5-minute bake take ten seconds
# The demo's event source mapping takes up to 5,000 records a batch (about 4 MB of Kinesis event, within
# Lambda's 6 MB payload; the deployed mapping takes 1,000, cdk/components/cleaner.py): the real data arrives
# as a backfill, and the cleaner's cost per batch (an item-counter update per distinct item, an object per
# partition) is paid per batch, not per record. The simulated days' posts are smaller than a batch: cleaned
# as in AWS (the 1-second window).
DEMO_MAPPING = MappingConfig(batch_size=5_000)


def run_demo(limit: int | None, console: TextIO, plan: LoopPlan | None = None, state_dir: Path = STATE_DIR) -> int:
    def say(text: str = "") -> None:
        console.write(text + "\n")
        console.flush()

    plan = plan or LoopPlan()
    clock = PhaseClock()
    say("feedbackloop demo: Online Retail (UCI, CC BY 4.0) as feedback events through the local loop, then "
        f"{plan.days} simulated days of the closed loop")
    with clock.phase("real data: load, convert"):
        frame = online_retail.load()
        limit = DEFAULT_LIMIT if limit is None else limit
        if limit:
            frame = frame.sort_values("InvoiceDate", kind="stable").tail(limit)
        # the simulated days end an hour ago; the real data ends where they begin
        loop_start = (datetime.now(UTC) - timedelta(days=plan.days, hours=1)).replace(minute=0, second=0,
                                                                                      microsecond=0)
        events = online_retail.to_events(frame, shift_to=loop_start - timedelta(minutes=1))
    say(f"  {len(events):,} invoice lines -> feedback events (purchases and cancellations)")

    with LocalRuntime(state_dir=state_dir, cleaner_overrides={"max_event_age_days": DEMO_MAX_EVENT_AGE_DAYS},
                      serving_overrides={"model_refresh_seconds": 1, "appconfig_ttl_seconds": 1},
                      appconfig_time_scale=APPCONFIG_TIME_SCALE, mapping=DEMO_MAPPING,
                      training=DEMO_TRAINING) as runtime:
        say(f"  local stack: API {runtime.api.url}, AWS endpoint {runtime.moto.endpoint}")
        client = EventsClient(runtime.api.url, runtime.api_key)
        last = [0.0]

        def progress(report: SendReport) -> None:
            if report.seconds - last[0] >= 5 or report.sent == len(events):
                last[0] = report.seconds
                say(f"  sent {report.sent:>9,}/{len(events):,}  accepted {report.accepted:>9,}  "
                    f"refused {report.refused_total:>7,}  cleaned {runtime.records_cleaned:>9,}  "
                    f"{report.sent / max(report.seconds, 1e-9):,.0f} events/s")

        with clock.phase("real data: ingest, clean, archive"):
            sent = client.send(events, progress=progress)
            client.close()
            say("  waiting for the cleaner and the archiver to drain the stream...")
            started = time.perf_counter()
            if not runtime.wait_until_processed(sent.accepted, timeout=900):
                say(f"  timed out: cleaned {runtime.records_cleaned} of {sent.accepted}")
                return 1
            say(f"  drained in {time.perf_counter() - started:.1f}s; {runtime.cleaner.invocations} cleaner "
                f"invocations (the demo's batches: up to {DEMO_MAPPING.batch_size:,} records; AWS's: "
                f"{MappingConfig.batch_size:,})")
        with clock.phase("real data: conservation report"):
            status = _report(runtime, sent, say)
        if not status:
            with clock.phase("modelled tables"):
                status = _build_tables(runtime, say)
        if not status:
            with clock.phase("retraining and the gate (twice)"):
                status = _retrain(runtime, say)
        if not status:
            with clock.phase("serving: feedback, opt-out, erasure"):
                status = _serve(runtime, client_accepted=sent.accepted, at=loop_start - timedelta(minutes=1),
                                say=say)
        if status:
            return status
        result = run_loop(runtime, loop_start, plan, runtime.records_cleaned, say, clock)
        with clock.phase("summary and report"):
            status = summarize(runtime, result, clock.total().wall, say, state_dir / REPORT_FILE.name)
    say("\nWhere the time went (wall seconds; CPU seconds of this process, the moto server and the training "
        "processes)")
    say("  " + clock.render().replace("\n", "\n  "))
    return status


def metric_sums(cloudwatch, names: list[Metric]) -> dict[str, float]:
    """Sum of each metric (without dimensions) over the last day, from CloudWatch."""
    end = datetime.now(UTC) + timedelta(minutes=5)
    sums = {}
    for name in names:
        points = cloudwatch.get_metric_statistics(
            Namespace=METRICS_NAMESPACE, MetricName=name, Dimensions=[{"Name": "service", "Value": SERVICE}],
            StartTime=end - timedelta(days=1), EndTime=end, Period=86400, Statistics=["Sum"])["Datapoints"]
        sums[name.value] = sum(p["Sum"] for p in points)
    return sums


def _report(runtime: LocalRuntime, sent: SendReport, say) -> int:
    con = connect(runtime.moto.endpoint)
    clean = con.execute("SELECT count(*) FROM feedback_events").fetchone()[0]
    by_reason = dict(con.execute(
        "SELECT reason, count(*) FROM feedback_quarantine GROUP BY reason ORDER BY 2 DESC").fetchall())
    duplicates = by_reason.pop("duplicate", 0)
    quarantined = sum(by_reason.values())
    archived = sum(1 for _ in raw_records(runtime.session.client("s3"), physical_name(RAW_BUCKET.key)))
    unique_ids = con.execute("SELECT count(DISTINCT event_id) FROM feedback_events").fetchone()[0]

    rows = [("events sent", sent.sent, "")]
    rows += [(f"  refused by the API: {field}", n, "4xx naming the field") for field, n in sent.refused.most_common()]
    rows += [("accepted onto the stream", sent.accepted, "")]
    rows += [("  archived raw (replayable)", archived, "= accepted" if archived == sent.accepted else "MISMATCH")]
    rows += [("  clean rows (curated Parquet)", clean, f"{unique_ids:,} distinct event ids")]
    rows += [(f"  quarantined: {reason}", n, "") for reason, n in by_reason.items()]
    rows += [("  duplicates (quarantined)", duplicates, "")]
    balance = clean + quarantined + duplicates
    ok = balance == sent.accepted and sent.sent == sent.accepted + sent.refused_total and unique_ids == clean
    rows += [("accepted = clean + quarantined + duplicates", balance, "OK" if ok else "MISMATCH")]
    say("\nConservation (read back from the stores)")
    width = max(len(r[0]) for r in rows)
    for label, n, note in rows:
        say(f"  {label:<{width}}  {n:>9,}  {note}")

    say("\nSample of the curated table (DuckDB over the Parquet on the local S3)")
    sample = con.execute(
        "SELECT event_date, user_id, item_id, event_type, value, round(feedback_score, 3) AS score, "
        "confidence, country FROM feedback_events ORDER BY event_time DESC LIMIT 8").fetchall()
    say("  " + " | ".join(("event_date", "user_id", "item_id", "event_type", "value", "score", "confidence",
                           "country")))
    for row in sample:
        say("  " + " | ".join(str(v) for v in row))
    say("\nQuarantine sample")
    for reason, detail in con.execute(
            "SELECT reason, any_value(detail) FROM feedback_quarantine GROUP BY reason ORDER BY reason").fetchall():
        say(f"  {reason:<14} {detail[:100]}")
    say("\nMetrics the handlers emitted (EMF, forwarded to the local CloudWatch), sums over the run")
    sums = metric_sums(runtime.session.client("cloudwatch"), [
        Metric.EVENTS_ACCEPTED, Metric.EVENTS_REJECTED, Metric.RECORDS_IN, Metric.RECORDS_CLEAN,
        Metric.RECORDS_QUARANTINED, Metric.RECORDS_DUPLICATE, Metric.RECORDS_IMPUTED, Metric.BATCH_ITEM_FAILURES])
    for name, total in sums.items():
        say(f"  {METRICS_NAMESPACE}/{name:<22} {total:>12,.0f}")
    say(f"\nLambda logs: {runtime.log_file}")
    return 0 if ok else 1


_SAMPLES = {
    "user_feedback": "SELECT user_id, item_id, category, feedback_type, round(composite_score, 3) AS score, "
                     "round(confidence_mass, 3) AS confidence, conflicting, purchases, cancels FROM user_feedback "
                     "WHERE conflicting ORDER BY confidence_mass DESC LIMIT 5",
    "user_features": "SELECT user_id, events, active_days, recency_days, round(revenue) AS revenue, "
                     "round(cancel_rate, 3) AS cancel_rate, top_categories FROM user_features "
                     "ORDER BY events DESC LIMIT 5",
    "item_features": "SELECT item_id, category, users, users_30d, popularity_rank, round(mean_score, 3) AS score, "
                     "round(cancel_rate, 3) AS cancel_rate FROM item_features ORDER BY popularity_rank LIMIT 5",
    "engagement": "SELECT period_start::DATE AS day, events, users, sessions, purchases, round(revenue) AS revenue, "
                  "round(bounce_rate, 3) AS bounce, round(conversion_rate, 3) AS conversion FROM engagement "
                  "WHERE grain = 'day' AND scope = 'global' ORDER BY period_start DESC LIMIT 5",
}


def _build_tables(runtime: LocalRuntime, say) -> int:
    say("\nModelled tables: the Glue jobs' SQL (Trino), transpiled by sqlglot, on DuckDB over the local lake")
    engine = local_engine(runtime.moto.endpoint, runtime.session)
    for name in JOB_NAMES:
        started = time.perf_counter()
        try:
            reports = run_job(name, engine, settle=timedelta(0), half_life_days=HALF_LIFE_DAYS)
        except DataQualityError as error:
            say(f"  job {name} failed its data-quality checks: {error}")
            return 1
        built = ", ".join(f"{r.table} {r.rows:,} rows/{len(r.partitions)} partitions" for r in reports)
        say(f"  {name:<12} {time.perf_counter() - started:5.1f}s  {built}  (checks passed)")
    con = connect(runtime.moto.endpoint)
    say("\n  rows per table: " + ", ".join(
        f"{t.name} {con.execute(f'SELECT count(*) FROM {t.name}').fetchone()[0]:,}" for t in MODELLED_LAKE_TABLES))
    for table, sql in _SAMPLES.items():
        result = con.execute(sql)
        say(f"\n  {table}")
        say("    " + " | ".join(d[0] for d in result.description))
        for row in result.fetchall():
            say("    " + " | ".join(str(v) for v in row))
    return 0


def _retrain(runtime: LocalRuntime, say) -> int:
    say("\nRetraining: the state machine's steps in process (training: sagemaker/train.py as a process)")
    say(f"  the demo's training budget: {describe(DEMO_TRAINING)} (the job in AWS tunes for "
        f"{TrainingParams.tuning_minutes:g} minutes)")
    margin = RetrainSettings.model_fields["gate_margin"].default
    first = run_retraining(runtime.moto.endpoint, runtime.session, DEMO_TRAINING, margin, say=say)
    metrics = first.evaluation["candidate"]["metrics"]
    ranking = metrics.get("ranking")
    if ranking:
        hold = metrics["holdout"]
        say(f"\n  temporal hold-out: the {hold['days']} days after {hold['cutoff']}, "
            f"{hold['users']:,} users, top-10")
        names = ["ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10", "coverage"]
        say("    " + f"{'model':<22}" + "".join(f"{n:>17}" for n in names))
        for label, key in (("feedback MF (ours)", "model"), ("popularity baseline", "popularity")):
            say("    " + f"{label:<22}" + "".join(f"{ranking[key][n]:>17.4f}" for n in names))
    if metrics.get("off_policy"):
        from feedbackloop.models import ope

        say("  " + ope.render(metrics["off_policy"]).replace("\n", "\n  "))
    segments = metrics.get("segments")
    if segments:
        say(f"  segments: k = {segments['k']} by silhouette ({segments['silhouette']:.3f})")
    say("\n  again, on the same data: the gate must keep the published model")
    second = run_retraining(runtime.moto.endpoint, runtime.session, DEMO_TRAINING, margin, say=say)
    kept = second.alert is not None and first.published is not None
    say(f"  registry: current = {first.published['version'] if first.published else None}"
        f"{' (kept)' if kept else ''}")
    return 0 if kept else 1


def _serve(runtime: LocalRuntime, client_accepted: int, at: datetime, say) -> int:
    """One user's feedback changes their ranking; another opts out; a third is erased. The feedback is
    stamped `at` (just before the simulated days), so the lake's days stay in order."""
    say("\nServing: GET /users/{id}/recommendations on the local API (the serving Lambda, published model)")
    con = connect(runtime.moto.endpoint)
    # a light user, whose few purchases leave room for new ones in the top 5, and two heavy ones
    document = default_document()["experiments"][RANKING_EXPERIMENT]
    a = next(user for (user,) in con.execute(
        "SELECT user_id FROM feedback_events GROUP BY 1 HAVING count(DISTINCT item_id) = 2 ORDER BY user_id").fetchall()
        if assign(user, document["salt"], document["variants"]) == "personalized")
    b, c = (row[0] for row in con.execute(
        "SELECT user_id FROM feedback_events GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 2").fetchall())
    client = EventsClient(runtime.api.url, runtime.api_key)
    expected = client_accepted

    def ranking(user: str) -> dict:
        status, body, _ = client.request("GET", f"/users/{user}/recommendations?k=5")
        if status != 200:
            raise RuntimeError(f"recommendations for {user}: {status} {body}")
        return body

    def show(label: str, body: dict) -> None:
        say(f"    {label}: strategy {body['strategy']}, personalized {body['personalized']}, "
            f"model {body['model_version']}, segment {body['segment']}")
        for item in body["items"]:
            say(f"      {item['item_id']:<8} {item['score']:>8.3f}  {item['reason']}")

    def send(events: list[dict]) -> None:
        nonlocal expected
        report = client.send(events)
        expected += report.accepted
        if not runtime.wait_until_processed(expected, timeout=60):
            raise RuntimeError("the stream did not drain")

    # 1. feedback changes the next ranking, without retraining
    before = ranking(a)
    show(f"{a} before", before)
    new_items = [item for (item,) in con.execute(
        "SELECT item_id FROM item_features WHERE item_id NOT IN (SELECT item_id FROM feedback_events "
        "WHERE user_id = ?) ORDER BY popularity_rank LIMIT 40 OFFSET 200", [a]).fetchall()][:3]
    now = at
    started = time.perf_counter()
    send([_purchase(a, item, now, n) for n, item in enumerate(new_items)])
    after = ranking(a)
    say(f"  {a} bought {', '.join(new_items)}; {time.perf_counter() - started:.2f}s later:")
    show(f"{a} after", after)
    profile = DynamoOnlineStore(runtime.session, physical_name(ONLINE_TABLE.key)).load([a])[a]
    # the ranking follows the purchases: the re-ranker weighs them against everything else it knows, and
    # exploration may take a slot, so at least one (not necessarily all) enters the top 5
    entered = set(new_items) & ({i["item_id"] for i in after["items"]} - {i["item_id"] for i in before["items"]})
    changed = bool(entered)
    stored = all(item in profile.items for item in new_items)
    say(f"    read back: the online profile holds the new items: {stored}; {len(entered)} of {len(new_items)} "
        "entered the top 5")

    # 2. personalization off: non-personalized answers, events kept out of training and the profile
    status, body, _ = client.request("PUT", f"/users/{b}/preferences", {"personalization": False})
    unseen = con.execute("SELECT item_id FROM item_features WHERE item_id NOT IN (SELECT item_id FROM "
                         "feedback_events WHERE user_id = ?) ORDER BY popularity_rank LIMIT 1", [b]).fetchall()[0][0]
    send([_purchase(b, unseen, now, 10)])
    quiet = ranking(b)
    show(f"{b} after turning personalization off", quiet)
    con = connect(runtime.moto.endpoint)  # the lake moved on: look again
    flagged = con.execute("SELECT count(*) FROM feedback_events WHERE user_id = ? AND NOT personalized",
                          [b]).fetchall()[0][0]
    profile_b = DynamoOnlineStore(runtime.session, physical_name(ONLINE_TABLE.key)).load([b])[b]
    opted_out = status == 200 and not quiet["personalized"] and flagged == 1 and unseen not in profile_b.items
    say(f"    read back: {flagged} new curated row marked not personalized (kept out of the feedback layer); "
        f"profile untouched: {unseen not in profile_b.items}")

    # 3. erasure: every store, then the audit record says complete
    rows_before = con.execute("SELECT count(*) FROM feedback_events WHERE user_id = ?", [c]).fetchall()[0][0]
    status, body, _ = client.request("DELETE", f"/users/{c}")
    say(f"  DELETE /users/{c}: {status} {body.get('status')}; polling {body.get('status_url')}")
    deadline = time.monotonic() + 300
    record: dict = {}
    while time.monotonic() < deadline:
        record = client.request("GET", f"/users/{c}/erasure")[1]
        if record.get("status") == "complete":
            break
        time.sleep(0.5)
    con = connect(runtime.moto.endpoint)
    left = {t.name: con.execute(f"SELECT count(*) FROM {t.name} WHERE user_id = ?", [c]).fetchall()[0][0]
            for t in resources.LAKE_TABLES if "user_id" in {col.name for col in t.columns}}
    raw_left = sum(1 for r in raw_records(runtime.session.client("s3"), physical_name(RAW_BUCKET.key))
                   if c.encode() in r.data and json.loads(r.data)["event"].get("user_id") == c)
    steps = record.get("steps", {})
    tombstone = DynamoOnlineStore(runtime.session, physical_name(ONLINE_TABLE.key)).load([c])[c]
    say(f"    erasure {record.get('status')}: {rows_before:,} curated rows and "
        f"{steps.get('raw_records_removed', 0):,} raw records removed, "
        f"{steps.get('objects_rewritten', 0):,} objects rewritten")
    say(f"    read back: rows left per table {left}; raw records left {raw_left}; online profile "
        f"{'gone (tombstone: personalization off)' if not tombstone.items else 'STILL THERE'}")
    client.close()
    erased = record.get("status") == "complete" and not any(left.values()) and raw_left == 0
    return 0 if changed and stored and opted_out and erased else 1


def _purchase(user: str, item: str, now: datetime, n: int) -> dict:
    return {"event_id": f"demo-{user}-{item}-{n}", "user_id": user, "item_id": item, "event_type": "purchase",
            "value": 6, "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "schema_version": CURRENT_VERSION,
            "context": {"session_id": f"demo-{user}", "device": "mobile"}}
