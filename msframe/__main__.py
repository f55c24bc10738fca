"""``python -m msframe ...``: the command line of :mod:`msframe.cli`, as ``tools/run.py`` runs it."""

import signal
import sys

INTERRUPTED = "interrupted during start-up; nothing was written"


def run() -> int:
    """The command line's exit code; Ctrl-C while it is still importing exits 130 too.

    During the import (torch: seconds) Ctrl-C is only recorded, and answered once the import is done:
    raised inside torch's native initialisation, a KeyboardInterrupt is either dropped (torch imports
    numpy on its own and ignores a failure) or aborts the process (a pybind11 initialiser).
    """
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        from msframe.cli import main
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
