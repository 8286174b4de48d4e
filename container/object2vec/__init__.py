"""Object2Vec: a SageMaker-compatible pair-embedding trainer and server, in PyTorch."""

from __future__ import annotations

import sys
from pathlib import Path

__version__ = "0.1.0"


def program_name() -> str:
    """How the user started us, for usage lines: `object2vec` when run as the console script that
    `pip install` makes, else `python -m object2vec` (the image's programs, a source checkout)."""
    return "object2vec" if Path(sys.argv[0]).stem == "object2vec" else "python -m object2vec"
