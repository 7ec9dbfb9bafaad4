"""Bulk data: NDJSON import and export, and a generator of realistic demo tasks."""
