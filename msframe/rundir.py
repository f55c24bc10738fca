"""The run folder: its layout, known to :class:`RunFolder` alone, where a run resumes, and reading a
finished one.

    RUN/recipe.resolved.toml   the recipe with every default filled in (what --resume reads)
    RUN/plan.txt               the plan as --plan prints it
    RUN/metrics.jsonl          one record per line (the jsonl logger)
    RUN/summary.json           written once, at the end: the run has finished
    RUN/diverged.json          written when a divergence stopped the run (exit 3): why, where, which checkpoint
    RUN/checkpoints/last.pt    the latest state; stage-N.pt at each stage end; best.pt (best validation)
    RUN/samples.png            test tiles: baseline | restored | clean; samples/ holds validation grids
    RUN/test-images.jsonl      the test split's per-image scores (eval.protocol = "whole")
    RUN/evaluations/           what ``run.py evaluate`` writes by default
    RUN/sweep-point.json       a sweep's point: its group, axes and overrides (loggers get it as RunInfo.point)
    RUN/.lock                  held (flock) by the one process that trains in the folder; holds its pid and host
    RUN/wandb/                 the wandb logger's W&B run files (and its artifact staging)
    RUN/tensorboard/           the tensorboard logger's event files

Tools that compare runs (compare.py, report.py) read only ``summary.json`` and the validation records
of ``metrics.jsonl``; a damaged summary is a located error, damaged metric lines are skipped like a
line cut short by a kill.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from msframe.errors import UserError


class Busy(UserError):
    """Another process holds the run folder's lock: it is training there now."""


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


@dataclass(frozen=True)
class RunFolder:
    """One run's folder: named paths for everything a run writes, the checks made before writing, and
    the checkpoint a resume starts from."""

    path: Path

    # the names other code needs before it has a folder: to search for run folders, and as defaults
    RECIPE: ClassVar[str] = "recipe.resolved.toml"
    METRICS: ClassVar[str] = "metrics.jsonl"
    SUMMARY: ClassVar[str] = "summary.json"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def recipe(self) -> Path:
        return self.path / self.RECIPE

    @property
    def plan(self) -> Path:
        return self.path / "plan.txt"

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def diverged(self) -> Path:
        return self.path / "diverged.json"

    @property
    def point(self) -> Path:
        return self.path / "sweep-point.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    def stage_checkpoint(self, stage: int) -> Path:
        return self.checkpoints / f"stage-{stage}.pt"

    def stage_checkpoints(self) -> list[Path]:
        """The ``stage-N.pt`` files present, the latest stage first."""
        def number(path: Path) -> int:
            _, _, n = path.stem.partition("-")
            return int(n) if n.isdigit() else -1

        return sorted(self.checkpoints.glob("stage-*.pt"), key=number, reverse=True)

    def weights(self, which: str) -> Path:
        """``checkpoints/best.pt`` or ``checkpoints/last.pt``."""
        return self.checkpoints / f"{which}.pt"

    def existing_weights(self, which: str) -> Path:
        """:meth:`weights` when the file exists; otherwise a UserError that lists the checkpoints there."""
        path = self.weights(which)
        if not path.is_file():
            have = sorted(p.stem for p in self.checkpoints.glob("*.pt"))
            raise UserError(f"{path} does not exist (checkpoints there: {', '.join(have) or 'none'}; "
                            f"allowed: --weights best or last)", key="--weights")
        return path

    def resume_point(self, warn: Callable[[str], None] = _stderr) -> Path | None:
        """``last.pt``, or when it is missing or unreadable the newest readable ``stage-N.pt`` (the
        fallback is said through ``warn``); None when the run never wrote a
        checkpoint. Every candidate is read with weights_only; a checkpoint that may carry code
        (:class:`msframe.checkpoint.Unsafe`) stops the resume."""
        from msframe import checkpoint  # imports torch: only when resuming

        stages = self.stage_checkpoints()
        if not self.last.exists() and not stages:
            return None  # killed before the first checkpoint: the run starts over
        problem: UserError | None = None  # why last.pt was passed over (the first candidate always sets it)
        for candidate in [self.last, *stages]:
            try:
                checkpoint.load(candidate)
            except checkpoint.Unsafe:
                raise
            except checkpoint.Unreadable as exc:
                if candidate == self.last:
                    problem = exc
                continue
            if candidate != self.last:
                warn(f"warning: {problem}; resuming from {candidate} instead")
            return candidate
        raise UserError(f"{problem}; and no readable stage checkpoint to fall back on", key="--resume")

    @property
    def wandb(self) -> Path:
        """What the ``wandb`` logger keeps: W&B's run files, and its artifact staging unless WANDB_DATA_DIR is set."""
        return self.path / "wandb"

    @property
    def tensorboard(self) -> Path:
        """The ``tensorboard`` logger's event files."""
        return self.path / "tensorboard"

    @property
    def sweep_spec(self) -> Path:
        """The ``sweep.json`` of the sweep this run is a point of (it lies beside the run folder)."""
        from msframe.sweep import SWEEP_FILE

        return self.path.parent / SWEEP_FILE

    def read_point(self) -> dict | None:
        """The sweep point this run belongs to ({group, sweep, axes, labels, overrides}), or None for
        a lone run (or an unreadable point file)."""
        try:
            return json.loads(self.point.read_text()) if self.point.is_file() else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None

    @property
    def samples(self) -> Path:
        """The test split's sample grid."""
        return self.path / "samples.png"

    @property
    def test_images(self) -> Path:
        """The test split's per-image scores (whole-image protocol), one JSON line per image."""
        return self.path / "test-images.jsonl"

    def eval_samples(self, split: str, step: int) -> Path:
        """The sample grid of the evaluation of ``split`` after ``step`` iterations."""
        return self.path / "samples" / f"{split}-{step:06d}.png"

    def evaluation(self, dataset: str, split: str, weights: str) -> Path:
        """The default folder of ``run.py evaluate`` for this dataset, split and weights."""
        return self.path / "evaluations" / f"{dataset}-{split}-{weights}"

    @property
    def started(self) -> bool:
        """The folder holds a resolved recipe: a run was started in it."""
        return self.recipe.is_file()

    @property
    def finished(self) -> bool:
        return self.summary.is_file()

    @classmethod
    def below(cls, root: Path) -> list[RunFolder]:
        """The run folders at or below ``root`` (finished, or started: holding a summary or a
        resolved recipe), sorted by path."""
        root = Path(root)
        found = {p.parent for name in (cls.SUMMARY, cls.RECIPE) for p in root.rglob(name)}
        return [cls(p) for p in sorted(found)]

    @classmethod
    def newest(cls, out: Path, name: str) -> RunFolder | None:
        """The newest folder that :meth:`create` made for ``name`` in ``out``, or None."""
        found = sorted(p for p in Path(out).glob(f"{name}-*") if p.is_dir() and p.name[len(name) + 1:][:1].isdigit())
        return cls(found[-1]) if found else None

    @classmethod
    def create(cls, out: Path, name: str) -> RunFolder:
        """A new folder ``OUT/NAME-YYYYmmdd-HHMMSS`` (``-2``, ``-3``… appended if taken)."""
        base = Path(out) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = base, 1
        try:
            while path.exists():
                n += 1
                path = base.with_name(f"{base.name}-{n}")
            path.mkdir(parents=True)
        except OSError as exc:
            raise UserError(f"cannot make the run folder {path}: {exc.strerror or exc}", key="--out") from None
        return cls(path)

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    @contextmanager
    def lock(self, key: str = "--resume") -> Iterator[None]:
        """Hold the folder's writer lock for the block (the folder is made if missing): one process
        trains in a run folder at a time. A second writer gets :class:`Busy` at once, naming the holder's
        pid and host; a lock left by a dead process is free (the kernel drops a flock with its holder), so
        it is taken over. The lock file stays behind, empty of meaning once no process holds it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if self.lock_file.is_symlink():
                raise UserError(f"{self.lock_file} is a symbolic link; a run folder holds none (writes must stay "
                                "inside it)", key=key)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise UserError(f"cannot lock the run folder {self.path}: {exc.strerror or exc}", key=key) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
                raise Busy(f"another process is training in {self.path} (holder: {holder}); one writer per run "
                           f"folder", key=key) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def refuse_links(self, key: str = "--resume") -> None:
        """A run folder to resume holds no symbolic link: a shared folder could otherwise point a checkpoint
        or log write at any file the user can write."""
        for root, dirs, files in os.walk(self.path):
            for name in dirs + files:
                if os.path.islink(os.path.join(root, name)):
                    raise UserError(f"{os.path.join(root, name)} is a symbolic link; a run folder to resume holds none "
                                    "(writes must stay inside it)", key=key)


#: A validation curve: (cumulative work units, training seconds, validation PSNR) per evaluation.
Curve = list[tuple[float, float, float]]


#: The summary fields that tools comparing runs read, each a number (a finite float or null for the test's baseline)
SUMMARY_NUMBERS = ("work_units", "seconds")
TEST_NUMBERS = ("psnr", "ssim")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_summary(folder: Path) -> dict:
    """The run's ``summary.json``; a missing or unreadable one, or one whose ``work_units``, ``seconds``,
    ``test.psnr`` or ``test.ssim`` is not a number, is a UserError naming the file and the field."""
    summary_file = RunFolder(folder).summary
    if not summary_file.is_file():
        raise UserError(f"{folder} is not a finished run folder (no summary.json)", key="RUN_FOLDER")
    try:
        summary = json.loads(summary_file.read_bytes().decode("utf-8"))
        if not isinstance(summary, dict) or not isinstance(summary.get("test"), dict):
            raise ValueError("not an msframe summary")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"unreadable summary ({str(exc).splitlines()[0][:120]})", file=str(summary_file)) from None
    fields = [(k, summary.get(k)) for k in SUMMARY_NUMBERS] + [(f"test.{k}", summary["test"].get(k)) for k in TEST_NUMBERS]
    fields.append(("test.input_psnr", summary["test"].get("input_psnr", 0.0)))
    for key, value in fields:
        if not _number(value) and not (key == "test.input_psnr" and value is None):
            raise UserError(f"{key} is {json.dumps(value)[:40]}, not a number", file=str(summary_file))
    return summary


def validation_curve(folder: Path) -> tuple[Curve, float | None]:
    """The run's validation records, in order, and the naive baseline's PSNR of the last of them.

    Empty when the run kept no ``metrics.jsonl`` (the jsonl logger was off). A line that does not
    parse, or a validation record without numeric ``work_units``, ``seconds`` and ``psnr``, is skipped
    like a line cut short by a kill.
    """
    metrics_file = RunFolder(folder).metrics
    curve: Curve = []
    naive = None
    if metrics_file.is_file():
        # damaged bytes end up in lines that do not parse, and are skipped like a line cut short by a kill
        for line in metrics_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and r.get("event") == "eval" and r.get("split") == "val" \
                    and all(_number(r.get(k)) for k in ("work_units", "seconds", "psnr")):
                curve.append((r["work_units"], r["seconds"], r["psnr"]))
                naive = r.get("input_psnr") if _number(r.get("input_psnr")) else None
    return curve, naive
