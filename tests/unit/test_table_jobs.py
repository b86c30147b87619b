"""The table jobs (glue_jobs/build_tables.py and its SQL) on DuckDB over a directory lake, against
hand-checked rows: time decay, conflict reconciliation, features, engagement; idempotence;
incremental runs equal a full rebuild; data-quality failures."""

from __future__ import annotations

import ast
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot
from lake_fixtures import AS_OF, AS_OF_END, NOW, build_all, decay, event, lake, table

from feedbackloop.lake import CURATED_EVENTS, MODELLED_TABLES
from feedbackloop.local.lake_reader import LakeLocation, connect, schema
from feedbackloop.local.sql_engine import to_duckdb, write_rows
from glue_jobs import build_tables
from glue_jobs.build_tables import (
    HALF_LIFE_DAYS,
    JOB_NAMES,
    JOBS,
    SQL_DIR,
    DataQualityError,
    parse_args,
    render,
    run_job,
)

pytestmark = pytest.mark.unit

# --- the SQL itself ---------------------------------------------------------------------------------

SQL_FILES = sorted(SQL_DIR.glob("*.sql"))


def test_every_step_has_its_sql_file_and_every_file_a_step():
    steps = {s.table for job in JOBS for s in job.steps}
    assert {f.stem for f in SQL_FILES} == steps == {t.name for t in MODELLED_TABLES}


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.stem)
def test_sql_parses_as_trino_and_transpiles_to_duckdb(path: Path):
    sql = render(path.read_text(), partitions="'2026-01-01', '2026-01-02'", as_of_date=AS_OF)
    (tree,) = sqlglot.parse(sql, read="trino", error_level=sqlglot.ErrorLevel.RAISE)
    assert isinstance(tree, sqlglot.exp.Query)
    duck, tables = to_duckdb(sql)
    sqlglot.parse(duck, read="duckdb", error_level=sqlglot.ErrorLevel.RAISE)
    assert tables  # reads at least one lake table


def test_job_script_stays_python_39_and_independent_of_the_core():
    source = Path(build_tables.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(name.split(".")[0] in {"feedbackloop", "lambdas", "cdk"} for name in imported)
    assert "from __future__ import annotations" in source  # PEP 604 annotations stay strings on 3.9


def test_glue_arguments_are_parsed_and_glue_extras_ignored():
    args = parse_args(["--job", "feedback", "--database", "db", "--workgroup", "wg", "--sql-location", "s3://b/sql/",
                       "--JOB_ID", "j_1", "--JOB_RUN_ID", "jr_1", "--scriptLocation", "s3://b/s.py"])
    assert (args.job, args.database, args.workgroup, args.full, args.settle_minutes) == (
        "feedback", "db", "wg", "false", build_tables.SETTLE_MINUTES)
    with pytest.raises(SystemExit):
        parse_args(["--job", "nope", "--database", "d", "--workgroup", "w", "--sql-location", "s3://b/"])


def test_jobs_run_after_the_jobs_whose_tables_their_sql_reads():
    jobs = {job.name: job for job in JOBS}

    def upstream(name: str) -> set[str]:
        return set(jobs[name].after).union(*(upstream(dep) for dep in jobs[name].after))

    order = {name: i for i, name in enumerate(JOB_NAMES)}
    built_by = {s.table: job.name for job in JOBS for s in job.steps}
    for job in JOBS:
        assert all(order[dep] < order[job.name] for dep in job.after)
        earlier: set[str] = set()
        for step in job.steps:
            _, reads = to_duckdb(render((SQL_DIR / f"{step.table}.sql").read_text(), partitions="'x'",
                                        as_of_date=AS_OF))
            assert step.source in reads
            for name in reads - {c.name for c in (CURATED_EVENTS,)}:
                assert name in earlier or built_by[name] in upstream(job.name), f"{step.table} reads {name}"
            earlier.add(step.table)


def test_outputs_match_the_table_specs_column_for_column(tmp_path: Path):
    t = datetime(2026, 3, 30, 10, tzinfo=UTC)
    engine = lake(tmp_path, [event("u1", "i1", "rating", t, 1.0, 1.0, value=5, category="books", device="mobile",
                                   segment="s", experiment="x", variant="A", session_id="s1", price=2.0)])
    build_all(engine)
    for spec in MODELLED_TABLES:
        result = engine._run(f"SELECT * FROM {spec.name}").to_arrow_table()  # noqa: SLF001 (read back)
        assert result.schema.names == schema(spec).names, spec.name
        assert result.num_rows >= 1, spec.name


# --- hand-checked rows -------------------------------------------------------------------------------

def test_feedback_layer_decays_weights_and_reconciles_conflicts(tmp_path: Path):
    thirty_days_ago = AS_OF_END - timedelta(days=30)
    last_second = AS_OF_END - timedelta(minutes=2)  # processed before NOW
    t1, t2 = datetime(2026, 3, 20, 9, tzinfo=UTC), datetime(2026, 3, 21, 9, tzinfo=UTC)
    rows = [
        # u1/i1: a 5-star rating 30 days back (decay 0.5) and a click two minutes before the end (decay ~1)
        event("u1", "i1", "rating", thirty_days_ago, 1.0, 1.0, value=5, category="books"),
        event("u1", "i1", "click", last_second, 0.5, 0.2, category="books"),
        # u1/i2: a purchase, then a cancel: the latest signal is negative, so the score is capped at 0
        event("u1", "i2", "purchase", t1, 0.8, 0.6, category="toys"),
        event("u1", "i2", "cancel", t2, -0.5, 0.7, category="toys"),
        # u2/i2: a cancel, then a good rating: the weighted mean stands
        event("u2", "i2", "cancel", t1, -0.5, 0.7, category="toys"),
        event("u2", "i2", "rating", t2, 0.5, 1.0, value=4, category="toys"),
    ]
    engine = lake(tmp_path, rows)
    build_all(engine)
    scores = {(r["user_id"], r["item_id"]): r for r in table(tmp_path, "user_feedback")}

    d_rating, d_click = decay(thirty_days_ago), decay(last_second)
    assert d_rating == pytest.approx(0.5)
    u1i1 = scores["u1", "i1"]
    expected = (1.0 * 1.0 * d_rating + 0.2 * 0.5 * d_click) / (1.0 * d_rating + 0.2 * d_click)
    assert u1i1["composite_score"] == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.6 / 0.7, rel=1e-5)  # the hand figure: (0.5 + 0.1) / (0.5 + 0.2)
    assert u1i1["confidence_mass"] == pytest.approx(1.0 * d_rating + 0.2 * d_click, rel=1e-9)
    assert (u1i1["feedback_type"], u1i1["conflicting"], u1i1["events"], u1i1["rating_mean"]) == (
        "explicit", False, 2, 5.0)

    u1i2 = scores["u1", "i2"]
    mean = (0.6 * 0.8 * decay(t1) - 0.7 * 0.5 * decay(t2)) / (0.6 * decay(t1) + 0.7 * decay(t2))
    assert mean > 0  # without the rule the pair would look liked
    assert (u1i2["composite_score"], u1i2["conflicting"], u1i2["feedback_type"]) == (0.0, True, "implicit")
    assert (u1i2["purchases"], u1i2["cancels"]) == (1, 1)

    u2i2 = scores["u2", "i2"]
    expected = (-0.7 * 0.5 * decay(t1) + 1.0 * 0.5 * decay(t2)) / (0.7 * decay(t1) + 1.0 * decay(t2))
    assert u2i2["composite_score"] == pytest.approx(expected, rel=1e-9)
    assert u2i2["conflicting"] is True


def test_feature_layer_rows(tmp_path: Path):
    day1, day2 = datetime(2026, 3, 29, 10, tzinfo=UTC), datetime(2026, 3, 30, 10, tzinfo=UTC)
    rows = [
        event("u1", "i1", "purchase", day1, 0.5, 0.6, value=2, price=3.0, category="books", device="mobile",
              session_id="a", country="FR"),
        event("u1", "i2", "purchase", day1 + timedelta(minutes=5), 0.5, 0.6, value=1, price=10.0, category="toys",
              device="mobile", session_id="a", country="FR"),
        event("u1", "i1", "view", day2, 0.1, 0.1, category="books", device="desktop", session_id="b", country="DE"),
        event("u1", "i1", "click", day2 + timedelta(minutes=1), 0.3, 0.2, category="books", device="desktop",
              session_id="b", country="DE"),
        event("u1", "i2", "cancel", day2 + timedelta(minutes=2), -0.5, 0.7, category="toys", session_id="b"),
        event("u1", "i3", "nps", day2 + timedelta(minutes=3), 0.8, 1.0, value=9, session_id="b"),
        event("u2", "i1", "nps", day2, -0.6, 1.0, value=2, category="books", session_id="c"),
        event("u2", "i1", "view", day2 + timedelta(minutes=1), 0.1, 0.1, category="books", session_id="c"),
    ]
    engine = lake(tmp_path, rows)
    build_all(engine)
    users = {r["user_id"]: r for r in table(tmp_path, "user_features")}
    u1 = users["u1"]
    assert (u1["events"], u1["active_days"], u1["sessions"], u1["items"]) == (6, 2, 2, 3)
    assert (u1["recency_days"], u1["tenure_days"]) == (1, 3)
    assert (u1["purchases"], u1["cancels"], u1["cancel_rate"]) == (2, 1, 0.5)
    assert u1["revenue"] == pytest.approx(2 * 3.0 + 1 * 10.0)
    assert u1["ctr"] == 1.0
    assert u1["nps"] == 100.0 and u1["satisfaction"] == pytest.approx(0.8)
    assert (u1["mobile_share"], u1["desktop_share"], u1["unknown_device_share"]) == (
        pytest.approx(2 / 6), pytest.approx(2 / 6), pytest.approx(2 / 6))
    assert u1["country"] == "DE"  # of the latest event that names one... the latest event's country
    assert (u1["top_category"], list(u1["top_categories"])) == ("books", ["books"])  # toys cancelled: score 0
    # u2's only item has a negative score: no preferred category
    assert users["u2"]["nps"] == -100.0 and list(users["u2"]["top_categories"]) == []

    items = {r["item_id"]: r for r in table(tmp_path, "item_features")}
    i1 = items["i1"]
    assert (i1["users"], i1["users_30d"], i1["events"], i1["views"], i1["clicks"], i1["purchases"]) == (
        2, 2, 5, 2, 1, 1)
    assert (i1["ctr"], i1["popularity_rank"], i1["category"]) == (0.5, 1, "books")
    assert items["i2"]["cancel_rate"] == 1.0
    assert items["i1"]["positive_share"] == 0.5  # u1 likes it, u2 gave it a detractor's NPS


def test_engagement_layer_rows(tmp_path: Path):
    h = datetime(2026, 3, 30, 10, tzinfo=UTC)
    rows = [
        event("u1", "i1", "view", h, 0.1, 0.1, session_id="a", segment="s1", experiment="x", variant="A"),
        event("u1", "i1", "click", h + timedelta(minutes=2), 0.3, 0.2, session_id="a", segment="s1",
              experiment="x", variant="A"),
        event("u1", "i1", "purchase", h + timedelta(minutes=4), 0.5, 0.6, value=1, price=5.0, session_id="a",
              segment="s1", experiment="x", variant="A"),
        event("u2", "i2", "view", h + timedelta(minutes=70), 0.1, 0.1, session_id="b", segment="s2",
              experiment="x", variant="B"),
        event("u2", "i3", "view", h + timedelta(minutes=75), 0.1, 0.1, session_id="c", segment="s2",
              experiment="x", variant="B"),
        event("u2", "i3", "rating", h + timedelta(minutes=80), 0.5, 1.0, value=4, session_id="c", segment="s2",
              experiment="x", variant="B"),
    ]
    engine = lake(tmp_path, rows)
    build_all(engine)
    got = {(r["grain"], r["scope"], r["segment"], r["variant"], r["period_start"].hour): r
           for r in table(tmp_path, "engagement")}
    day = got["day", "global", "*", "*", 0]
    assert (day["events"], day["users"], day["impressions"], day["clicks"], day["sessions"]) == (6, 2, 3, 1, 3)
    assert day["ctr"] == pytest.approx(1 / 3)
    assert day["bounce_rate"] == pytest.approx(1 / 3)  # session b has one event
    assert day["conversion_rate"] == pytest.approx(1 / 3)
    assert day["avg_session_seconds"] == pytest.approx((240 + 0 + 300) / 3)
    assert (day["ratings"], day["rating_mean"], day["revenue"]) == (1, 4.0, 5.0)
    variant_a = got["day", "variant", "*", "A", 0]
    assert (variant_a["events"], variant_a["ctr"], variant_a["conversion_rate"]) == (3, 1.0, 1.0)
    hour_11_b = got["hour", "segment_variant", "s2", "B", 11]
    assert (hour_11_b["events"], hour_11_b["sessions"], hour_11_b["bounce_rate"]) == (3, 2, 0.5)
    assert got["hour", "segment", "s1", "*", 10]["events"] == 3
    scopes = {r["scope"] for r in table(tmp_path, "engagement")}
    assert scopes == {"global", "segment", "variant", "segment_variant"}


def test_interactions_carry_derived_time_and_revenue(tmp_path: Path):
    t = datetime(2026, 3, 30, 13, 45, tzinfo=UTC)  # a Monday
    engine = lake(tmp_path, [event("u1", "i1", "purchase", t, 0.5, 0.6, value=3, price=2.5)])
    build_all(engine)
    (row,) = table(tmp_path, "interactions")
    assert (row["hour_of_day"], row["day_of_week"], row["revenue"], row["arrival_delay_seconds"]) == (13, 1, 7.5, 2.0)
    assert row["event_hour"] == datetime(2026, 3, 30, 13, tzinfo=UTC)


# --- incremental, idempotent, checked ------------------------------------------------------------------

def _snapshot(tmp_path: Path) -> dict[str, list[str]]:
    """Every table's rows, order-free; doubles to 12 significant digits (parallel aggregation may sum
    in another order and change the last bits)."""
    def row(values: dict) -> str:
        return repr({k: float(f"{v:.12g}") if isinstance(v, float) else v for k, v in values.items()})

    con = connect(LakeLocation.directory(tmp_path))
    return {t.name: sorted(map(row, con.sql(f"SELECT * FROM {t.name}").to_arrow_table().to_pylist()))
            for t in MODELLED_TABLES}


def _waves() -> tuple[list[dict], list[dict]]:
    d1, d2, d3 = (datetime(2026, 3, d, 12, tzinfo=UTC) for d in (28, 29, 30))
    first = [event(f"u{i % 3}", f"i{i % 4}", "purchase", d1 + timedelta(minutes=i), 0.4, 0.6, category="c",
                   session_id=f"s{i % 2}") for i in range(6)]
    first += [event("u1", "i1", "rating", d2, 1.0, 1.0, value=5, category="c", session_id="s9")]
    late = datetime(2026, 3, 31, 1, tzinfo=UTC)  # processed in the second wave
    second = [event("u1", "i1", "cancel", d1 + timedelta(hours=3), -0.5, 0.7, category="c", processed_at=late),
              event("u2", "i3", "click", d3, 0.3, 0.2, category="c", processed_at=late),
              event("u3", "i3", "view", d3, 0.1, 0.1, category="c", processed_at=late)]
    return first, second


def test_incremental_runs_equal_a_full_rebuild(tmp_path: Path):
    first, second = _waves()
    incremental = lake(tmp_path / "inc", first)
    build_all(incremental, now=datetime(2026, 3, 31, 0, tzinfo=UTC))
    write_rows(incremental._location, CURATED_EVENTS,  # noqa: SLF001 (the same lake)
               pa.Table.from_pylist(second, schema=schema(CURATED_EVENTS)), "wave-2.parquet")
    reports = [r for name in JOB_NAMES for r in run_job(name, incremental, now=NOW, settle=timedelta(0))]
    rebuilt = {r.table: r.partitions for r in reports}
    assert rebuilt["interactions"] == ["2026-03-28", "2026-03-30"]  # the late row's day and the new day only

    full = lake(tmp_path / "full", first + second)
    build_all(full, full=True)
    assert _snapshot(tmp_path / "inc") == _snapshot(tmp_path / "full")


def test_running_twice_leaves_the_same_tables(tmp_path: Path):
    first, second = _waves()
    engine = lake(tmp_path, first + second)
    build_all(engine)
    once = _snapshot(tmp_path)
    reports = [r for name in JOB_NAMES for r in run_job(name, engine, now=NOW, settle=timedelta(0))]
    assert all(r.skipped == "up to date" for r in reports)
    build_all(engine, full=True)  # and a forced rebuild rewrites the same rows
    assert _snapshot(tmp_path) == once
    # the table's location holds its partitions only: the bookmark is outside it (awswrangler reads every file)
    assert sorted(p.name for p in (tmp_path / "curated/tables/interactions").iterdir()) == [
        "event_date=2026-03-28", "event_date=2026-03-29", "event_date=2026-03-30"]
    assert sorted(p.name for p in (tmp_path / "curated/tables/_bookmarks").iterdir()) == sorted(
        f"{step.table}.json" for job in JOBS for step in job.steps)


def test_rows_still_settling_wait_for_the_next_run(tmp_path: Path):
    t = datetime(2026, 3, 30, 12, tzinfo=UTC)
    engine = lake(tmp_path, [event("u1", "i1", "click", t, 0.3, 0.2, processed_at=NOW - timedelta(minutes=5))])
    (report,) = run_job("interactions", engine, now=NOW, settle=timedelta(minutes=20))
    assert report.partitions == [] and table(tmp_path, "interactions") == []
    (report,) = run_job("interactions", engine, now=NOW + timedelta(minutes=20), settle=timedelta(minutes=20))
    assert report.partitions == ["2026-03-30"] and len(table(tmp_path, "interactions")) == 1


def test_downstream_jobs_wait_for_their_sources(tmp_path: Path):
    engine = lake(tmp_path, [event("u1", "i1", "click", datetime(2026, 3, 30, tzinfo=UTC), 0.3, 0.2)])
    reports = run_job("feedback", engine, now=NOW, settle=timedelta(0))
    assert [r.skipped for r in reports] == [
        "interactions has not been built yet", "feedback_daily has not been built yet"]


def test_a_broken_output_fails_the_job_loudly_and_keeps_the_bookmark(tmp_path: Path):
    t = datetime(2026, 3, 30, 12, tzinfo=UTC)
    engine = lake(tmp_path, [event("u1", "i1", "click", t, 3.0, 0.2), event("u1", "i2", "click", t, 0.3, 0.2)])
    with pytest.raises(DataQualityError, match=r"interactions: 1 rows with feedback_score outside \[-1, 1\]"):
        run_job("interactions", engine, now=NOW, settle=timedelta(0))
    assert engine.read_bookmark("interactions") is None  # the next run redoes it


@pytest.mark.parametrize("price", [math.nan, math.inf])
def test_a_non_finite_price_fails_the_job_instead_of_making_every_revenue_nan(tmp_path: Path, price: float):
    """One `"price": NaN` that reached the curated lake made revenue NaN in interactions, user_daily,
    user_features and every engagement row, and every job succeeded."""
    t = datetime(2026, 3, 30, 12, tzinfo=UTC)
    engine = lake(tmp_path, [event("u1", "i1", "purchase", t, 0.8, 0.6, price=price),
                             event("u2", "i1", "purchase", t, 0.8, 0.6, price=5.0)])
    with pytest.raises(DataQualityError, match=r"interactions: 1 rows with price NaN or infinite; "
                                               r"1 rows with revenue NaN or infinite"):
        run_job("interactions", engine, now=NOW, settle=timedelta(0))
    assert engine.read_bookmark("interactions") is None


def test_every_floating_point_column_of_a_modelled_table_is_checked_finite():
    floating = {t.name: {c.name for c in t.columns if pa.types.is_floating(c.type)} for t in MODELLED_TABLES}
    assert {s.table: set(s.finite) for job in JOBS for s in job.steps} == floating


def test_checks_catch_null_keys_duplicates_and_unreconciled_counts(tmp_path: Path):
    t = datetime(2026, 3, 30, 12, tzinfo=UTC)
    twin = event("u1", "i1", "click", t, 0.3, 0.2)
    nameless = event("u3", "i1", "click", t, 0.3, 0.2) | {"event_id": None}
    engine = lake(tmp_path, [twin, twin | {"user_id": "u2"}, nameless])
    with pytest.raises(DataQualityError) as failure:
        run_job("interactions", engine, now=NOW, settle=timedelta(0))
    assert "1 rows with a null key (event_id)" in str(failure.value)
    assert "1 keys (event_id, event_date) appear more than once" in str(failure.value)


def test_partition_values_are_refused_unless_they_are_dates():
    with pytest.raises(ValueError, match="unexpected partition value"):
        build_tables.quoted(["2026-01-01", "x'); DROP TABLE t; --"])


def test_the_sql_and_the_models_decay_with_the_same_half_life():
    """The core's setting reaches the jobs as `--half-life-days` (CDK, the local runners: the infra test
    checks the synthesized argument); a bare run defaults to the same value."""
    from feedbackloop.models.contract import HALF_LIFE_DAYS as MODELS_HALF_LIFE

    assert math.isclose(HALF_LIFE_DAYS, MODELS_HALF_LIFE)
    argv = ["--job", "feedback", "--database", "d", "--workgroup", "w", "--sql-location", "s3://b/"]
    assert parse_args(argv).half_life_days == MODELS_HALF_LIFE
    passed = build_tables.half_life_argument(MODELS_HALF_LIFE)
    assert parse_args([*argv, "--half-life-days", passed]).half_life_days == MODELS_HALF_LIFE


@pytest.mark.parametrize(("text", "days"), [("14", 14.0), ("7.5", 7.5), ("none", None), ("None", None)])
def test_the_half_life_argument_is_days_or_none(text, days):
    argv = ["--job", "feedback", "--database", "d", "--workgroup", "w", "--sql-location", "s3://b/"]
    assert parse_args([*argv, "--half-life-days", text]).half_life_days == days
    assert build_tables.half_life_argument(days) == ("none" if days is None else repr(days))


@pytest.mark.parametrize("text", ["0", "-3", "nan", "inf", "thirty", ""])
def test_a_bad_half_life_argument_stops_the_job_with_its_reason(text, capsys):
    argv = ["--job", "feedback", "--database", "d", "--workgroup", "w", "--sql-location", "s3://b/"]
    with pytest.raises(SystemExit):
        parse_args([*argv, "--half-life-days", text])
    assert "expected a positive number of days or 'none'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="the half-life must be a positive number of days or none"):
        build_tables.half_life_argument(float(text) if text in {"0", "-3", "nan", "inf"} else -1.0)


@pytest.mark.parametrize("half_life", [7.0, None])
def test_the_jobs_decay_with_the_half_life_they_are_given(tmp_path: Path, half_life):
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)  # 30.5 days before the end of the snapshot date
    engine = lake(tmp_path, [event("u1", "i1", "rating", at, 1.0, 1.0, value=5)])
    for name in ("interactions", "feedback"):
        run_job(name, engine, now=NOW, settle=timedelta(0), half_life_days=half_life)
    (pair,) = table(tmp_path, "user_feedback")
    expected = 1.0 if half_life is None else 0.5 ** ((AS_OF_END - at).total_seconds() / (half_life * 86400))
    assert pair["confidence_mass"] == pytest.approx(expected, rel=1e-12)
    assert pair["composite_score"] == pytest.approx(1.0)


def test_snapshots_follow_the_date_without_new_data_and_stay_put_within_it(tmp_path: Path):
    engine = lake(tmp_path, [event("u1", "i1", "rating", datetime(2026, 3, 30, 12, tzinfo=UTC), 1.0, 1.0, value=5)])
    build_all(engine)
    same_day = [r for n in JOB_NAMES for r in run_job(n, engine, now=NOW + timedelta(seconds=30), settle=timedelta(0))]
    assert {r.skipped for r in same_day} == {"no new data"}
    next_day = {r.table: r for n in JOB_NAMES
                for r in run_job(n, engine, now=NOW + timedelta(days=1), settle=timedelta(0))}
    assert next_day["interactions"].skipped == "no new data"
    assert next_day["user_feedback"].partitions == ["2026-04-01"]  # decay moved on: a new snapshot
    mass = {r["as_of_date"]: r["confidence_mass"] for r in table(tmp_path, "user_feedback")}
    assert mass["2026-04-01"] == pytest.approx(mass[AS_OF] * 0.5 ** (1 / HALF_LIFE_DAYS))


def test_the_sql_zip_that_cdk_deploys_is_read_like_the_folder():
    import io
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in SQL_FILES:
            zipped.write(path, path.name)
    files = build_tables.ZipSqlFiles(archive.getvalue())
    assert all(files.read(p.name) == build_tables.DirectorySqlFiles().read(p.name) for p in SQL_FILES)
