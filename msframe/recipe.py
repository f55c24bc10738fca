"""TOML recipe -> validated recipe. A recipe is data: nothing in it is executed.

Layout (every section optional except where a plugin needs parameters)::

    [run]        name, seed, device, flush_every, divergence_factor, on_divergence, compile, threads
    [schedule]   resolution, levels, iterations | work | budget (+ split) | [[schedule.stage]], batch,
                 baseline_iterations
    [optim]      lr, weight_decay, lr_policy, min_lr_ratio, warmup, reset_state_per_stage
    [eval]       every, tiles_per_image, max_images, seed
    [checkpoint] every
    [loader]     workers, resident
    [data]       type = "<dataset>" + that plugin's parameters
    [task]       type = "<task>" + ...
    [backbone]   type = "<backbone>" + ...
    [resampler]  type = "<resampler>" + ...
    [estimator]  type = "<estimator>" + ...
    [loggers.<name>]  one table per logger, with that logger's parameters

Core sections are checked by the models below, plugin sections by the plugin's own ``Params``.
"""

from __future__ import annotations

import copy
import re
import tomllib
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from msframe.errors import RecipeErrors, UserError
from msframe.kinds import KINDS
from msframe.registry import Registry
from msframe.sections import (  # noqa: F401 (the core sections are part of this module's interface)
    CORE,
    MAX_ITERATIONS,
    MAX_WORK,
    CheckpointSection,
    EvalSection,
    LoaderSection,
    OptimSection,
    RunSection,
    ScheduleSection,
    Section,
    StageSection,
)

DEFAULT_LOGGERS = {"console": {}, "jsonl": {}}


@dataclass(frozen=True)
class PluginChoice:
    """A plugin section after validation: the component's name, class and parameters."""

    name: str
    cls: type
    params: BaseModel

    def build(self):
        return self.cls(self.params)

    def to_dict(self) -> dict:
        return {"type": self.name, **_toml_ready(self.params.model_dump(mode="json"))}


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``to_dict`` gives the resolved form (every default filled in)."""

    source: str
    run: RunSection
    schedule: ScheduleSection
    optim: OptimSection
    eval: EvalSection
    checkpoint: CheckpointSection
    loader: LoaderSection
    data: PluginChoice
    task: PluginChoice
    backbone: PluginChoice
    resampler: PluginChoice
    estimator: PluginChoice
    loggers: dict[str, PluginChoice]
    stage_estimators: tuple[PluginChoice, ...] = ()  # one per stage: its own table or [estimator]

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        for name in CORE:
            out[name] = _toml_ready(getattr(self, name).model_dump(mode="json"))
        if self.schedule.stage is not None:
            out["schedule"]["stage"] = [
                {**_toml_ready(st.model_dump(mode="json", exclude={"estimator"})),
                 **({"estimator": choice.to_dict()} if st.estimator is not None else {})}
                for st, choice in zip(self.schedule.stage, self.stage_estimators)
            ]
        for name in PLUGIN_SECTIONS:
            out[name] = getattr(self, name).to_dict()
        out["loggers"] = {n: {k: v for k, v in c.to_dict().items() if k != "type"} for n, c in self.loggers.items()}
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


#: recipe section -> kind of component it chooses with ``type = NAME`` (the single kinds of
#: :data:`msframe.kinds.KINDS`; loggers are a table of named ones), in the order of :class:`Recipe`'s
#: fields, which is the resolved recipe's: the data first
PLUGIN_SECTIONS: dict[str, str] = dict(sorted(
    ((k.section, k.name) for k in KINDS if k.single),
    key=lambda section_kind: [f.name for f in fields(Recipe)].index(section_kind[0])))


def _toml_ready(d: dict) -> dict:
    """TOML has no null: unset optional values are left out (they are the defaults on reload)."""
    return {k: v for k, v in d.items() if v is not None}


# ---------------------------------------------------------------------------------- reading


MAX_RECIPE_BYTES = 1 << 20


def read_toml(path: str | Path) -> dict:
    """Parse a TOML file; syntax errors name the file, line and column."""
    path = Path(path)
    try:
        if not path.exists():
            raise FileNotFoundError
        if not path.is_file():  # /dev/zero, a FIFO or a folder would hang or fill memory
            raise UserError("not a regular file (a recipe is a TOML file)", file=str(path))
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise UserError(f"{path.stat().st_size} bytes; a recipe is at most {MAX_RECIPE_BYTES} bytes", file=str(path))
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError("recipe file not found", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                        "save the recipe as UTF-8", file=str(path)) from None
    except OSError as exc:
        raise UserError(f"cannot read recipe: {exc.strerror}", file=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"TOML syntax error: {exc}", file=str(path)) from None


_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./:]*")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``key.sub=VALUE`` -> (["key", "sub"], value). VALUE is a TOML value; a bare word is a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not all(re.fullmatch(r"[A-Za-z0-9_\-]+", p) for p in key.split(".")):
        raise UserError(f"override {text!r} is not of the form key.sub=VALUE", key="--set")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if not _BARE.fullmatch(raw) or raw in ("true", "false"):
            hint = f"; quote a string, e.g. --set '{key}=\"{raw}\"'" if raw and "\"" not in raw else ""
            raise UserError(f"value {raw!r} of {key} is not a TOML value{hint}", key="--set") from None
        value = raw  # `--set task.type=denoise`: a bare word means the string
    return key.split("."), value


#: The ways of giving the stages: an override of one replaces whichever the recipe used.
STAGE_FORMS = {"iterations": (), "work": (), "budget": ("split",), "split": ("budget",), "stage": ()}


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """A copy of ``data`` with every ``key.sub=VALUE`` override set (tables created as needed).

    Setting one way of giving the stages (``schedule.iterations``, ``work``, ``budget``/``split`` or
    ``stage``) drops the recipe's other ways, so ``--set schedule.iterations=[2, 2]`` works on a
    recipe that has a budget.
    """
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        if len(path) == 2 and path[0] == "schedule" and path[1] in STAGE_FORMS and isinstance(out.get("schedule"), dict):
            keep = {path[1], *STAGE_FORMS[path[1]]}
            for other in STAGE_FORMS:
                if other not in keep:
                    out["schedule"].pop(other, None)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"{'.'.join(path[: i + 1])} is a value, not a table", key=".".join(path))
            node = child
        node[path[-1]] = value
    return out


# ------------------------------------------------------------------------------- validating


def _describe(err: dict, model: type[BaseModel] | None) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(model.model_fields) if model is not None else ""
        return f"unknown key (allowed: {allowed or 'no keys'})"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if "ctx" in err and "expected" in err["ctx"]:
        msg = f"must be one of {err['ctx']['expected']}"
    if not err["loc"] or isinstance(err["input"], dict):  # a whole-section rule: the section is the input
        return msg
    return f"{msg} (got {err['input']!r})"


def _models_in(ann) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation such as ``list[StageSection] | None``."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for arg in typing.get_args(ann) for m in _models_in(arg)]


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The nested model that owns the last part of ``loc`` (for listing allowed keys)."""
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        for ann in _models_in(getattr(field, "annotation", None)):
            model = ann
    return model


def _validate(model: type[BaseModel], data: Any, prefix: str, errors: list[UserError]):
    if not isinstance(data, dict):
        errors.append(UserError(f"must be a table (got {data!r})", key=prefix))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            dotted = ".".join([prefix, *(f"[{p}]" if isinstance(p, int) else str(p) for p in loc)]).replace(".[", "[")
            errors.append(UserError(_describe(err, _model_at(model, loc)), key=dotted))
        return None


def _plugin_section(registry: Registry, kind: str, section: str, data: Any, errors: list[UserError],
                    name: str | None = None):
    """Validate one plugin section; the component is ``data["type"]`` unless ``name`` is given."""
    if not isinstance(data, dict):
        errors.append(UserError(f"must be a table (got {data!r})", key=section))
        return None
    data = dict(data)
    name_key = section if name is not None else f"{section}.type"
    if name is None:
        name = data.pop("type", None)
    if name is None:
        known = ", ".join(registry.names(kind))
        errors.append(UserError(f"required key is missing (a registered {kind}: {known})", key=name_key))
        return None
    try:
        entry = registry.get(kind, str(name), key=name_key)
    except UserError as exc:
        errors.append(exc)
        return None
    params = _validate(entry.cls.Params, data, section, errors)
    # a qualified plugin:name is kept as written, so the resolved recipe picks the same component
    chosen = str(name) if ":" in str(name) else entry.name
    return None if params is None else PluginChoice(chosen, entry.cls, params)


def validate(data: dict, registry: Registry, source: str = "<recipe>") -> Recipe:
    """Check a recipe dict against the core sections and the selected plugins' own models.

    Raises RecipeErrors listing every mistake as ``FILE: dotted.key: message``.
    """
    errors: list[UserError] = []
    allowed = [*CORE, *PLUGIN_SECTIONS, "loggers"]
    for key in data:
        if key not in allowed:
            errors.append(UserError(f"unknown section (allowed: {', '.join(allowed)})", key=key))
    core = {name: _validate(model, data.get(name, {}), name, errors) for name, model in CORE.items()}
    plugins = {}
    for section, kind in PLUGIN_SECTIONS.items():
        if section not in data:
            known = ", ".join(registry.names(kind))
            errors.append(UserError(f"section is missing; choose a {kind} with type = ... (known: {known})", key=section))
            continue
        plugins[section] = _plugin_section(registry, kind, section, data[section], errors)
    loggers = {}
    logger_data = data.get("loggers", DEFAULT_LOGGERS)
    if not isinstance(logger_data, dict):
        errors.append(UserError("must be a table of logger tables, e.g. [loggers.console]", key="loggers"))
        logger_data = {}
    for name, params in logger_data.items():
        loggers[name] = _plugin_section(registry, "logger", f"loggers.{name}", params, errors, name=name)
    stage_estimators = []
    schedule = core.get("schedule")
    for i, st in enumerate((schedule.stage or []) if schedule is not None else []):
        if st.estimator is not None:
            stage_estimators.append(_plugin_section(registry, "estimator", f"schedule.stage[{i}].estimator", st.estimator,
                                                    errors))
        else:
            stage_estimators.append(plugins.get("estimator"))
    if errors:
        raise RecipeErrors(errors).located(source)
    if not stage_estimators:
        stage_estimators = [plugins["estimator"]] * schedule.stages
    return Recipe(source=source, **core, **plugins, loggers=loggers, stage_estimators=tuple(stage_estimators))


def load(path: str | Path, registry: Registry, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate the recipe at ``path``."""
    data = apply_overrides(read_toml(path), list(overrides))
    run = data.get("run")
    if isinstance(run, dict) and not run.get("name"):
        run["name"] = Path(path).stem
    elif run is None:
        data["run"] = {"name": Path(path).stem}
    try:
        return validate(data, registry, source=str(path))
    except UserError as exc:
        raise exc.located(str(path)) from None
