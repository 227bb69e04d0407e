"""lineage store assets: compaction of fragments-mode lineage."""
