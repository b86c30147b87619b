"""`make demo`: the ingestion half of the loop on real data, on the embedded local stand-in."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TextIO

from feedbackloop.datasets import online_retail
from feedbackloop.local.client import EventsClient, SendReport
from feedbackloop.local.environment import physical_name
from feedbackloop.local.lake_reader import connect
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.names import METRICS_NAMESPACE, SERVICE, Metric
from feedbackloop.replay import raw_records
from feedbackloop.resources import RAW_BUCKET

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
        return _report(runtime, sent, say)


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
