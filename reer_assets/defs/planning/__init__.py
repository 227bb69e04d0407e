"""planning assets: what a domain's run will cost, before any model is called."""
