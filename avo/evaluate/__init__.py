"""Compile → correctness → benchmark → re-verify, each candidate in its own process."""
