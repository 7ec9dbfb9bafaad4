"""String normalisation for FHIR string search."""

from __future__ import annotations

import unicodedata


def normalize(value: str) -> str:
    """Fold case and strip accents so that 'Élan' and 'elan' compare equal (the default
    string search and :contains). A value of combining marks only folds to ''."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold()


def exact(value: str) -> str:
    """The form `:exact` compares, of stored and searched values alike: Unicode NFC. FHIR
    names no normalization; NFC is the W3C character model's, so that a precomposed 'é'
    and 'e' plus U+0301 are one string, while case and accents still tell strings apart."""
    return unicodedata.normalize("NFC", value)
