-- Feedback layer, snapshot: the user_feedback entity. Per user and item as of the end of $as_of_date:
-- the composite score is the confidence-weighted mean of feedback scores, each decayed with a
-- half-life of $half_life_days days. Conflicts are reconciled by recency (ADR 0006): when the latest
-- signal is negative (a cancel or a low rating after a purchase or a high rating), the score is
-- capped at 0; a later positive signal restores the weighted mean.
WITH daily AS (
    SELECT
        *,
        exp(-ln(2) / $half_life_days * date_diff('day', CAST(event_date AS date), DATE '$as_of_date')) AS day_decay
    FROM feedback_daily
    WHERE event_date <= '$as_of_date'
),
pairs AS (
    SELECT
        user_id,
        item_id,
        max(category) AS category,
        sum(events) AS events,
        sum(explicit_events) AS explicit_events,
        sum(implicit_events) AS implicit_events,
        sum(views) AS views,
        sum(clicks) AS clicks,
        sum(purchases) AS purchases,
        sum(cancels) AS cancels,
        sum(ratings) AS ratings,
        sum(rating_sum) AS rating_sum,
        sum(decayed_score_sum * day_decay) AS score_mass,
        sum(decayed_weight_sum * day_decay) AS confidence_mass,
        max(last_positive_at) AS last_positive_at,
        max(last_negative_at) AS last_negative_at,
        min(first_seen_at) AS first_seen_at,
        max(last_seen_at) AS last_seen_at
    FROM daily
    GROUP BY user_id, item_id
)
SELECT
    user_id,
    item_id,
    category,
    CASE WHEN explicit_events > 0 THEN 'explicit' ELSE 'implicit' END AS feedback_type,
    CASE
        WHEN last_negative_at >= coalesce(last_positive_at, last_negative_at) THEN least(score_mass / confidence_mass, 0.0)
        ELSE score_mass / confidence_mass
    END AS composite_score,
    confidence_mass,
    last_positive_at IS NOT NULL AND last_negative_at IS NOT NULL AS conflicting,
    events,
    explicit_events,
    implicit_events,
    views,
    clicks,
    purchases,
    cancels,
    ratings,
    rating_sum / nullif(ratings, 0) AS rating_mean,
    first_seen_at,
    last_seen_at,
    '$as_of_date' AS as_of_date
FROM pairs
-- an exposure the user plausibly never examined has confidence 0 (ADR 0016): a pair with nothing else
-- is an impression, not feedback
WHERE confidence_mass > 0
