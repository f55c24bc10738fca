"""``python -m msframe ...``: the command line of :mod:`msframe.cli`, as ``tools/run.py`` runs it."""

import sys


def run() -> int:
    """The command line's exit code; Ctrl-C while it is still importing exits 130 too."""
    try:
        from msframe.cli import main  # imports torch: seconds, during which Ctrl-C must still exit 130
    except KeyboardInterrupt:
        print("interrupted during start-up; nothing was written", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
