-- What each paired difference of an experiment could have detected (docs/experiments.md, "Power"):
-- the minimum detectable effect at 80% power and alpha 0.05 (analytic, from the per-item differences'
-- standard deviation), and the prompts a difference as large as the observed one would need.
-- NULL for means, and below two items. Added to databases made before these columns existed.
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS mde DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS n_needed BIGINT;
