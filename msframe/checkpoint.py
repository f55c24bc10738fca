"""Atomic checkpoints: a kill during a write leaves the previous file intact.

Checkpoints hold tensors and plain data only (dicts, lists, numbers, strings), and are read with
``torch.load(weights_only=True)``: a run folder someone shares cannot carry code that runs on resume.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import pickle
import pickletools
import tempfile
import zipfile
from pathlib import Path

import torch

from msframe.errors import UserError


class Unreadable(UserError):
    """A checkpoint that is missing, truncated, not a checkpoint, or holds anything but tensors and plain data."""


class Unsafe(Unreadable):
    """A well-formed checkpoint whose pickle the weights-only loader refused (it names a class or function,
    or uses an opcode that builds objects): it may carry code, and is never used, not even as a fallback."""


class Mismatched(UserError):
    """A readable checkpoint whose weights do not fit the network its run folder's recipe builds."""


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file beside ``path`` and rename it over ``path``; the file gets the
    mode an ordinary ``open`` would give under the user's umask (mkstemp alone makes it 0600).

    A failed write (a full disk, a read-only folder) leaves the previous file intact and ends in a
    UserError naming the file; temporaries left by a killed writer are removed on the next write.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
            stale.unlink(missing_ok=True)  # left by a writer killed mid-write (SIGKILL runs no cleanup)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write: {exc.strerror or exc}", file=str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write ({exc.strerror or exc}); the previous version of the file is kept",
                        file=str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: Path, state: dict) -> None:
    """Write ``state`` with torch.save to a temporary file, then rename it over ``path``."""
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def load(path: Path, device: torch.device | str = "cpu") -> dict:
    """The state saved by :func:`save`, read with ``weights_only=True``: nothing in the file is executed.

    Raises :class:`Unreadable` (a UserError naming the file) for a missing, empty, truncated or
    foreign file, and for one that refers to any object but tensors and plain containers.
    """
    path = Path(path)
    if not path.exists():
        raise Unreadable("missing", file=str(path))
    if not path.is_file():
        raise Unreadable("not a checkpoint file (a folder or a device)", file=str(path))
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if _well_formed(path):  # a pickle read to its end and still refused: refused for what it names, not damage
            said = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "refused"
            raise Unsafe(f"refused: the weights-only loader would not read it ({said}); it names code that unpickling "
                         "would have run, so it is never used, not even as a fallback (nothing in it was run)",
                         file=str(path)) from None
        raise Unreadable("unreadable checkpoint (not a torch checkpoint, or damaged)", file=str(path)) from None
    except Exception as exc:  # torch reports truncated or foreign files with assorted types
        said = str(exc).splitlines()[0][:160] if str(exc) else "empty"
        raise Unreadable(f"unreadable checkpoint ({type(exc).__name__}: {said})", file=str(path)) from None
    if not isinstance(state, dict):
        raise Unreadable(f"not an msframe checkpoint (holds a {type(state).__name__})", file=str(path))
    return state


def _pickles(path: Path) -> list[bytes]:
    """The pickle streams torch.load reads from ``path``: the zip archive's ``data.pkl``, or (the legacy
    format, or a bare pickle) the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [archive.read(n) for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    return [Path(path).read_bytes()]


def _well_formed(path: Path) -> bool:
    """Whether the file's first pickle is a complete, valid pickle stream (every opcode known, read to its
    STOP). Only then does a refusal by the weights-only loader mean the pickle asked for something it will
    not do (name a global, build an object), rather than that the bytes are damaged."""
    try:
        streams = _pickles(path)
        for _ in pickletools.genops(io.BytesIO(streams[0])):
            pass
    except Exception:  # damaged zip, unknown opcode byte, stream cut short: all damage, none a refusal
        return False
    return True


def load_model(path: Path, model: torch.nn.Module, device: torch.device | str = "cpu") -> dict:
    """Read ``path`` as :func:`load` does and load its ``"model"`` weights into ``model``; returns the state.

    Weights that do not fit (no ``model`` entry, a missing or extra key, another shape) are a
    :class:`Mismatched` naming the first key that differs and both shapes.
    """
    state = load(path, device)
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise Mismatched("does not match recipe.resolved.toml of its run folder: no \"model\" weights in it",
                         file=str(path))
    wanted = model.state_dict()
    for key in sorted(wanted.keys() | weights.keys()):
        if key not in weights or key not in wanted:
            where = "missing from the checkpoint" if key not in weights else "in the checkpoint but not in the network"
            raise Mismatched(f"does not match recipe.resolved.toml of its run folder: weight {key!r} is {where}",
                             file=str(path))
        if tuple(weights[key].shape) != tuple(wanted[key].shape):
            raise Mismatched(f"does not match recipe.resolved.toml of its run folder: weight {key!r} has shape "
                             f"{list(weights[key].shape)} in the checkpoint, {list(wanted[key].shape)} in the network",
                             file=str(path))
    model.load_state_dict(weights)
    return state


def finite(data):
    """``data`` with every non-finite float replaced by None, so strict JSON readers accept it."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def write_json(path: Path, data: dict) -> None:
    """Write strict JSON atomically (summary files are read by other tools): NaN and infinities become null."""
    text = json.dumps(finite(data), indent=2, allow_nan=False) + "\n"
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` atomically."""
    _atomic_write(Path(path), lambda f: f.write(data))
