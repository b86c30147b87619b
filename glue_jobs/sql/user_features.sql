-- Feature layer, user snapshot as of the end of $as_of_date: activity, recency and frequency,
-- monetary value, satisfaction and NPS, device mix (one-hot shares), encoded segment, and category
-- preferences (the top three categories by positive decayed feedback, from user_feedback).
WITH activity AS (
    SELECT
        user_id,
        sum(events) AS events,
        count(*) AS active_days,
        sum(sessions) AS sessions,
        sum(explicit_events) AS explicit_events,
        sum(views) AS views,
        sum(clicks) AS clicks,
        sum(purchases) AS purchases,
        sum(cancels) AS cancels,
        sum(revenue) AS revenue,
        sum(ratings) AS ratings,
        sum(rating_sum) AS rating_sum,
        sum(nps_responses) AS nps_responses,
        sum(nps_promoters) AS nps_promoters,
        sum(nps_detractors) AS nps_detractors,
        sum(explicit_score_sum) AS explicit_score_sum,
        sum(desktop_events) AS desktop_events,
        sum(mobile_events) AS mobile_events,
        sum(tablet_events) AS tablet_events,
        sum(other_device_events) AS other_device_events,
        sum(unknown_device_events) AS unknown_device_events,
        min(first_event_at) AS first_seen_at,
        max(last_event_at) AS last_seen_at,
        max_by(country, last_event_at) AS country,
        max_by(segment, last_event_at) AS segment,
        max_by(segment_code, last_event_at) AS segment_code
    FROM user_daily
    WHERE event_date <= '$as_of_date'
    GROUP BY user_id
),
affinity AS (
    SELECT user_id, category, sum(confidence_mass * composite_score) AS affinity
    FROM user_feedback
    WHERE as_of_date = '$as_of_date' AND composite_score > 0 AND category IS NOT NULL
    GROUP BY user_id, category
),
ranked AS (
    SELECT user_id, category, row_number() OVER (PARTITION BY user_id ORDER BY affinity DESC, category) AS rank
    FROM affinity
),
preferences AS (
    SELECT user_id, array_agg(category ORDER BY rank) AS top_categories
    FROM ranked
    WHERE rank <= 3
    GROUP BY user_id
),
scores AS (
    SELECT user_id, avg(composite_score) AS mean_item_score, count(*) AS items
    FROM user_feedback
    WHERE as_of_date = '$as_of_date'
    GROUP BY user_id
)
SELECT
    a.user_id,
    a.events,
    a.active_days,
    a.sessions,
    s.items,
    a.first_seen_at,
    a.last_seen_at,
    date_diff('day', CAST(a.last_seen_at AS date), DATE '$as_of_date') AS recency_days,
    date_diff('day', CAST(a.first_seen_at AS date), DATE '$as_of_date') + 1 AS tenure_days,
    CAST(a.events AS double) / a.active_days AS events_per_active_day,
    a.purchases,
    a.cancels,
    CAST(a.cancels AS double) / nullif(a.purchases, 0) AS cancel_rate,
    a.revenue,
    CAST(a.clicks AS double) / nullif(a.views, 0) AS ctr,
    CAST(a.explicit_events AS double) / a.events AS explicit_share,
    a.rating_sum / nullif(a.ratings, 0) AS rating_mean,
    100.0 * (a.nps_promoters - a.nps_detractors) / nullif(a.nps_responses, 0) AS nps,
    a.explicit_score_sum / nullif(a.explicit_events, 0) AS satisfaction,
    s.mean_item_score,
    CAST(a.desktop_events AS double) / a.events AS desktop_share,
    CAST(a.mobile_events AS double) / a.events AS mobile_share,
    CAST(a.tablet_events AS double) / a.events AS tablet_share,
    CAST(a.other_device_events AS double) / a.events AS other_device_share,
    CAST(a.unknown_device_events AS double) / a.events AS unknown_device_share,
    a.country,
    a.segment,
    a.segment_code,
    element_at(p.top_categories, 1) AS top_category,
    coalesce(p.top_categories, ARRAY[]) AS top_categories,
    '$as_of_date' AS as_of_date
FROM activity AS a
LEFT JOIN scores AS s ON s.user_id = a.user_id
LEFT JOIN preferences AS p ON p.user_id = a.user_id
