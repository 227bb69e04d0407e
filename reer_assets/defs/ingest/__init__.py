"""ingest stage assets."""
