"""The FHIR domain: validation, Canvas rules, search parsing and Bundle building.

Plain functions over plain data; nothing here does I/O or knows about HTTP.
"""
