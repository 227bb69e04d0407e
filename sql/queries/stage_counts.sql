-- Rows per stage and domain, for the demo summary and quick health checks.
SELECT domain, 'documents' AS stage, count(*) AS rows, count(*) FILTER (WHERE status = 'accepted') AS accepted FROM documents GROUP BY domain
UNION ALL
SELECT d.domain, 'queries', count(*), count(*) FILTER (WHERE q.status = 'accepted') FROM queries q JOIN documents d ON d.id = q.document_id GROUP BY d.domain
UNION ALL
SELECT d.domain, 'trajectories', count(*), count(*) FILTER (WHERE t.status = 'ok') FROM trajectories t JOIN documents d ON d.id = t.document_id GROUP BY d.domain
UNION ALL
SELECT domain, 'dataset_rows', count(*), count(*) FILTER (WHERE status = 'accepted') FROM dataset_rows GROUP BY domain
ORDER BY domain, stage;
