"""String normalisation for FHIR string search."""

from __future__ import annotations

import unicodedata


def normalize(value: str) -> str:
    """Fold case and strip accents so that 'Élan' and 'elan' compare equal (the default
    string search and :contains). A value of combining marks only folds to ''."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold()
