#!/usr/bin/env python3
"""Run a recipe: ``python tools/run.py RECIPE.toml`` (see ``--help``); the same as ``python -m msframe``."""

import sys

if __name__ == "__main__":
    from msframe.__main__ import run

    sys.exit(run())
