"""`python -m object2vec train|serve|prepare`."""

from __future__ import annotations

import sys

from object2vec.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
