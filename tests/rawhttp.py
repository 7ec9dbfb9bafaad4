"""Moved to tests.support.rawhttp; re-exported here only until the branches that import
it from tests.rawhttp are merged (the lead removes this module then)."""

from tests.support.rawhttp import closed_by_server, connect, read_response

__all__ = ["closed_by_server", "connect", "read_response"]
