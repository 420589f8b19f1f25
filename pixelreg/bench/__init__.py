"""Benchmarks: one module per bench (holdouts, precision, density, movie, calibration, perf),
each of which trains, scores and returns a JSON-able result; `defaults.py` holds their settings."""
