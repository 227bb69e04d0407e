-- The chain behind one dataset row: row -> trajectory -> query -> document (one row).
SELECT
    p.dataset_row_id, p.row_status, p.reject_reasons, p.domain,
    p.trajectory_id, p.initial_score, p.final_score,
    p.query_id, p.synthesized, p.query,
    p.document_id, p.source_uri, p.title,
    d.language, d.license,
    t.generator_model, t.scorer_model, t.prompt_set_version, t.num_steps,
    p.dataset_run_id, p.trajectory_run_id, p.query_run_id, p.document_run_id
FROM row_provenance p
LEFT JOIN documents d ON d.id = p.document_id
LEFT JOIN trajectories t ON t.id = p.trajectory_id
WHERE p.dataset_row_id = ?;
