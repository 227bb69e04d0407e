"""Source readers: each turns a file, folder or URL into :class:`SourceRecord` s (cleaning is
``lib/ingest.py``'s job). One module per reader; ``common`` holds what they share."""

from reer_assets.sources.common import SourceRecord

__all__ = ["SourceRecord"]
