"""`python -m object2vec COMMAND ...` (see object2vec.cli)."""

from __future__ import annotations

import sys

from object2vec.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
