-- Their thinking beside ours, per searched item whose source published a thinking (queries.published_thinking):
-- the initial score z0, the final score z*, the published thinking's score under the same scorer, prompt and
-- objective (NULL for an official run's import, which does not score it), whether the search beat it
-- (z* < published, lower is better; NULL without a published score) and by how much (published − z*).
SELECT
    d.domain, t.query_id, t.id AS trajectory_id, t.rollout,
    t.initial_score, t.final_score, t.published_score,
    t.final_score < t.published_score AS search_beat_published,
    round(t.published_score - t.final_score, 6) AS margin
FROM trajectories t
JOIN queries q ON q.id = t.query_id
JOIN documents d ON d.id = t.document_id
WHERE t.status = 'ok' AND q.published_thinking IS NOT NULL
ORDER BY d.domain, t.query_id, t.rollout;
