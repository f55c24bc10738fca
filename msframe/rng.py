"""Explicit random generators. Every draw in a run comes from one of these, keyed by where it is used.

A key such as ("crop", stage, iteration, term) always gives the same generator for the same run
seed, whichever process asks (main or DataLoader worker) and whenever (fresh run or resumed).
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *path: object) -> int:
    """A 63-bit seed determined by the run seed and the path (stable across processes and versions)."""
    text = "/".join(str(p) for p in (seed, *path))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


def generator(seed: int, *path: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded from ``derive_seed(seed, *path)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *path))
    return g
