-- Engagement layer: per hour and per day of the event partitions in $partitions, by scope:
-- global, segment, experiment variant, and segment x variant (GROUPING SETS; '*' marks a rolled-up
-- dimension, 'none' a missing one). Event metrics count events in the period; session metrics count
-- the sessions that started in it (a session is a user's session_id within the day).
WITH events AS (
    SELECT
        *,
        coalesce(segment, 'none') AS segment_key,
        coalesce(experiment, 'none') AS experiment_key,
        coalesce(variant, 'none') AS variant_key,
        user_id || '/' || coalesce(session_id, '') AS session_key
    FROM interactions
    WHERE event_date IN ($partitions)
),
sessions AS (
    SELECT
        event_date,
        session_key,
        min(event_time) AS started_at,
        max(event_time) AS ended_at,
        count(*) AS events,
        count_if(event_type = 'purchase') > 0 AS converted,
        min_by(segment_key, event_time) AS segment_key,
        min_by(experiment_key, event_time) AS experiment_key,
        min_by(variant_key, event_time) AS variant_key
    FROM events
    GROUP BY event_date, session_key
),
grains AS (
    SELECT grain FROM (VALUES 'hour', 'day') AS g (grain)
),
event_metrics AS (
    SELECT
        e.event_date,
        g.grain,
        date_trunc(g.grain, e.event_time) AS period_start,
        e.segment_key,
        e.experiment_key,
        e.variant_key,
        grouping(e.segment_key, e.experiment_key, e.variant_key) AS rollup,
        count(*) AS events,
        count(DISTINCT e.user_id) AS users,
        count_if(e.event_type = 'view') AS impressions,
        count_if(e.event_type = 'click') AS clicks,
        count_if(e.event_type = 'purchase') AS purchases,
        count_if(e.event_type = 'cancel') AS cancels,
        coalesce(sum(e.revenue), 0.0) AS revenue,
        count_if(e.event_type = 'rating') AS ratings,
        avg(CASE WHEN e.event_type = 'rating' THEN e.value END) AS rating_mean,
        count_if(e.event_type = 'nps') AS nps_responses,
        100.0 * (count_if(e.event_type = 'nps' AND e.value >= 9) - count_if(e.event_type = 'nps' AND e.value <= 6))
            / nullif(count_if(e.event_type = 'nps'), 0) AS nps,
        avg(e.feedback_score) AS mean_feedback_score
    FROM events AS e
    CROSS JOIN grains AS g
    GROUP BY GROUPING SETS (
        (e.event_date, g.grain, date_trunc(g.grain, e.event_time), e.segment_key, e.experiment_key, e.variant_key),
        (e.event_date, g.grain, date_trunc(g.grain, e.event_time), e.segment_key),
        (e.event_date, g.grain, date_trunc(g.grain, e.event_time), e.experiment_key, e.variant_key),
        (e.event_date, g.grain, date_trunc(g.grain, e.event_time))
    )
),
session_metrics AS (
    SELECT
        s.event_date,
        g.grain,
        date_trunc(g.grain, s.started_at) AS period_start,
        s.segment_key,
        s.experiment_key,
        s.variant_key,
        grouping(s.segment_key, s.experiment_key, s.variant_key) AS rollup,
        count(*) AS sessions,
        avg(CAST(date_diff('millisecond', s.started_at, s.ended_at) AS double) / 1000) AS avg_session_seconds,
        CAST(count_if(s.events = 1) AS double) / count(*) AS bounce_rate,
        CAST(count_if(s.converted) AS double) / count(*) AS conversion_rate
    FROM sessions AS s
    CROSS JOIN grains AS g
    GROUP BY GROUPING SETS (
        (s.event_date, g.grain, date_trunc(g.grain, s.started_at), s.segment_key, s.experiment_key, s.variant_key),
        (s.event_date, g.grain, date_trunc(g.grain, s.started_at), s.segment_key),
        (s.event_date, g.grain, date_trunc(g.grain, s.started_at), s.experiment_key, s.variant_key),
        (s.event_date, g.grain, date_trunc(g.grain, s.started_at))
    )
)
SELECT
    e.grain,
    e.period_start,
    CASE e.rollup WHEN 0 THEN 'segment_variant' WHEN 3 THEN 'segment' WHEN 4 THEN 'variant' ELSE 'global' END AS scope,
    coalesce(e.segment_key, '*') AS segment,
    coalesce(e.experiment_key, '*') AS experiment,
    coalesce(e.variant_key, '*') AS variant,
    e.events,
    e.users,
    e.impressions,
    e.clicks,
    CAST(e.clicks AS double) / nullif(e.impressions, 0) AS ctr,
    e.purchases,
    e.cancels,
    e.revenue,
    coalesce(s.sessions, 0) AS sessions,
    s.avg_session_seconds,
    s.bounce_rate,
    s.conversion_rate,
    e.ratings,
    e.rating_mean,
    e.nps_responses,
    e.nps,
    e.mean_feedback_score,
    e.event_date
FROM event_metrics AS e
LEFT JOIN session_metrics AS s
    ON s.event_date = e.event_date AND s.grain = e.grain AND s.period_start = e.period_start AND s.rollup = e.rollup
    AND s.segment_key IS NOT DISTINCT FROM e.segment_key
    AND s.experiment_key IS NOT DISTINCT FROM e.experiment_key
    AND s.variant_key IS NOT DISTINCT FROM e.variant_key
