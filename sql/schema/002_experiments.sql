-- The built-in ablations (docs/experiments.md): one row per experiment (what was compared, on which
-- models, seeds and budget) and one per reported number (a variant's mean, or a paired difference,
-- with its bootstrap interval). Written by experiment_report; domain 'all' is the overall row.
-- Applied idempotently at every connection, after 001_lineage.sql.

CREATE TABLE IF NOT EXISTS experiments (
    id VARCHAR PRIMARY KEY,             -- hash of the per-domain ablation_results it summarises and its settings
    domains VARCHAR[],
    variants VARCHAR[],                 -- searched, initial, no_thinking, random_edits[, no_reflection]
    seeds BIGINT[],
    base_model VARCHAR,
    budget_json VARCHAR,                -- kind (steps | tokens), limit, recipe, and the steps/tokens spent per variant
    models_json VARCHAR,                -- checkpoint id per domain, variant and seed
    config_json VARCHAR,                -- dataset, training and evaluation settings per domain
    run_id VARCHAR,
    partition VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS experiment_results (
    id VARCHAR PRIMARY KEY,
    experiment_id VARCHAR NOT NULL,
    variant VARCHAR NOT NULL,           -- a variant, or a paired difference 'searched-initial' (= searched − initial)
    domain VARCHAR NOT NULL,            -- a domain, or 'all'
    metric VARCHAR NOT NULL,            -- heldout_nll_own_thinking | heldout_nll | length_score | judge_score | format_ok
    kind VARCHAR,                       -- mean | difference
    value DOUBLE,                       -- NULL when the variant has no rows (n = 0)
    ci_low DOUBLE,                      -- 95% percentile bootstrap over items; NULL below two items
    ci_high DOUBLE,
    n BIGINT,                           -- items (an item's seeds count once)
    seeds INTEGER,                      -- seeds behind the value
    reading VARCHAR,                    -- differences: the one-line reading
    run_id VARCHAR,
    partition VARCHAR,
    recorded_at TIMESTAMP DEFAULT current_timestamp
);
