"""What the adjust function reads from the lake, as Trino SQL: Athena runs it in AWS, DuckDB (through the
table jobs' sqlglot transpiler) on the stand-in. Every query prunes on the date partition first.

Values spliced into the SQL are the rule file's names (validated against a strict pattern) and
timestamps this module formats; `_literal` quotes them anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from feedbackloop.adjust.rules import ALL, ENGAGEMENT_METRICS, Observation, Scope
from feedbackloop.schemas.registry import event_type_rules

PREFERENCE_LOOKBACK = timedelta(days=7)  # a segment's preferred categories: its positive feedback this far back
NO_SEGMENT = "none"  # the engagement layer's value for events without one


@dataclass(frozen=True)
class LakeTableNames:
    """The Glue names of the tables read here. Callers pass `feedbackloop.lake`'s names (CDK through the
    function's settings); this module stays free of pyarrow, which the adjust function does not ship."""

    events: str  # the cleaner's curated events
    interactions: str
    engagement: str
    user_daily: str


class QueryRunner(Protocol):
    def rows(self, sql: str) -> list[tuple[Any, ...]]: ...


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _timestamp(at: datetime) -> str:
    return f"TIMESTAMP '{at.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def _dates(column: str, start: datetime, end: datetime) -> str:
    return f"{column} BETWEEN '{start:%Y-%m-%d}' AND '{end:%Y-%m-%d}'"


def scope_key(scope: Scope, value: str | None = None) -> str:
    """How a decision names the scope it was evaluated in."""
    if scope.kind == "global":
        return "global"
    if scope.kind == "segment":
        return f"segment={value}"
    return f"variant={scope.experiment}/{value}"


class LakeQueries:
    def __init__(self, runner: QueryRunner, tables: LakeTableNames) -> None:
        self._runner = runner
        self._tables = tables

    def engagement(self, metric: str, scope: Scope, start: datetime, end: datetime) -> dict[str, Observation]:
        """The metric over the hourly rows with period_start in [start, end), per scope value."""
        spec = ENGAGEMENT_METRICS[metric]
        value = f"sum({spec.column} * {spec.weight}), sum({spec.weight})" if spec.weight else \
            f"sum({spec.column}), 1"
        key, filters = {
            "global": ("'global'", ["scope = 'global'"]),
            "segment": ("segment", ["scope = 'segment'", f"segment <> '{NO_SEGMENT}'"]),
            "variant": ("variant", ["scope = 'variant'", f"experiment = {_literal(scope.experiment or '')}"]),
        }[scope.kind]
        if scope.kind == "segment" and scope.segment != ALL:
            filters.append(f"segment = {_literal(scope.segment)}")
        if scope.kind == "variant" and scope.variant != ALL:
            filters.append(f"variant = {_literal(scope.variant)}")
        sql = (f"SELECT {key} AS scope_value, {value}, sum({spec.samples})\n"
               f"FROM {self._tables.engagement}\n"
               f"WHERE {_dates('event_date', start, end)} AND grain = 'hour'\n"
               f"  AND period_start >= {_timestamp(start)} AND period_start < {_timestamp(end)}\n"
               f"  AND {spec.column} IS NOT NULL AND " + " AND ".join(filters) + "\n"
               "GROUP BY 1")
        observations = {}
        for scope_value, total, weight, samples in self._runner.rows(sql):
            measured = None if total is None or not weight else float(total) / float(weight)
            observations[scope_key(scope, scope_value)] = Observation(measured, int(samples or 0))
        return observations

    def preferred_categories(self, segment: str, end: datetime, limit: int = 3) -> list[str]:
        """The segment's categories with the most confidence-weighted positive feedback lately."""
        start = end - PREFERENCE_LOOKBACK
        sql = (f"SELECT category FROM {self._tables.interactions}\n"
               f"WHERE {_dates('event_date', start, end)} AND event_time >= {_timestamp(start)}\n"
               f"  AND event_time < {_timestamp(end)} AND segment = {_literal(segment)}\n"
               f"  AND category IS NOT NULL AND feedback_score > 0\n"
               f"GROUP BY category ORDER BY sum(confidence * feedback_score) DESC, category LIMIT {int(limit)}")
        return [row[0] for row in self._runner.rows(sql)]

    def feedback_scores(self, after: datetime, until: datetime) -> tuple[list[float], datetime | None]:
        """Clean events' feedback scores processed in (after, until], in processing order, and the last
        processing time read (the next run's `after`). Exposures (views) carry no feedback: left out."""
        exposures = ", ".join(_literal(t) for t, rule in sorted(event_type_rules().items()) if rule.polarity == 0)
        sql = (f"SELECT feedback_score, processed_at FROM {self._tables.events}\n"
               f"WHERE {_dates('event_date', after - timedelta(days=31), until)}\n"
               f"  AND processed_at > {_timestamp(after)} AND processed_at <= {_timestamp(until)}\n"
               f"  AND feedback_score IS NOT NULL AND event_type NOT IN ({exposures})\n"
               f"ORDER BY processed_at, event_id")
        rows = self._runner.rows(sql)
        return [float(r[0]) for r in rows], (_as_datetime(rows[-1][1]) if rows else None)

    def segment_hours(self, after: datetime, until: datetime) -> list[tuple[datetime, str, int, int]]:
        """Each segment's complete hours with period_start in (after, until - 1h]: (hour, segment,
        impressions, clicks), oldest first; everyone's as segment '*'."""
        last = until - timedelta(hours=1)
        sql = (f"SELECT period_start, segment, sum(impressions), sum(clicks) FROM {self._tables.engagement}\n"
               f"WHERE {_dates('event_date', after, until)} AND grain = 'hour'\n"
               f"  AND (scope = 'segment' AND segment <> '{NO_SEGMENT}' OR scope = 'global')\n"
               f"  AND period_start > {_timestamp(after)} AND period_start <= {_timestamp(last)}\n"
               f"GROUP BY 1, 2 ORDER BY 1, 2")
        return [(_as_datetime(p), str(s), int(i or 0), int(c or 0)) for p, s, i, c in self._runner.rows(sql)]


    def hour_effects(self, hour: datetime) -> list[tuple[str, str, dict[str, float | None]]]:
        """The engagement layer's hour starting at `hour`: (segment, variant, metrics) for everyone
        ('*', '*'), each segment (s, '*') and each experiment arm ('*', 'experiment/variant')."""
        columns = ("ctr", "conversion_rate", "avg_session_seconds", "bounce_rate", "rating_mean", "nps")
        sql = (f"SELECT scope, segment, experiment, variant, {', '.join(columns)} FROM {self._tables.engagement}\n"
               f"WHERE {_dates('event_date', hour, hour)} AND grain = 'hour'\n"
               f"  AND period_start = {_timestamp(hour)} AND scope IN ('global', 'segment', 'variant')\n"
               f"  AND segment <> '{NO_SEGMENT}' AND variant <> '{NO_SEGMENT}'")
        found = []
        for scope, segment, experiment, variant, *values in self._runner.rows(sql):
            arm = f"{experiment}/{variant}" if scope == "variant" else ALL
            found.append((segment if scope == "segment" else ALL, arm,
                          {c: None if v is None else float(v) for c, v in zip(columns, values, strict=True)}))
        return found

    def arm_users(self, experiment: str, start: datetime, end: datetime) -> dict[str, int]:
        """Distinct users exposed in each arm of the experiment in [start, end)."""
        sql = (f"SELECT variant, count(DISTINCT user_id) FROM {self._tables.interactions}\n"
               f"WHERE {_dates('event_date', start, end)} AND event_time >= {_timestamp(start)}\n"
               f"  AND event_time < {_timestamp(end)} AND experiment = {_literal(experiment)}\n"
               f"  AND variant IS NOT NULL GROUP BY 1")
        return {str(v): int(n) for v, n in self._runner.rows(sql)}

    def signal_quality(self, day: datetime, horizon_days: int) -> tuple[int, float | None, float | None]:
        """Users who gave explicit feedback on `day`: how many, and the correlation of their mean explicit
        score that day with returning, and with buying, in the `horizon_days` after (user_daily)."""
        first, last = day + timedelta(days=1), day + timedelta(days=horizon_days)
        sql = (f"WITH cohort AS (\n"
               f"  SELECT user_id, explicit_score_sum / explicit_events AS feedback FROM {self._tables.user_daily}\n"
               f"  WHERE event_date = '{day:%Y-%m-%d}' AND explicit_events > 0),\n"
               f"later AS (\n"
               f"  SELECT user_id, 1.0 AS returned, max(CASE WHEN purchases > 0 THEN 1.0 ELSE 0.0 END) AS converted\n"
               f"  FROM {self._tables.user_daily}\n"
               f"  WHERE event_date BETWEEN '{first:%Y-%m-%d}' AND '{last:%Y-%m-%d}' GROUP BY user_id)\n"
               f"SELECT count(*), corr(c.feedback, coalesce(l.returned, 0.0)),\n"
               f"  corr(c.feedback, coalesce(l.converted, 0.0))\n"
               f"FROM cohort AS c LEFT JOIN later AS l ON c.user_id = l.user_id")
        ((users, returned, converted),) = self._runner.rows(sql)
        return int(users or 0), _finite(returned), _finite(converted)


def _finite(value: Any) -> float | None:
    return None if value is None or value != value else float(value)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace(" UTC", "")).replace(tzinfo=UTC)

