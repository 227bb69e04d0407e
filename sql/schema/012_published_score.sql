-- The score of a source's own published thinking under our scorer (issue 24: their thinking beside
-- ours): the same prompt, reference span and clipped-NLL objective as the initial thinking z0, scored
-- once by the search beside z0, so z0, z* and the published thinking can be compared item by item
-- (sql/queries/published_vs_search.sql). NULL when the query had no published thinking, when the
-- trajectory was rejected before z0 was scored, and for an official run's import (its files do not score
-- old_solution). Added to databases made before this column existed.
ALTER TABLE trajectories ADD COLUMN IF NOT EXISTS published_score DOUBLE;
