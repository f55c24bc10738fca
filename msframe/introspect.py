"""What ``run.py describe`` and ``run.py plugins --json`` say about a component: its parameters (name,
type, default, description), its docstring and its parameters' JSON schema.

A parameter's description is its pydantic ``Field(description=...)``, else the comment that ends
its line in the ``Params`` class (``sigma: float = 0.1  # noise level``), read with :mod:`tokenize`.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import textwrap
import tokenize

from msframe.recipe import PLUGIN_SECTIONS


def field_comments(cls: type) -> dict[str, str]:
    """The trailing comment of each ``name: type = default  # comment`` line of a class and its bases,
    by field name; a subclass's own comment wins over its base's."""
    found: dict[str, str] = {}
    for klass in cls.__mro__:
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # a built-in base, or a class made without source
            continue
        for name, comment in _annotated_comments(source).items():
            found.setdefault(name, comment)
    return found


def _annotated_comments(source: str) -> dict[str, str]:
    """``{name: comment}`` for each line of ``source``'s class body that starts ``NAME :`` and ends in a
    comment; a field whose definition spans lines keeps the comment of the line it starts on."""
    lines: dict[int, list[tokenize.TokenInfo]] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                lines.setdefault(tok.start[0], []).append(tok)
    except (tokenize.TokenError, IndentationError):  # source that does not tokenize: no comments
        return {}
    found = {}
    for toks in lines.values():
        if (len(toks) >= 3 and toks[0].start[1] > 0 and toks[0].type == tokenize.NAME
                and toks[1].string == ":" and toks[-1].type == tokenize.COMMENT):
            found.setdefault(toks[0].string, toks[-1].string[1:].strip())
    return found


def type_name(annotation) -> str:
    """A parameter's type as ``describe`` shows it: a class by its name, anything else without module prefixes."""
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(typing|msframe[\w.]*)\.", "", str(annotation))


def parameters(cls: type) -> list[dict]:
    """The parameters of a component class: name, type, default (absent when required), description."""
    comments = field_comments(cls.Params)
    out = []
    for name, field in cls.Params.model_fields.items():
        row = {"name": name, "type": type_name(field.annotation), "required": field.is_required()}
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            row["default"] = default if isinstance(default, (int, float, str, bool, list, dict, type(None))) else repr(default)
            if isinstance(default, tuple):
                row["default"] = list(default)
        description = field.description or comments.get(name)
        if description:
            row["description"] = description
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
        w_type = max(len(r["type"]) for r in rows)
        for r in rows:
            default = "required" if r["required"] else f"= {json.dumps(r['default'])}"
            note = f"  # {r['description']}" if r.get("description") else ""
            lines.append(f"  {r['name']:<{w_name}}  {r['type']:<{w_type}}  {default}{note}")
    else:
        lines.append(f"parameters ({where}): none")
    if info["doc"]:
        lines += ["", info["doc"]]
    return "\n".join(lines)
