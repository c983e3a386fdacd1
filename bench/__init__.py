"""Benchmarks: JSON on the last line, ratios against references measured in the same run."""
