"""Shared test machinery: a real Redis, real broker processes, waiting helpers."""
