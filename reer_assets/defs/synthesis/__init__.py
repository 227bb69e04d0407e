"""synthesis stage assets."""
