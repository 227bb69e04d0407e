-- Accepted rows of a dataset version whose chain back to a document is broken (should be empty).
SELECT m.dataset_row_id
FROM dataset_members m
LEFT JOIN row_provenance p ON p.dataset_row_id = m.dataset_row_id
WHERE m.dataset_id = ?
  AND (p.trajectory_id IS NULL OR p.query_id IS NULL OR p.document_id IS NULL OR p.source_uri IS NULL);
