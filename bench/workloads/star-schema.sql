-- A star-schema dashboard: the fact table events joined to its dimension tables advertisers
-- (advertiser_id, name, vertical) and publishers (publisher_id, name, category) on their
-- declared keys, grouped by the dimensions' attributes, as a BI tool's virtual dataset or
-- relationship sends it. Every join here can be answered from a demo rollup (the fact side
-- aggregated by the join keys first); see bench/star_schema.py.
-- Data: tierflight generate --rows N --start 2024-01-01 --days 366, with TIERFLIGHT_TIERS__NOW=2025-01-01
-- (the demo writes both dimension tables from the catalogue the events come from).

-- name: spend_by_vertical_per_week
SELECT e.week, a.vertical, sum(e.bid_price) AS spend
FROM events e JOIN advertisers a ON e.advertiser_id = a.advertiser_id
WHERE e.type = 'impression' AND e.day BETWEEN DATE '2024-10-07' AND DATE '2024-12-29'
GROUP BY 1, 2 ORDER BY 1, 3 DESC;

-- name: top_publishers_by_category
SELECT p.category, p.name, count(*) AS impressions, sum(e.bid_price) AS spend
FROM events e JOIN publishers p USING (publisher_id)
WHERE e.type = 'impression'
GROUP BY p.category, p.name ORDER BY spend DESC LIMIT 20;

-- name: ctr_inputs_by_vertical
-- Clicks and impressions per vertical (the chart divides): a conditional count inside a join
-- (count(*) FILTER (WHERE ...)) is answered from the raw tiers, see star-schema-raw.sql.
SELECT a.vertical, e.type, count(*) AS events
FROM events e JOIN advertisers a USING (advertiser_id)
WHERE e.type IN ('impression', 'click')
GROUP BY ALL ORDER BY 1, 2;

-- name: purchases_by_vertical_by_month
SELECT date_trunc('month', e.ts) AS month, a.vertical,
       count(*) AS purchases, sum(e.bid_price) AS spend
FROM events e JOIN advertisers a USING (advertiser_id)
WHERE e.type = 'purchase' AND e.ts >= TIMESTAMP '2024-03-01' AND e.ts < TIMESTAMP '2024-09-01'
GROUP BY ALL ORDER BY 1, 3 DESC;

-- name: events_per_vertical_per_day
SELECT e.day, a.vertical, count(*) AS events
FROM events e JOIN advertisers a ON a.advertiser_id = e.advertiser_id
WHERE e.day BETWEEN DATE '2024-12-16' AND DATE '2024-12-22'
GROUP BY 1, 2 ORDER BY 1, 2;

-- name: purchase_value_by_category_left_join
SELECT coalesce(p.category, '(unknown)') AS category, count(*) AS purchases,
       sum(e.total_price) AS value, avg(e.total_price) AS avg_value
FROM events e LEFT JOIN publishers p USING (publisher_id)
WHERE e.type = 'purchase'
GROUP BY 1 ORDER BY value DESC;

-- name: spend_by_vertical_comma_join
SELECT a.vertical, count(*) AS impressions, sum(e.bid_price) AS spend, avg(e.bid_price) AS avg_bid
FROM events e, advertisers a
WHERE e.advertiser_id = a.advertiser_id AND e.type = 'impression'
GROUP BY a.vertical ORDER BY spend DESC;

-- name: top_advertisers_in_vertical
SELECT a.name, count(*) AS clicks
FROM events e JOIN advertisers a USING (advertiser_id)
WHERE a.vertical = 'Retail' AND e.type = 'click'
GROUP BY a.name ORDER BY clicks DESC, a.name LIMIT 10;

-- name: active_advertisers_by_vertical_left_join
SELECT a.vertical, count(DISTINCT e.advertiser_id) AS advertisers, count(*) AS clicks
FROM events e LEFT JOIN advertisers a ON e.advertiser_id = a.advertiser_id
WHERE e.type = 'click'
GROUP BY a.vertical ORDER BY clicks DESC;
