"""curation stage assets."""
