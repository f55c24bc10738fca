"""Atomic checkpoints: a kill during a write leaves the previous file intact."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file renamed over ``path``; the file gets the mode an ordinary
    ``open`` would give under the user's umask (mkstemp alone makes it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: Path, state: dict) -> None:
    """Write ``state`` with torch.save to a temporary file, then rename it over ``path``."""
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def load(path: Path, device: torch.device | str = "cpu") -> dict:
    return torch.load(Path(path), map_location=device, weights_only=False)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (summary files are read by other tools)."""
    _atomic_write(Path(path), lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def write_text(path: Path, text: str) -> None:
    _atomic_write(Path(path), lambda f: f.write(text.encode()))
