"""Object2Vec: a SageMaker-compatible pair-embedding trainer and server, in PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"
