"""Scoring: pairing predictions with truths, the metrics of localization and detection, and
the reports behind `metrics.json`."""
