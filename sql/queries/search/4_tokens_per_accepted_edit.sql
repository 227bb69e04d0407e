-- Tokens generated per accepted edit: every candidate's completion tokens over the edits that were kept.
SELECT d.domain,
       CAST(sum(c.completion_tokens) AS BIGINT) AS candidate_tokens,
       count(*) FILTER (WHERE c.accepted) AS accepted_edits,
       round(sum(c.completion_tokens) / nullif(count(*) FILTER (WHERE c.accepted), 0), 1) AS tokens_per_accepted_edit
FROM candidates c
JOIN trajectories t ON t.id = c.trajectory_id
JOIN documents d ON d.id = t.document_id
GROUP BY ALL
ORDER BY d.domain;
