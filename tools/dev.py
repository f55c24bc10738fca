#!/usr/bin/env python3
"""Set-up and the two everyday commands, with nothing but Python 3.11 and pip.

    python3 tools/dev.py quickstart   # make/refresh .venv, then train recipes/quickstart.toml
    python3 tools/dev.py test         # make/refresh .venv, then run the test suite (what CI runs)
    python3 tools/dev.py setup        # only make/refresh .venv

The virtual environment lives at .venv in the repository root. It is re-installed only when
pyproject.toml or tools/pins.txt changed since the last set-up. Extra arguments after the command
go to run.py or pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".msframe-setup"
PINS = ROOT / "tools" / "pins.txt"


def _fingerprint() -> str:
    h = hashlib.sha256()
    for f in (ROOT / "pyproject.toml", PINS):
        h.update(f.read_bytes())
    return h.hexdigest()


def _pip(*args: str) -> None:
    cmd = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def setup() -> None:
    """Create .venv if needed and install msframe (editable) with its test extras and the pins."""
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    _pip("-q", "-r", str(PINS))
    _pip("-q", "-c", str(PINS), "-e", ".[test]")
    STAMP.write_text(_fingerprint())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("quickstart", "test", "setup"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.version_info < (3, 11):
        print("error: msframe needs Python 3.11 or newer (it reads recipes with tomllib)", file=sys.stderr)
        return 2
    setup()
    command, rest = argv[0], argv[1:]
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")  # never wait on a W&B login
    env.setdefault("HF_HUB_OFFLINE", "1")  # timm must never reach for a hub
    if command == "setup":
        return 0
    if command == "quickstart":
        cmd = [str(PY), str(ROOT / "tools" / "run.py"), str(ROOT / "recipes" / "quickstart.toml"), *rest]
    else:
        cmd = [str(PY), "-m", "pytest", "-q", *rest]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
