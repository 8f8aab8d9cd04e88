"""Offline jobs over the immutable facts: backfilling another extractor version, comparing versions."""
