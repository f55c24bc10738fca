"""What ``run.py describe`` and ``run.py plugins --json`` say about a component: its parameters (name,
type, default, description), its docstring and its parameters' JSON schema.

A parameter's description lives in its pydantic field (``Field(description=...)``, or the comment
that ends its line, stored there when the class is made: :mod:`msframe.fielddocs`), so the JSON
schema carries it too.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing

from pydantic.fields import FieldInfo

from msframe.recipe import PLUGIN_SECTIONS

#: the bounds of pydantic and annotated_types constraints, as ``describe`` writes them
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="),
           ("max_length", "length <="), ("multiple_of", "multiple of"))


def _bounds(metadata) -> list[str]:
    """``[">= 1", "<= 16"]`` for the constraints in ``metadata`` (``Ge(ge=1)``, a ``Field(ge=1)``, ...)."""
    out = []
    for item in metadata:
        if isinstance(item, FieldInfo):  # Annotated[int, Field(ge=1)] keeps its constraints in the field
            out += _bounds(item.metadata)
            continue
        out += [f"{symbol} {getattr(item, attr)}" for attr, symbol in _BOUNDS if getattr(item, attr, None) is not None]
    return out


def type_name(annotation, metadata=()) -> str:
    """A parameter's type as ``describe`` shows it: a class by its name, containers and unions spelled
    out, constraints as bounds (``int (>= 1)``, ``tuple[int (>= 1), ...]``), no module prefixes and no
    pydantic internals."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0], (*args[1:], *metadata))
    if annotation is type(None):
        text = "None"
    elif origin is typing.Literal:
        text = f"Literal[{', '.join(repr(a) for a in args)}]"
    elif origin in (typing.Union, types.UnionType):
        text = " | ".join(type_name(a) for a in args)
    elif origin is not None and args:
        name = getattr(origin, "__name__", None) or re.sub(r"^typing\.", "", str(origin))
        text = f"{name}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    elif isinstance(annotation, type):
        text = annotation.__name__
    else:
        text = re.sub(r"\b(typing|msframe[\w.]*)\.", "", str(annotation))
    bounds = _bounds(metadata)
    return f"{text} ({', '.join(bounds)})" if bounds else text


def parameters(cls: type) -> list[dict]:
    """The parameters of a component class: name, type, bounds (``[">= 1"]``, absent when none), default
    (absent when required), description."""
    out = []
    for name, field in cls.Params.model_fields.items():
        row = {"name": name, "type": type_name(field.annotation), "required": field.is_required()}
        if _bounds(field.metadata):
            row["bounds"] = _bounds(field.metadata)
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            row["default"] = default if isinstance(default, (int, float, str, bool, list, dict, type(None))) else repr(default)
            if isinstance(default, tuple):
                row["default"] = list(default)
        if field.description:
            row["description"] = field.description
        out.append(row)
    return out


def schema(entry) -> dict:
    """What ``plugins --json`` adds per registry entry: its docstring, parameters and JSON schema."""
    try:
        json_schema = entry.cls.Params.model_json_schema()
    except Exception as exc:  # a type pydantic cannot express in JSON schema
        json_schema = {"error": f"{type(exc).__name__}: {exc}"}
    return {"doc": inspect.getdoc(entry.cls) or "", "params": parameters(entry.cls), "schema": json_schema}


def describe(entry, info: dict) -> str:
    """``run.py describe``'s text for a registry entry and its :func:`schema`: where it comes from, the
    recipe table that chooses it, one line per parameter, and the docstring."""
    section = {v: k for k, v in PLUGIN_SECTIONS.items()}.get(entry.kind)
    where = f"[loggers.{entry.name}]" if entry.kind == "logger" else f"[{section}] type = \"{entry.name}\""
    lines = [f"{entry.kind} '{entry.name}' from {entry.origin}", ""]
    rows = info["params"]
    if rows:
        lines.append(f"parameters ({where}):")
        w_name = max(len(r["name"]) for r in rows)
        types = [r["type"] + (f" ({', '.join(r['bounds'])})" if r.get("bounds") else "") for r in rows]
        w_type = max(len(t) for t in types)
        for r, kind in zip(rows, types):
            default = "required" if r["required"] else f"= {json.dumps(r['default'])}"
            note = f"  # {r['description']}" if r.get("description") else ""
            lines.append(f"  {r['name']:<{w_name}}  {kind:<{w_type}}  {default}{note}")
    else:
        lines.append(f"parameters ({where}): none")
    if info["doc"]:
        lines += ["", info["doc"]]
    return "\n".join(lines)


def recipe_schema(registry) -> dict:
    """A JSON schema (draft 2020-12) of a whole recipe, for editors' TOML language servers (e.g.
    taplo, Even Better TOML): the core sections, each plugin section as one choice per registered
    component (``type`` = its name, then its parameters), and ``[loggers.<name>]`` per logger, with
    every parameter's type, bounds, default and description. The validation of ``run.py`` stays the
    reference: rules between fields are not in the schema."""
    from msframe.sections import CORE

    defs: dict[str, dict] = {}

    def model(cls, prefix: str) -> dict:
        """``cls``'s schema, its nested models moved into the shared ``$defs`` under ``prefix``."""
        found = cls.model_json_schema(ref_template=f"#/$defs/{prefix}.{{model}}")
        defs.update({f"{prefix}.{name}": d for name, d in found.pop("$defs", {}).items()})
        return found

    def component(kind: str, name: str, typed: bool) -> dict:
        entry = registry.get(kind, name)
        found = model(entry.cls.Params, f"{kind}.{name}")
        found["title"] = f"{kind} {name}"
        doc = (inspect.getdoc(entry.cls) or "").split("\n\n")[0]
        if doc:
            found["description"] = doc
        if typed:
            found["properties"] = {"type": {"const": name}, **found.get("properties", {})}
            found["required"] = ["type", *found.get("required", [])]
        return found

    properties = {name: model(cls, name) for name, cls in CORE.items()}
    for section, kind in PLUGIN_SECTIONS.items():
        names = registry.names(kind)
        properties[section] = {"description": f"the {kind}: type = one of {', '.join(names)}, then its parameters",
                               "type": "object", "required": ["type"], "properties": {"type": {"enum": names}},
                               "oneOf": [component(kind, n, typed=True) for n in names]}
    properties["loggers"] = {"description": "one table per logger, named by the logger", "type": "object",
                             "additionalProperties": False,
                             "properties": {n: component("logger", n, typed=False) for n in registry.names("logger")}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "msframe recipe", "type": "object",
            "additionalProperties": False, "properties": properties, "$defs": defs}


def schema_command(argv: list[str], load) -> int:
    """``run.py schema [--out FILE]``: :func:`recipe_schema` of the plugins ``load()`` returns, as JSON."""
    import argparse

    p = argparse.ArgumentParser(prog="run.py schema", description="Print a JSON schema of a whole recipe (for "
                                "editors' TOML language servers: completion, types, bounds, descriptions).")
    p.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    args = p.parse_args(argv)
    text = json.dumps(recipe_schema(load().registry), indent=2)
    if args.out:
        from msframe import checkpoint

        checkpoint.write_text(args.out, text + "\n")
    else:
        print(text)
    return 0
