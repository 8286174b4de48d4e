"""`python -m object2vec train|serve|prepare`."""

from __future__ import annotations

import sys

from object2vec.cli import exit_process, main

if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))  # without the interpreter's slow teardown of torch
