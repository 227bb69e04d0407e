"""Source readers: each turns a file, folder or URL into :class:`SourceRecord` s (cleaning is
``core/ingest/pipeline.py``'s job). One module per reader; ``common`` holds what they share."""

from reer_assets.core.ingest.readers.common import SourceRecord

__all__ = ["SourceRecord"]
