"""Glue Python shell job (Python 3.9): build one group of the lake's modelled tables by running SQL files.

The same `main()` runs in AWS with the Athena engine below and locally with a DuckDB engine that
`feedbackloop.local` injects. This file depends on nothing from the core package: Glue Python shell
gets only this script, its arguments and the SQL files (`--sql-location`, a zip archive on S3).

Incremental and idempotent (ADR 0006):
- An incremental step rebuilds whole partitions: those of its source holding rows with `processed_at`
  in (its bookmark, the source's bookmark]; running it twice rewrites the same partitions with the same
  rows. The first table's source is the cleaner's, whose bookmark is "now minus a settle time" (long
  enough for any in-flight cleaner batch to land).
- A snapshot step writes one `as_of_date` partition from the layers it reads; it is rebuilt when its
  source changed or the date moved on (decay depends on it).
- A bookmark (`<tables>/_bookmarks/<table>.json`, outside every table's location) is
  written only after the step's output passed its data-quality checks, so a failed run is redone.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from string import Template
from typing import Any, Protocol

LOG = logging.getLogger("feedbackloop.glue")

# The feedback layer's time decay. The deployment passes the core's setting as `--half-life-days` (CDK and the
# local runners: feedbackloop.models.contract.HALF_LIFE_DAYS, a test checks); this is the default of a bare run.
HALF_LIFE_DAYS = 30.0
SETTLE_MINUTES = 20  # the cleaner Lambda's timeout plus a margin: rows younger than this may still be in flight
MAX_PARTITIONS_PER_QUERY = 100  # Athena's limit on the partitions one INSERT INTO may write
SQL_DIR = Path(__file__).parent / "sql"
CLEANER_SOURCE = "feedback_events"
_MAX_DOUBLE = 1.7976931348623157e308
# Bookmarks live beside the tables' folders, never inside a table location: readers that list a location
# (awswrangler, Spark) would take `_bookmark.json` for data, as Athena does not.
BOOKMARK_FOLDER = "_bookmarks"


def bookmark_key(table_location: str, table: str) -> str:
    """Where a table's bookmark is: `<the tables' parent folder>/_bookmarks/<table>.json`, so for the
    location `s3://bucket/tables/interactions/` it is `s3://bucket/tables/_bookmarks/interactions.json`."""
    parent = table_location.rstrip("/").rsplit("/", 1)[0]
    return f"{parent}/{BOOKMARK_FOLDER}/{table}.json"


class DataQualityError(RuntimeError):
    """An output broke a data-quality rule: the job fails and the bookmark does not move."""


@dataclass(frozen=True)
class Range:
    column: str
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Step:
    """One table: built by `sql/<table>.sql` from `source`, checked, bookmarked."""

    table: str
    source: str
    partition: str  # the table's partition column: event_date (incremental) or as_of_date (snapshot)
    keys: tuple[str, ...]  # not null and unique within a partition
    ranges: tuple[Range, ...] = ()
    # two SQL counts that must be equal: (from the inputs, from the output); $where selects the run's rows
    reconcile: tuple[str, str] | None = None
    # floating-point columns: none may hold NaN or an infinity (one NaN price makes every revenue sum NaN)
    finite: tuple[str, ...] = ()

    @property
    def incremental(self) -> bool:
        return self.partition == "event_date"


@dataclass(frozen=True)
class Job:
    name: str
    steps: tuple[Step, ...]
    after: tuple[str, ...] = ()  # jobs whose tables this one reads


_SHARE = ("desktop_share", "mobile_share", "tablet_share", "other_device_share", "unknown_device_share")

JOBS: tuple[Job, ...] = (
    Job("interactions", (
        Step("interactions", CLEANER_SOURCE, "event_date", keys=("event_id",),
             ranges=(Range("feedback_score", -1, 1), Range("confidence", 0, 1)),
             finite=("value", "feedback_score", "confidence", "arrival_delay_seconds", "price", "revenue",
                     "propensity"),
             reconcile=("SELECT count(*) FROM feedback_events WHERE $where",
                        "SELECT count(*) FROM interactions WHERE $where")),
    )),
    Job("feedback", (
        Step("feedback_daily", "interactions", "event_date", keys=("user_id", "item_id"),
             ranges=(Range("decayed_weight_sum", 0, None),),
             finite=("price", "rating_sum", "decayed_score_sum", "decayed_weight_sum"),
             reconcile=("SELECT count(*) FROM interactions WHERE $where AND personalized",
                        "SELECT sum(events) FROM feedback_daily WHERE $where")),
        Step("user_feedback", "feedback_daily", "as_of_date", keys=("user_id", "item_id"),
             ranges=(Range("composite_score", -1, 1), Range("confidence_mass", 0, None)),
             finite=("composite_score", "confidence_mass", "rating_mean"),
             # pairs of unexamined exposures alone (no confidence, ADR 0016) are no feedback
             reconcile=("SELECT sum(events) FROM (SELECT sum(events) AS events, sum(decayed_weight_sum) AS weight "
                        "FROM feedback_daily WHERE event_date <= '$as_of_date' GROUP BY user_id, item_id) "
                        "WHERE weight > 0",
                        "SELECT sum(events) FROM user_feedback WHERE $where")),
    ), after=("interactions",)),
    Job("features", (
        Step("user_daily", "interactions", "event_date", keys=("user_id",),
             finite=("revenue", "rating_sum", "explicit_score_sum"),
             reconcile=("SELECT count(*) FROM interactions WHERE $where",
                        "SELECT sum(events) FROM user_daily WHERE $where")),
        Step("user_features", "user_daily", "as_of_date", keys=("user_id",),
             ranges=tuple(Range(c, 0, 1) for c in _SHARE + ("explicit_share",))
             # cancels can exceed purchases: an order bought before the data began is cancelled in it
             + (Range("cancel_rate", 0, None), Range("recency_days", 0, None), Range("nps", -100, 100),
                Range("satisfaction", -1, 1)),
             finite=("events_per_active_day", "cancel_rate", "revenue", "ctr", "explicit_share", "rating_mean", "nps",
                     "satisfaction", "mean_item_score") + _SHARE,
             reconcile=("SELECT count(DISTINCT user_id) FROM user_daily WHERE event_date <= '$as_of_date'",
                        "SELECT count(*) FROM user_features WHERE $where")),
        Step("item_features", "feedback_daily", "as_of_date", keys=("item_id",),
             ranges=(Range("mean_score", -1, 1), Range("positive_share", 0, 1), Range("ctr", 0, None)),
             finite=("ctr", "cancel_rate", "rating_mean", "mean_score", "positive_share", "confidence_mass"),
             reconcile=("SELECT count(DISTINCT item_id) FROM feedback_daily WHERE event_date <= '$as_of_date'",
                        "SELECT count(*) FROM item_features WHERE $where")),
    ), after=("feedback",)),
    Job("engagement", (
        Step("engagement", "interactions", "event_date",
             keys=("grain", "period_start", "scope", "segment", "experiment", "variant"),
             ranges=(Range("ctr", 0, None), Range("bounce_rate", 0, 1), Range("conversion_rate", 0, 1),
                     Range("nps", -100, 100)),
             finite=("ctr", "revenue", "avg_session_seconds", "bounce_rate", "conversion_rate", "rating_mean", "nps",
                     "mean_feedback_score"),
             reconcile=("SELECT count(*) FROM interactions WHERE $where",
                        "SELECT sum(events) FROM engagement WHERE $where AND grain = 'day' AND scope = 'global'")),
    ), after=("interactions",)),
)
JOB_NAMES = tuple(job.name for job in JOBS)


class Engine(Protocol):
    """Where the SQL runs: Athena in AWS, DuckDB locally. SQL is given in the Trino dialect."""

    def rows(self, sql: str) -> list[tuple[Any, ...]]: ...

    def replace(self, table: str, partitions: Sequence[str], select: str) -> None:
        """Replace these partitions of `table` with the rows of `select`."""

    def drop(self, table: str, partitions: Sequence[str]) -> None: ...

    def partitions(self, table: str) -> list[str]: ...

    def read_bookmark(self, table: str) -> dict[str, Any] | None: ...

    def write_bookmark(self, table: str, bookmark: dict[str, Any]) -> None: ...


class SqlFiles(Protocol):
    def read(self, name: str) -> str: ...


@dataclass(frozen=True)
class DirectorySqlFiles:
    folder: Path = SQL_DIR

    def read(self, name: str) -> str:
        return (self.folder / name).read_text(encoding="utf-8")


@dataclass
class StepReport:
    table: str
    partitions: list[str] = field(default_factory=list)
    rows: int = 0
    until: str | None = None
    skipped: str | None = None  # why nothing was built

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "partitions": len(self.partitions), "rows": self.rows, "until": self.until,
                "skipped": self.skipped}


def render(sql: str, half_life_days: float | None = HALF_LIFE_DAYS, **values: Any) -> str:
    return Template(sql).substitute(half_life_days=half_life_literal(half_life_days), **values)


def half_life_literal(days: float | None) -> str:
    """The half-life as SQL: None ("none", no decay) is an infinite half-life, whose decay rate is 0."""
    if days is None:
        return "CAST('Infinity' AS double)"
    if not 0 < days < float("inf"):
        raise ValueError(f"the half-life must be a positive number of days or none, not {days!r}")
    return repr(float(days))


def half_life_argument(days: float | None) -> str:
    """`--half-life-days` as a job argument (what CDK passes and `parse_half_life` reads)."""
    half_life_literal(days)  # refuses a bad one at synth
    return "none" if days is None else repr(float(days))


def parse_half_life(text: str) -> float | None:
    try:
        days = None if text.strip().lower() == "none" else float(text)
        half_life_literal(days)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of days or 'none', not {text!r}") from None
    return days


def quoted(values: Sequence[str]) -> str:
    for value in values:
        if not all(c.isalnum() or c == "-" for c in value):  # partition values are dates; refuse anything else
            raise ValueError(f"unexpected partition value {value!r}")
    return ", ".join(f"'{v}'" for v in values)


def _instant(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _timestamp_literal(text: str) -> str:
    return f"TIMESTAMP '{text}'"


def run_step(step: Step, engine: Engine, sql_files: SqlFiles, now: datetime, full: bool = False,
             settle: timedelta = timedelta(minutes=SETTLE_MINUTES),
             half_life_days: float | None = HALF_LIFE_DAYS) -> StepReport:
    report = StepReport(step.table)
    mine = None if full else engine.read_bookmark(step.table)
    if step.source == CLEANER_SOURCE:
        until, source_changed = _instant(now - settle), None
    else:
        upstream = engine.read_bookmark(step.source)
        if upstream is None:
            report.skipped = f"{step.source} has not been built yet"
            return report
        until, source_changed = upstream["until"], upstream["changed"]
    report.until = until
    if mine is not None and mine["until"] >= until:
        report.skipped = "up to date"
        return report
    # `changed`: the `until` of the last run that rewrote data; snapshots compare it with their source's
    changed = mine["changed"] if mine else None
    sql = sql_files.read(f"{step.table}.sql")

    if step.incremental:
        since = f" AND processed_at > {_timestamp_literal(mine['until'])}" if mine else ""
        partitions = [r[0] for r in engine.rows(
            f"SELECT DISTINCT event_date FROM {step.source} "
            f"WHERE processed_at <= {_timestamp_literal(until)}{since} ORDER BY 1")]
        if full:  # a full rebuild also drops what its source no longer has (an erased day, say)
            engine.drop(step.table, sorted(set(engine.partitions(step.table)) - set(partitions)))
        for start in range(0, len(partitions), MAX_PARTITIONS_PER_QUERY):
            chunk = partitions[start:start + MAX_PARTITIONS_PER_QUERY]
            where = f"event_date IN ({quoted(chunk)})"
            engine.replace(step.table, chunk, render(sql, half_life_days, partitions=quoted(chunk)))
            report.rows += check(step, engine, where=where, as_of_date="", half_life_days=half_life_days)
            report.partitions.extend(chunk)
        if partitions or full:
            changed = until
        else:
            report.skipped = "no new data"
    else:
        as_of_date = until[:10]
        if mine and mine["source_changed"] == source_changed and mine["until"][:10] == as_of_date:
            report.skipped = "no new data"  # the same inputs as of the same day: the same snapshot
        else:
            engine.replace(step.table, [as_of_date], render(sql, half_life_days, as_of_date=as_of_date))
            report.rows = check(step, engine, where=f"as_of_date = '{as_of_date}'", as_of_date=as_of_date,
                                half_life_days=half_life_days)
            report.partitions.append(as_of_date)
            changed = until
    engine.write_bookmark(step.table, {"until": until, "changed": changed, "source_changed": source_changed,
                                       "partitions": report.partitions, "built_at": _instant(now),
                                       "rows": report.rows})
    return report


def check(step: Step, engine: Engine, where: str, as_of_date: str,
          half_life_days: float | None = HALF_LIFE_DAYS) -> int:
    """The data-quality rules of a step's output: return its row count, or raise DataQualityError naming
    every broken rule."""
    failures = []
    scope = f"FROM {step.table} WHERE {where}"
    null_keys = " OR ".join(f"{k} IS NULL" for k in step.keys)
    (rows, nulls) = engine.rows(f"SELECT count(*), count_if({null_keys}) {scope}")[0]
    if nulls:
        failures.append(f"{nulls} rows with a null key ({', '.join(step.keys)})")
    keys = ", ".join(step.keys + (step.partition,))
    (repeated,) = engine.rows(
        f"SELECT count(*) FROM (SELECT {keys} {scope} GROUP BY {keys} HAVING count(*) > 1) AS repeated")[0]
    if repeated:
        failures.append(f"{repeated} keys ({keys}) appear more than once")
    for column in step.finite:
        # NaN compares false in Trino and greater than every number in DuckDB: outside the doubles' range either way
        (broken,) = engine.rows(f"SELECT count(*) {scope} AND NOT ({column} BETWEEN {-_MAX_DOUBLE!r} AND "
                                f"{_MAX_DOUBLE!r})")[0]
        if broken:
            failures.append(f"{broken} rows with {column} NaN or infinite")
    for rule in step.ranges:
        bounds = [f"{rule.column} < {rule.low}" if rule.low is not None else "",
                  f"{rule.column} > {rule.high}" if rule.high is not None else ""]
        (outside,) = engine.rows(f"SELECT count(*) {scope} AND ({' OR '.join(b for b in bounds if b)})")[0]
        if outside:
            failures.append(f"{outside} rows with {rule.column} outside [{rule.low}, {rule.high}]")
    if step.reconcile:
        expected, actual = (engine.rows(render(sql, half_life_days, where=where, as_of_date=as_of_date))[0][0] or 0
                            for sql in step.reconcile)
        if expected != actual:
            failures.append(f"row counts do not reconcile: inputs {expected}, output {actual}")
    if failures:
        raise DataQualityError(f"{step.table}: " + "; ".join(failures))
    return rows


def run_job(name: str, engine: Engine, sql_files: SqlFiles = DirectorySqlFiles(), now: datetime | None = None,
            full: bool = False, settle: timedelta = timedelta(minutes=SETTLE_MINUTES),
            half_life_days: float | None = HALF_LIFE_DAYS) -> list[StepReport]:
    job = next((j for j in JOBS if j.name == name), None)
    if job is None:
        raise ValueError(f"no job {name!r}; jobs: {', '.join(JOB_NAMES)}")
    now = now or datetime.now(timezone.utc)
    reports = []
    for step in job.steps:
        report = run_step(step, engine, sql_files, now, full=full, settle=settle, half_life_days=half_life_days)
        LOG.info(json.dumps({"job": name, **report.as_dict()}))
        reports.append(report)
    return reports


class AthenaEngine:
    """The engine in AWS: Athena runs the SQL in the job's workgroup (which enforces the result location,
    encryption and the bytes-scanned limit); the Glue catalog and S3 hold the tables."""

    def __init__(self, database: str, workgroup: str) -> None:
        import awswrangler as wr  # in Glue's analytics library set; imported here so DuckDB runs need not

        self._wr = wr
        self._database = database
        self._workgroup = workgroup

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        frame = self._wr.athena.read_sql_query(sql, database=self._database, workgroup=self._workgroup,
                                               ctas_approach=False)
        return [tuple(row) for row in frame.itertuples(index=False, name=None)]

    def replace(self, table: str, partitions: Sequence[str], select: str) -> None:
        self.drop(table, partitions)
        self._wr.athena.start_query_execution(f"INSERT INTO {table}\n{select}", database=self._database,
                                              workgroup=self._workgroup, wait=True)

    def drop(self, table: str, partitions: Sequence[str]) -> None:
        if not partitions:
            return
        location, column = self._location(table)
        for value in partitions:
            self._wr.s3.delete_objects(f"{location}{column}={value}/")
        existing = set(self.partitions(table))
        gone = [[v] for v in partitions if v in existing]
        if gone:
            self._wr.catalog.delete_partitions(table=table, database=self._database, partitions_values=gone)

    def partitions(self, table: str) -> list[str]:
        found = self._wr.catalog.get_partitions(database=self._database, table=table)
        return sorted(values[0] for values in found.values())

    def read_bookmark(self, table: str) -> dict[str, Any] | None:
        path = self._bookmark_path(table)
        if not self._wr.s3.does_object_exist(path):
            return None
        import boto3

        bucket, key = path[len("s3://"):].split("/", 1)
        return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())

    def write_bookmark(self, table: str, bookmark: dict[str, Any]) -> None:
        import boto3

        bucket, key = self._bookmark_path(table)[len("s3://"):].split("/", 1)
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(bookmark).encode(),
                                      ContentType="application/json")

    def _location(self, table: str) -> tuple[str, str]:
        description = self._wr.catalog.table(database=self._database, table=table)
        column = description[description["Partition"]]["Column Name"].iloc[0]
        location = self._wr.catalog.get_table_location(database=self._database, table=table)
        return location.rstrip("/") + "/", column

    def _bookmark_path(self, table: str) -> str:
        return bookmark_key(self._location(table)[0], table)


class ZipSqlFiles:
    """The SQL folder as CDK deploys it: one zip archive (an asset), read once."""

    def __init__(self, archive: bytes) -> None:
        self._archive = zipfile.ZipFile(io.BytesIO(archive))

    @classmethod
    def from_s3(cls, url: str) -> ZipSqlFiles:
        import boto3

        bucket, key = url[len("s3://"):].split("/", 1)
        return cls(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())

    def read(self, name: str) -> str:
        return self._archive.read(name).decode("utf-8")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, choices=JOB_NAMES)
    parser.add_argument("--database", required=True)
    parser.add_argument("--workgroup", required=True)
    parser.add_argument("--sql-location", required=True, help="s3:// URL of the zip of the SQL files")
    parser.add_argument("--full", default="false", choices=("true", "false"), help="rebuild every partition")
    parser.add_argument("--settle-minutes", type=int, default=SETTLE_MINUTES)
    parser.add_argument("--half-life-days", type=parse_half_life, default=HALF_LIFE_DAYS,
                        help="the feedback decay's half-life in days, or 'none' for no decay")
    args, _ = parser.parse_known_args(argv)  # Glue adds its own arguments (--JOB_ID, --scriptLocation, ...)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    args = parse_args(argv)
    engine = AthenaEngine(args.database, args.workgroup)
    run_job(args.job, engine, ZipSqlFiles.from_s3(args.sql_location), full=args.full == "true",
            settle=timedelta(minutes=args.settle_minutes), half_life_days=args.half_life_days)
    return 0


if __name__ == "__main__":
    sys.exit(main())
