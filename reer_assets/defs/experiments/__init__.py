"""experiments stage assets: the built-in ablations and their report."""
