-- Interaction layer: one row per clean event with its metadata, partitioned by event date.
-- Rebuilds the curated partitions in $partitions. request_id, position and propensity (schema 1.2) are
-- null in rows of older clients.
SELECT
    event_id,
    user_id,
    item_id,
    event_type,
    feedback_kind,
    value,
    feedback_score,
    confidence,
    event_time,
    date_trunc('hour', event_time) AS event_hour,
    CAST(hour(event_time) AS integer) AS hour_of_day,
    CAST(day_of_week(event_time) AS integer) AS day_of_week,
    received_at,
    processed_at,
    CAST(date_diff('millisecond', event_time, received_at) AS double) / 1000 AS arrival_delay_seconds,
    session_id,
    device,
    device_code,
    page,
    page_code,
    experiment,
    variant,
    segment,
    segment_code,
    country,
    category,
    price,
    CASE WHEN event_type = 'purchase' THEN value * price END AS revenue,
    coalesce(personalized, true) AS personalized,
    request_id,
    position,
    propensity,
    event_date
FROM feedback_events
WHERE event_date IN ($partitions)
