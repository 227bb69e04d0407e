"""Document language identification with lingua, restricted to a few languages.

A detector over every language lingua knows is slow to build and confuses closely related
languages on short texts; the engine only needs to tell its own prompt languages (English,
Chinese) from the few others that commonly turn up in scraped writing. The detector is
built once per process and cached.
"""

from __future__ import annotations

from functools import lru_cache

from reer_assets.core.language import prompt_language

# ISO 639-1 codes the detector chooses among; the engine's prompt sets cover en and zh.
LANGUAGES: tuple[str, ...] = ("en", "zh", "fr", "de", "es", "ja")
SAMPLE_CHARS = 1500  # a long document is identified by its opening; lingua's cost grows with length


@lru_cache(maxsize=1)
def _detector():
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    languages = [Language.from_iso_code_639_1(IsoCode639_1.from_str(code)) for code in LANGUAGES]
    return LanguageDetectorBuilder.from_languages(*languages).build()


def identify_language(text: str) -> str | None:
    """The ISO 639-1 code lingua picks for ``text`` (one of :data:`LANGUAGES`), or None when it cannot tell."""
    sample = text[:SAMPLE_CHARS]
    if not any(ch.isalpha() for ch in sample):
        return None
    found = _detector().detect_language_of(sample)
    return found.iso_code_639_1.name.lower() if found is not None else None


def detect_language(text: str) -> str:
    """lingua's verdict; where it has none (too little text), the CJK rule of the prompt sets."""
    return identify_language(text) or prompt_language(text)
