"""refinement stage assets."""
