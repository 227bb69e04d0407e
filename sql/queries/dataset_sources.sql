-- What went into a dataset version: the models of every role and the source licences, with row counts.
SELECT
    t.generator_model, t.scorer_model, q.model AS synthesis_model, d.license, d.domain,
    count(*) AS rows,
    list(DISTINCT r.run_id) AS curation_runs,
    list(DISTINCT t.run_id) AS search_runs
FROM dataset_members m
JOIN dataset_rows r ON r.id = m.dataset_row_id
LEFT JOIN trajectories t ON t.id = r.trajectory_id
LEFT JOIN queries q ON q.id = r.query_id
LEFT JOIN documents d ON d.id = r.document_id
WHERE m.dataset_id = ?
GROUP BY ALL
ORDER BY rows DESC;
