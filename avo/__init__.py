"""avo: agentic variation operators for evolving CuTe DSL attention kernels."""

__version__ = "0.1.0"
