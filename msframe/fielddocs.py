"""Parameter descriptions in the pydantic models of recipe sections and component parameters.

A field's description is its ``Field(description=...)``, else the comment that ends its line in the
class (``sigma: float = 0.1  # noise level``), read with :mod:`tokenize` when the class is made and
stored in the field; the JSON schema of the model carries it (editors' TOML language servers show it).
"""

from __future__ import annotations

import inspect
import io
import textwrap
import tokenize

from pydantic import BaseModel, ConfigDict


def describe_fields(cls: type) -> None:
    """Give each field of the pydantic model ``cls`` without a description the comment that ends its line."""
    comments = field_comments(cls)
    for name, field in cls.model_fields.items():
        if not field.description and comments.get(name):
            field.description = comments[name]


def schema_descriptions(schema: dict, cls: type) -> None:
    """``json_schema_extra`` of the models: each property gets its field's description (pydantic's own
    schema has only those given to ``Field``)."""
    properties = schema.get("properties", {})
    for name, field in cls.model_fields.items():
        prop = properties.get(field.alias or name)
        if prop is not None and field.description and "description" not in prop:
            prop["description"] = field.description


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


class Described(BaseModel):
    """A model of recipe values: unknown keys are errors, values are frozen, no float may be infinite or
    NaN (never a useful setting: an lr of inf trains to NaN), and each field's trailing comment is its
    description (:func:`describe_fields`), also in the JSON schema."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, json_schema_extra=schema_descriptions)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        describe_fields(cls)
