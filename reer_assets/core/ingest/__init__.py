"""Ingest: source readers (``readers/``), cleaning (``cleaning.py``) and the pipeline that joins them
(``pipeline.py``): one ``raw_documents`` row per input record, every reject kept with its reason."""
