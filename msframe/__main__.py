"""``python -m msframe ...``: the command line of ``tools/run.py`` (see :mod:`msframe.cli`)."""

import sys

from msframe.cli import main

sys.exit(main())
