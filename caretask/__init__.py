"""caretask: a FHIR R4 Task server that speaks the Canvas Medical Task API."""

__version__ = "0.1.0"
