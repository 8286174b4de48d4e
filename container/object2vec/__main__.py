"""`python -m object2vec COMMAND ...` (see object2vec.cli)."""

from __future__ import annotations

import sys

from object2vec.cli import exit_, main

if __name__ == "__main__":
    exit_(main(sys.argv[1:]))  # without the interpreter's slow teardown of torch
