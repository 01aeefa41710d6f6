-- Star-schema statements that the raw tiers answer, reported apart from star-schema.sql
-- (bench/star_schema.py): EXPLAIN ROUTE says why, and the answers are exact all the same.
-- Data: tierflight generate --rows N --start 2024-01-01 --days 366, with TIERFLIGHT_TIERS__NOW=2025-01-01

-- name: every_advertiser_with_its_clicks
-- The dimension is the preserved side: advertisers without a click are kept (count 0), rows
-- no fact-side aggregate can produce. Raw by design.
SELECT a.vertical, a.name, count(e.auction_id) AS clicks
FROM advertisers a LEFT JOIN events e ON e.advertiser_id = a.advertiser_id AND e.type = 'click'
GROUP BY 1, 2 ORDER BY clicks, a.name LIMIT 20;

-- name: ctr_by_vertical_filter_aggregates
-- CTR computed in SQL with conditional counts: the join rule does not split FILTER aggregates
-- yet (a rollup by advertiser_id and type holds what it needs).
SELECT a.vertical,
       count(*) FILTER (WHERE e.type = 'click') * 1.0
         / nullif(count(*) FILTER (WHERE e.type = 'impression'), 0) AS ctr
FROM events e JOIN advertisers a USING (advertiser_id)
GROUP BY 1 ORDER BY ctr DESC;
