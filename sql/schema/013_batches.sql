-- Batch mode (docs/scale.md, "Batch mode"): a role's requests sent as one OpenAI batch file, to a
-- provider's Batches API or to vLLM's run-batch, instead of live calls. One row per submission, written
-- as soon as its input file is uploaded and again at each change of status, so a rerun or a resumed run
-- finds the batch it already paid for and polls it instead of submitting again; and one row per request
-- and submission once the submission's results are collected (the request's outcome and its tokens).
-- Written by the workloads themselves (reer_assets/backends/batch.py), not by the asset after them.
-- Applied idempotently at every connection.

CREATE TABLE IF NOT EXISTS batches (
    id VARCHAR PRIMARY KEY,             -- our submission id: a hash of the request ids and the generation
    batch_id VARCHAR,                   -- the provider's batch id (batch_...); for run-batch, local-<id>; NULL until created
    scope VARCHAR,                      -- what submitted it: synthesis, judge, initial_rollouts, ...
    role VARCHAR,                       -- generator | judge
    transport VARCHAR NOT NULL,         -- openai (Files + Batches API) | vllm-run-batch
    target VARCHAR,                     -- the server's base URL (no user info) or the local model path
    endpoint VARCHAR,                   -- /v1/chat/completions | /v1/completions
    generation BIGINT,                  -- 1 + the highest generation of earlier submissions of any of its requests
    custom_ids VARCHAR[],               -- the request ids (content hashes of target, url and body) it holds
    request_count BIGINT,
    input_file_id VARCHAR,              -- the uploaded file (or the local input path)
    output_file_id VARCHAR,
    error_file_id VARCHAR,
    status VARCHAR NOT NULL,            -- uploaded | validating | in_progress | finalizing | completed | failed | expired | cancelling | cancelled
    completed_count BIGINT,             -- the provider's request_counts, as last polled
    failed_count BIGINT,
    errors VARCHAR,                     -- batch-level errors (a failed validation), as JSON
    collected BOOLEAN,                  -- its results were read back and each request's outcome recorded
    run_id VARCHAR,
    partition VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS batch_requests (
    id VARCHAR PRIMARY KEY,             -- <submission id>:<custom_id>
    submission_id VARCHAR NOT NULL,     -- batches.id
    batch_id VARCHAR,
    custom_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,            -- ok | failed | missing (not in the results: an expired or failed batch)
    error_class VARCHAR,                -- http_<status> | batch_expired | ... as live calls record theirs
    error VARCHAR,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    run_id VARCHAR,
    partition VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);
