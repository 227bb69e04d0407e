-- Why each searched item stopped: below the threshold, at max_step, out of segments, or skipped because
-- the initial thinking was already below the threshold; as counts and shares of the domain's searched items.
WITH reasons AS (
    SELECT d.domain, t.trace_json ->> '$.stopped_reason' AS stopped_reason, count(*) AS items
    FROM trajectories t
    JOIN documents d ON d.id = t.document_id
    WHERE t.status = 'ok'
    GROUP BY ALL
)
SELECT domain, stopped_reason, items, round(items / sum(items) OVER (PARTITION BY domain), 3) AS share
FROM reasons
ORDER BY domain, items DESC;
