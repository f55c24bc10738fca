"""Parameter descriptions in the models: describe, plugins --json and ``run.py schema`` (a JSON schema of
a whole recipe) carry them; constrained types read as bounds, not pydantic internals."""

from __future__ import annotations

import json
import tomllib

from conftest import ROOT
from msframe import plugins
from msframe.sections import CORE


def test_schema_covers_every_section_component_and_parameter_with_descriptions(cli, tmp_path):
    proc = cli("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema["$schema"].endswith("2020-12/schema") and schema["additionalProperties"] is False
    props = schema["properties"]
    registry = plugins.load().registry
    assert set(CORE) <= set(props) and {"data", "task", "backbone", "resampler", "estimator", "loggers"} <= set(props)
    # core sections: the comments are descriptions, the bounds are there
    lr_ratio = props["optim"]["properties"]["min_lr_ratio"]
    assert lr_ratio["description"] == "floor of the cosine policies, relative to lr" and lr_ratio["maximum"] == 1
    # a plugin section: one choice per registered component, told apart by type
    choices = props["estimator"]["oneOf"]
    assert [c["properties"]["type"]["const"] for c in choices] == registry.names("estimator")
    mlmc = next(c for c in choices if c["properties"]["type"]["const"] == "mlmc")
    assert mlmc["properties"]["every"]["description"] == "iterations between re-allocations"
    assert mlmc["properties"]["every"]["minimum"] == 1 and "type" in mlmc["required"]
    console = props["loggers"]["properties"]["console"]
    assert console["properties"]["every"]["description"].startswith("iterations between progress lines")
    assert set(props["loggers"]["properties"]) == set(registry.names("logger"))

    # every key of every shipped recipe is one the schema knows, for the component it chooses
    for path in sorted((ROOT / "recipes").rglob("*.toml")):
        if path.name == "matrix.toml":
            continue
        recipe = tomllib.loads(path.read_text())
        for section, table in recipe.items():
            assert section in props, (path, section)
            if "oneOf" in props[section]:
                known = next(c for c in props[section]["oneOf"] if c["properties"]["type"]["const"] == table["type"])
            elif section == "loggers":
                for name, params in table.items():
                    assert set(params) <= set(props["loggers"]["properties"][name]["properties"]), (path, name)
                continue
            else:
                known = props[section]
            assert set(table) <= set(known["properties"]), (path, section)

    out = tmp_path / "recipe.schema.json"
    assert cli("schema", "--out", str(out)).returncode == 0
    assert json.loads(out.read_text()) == schema


def test_describe_and_plugins_json_read_descriptions_and_bounds_from_the_models(cli):
    unet = cli("describe", "backbone", "unet")
    assert unet.returncode == 0, unet.stderr
    multipliers = next(line for line in unet.stdout.splitlines() if line.split()[:1] == ["multipliers"])
    assert "tuple[int (>= 1), ...] (length >= 1)" in multipliers and "width per level" in multipliers
    assert "FieldInfo" not in unet.stdout and "Annotated" not in unet.stdout
    rows = json.loads(cli("plugins", "--json").stdout)["components"]
    console = next(r for r in rows if (r["kind"], r["name"]) == ("logger", "console"))
    every = next(p for p in console["params"] if p["name"] == "every")
    assert every["type"] == "int" and every["bounds"] == [">= 1"]
    assert console["schema"]["properties"]["every"]["description"] == every["description"]
