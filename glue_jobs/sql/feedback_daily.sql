-- Feedback layer, daily part: per user, item and event day, the signals the composite score combines;
-- events of users who had turned personalization off are left out (they never reach training).
-- Decayed sums are decayed to the end of the event day (exp(-lambda * seconds to midnight)), so the
-- snapshot only multiplies them by exp(-lambda * whole days): exact exponential decay without
-- rescanning events. Rebuilds the interaction partitions in $partitions.
WITH scored AS (
    SELECT
        *,
        exp(-ln(2) / ($half_life_days * 86400.0)
            * CAST(date_diff('millisecond', event_time,
                             date_add('day', 1, CAST(CAST(event_date AS date) AS timestamp))) AS double)
            / 1000) AS decay
    FROM interactions
    WHERE event_date IN ($partitions) AND personalized
)
SELECT
    user_id,
    item_id,
    max(category) AS category,
    max(price) AS price,
    count(*) AS events,
    count_if(feedback_kind = 'explicit') AS explicit_events,
    count_if(feedback_kind = 'implicit') AS implicit_events,
    count_if(event_type = 'view') AS views,
    count_if(event_type = 'click') AS clicks,
    count_if(event_type = 'purchase') AS purchases,
    count_if(event_type = 'cancel') AS cancels,
    count_if(event_type = 'rating') AS ratings,
    sum(CASE WHEN event_type = 'rating' THEN value END) AS rating_sum,
    sum(confidence * feedback_score * decay) AS decayed_score_sum,
    sum(confidence * decay) AS decayed_weight_sum,
    max(CASE WHEN feedback_score > 0 THEN event_time END) AS last_positive_at,
    max(CASE WHEN feedback_score < 0 THEN event_time END) AS last_negative_at,
    min(event_time) AS first_seen_at,
    max(event_time) AS last_seen_at,
    event_date
FROM scored
GROUP BY user_id, item_id, event_date
