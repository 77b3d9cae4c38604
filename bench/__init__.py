"""Benchmarks: printed tables measured side by side in one run, never asserted."""
