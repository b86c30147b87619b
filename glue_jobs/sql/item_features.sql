-- Feature layer, item snapshot as of the end of $as_of_date: popularity (all time and the last 30
-- days), mean composite score, CTR, purchase and cancel (return) rate, ratings.
WITH signals AS (
    SELECT
        item_id,
        max(category) AS category,
        count(DISTINCT user_id) AS users,
        count(DISTINCT CASE WHEN CAST(event_date AS date) > date_add('day', -30, DATE '$as_of_date') THEN user_id END)
            AS users_30d,
        sum(events) AS events,
        sum(views) AS views,
        sum(clicks) AS clicks,
        sum(purchases) AS purchases,
        sum(cancels) AS cancels,
        sum(ratings) AS ratings,
        sum(rating_sum) AS rating_sum,
        min(first_seen_at) AS first_seen_at,
        max(last_seen_at) AS last_seen_at
    FROM feedback_daily
    WHERE event_date <= '$as_of_date'
    GROUP BY item_id
),
scores AS (
    SELECT
        item_id,
        avg(composite_score) AS mean_score,
        CAST(count_if(composite_score > 0) AS double) / count(*) AS positive_share,
        sum(confidence_mass) AS confidence_mass
    FROM user_feedback
    WHERE as_of_date = '$as_of_date'
    GROUP BY item_id
)
SELECT
    g.item_id,
    g.category,
    g.users,
    g.users_30d,
    row_number() OVER (ORDER BY g.users DESC, g.events DESC, g.item_id) AS popularity_rank,
    g.events,
    g.views,
    g.clicks,
    CAST(g.clicks AS double) / nullif(g.views, 0) AS ctr,
    g.purchases,
    g.cancels,
    CAST(g.cancels AS double) / nullif(g.purchases, 0) AS cancel_rate,
    g.ratings,
    g.rating_sum / nullif(g.ratings, 0) AS rating_mean,
    s.mean_score,
    s.positive_share,
    s.confidence_mass,
    g.first_seen_at,
    g.last_seen_at,
    '$as_of_date' AS as_of_date
FROM signals AS g
LEFT JOIN scores AS s ON s.item_id = g.item_id
