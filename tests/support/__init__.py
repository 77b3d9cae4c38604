"""Shared test machinery: a real Redis, real broker processes, waiting helpers."""

import os


def in_ci() -> bool:
    """CI=true: what a test needs of the machine must be there (fail, never skip)."""
    return os.environ.get("CI", "").lower() == "true"
