"""String normalisation for FHIR string search (case- and accent-insensitive)."""

from __future__ import annotations

import unicodedata


def normalize(value: str) -> str:
    """Fold case and strip accents so that 'Élan' and 'elan' compare equal."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold()
