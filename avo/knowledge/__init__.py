"""Retrieval over the configured knowledge sources (see base.py for the API)."""

from avo.knowledge.base import Hit, KnowledgeBase, KnowledgeError, SourceStatus

__all__ = ["Hit", "KnowledgeBase", "KnowledgeError", "SourceStatus"]
