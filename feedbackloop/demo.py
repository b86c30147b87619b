"""`make demo`: the loop on real data, on the embedded local stand-in: ingestion, cleaning, the
modelled tables, and retraining with its gate."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TextIO

from feedbackloop.datasets import online_retail
from feedbackloop.local.client import EventsClient, SendReport
from feedbackloop.local.environment import physical_name
from feedbackloop.local.lake_reader import connect
from feedbackloop.local.retrain import run_retraining
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.local.sql_engine import local_engine
from feedbackloop.models.training import TrainingParams
from feedbackloop.names import METRICS_NAMESPACE, SERVICE, Metric
from feedbackloop.replay import raw_records
from feedbackloop.resources import MODELLED_LAKE_TABLES, RAW_BUCKET
from feedbackloop.settings import RetrainSettings
from glue_jobs.build_tables import JOB_NAMES, DataQualityError, run_job

# The dataset spans 374 days, shifted to end an hour ago: accept a year of late data in the demo.
DEMO_MAX_EVENT_AGE_DAYS = 400


def run_demo(limit: int | None, console: TextIO) -> int:
    def say(text: str = "") -> None:
        console.write(text + "\n")
        console.flush()

    say("feedbackloop demo: Online Retail (UCI, CC BY 4.0) as feedback events through the local loop")
    frame = online_retail.load()
    if limit:
        frame = frame.sort_values("InvoiceDate", kind="stable").tail(limit)
    events = online_retail.to_events(frame, shift_to=datetime.now(UTC) - timedelta(hours=1))
    say(f"  {len(events):,} invoice lines -> feedback events (purchases and cancellations)")

    with LocalRuntime(cleaner_overrides={"max_event_age_days": DEMO_MAX_EVENT_AGE_DAYS}) as runtime:
        say(f"  local stack: API {runtime.api.url}, AWS endpoint {runtime.moto.endpoint}")
        client = EventsClient(runtime.api.url, runtime.api_key)
        last = [0.0]

        def progress(report: SendReport) -> None:
            if report.seconds - last[0] >= 5 or report.sent == len(events):
                last[0] = report.seconds
                say(f"  sent {report.sent:>9,}/{len(events):,}  accepted {report.accepted:>9,}  "
                    f"refused {report.refused_total:>7,}  cleaned {runtime.records_cleaned:>9,}  "
                    f"{report.sent / max(report.seconds, 1e-9):,.0f} events/s")

        sent = client.send(events, progress=progress)
        client.close()
        say("  waiting for the cleaner and the archiver to drain the stream...")
        started = time.perf_counter()
        if not runtime.wait_until_processed(sent.accepted, timeout=900):
            say(f"  timed out: cleaned {runtime.records_cleaned} of {sent.accepted}")
            return 1
        say(f"  drained in {time.perf_counter() - started:.1f}s; {runtime.cleaner.invocations} cleaner invocations")
        status = _report(runtime, sent, say)
        return status or _build_tables(runtime, say) or _retrain(runtime, say)


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
            reports = run_job(name, engine, settle=timedelta(0))
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
    margin = RetrainSettings.model_fields["gate_margin"].default
    first = run_retraining(runtime.moto.endpoint, runtime.session, TrainingParams(), margin, say=say)
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
    segments = metrics.get("segments")
    if segments:
        say(f"  segments: k = {segments['k']} by silhouette ({segments['silhouette']:.3f})")
    say("\n  again, on the same data: the gate must keep the published model")
    second = run_retraining(runtime.moto.endpoint, runtime.session, TrainingParams(), margin, say=say)
    kept = second.alert is not None and first.published is not None
    say(f"  registry: current = {first.published['version'] if first.published else None}"
        f"{' (kept)' if kept else ''}")
    return 0 if kept else 1
