#!/usr/bin/env python3
"""Run a recipe: ``python tools/run.py RECIPE.toml`` (see ``--help``)."""

import sys

if __name__ == "__main__":
    try:
        from msframe.cli import main  # imports torch: seconds, during which Ctrl-C must still exit 130
    except KeyboardInterrupt:
        print("interrupted during start-up; nothing was written", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
