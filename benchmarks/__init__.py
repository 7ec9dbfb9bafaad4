"""Benchmarks: run against real servers, print figures and write them as JSON."""
