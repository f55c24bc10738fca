#!/usr/bin/env python3
"""Run a recipe: ``python tools/run.py RECIPE.toml`` (see ``--help``); the same as ``python -m msframe``."""

import sys

if __name__ == "__main__":
    try:
        from msframe.__main__ import run  # light: msframe's package imports no torch
    except KeyboardInterrupt:
        print("interrupted during start-up; nothing was written", file=sys.stderr)
        sys.exit(130)
    sys.exit(run())
