-- Lineage of every row the engine makes: document -> query -> trajectory -> steps/candidates
-- -> dataset row -> dataset version -> checkpoint -> benchmark result.
-- Ids are content + config hashes, so re-materialising the same inputs writes the same ids.
-- Applied idempotently at every connection (CREATE ... IF NOT EXISTS).

CREATE TABLE IF NOT EXISTS documents (
    id VARCHAR PRIMARY KEY,
    domain VARCHAR NOT NULL,
    source_uri VARCHAR NOT NULL,        -- file URI plus the record's place: #L3, #index=7, #row=2, #L10-L42
    language VARCHAR,
    title VARCHAR,
    text_hash VARCHAR,
    given_request VARCHAR,
    license VARCHAR,
    status VARCHAR NOT NULL,            -- accepted | rejected
    reject_reasons VARCHAR[],
    config_hash VARCHAR,
    run_id VARCHAR,
    partition VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp,
    reader VARCHAR,                     -- bundled | inbox | pairs | book | reer | generic
    source_id VARCHAR,                  -- the record's own id in its source (post id, REER index, line range)
    attribution VARCHAR,
    source_meta VARCHAR,                -- reader-specific metadata as JSON (tags, score, chapter, ...)
    duplicate_of VARCHAR                -- the kept document this one duplicates (exact or near)
);
-- databases made before the source readers gained these columns
ALTER TABLE documents ADD COLUMN IF NOT EXISTS reader VARCHAR;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS source_id VARCHAR;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS attribution VARCHAR;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS source_meta VARCHAR;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS duplicate_of VARCHAR;

CREATE TABLE IF NOT EXISTS queries (
    id VARCHAR PRIMARY KEY,
    document_id VARCHAR NOT NULL,
    query VARCHAR,
    synthesized BOOLEAN NOT NULL,
    model VARCHAR,
    raw_output VARCHAR,
    status VARCHAR NOT NULL,
    reject_reasons VARCHAR[],
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    config_hash VARCHAR,
    run_id VARCHAR,
    partition VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS trajectories (
    id VARCHAR PRIMARY KEY,
    query_id VARCHAR NOT NULL,
    document_id VARCHAR NOT NULL,
    rollout INTEGER NOT NULL,
    status VARCHAR NOT NULL,            -- ok | rejected | failed
    reject_reason VARCHAR,
    initial_score DOUBLE,
    final_score DOUBLE,
    initial_thinking VARCHAR,
    final_thinking VARCHAR,
    num_steps INTEGER,
    generator_model VARCHAR,
    scorer_model VARCHAR,
    prompt_set_version VARCHAR,
    seed BIGINT,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    scored_tokens BIGINT,
    generator_calls BIGINT,
    scorer_calls BIGINT,
    config_hash VARCHAR,
    trace_json VARCHAR,
    run_id VARCHAR,
    partition VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS search_steps (
    id VARCHAR PRIMARY KEY,
    trajectory_id VARCHAR NOT NULL,
    step_index INTEGER NOT NULL,
    segment VARCHAR,
    choice INTEGER,
    best_score DOUBLE,
    run_id VARCHAR,
    partition VARCHAR
);

CREATE TABLE IF NOT EXISTS candidates (
    id VARCHAR PRIMARY KEY,
    step_id VARCHAR NOT NULL,
    trajectory_id VARCHAR NOT NULL,
    candidate_index INTEGER NOT NULL,
    text VARCHAR,
    raw VARCHAR,
    score DOUBLE,
    completion_tokens BIGINT,
    skipped_reason VARCHAR,
    accepted BOOLEAN,
    run_id VARCHAR,
    partition VARCHAR
);

CREATE TABLE IF NOT EXISTS dataset_rows (
    id VARCHAR PRIMARY KEY,
    trajectory_id VARCHAR NOT NULL,
    query_id VARCHAR NOT NULL,
    document_id VARCHAR NOT NULL,
    domain VARCHAR NOT NULL,
    status VARCHAR NOT NULL,            -- accepted | rejected
    reject_reasons VARCHAR[],
    config_hash VARCHAR,
    run_id VARCHAR,
    partition VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS datasets (
    id VARCHAR PRIMARY KEY,             -- a dataset version: hash of its rows and format
    name VARCHAR NOT NULL,
    row_count BIGINT,
    parquet_path VARCHAR,
    jsonl_path VARCHAR,
    card_path VARCHAR,
    run_id VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS dataset_members (
    dataset_id VARCHAR NOT NULL,
    dataset_row_id VARCHAR NOT NULL,
    PRIMARY KEY (dataset_id, dataset_row_id)
);

CREATE TABLE IF NOT EXISTS checkpoints (
    id VARCHAR PRIMARY KEY,
    dataset_id VARCHAR,
    base_model VARCHAR NOT NULL,
    path VARCHAR,
    train_loss DOUBLE,
    train_examples BIGINT,
    config_json VARCHAR,
    run_id VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS benchmark_results (
    id VARCHAR PRIMARY KEY,
    checkpoint_id VARCHAR,              -- NULL for the base model
    model_label VARCHAR NOT NULL,       -- base | finetuned
    model VARCHAR NOT NULL,
    benchmark VARCHAR,                  -- bundled | a benchmarks.yaml name (writingbench, ...)
    prompt_id VARCHAR NOT NULL,
    domain VARCHAR NOT NULL,
    language VARCHAR,
    required_length INTEGER,
    output_length INTEGER,
    length_score DOUBLE,
    format_ok BOOLEAN,
    heldout_nll DOUBLE,                 -- clipped NLL of the held-out reference given no thinking
    heldout_nll_own_thinking DOUBLE,    -- ... given the model's own generated thinking
    output VARCHAR,
    run_id VARCHAR,
    partition VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);
ALTER TABLE benchmark_results ADD COLUMN IF NOT EXISTS heldout_nll_own_thinking DOUBLE;
ALTER TABLE benchmark_results ADD COLUMN IF NOT EXISTS partition VARCHAR;
ALTER TABLE benchmark_results ADD COLUMN IF NOT EXISTS benchmark VARCHAR;

-- every judge score, with what produced it (model, prompt version, sampling, date) and the text judged
CREATE TABLE IF NOT EXISTS judge_scores (
    id VARCHAR PRIMARY KEY,
    model_label VARCHAR,                -- base | finetuned | <a>_vs_<b> for pairwise verdicts
    benchmark VARCHAR,
    item_id VARCHAR,
    mode VARCHAR,                       -- rubric | quality | checklist | pairwise
    criterion VARCHAR,
    score DOUBLE,                       -- NULL for a failed judgment (never a default) and for pairwise rows
    reason VARCHAR,
    verdict VARCHAR,                    -- pairwise: A | B | tie, as shown
    pair_winner VARCHAR,                -- pairwise: a | b | tie after both orders
    status VARCHAR,                     -- ok | judge_failed
    failure VARCHAR,
    judged_text VARCHAR,
    judge_model VARCHAR,
    prompt_version VARCHAR,
    sampling VARCHAR,
    judged_at VARCHAR,
    attempts BIGINT,
    judgment_key VARCHAR,
    run_id VARCHAR,
    partition VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);

CREATE OR REPLACE VIEW row_provenance AS
SELECT
    r.id AS dataset_row_id,
    r.status AS row_status,
    r.reject_reasons,
    r.domain,
    t.id AS trajectory_id,
    t.initial_score,
    t.final_score,
    q.id AS query_id,
    q.query,
    q.synthesized,
    d.id AS document_id,
    d.source_uri,
    d.title,
    r.run_id AS dataset_run_id,
    t.run_id AS trajectory_run_id,
    q.run_id AS query_run_id,
    d.run_id AS document_run_id
FROM dataset_rows r
LEFT JOIN trajectories t ON t.id = r.trajectory_id
LEFT JOIN queries q ON q.id = r.query_id
LEFT JOIN documents d ON d.id = r.document_id;
