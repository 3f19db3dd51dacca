"""Fixtures of the end-to-end and chaos tests (they live in tests/e2e/harness.py)."""

from tests.e2e.harness import fast_reaper

__all__ = ["fast_reaper"]
