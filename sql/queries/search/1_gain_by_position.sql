-- Score gain per segment position: how much each accepted rewrite lowered the best score, by where the
-- rewritten segment sits in the thinking (relative position in fifths: 0 = first segment).
WITH steps AS (
    SELECT d.domain, s.trajectory_id, s.step_index, s.choice, s.best_score,
           coalesce(lag(s.best_score) OVER (PARTITION BY s.trajectory_id ORDER BY s.step_index), t.initial_score) AS before,
           json_array_length(t.trace_json -> '$.initial_segments') AS segments
    FROM search_steps s
    JOIN trajectories t ON t.id = s.trajectory_id
    JOIN documents d ON d.id = t.document_id
)
SELECT domain,
       least(4, floor(5.0 * step_index / greatest(segments, 1)))::INTEGER AS position_fifth,
       count(*) AS steps,
       count(*) FILTER (WHERE choice IS NOT NULL) AS accepted,
       round(avg(before - best_score), 5) AS mean_gain,
       round(sum(before - best_score), 5) AS total_gain
FROM steps
GROUP BY ALL
ORDER BY domain, position_fifth;
