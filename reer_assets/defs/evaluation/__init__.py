"""evaluation stage assets."""
