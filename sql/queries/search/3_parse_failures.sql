-- Candidate parse-failure rate: generated rewrites without a <refine> block, which are never scored.
SELECT d.domain,
       count(*) AS candidates,
       count(*) FILTER (WHERE c.text IS NULL) AS unparsed,
       round(count(*) FILTER (WHERE c.text IS NULL) / count(*), 3) AS parse_failure_rate
FROM candidates c
JOIN trajectories t ON t.id = c.trajectory_id
JOIN documents d ON d.id = t.document_id
GROUP BY ALL
ORDER BY d.domain;
