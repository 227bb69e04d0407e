"""training stage assets."""
