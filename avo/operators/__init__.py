"""Variation operators: given the current best and the history, produce one new version."""
