"""Model backends implementing the core Generator/Scorer protocols. No Dagster here."""
