#!/usr/bin/env python3
"""Run a recipe: ``python tools/run.py RECIPE.toml`` (see ``--help``)."""

import sys

from msframe.cli import main

if __name__ == "__main__":
    sys.exit(main())
