-- Acceptance rate per step index: the share of steps whose best candidate beat the best score so far.
SELECT d.domain, s.step_index,
       count(*) AS steps,
       count(*) FILTER (WHERE s.choice IS NOT NULL) AS accepted,
       round(count(*) FILTER (WHERE s.choice IS NOT NULL) / count(*), 3) AS acceptance_rate
FROM search_steps s
JOIN trajectories t ON t.id = s.trajectory_id
JOIN documents d ON d.id = t.document_id
GROUP BY ALL
ORDER BY d.domain, s.step_index;
