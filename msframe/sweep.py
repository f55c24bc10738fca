"""Sweeps: the product of recipe-key axes (and seeds), one run folder per point, resumable.

``run.py RECIPE --sweep KEY=V1,V2 [--sweep ...] [--seeds N]`` makes ``OUT/<name>-sweep/`` holding
``sweep.json`` (what was asked) and one run folder per point, named by the values that differ
(``estimator.type=mge,seed=1``). Each point's values are TOML values, set like ``--set``; every run
folder also gets its point (group, axes; :attr:`msframe.rundir.RunFolder.point`), which loggers receive
as ``RunInfo.point`` (W&B: group, config, tags).
Running the same command again skips finished points, resumes interrupted ones from their last
checkpoint and starts the rest.

Under a W&B sweep agent (``WANDB_SWEEP_ID`` set), the agent's parameters — dotted recipe keys —
become overrides of a single run instead (see :func:`agent_overrides`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msframe.errors import UserError
from msframe.recipe import parse_override

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class Axis:
    key: str  # dotted recipe key, or "seed" for --seeds
    values: tuple[Any, ...]


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value (inline tables and arrays included), the inverse of parsing."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for every printable text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _split_top_level(raw: str) -> list[str]:
    """Split on commas outside brackets, braces and quotes."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in raw:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return parts


def parse_axis(text: str) -> Axis:
    """``KEY=V1,V2,...`` -> Axis; each value is a TOML value, a bare word is a string (as ``--set``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not raw.strip():
        raise UserError(f"{text!r} is not of the form KEY=V1,V2,... (e.g. estimator.type=single,mge)", key="--sweep")
    try:
        path, _ = parse_override(f"{key}=0")  # the key's own rules, as --set
    except UserError as exc:
        raise UserError(exc.message, key="--sweep") from None
    try:
        values = tomllib.loads(f"v = [{raw}]")["v"]
    except tomllib.TOMLDecodeError:  # not one TOML list: parse the values one by one, to name the bad one
        values = []
        for item in _split_top_level(raw):
            if not item.strip():
                raise UserError(f"{text!r} has an empty value (values are separated by single commas)",
                                key="--sweep") from None
            try:
                values.append(parse_override(f"{key}={item}")[1])
            except UserError as exc:
                raise UserError(f"{exc.message} in {text!r}", key="--sweep") from None
    if not values:
        raise UserError(f"{text!r} gives no values", key="--sweep")
    texts = [toml_value(v) for v in values]
    if len(set(texts)) != len(texts):
        raise UserError(f"{text!r} repeats a value", key="--sweep")
    return Axis(".".join(path), tuple(values))


#: The most points a sweep may have unless ``--max-points`` says otherwise (checked before any is built).
MAX_POINTS = 10_000


def seed_axis(seeds: int, base_seed: int, max_points: int = MAX_POINTS) -> Axis:
    """``--seeds N``: the recipe's seed and the N - 1 following ones (at most ``max_points``)."""
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1 (got {seeds})", key="--seeds")
    if seeds > max_points:
        raise UserError(f"--seeds {seeds} is over the limit of {max_points} sweep points (raise it with --max-points)",
                        key="--seeds")
    return Axis("run.seed", tuple(base_seed + i for i in range(seeds)))


def label(value: Any) -> str:
    """A value as it appears in folder names and tags: ``mge``, ``0.5``, ``[4, 2]`` -> ``4_2``, and a table
    ``{type = "mge", growth = 2}`` -> ``mge-growth2``."""
    if isinstance(value, dict):
        return "-".join(label(v) if k == "type" else f"{k}{label(v)}" for k, v in value.items()) or "_"
    text = value if isinstance(value, str) else toml_value(value)
    return re.sub(r"[^A-Za-z0-9._+\-]+", "_", text).strip("_") or "_"


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its folder name, its overrides and its axis values."""

    name: str
    overrides: tuple[str, ...]
    axes: dict  # recipe key -> value
    labels: dict  # recipe key -> the value as the folder name shows it


def points(axes: list[Axis], max_points: int = MAX_POINTS) -> list[Point]:
    """The product of the axes, in the order given (the last axis varies fastest); more than
    ``max_points`` points is a UserError before any point is built."""
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise UserError(f"the axis {next(k for k in keys if keys.count(k) > 1)} is given twice", key="--sweep")
    count = math.prod(len(a.values) for a in axes)
    if count > max_points:
        raise UserError(f"the sweep has {count} points, over the limit of {max_points} (raise it with --max-points)",
                        key="--sweep")
    out = []
    for combo in itertools.product(*(a.values for a in axes)):
        name = ",".join(f"{'seed' if k == 'run.seed' else k}={label(v)}" for k, v in zip(keys, combo))
        out.append(Point(name[:200], tuple(f"{k}={toml_value(v)}" for k, v in zip(keys, combo)), dict(zip(keys, combo)),
                         {k: label(v) for k, v in zip(keys, combo)}))
    if len({p.name for p in out}) != len(out):
        raise UserError("two points of the sweep get the same folder name; give values that differ in letters or digits",
                        key="--sweep")
    return out


def spec(recipe_path: str, overrides: list[str], axes: list[Axis]) -> dict:
    """What ``sweep.json`` records: the recipe, the fixed overrides and the axes (JSON-able)."""
    return {"recipe": str(Path(recipe_path).resolve()), "overrides": list(overrides),
            "axes": [{"key": a.key, "values": [toml_value(v) for v in a.values]} for a in axes]}


def group_name(name: str, sweep_spec: dict) -> str:
    """The W&B group of every run of a sweep: the recipe's name and a digest of the sweep's spec."""
    digest = hashlib.sha1(json.dumps(sweep_spec, sort_keys=True).encode()).hexdigest()[:6]
    return f"{name}-sweep-{digest}"


def prepare_folder(folder: Path, sweep_spec: dict) -> None:
    """Make the sweep folder, or check that an existing one holds the same sweep (then it resumes).
    Two processes starting the same sweep at once may both write ``sweep.json``; the one whose write
    is disturbed by the other's accepts the file the other wrote if it holds the same sweep."""
    from msframe import checkpoint

    file = folder / SWEEP_FILE
    if not file.is_file():
        try:
            checkpoint.write_json(file, sweep_spec)
            return
        except UserError:
            if not file.is_file():
                raise
    try:
        held = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        held = None
    if held != sweep_spec:
        raise UserError(f"{folder} holds another sweep (see its {SWEEP_FILE}); choose another --out or remove it",
                        key="--sweep")


def agent_overrides(argv: list[str], env: dict = os.environ) -> tuple[list[str], list[str]]:
    """Under a W&B sweep agent: the agent's parameters as ``--set`` overrides, and the remaining argv.

    The agent writes the run's parameters to ``WANDB_SWEEP_PARAM_PATH`` ({name: {value: v}}) and, with
    its default command, also passes them as ``--name=value`` arguments. Parameter names are dotted
    recipe keys (``schedule.batch``); values are set like ``--set``. Outside an agent nothing changes.
    """
    if not env.get("WANDB_SWEEP_ID"):
        return [], argv
    overrides, rest = {}, []
    path = env.get("WANDB_SWEEP_PARAM_PATH")
    if path and Path(path).is_file():
        import yaml

        params = yaml.safe_load(Path(path).read_text()) or {}
        for name, entry in params.items():
            if name == "wandb_version":
                continue
            value = entry.get("value") if isinstance(entry, dict) and "value" in entry else entry
            overrides[name] = f"{name}={toml_value(value)}"
    for arg in argv:
        m = re.fullmatch(r"--([A-Za-z0-9_\-.]+)=(.*)", arg, re.S)
        if m and f"--{m.group(1)}" not in OWN_OPTIONS:
            value = {"True": "true", "False": "false"}.get(m.group(2), m.group(2))  # Python's spelling of booleans
            overrides.setdefault(m.group(1), f"{m.group(1)}={value}")
        else:
            rest.append(arg)
    return list(overrides.values()), rest


#: run.py's own options, which an agent's ``--name=value`` arguments never mean
OWN_OPTIONS = {"--plan", "--set", "--out", "--resume", "--print-recipe", "--sweep", "--seeds", "--help"}
