-- A dashboard whose filters change on every call: the rollup-routed shapes of
-- ../shared/workloads/adtech-examples.sql and adtech-dashboard.sql with their literals drawn
-- per call (another advertiser, another week, another country, another threshold or top-N),
-- so that almost no statement text repeats. Run with `tierflight loadtest --workload
-- bench/workloads/dashboard-varying.sql [--parameters literal|bind]`.
-- Data: tierflight generate --rows N --start 2024-01-01 --days 366, with TIERFLIGHT_TIERS__NOW=2025-01-01
--
-- Pools: values drawn per call, one per pool a statement names ({day} and {day+span} share the day).
-- vary: day = DATE '2024-01-01' .. DATE '2024-12-01'
-- vary: recent = DATE '2024-10-10' .. DATE '2024-12-20'
-- vary: span = 1..30
-- vary: short = 0..9
-- vary: country = (SELECT DISTINCT country FROM events)
-- vary: advertiser = (SELECT DISTINCT advertiser_id FROM events)
-- vary: threshold = 0..99999
-- vary: top = 5..500

-- name: revenue_per_day
SELECT day, SUM(bid_price) AS revenue FROM events
WHERE type = 'impression' AND day BETWEEN {day} AND {day+span}
GROUP BY day HAVING SUM(bid_price) >= {threshold} / 1000.0 ORDER BY day;

-- name: type_mix_one_country
SELECT type, COUNT(*) AS events, SUM(bid_price) AS spend FROM events
WHERE country = {country} AND day BETWEEN {day} AND {day+span}
GROUP BY type ORDER BY events DESC LIMIT {top};

-- name: avg_purchase_by_country
SELECT country, AVG(total_price) AS avg_value FROM events
WHERE type = 'purchase' AND day BETWEEN {day} AND {day+span}
GROUP BY country HAVING COUNT(*) >= {threshold} / 10000 ORDER BY avg_value DESC;

-- name: events_one_advertiser
SELECT type, COUNT(*) AS events FROM events
WHERE advertiser_id = {advertiser} AND day BETWEEN {recent} AND {recent+short}
GROUP BY type ORDER BY events DESC;

-- name: spend_per_minute_one_day
SELECT minute, SUM(bid_price) AS spend FROM events
WHERE type = 'impression' AND day = {recent}
GROUP BY minute ORDER BY minute ASC LIMIT {top};

-- name: daily_funnel_window
SELECT day, type, COUNT(*) AS events FROM events
WHERE day >= {day} AND day < {day+span}
GROUP BY 1, 2 HAVING COUNT(*) >= {threshold} / 1000 ORDER BY 1, 2;

-- name: hourly_revenue_by_country
SELECT hour, country, SUM(bid_price) AS revenue FROM events
WHERE type = 'impression' AND day = {day} AND country = {country}
GROUP BY ALL HAVING SUM(bid_price) >= {threshold} / 100000.0 ORDER BY hour;

-- name: ctr_by_advertiser
SELECT advertiser_id,
       COUNT(*) FILTER (WHERE type = 'click') * 1.0 / NULLIF(COUNT(*) FILTER (WHERE type = 'impression'), 0) AS ctr
FROM events
WHERE day BETWEEN {recent} AND {recent+span}
GROUP BY advertiser_id ORDER BY ctr DESC NULLS LAST, advertiser_id LIMIT {top};

-- name: weekly_purchase_value
SELECT week, SUM(total_price) AS value, MAX(total_price) AS biggest FROM events
WHERE type = 'purchase' AND day BETWEEN {day} AND {day+span}
GROUP BY week HAVING SUM(total_price) >= {threshold} / 100.0 ORDER BY week;

-- name: unique_users_per_country_approx
SELECT country, approx_count_distinct(user_id) AS users FROM events
WHERE day BETWEEN {day} AND {day+short}
GROUP BY country ORDER BY users DESC LIMIT {top};
