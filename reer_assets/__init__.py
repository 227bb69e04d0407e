"""reer-assets: REverse-Engineered Reasoning as a Dagster asset graph."""

__version__ = "0.1.0"
