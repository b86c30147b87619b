-- Feature layer, daily part: per user and event day, additive activity counts the user features sum.
-- Rebuilds the interaction partitions in $partitions.
SELECT
    user_id,
    count(*) AS events,
    count(DISTINCT session_id) AS sessions,
    count(DISTINCT item_id) AS items,
    count_if(feedback_kind = 'explicit') AS explicit_events,
    count_if(event_type = 'view') AS views,
    count_if(event_type = 'click') AS clicks,
    count_if(event_type = 'purchase') AS purchases,
    count_if(event_type = 'cancel') AS cancels,
    coalesce(sum(revenue), 0.0) AS revenue,
    count_if(event_type = 'rating') AS ratings,
    sum(CASE WHEN event_type = 'rating' THEN value END) AS rating_sum,
    count_if(event_type = 'nps') AS nps_responses,
    count_if(event_type = 'nps' AND value >= 9) AS nps_promoters,
    count_if(event_type = 'nps' AND value <= 6) AS nps_detractors,
    sum(CASE WHEN feedback_kind = 'explicit' THEN feedback_score END) AS explicit_score_sum,
    sum(CASE WHEN device = 'desktop' THEN 1 ELSE 0 END) AS desktop_events,
    sum(CASE WHEN device = 'mobile' THEN 1 ELSE 0 END) AS mobile_events,
    sum(CASE WHEN device = 'tablet' THEN 1 ELSE 0 END) AS tablet_events,
    sum(CASE WHEN device IN ('tv', 'other') THEN 1 ELSE 0 END) AS other_device_events,
    sum(CASE WHEN device IS NULL THEN 1 ELSE 0 END) AS unknown_device_events,
    min(event_time) AS first_event_at,
    max(event_time) AS last_event_at,
    max_by(country, event_time) AS country,
    max_by(segment, event_time) AS segment,
    max_by(segment_code, event_time) AS segment_code,
    event_date
FROM interactions
WHERE event_date IN ($partitions)
GROUP BY user_id, event_date
