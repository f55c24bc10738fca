"""The plugin API version and the loader's hygiene, on plugins "installed" into tmp_path.

A plugin is installed here the way pip leaves it: its module next to a ``*.dist-info`` folder
with ``METADATA`` and ``entry_points.txt``, on ``sys.path``; ``msframe.plugins.load()`` then finds it
through the ``msframe`` entry-point group like any other, in this process.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path

import pytest

import msframe
from msframe import api, plugins
from msframe.errors import PluginError

ROOT = Path(__file__).resolve().parents[1]

SALT_PEPPER = '''
import torch
import msframe
from msframe.components import Degraded, Task

class SaltPepper(Task):
    def degrade(self, clean, generator):
        hit = torch.rand(clean.shape, generator=generator, device=clean.device) < 0.1
        return Degraded(torch.where(hit, 1 - clean, clean), clean)

@msframe.hookimpl
def register_tasks(register):
    register("salt_pepper_{name}", SaltPepper)
'''


def install(site: Path, name: str, source: str) -> None:
    """Install module ``msframe_<name>`` (``source``) as distribution ``msframe-<name>`` 1.0 with entry point ``name``."""
    module = f"msframe_{name}"
    sys.modules.pop(module, None)  # an earlier test's module of the same name
    importlib.invalidate_caches()
    (site / f"{module}.py").write_text(textwrap.dedent(source).replace("{name}", name))
    info = site / f"msframe_{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: msframe-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[msframe]\n{name} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path to install plugins into; loading is limited to the built-ins and those installed."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MSFRAME_STRICT_PLUGINS", raising=False)
    return tmp_path


def load_only(monkeypatch, *names: str) -> tuple[plugins.Loaded, list[str]]:
    """``plugins.load()`` of the built-in tasks and ``names``, and the warnings it gave."""
    monkeypatch.setenv("MSFRAME_PLUGINS", ",".join(["msframe_tasks", *names]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", plugins.PluginWarning)
        loaded = plugins.load()
    return loaded, [str(w.message) for w in caught if issubclass(w.category, plugins.PluginWarning)]


# ------------------------------------------------------------------------------- versions


def test_package_version_and_plugin_api_are_declared_in_step():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == msframe.__version__
    assert msframe.PLUGIN_API == api.PLUGIN_API == "2.0"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {msframe.__version__}" in changelog and f"plugin API {msframe.PLUGIN_API}" in changelog


def test_every_built_in_plugin_declares_the_current_api():
    loaded = plugins.load()
    builtin = [p for p, o in loaded.plugins.items() if o.distribution == "msframe"]
    assert builtin and all(api.refusal(loaded.apis[p]) is None for p in builtin), loaded.apis
    assert {r["api"] for r in plugins.describe(loaded) if r["distribution"] == "msframe"} == {">=2,<3"}


@pytest.mark.parametrize("declared, refused", [
    (">=2,<3", None), ("~=2.0", None), ("==2.*", None), (">=1", None),
    (">=1,<2", "written for plugin API 1"), ("==1.*", "written for plugin API 1"),
    (">=3", "needs plugin API 3"), ("<0", "admits no plugin API version"),
])
def test_refusal_names_the_version_a_plugin_was_written_for(declared, refused):
    said = api.refusal(declared)
    assert said is None if refused is None else refused in said


@pytest.mark.parametrize("declared", ["2", "two", "", 2, None])
def test_a_malformed_declaration_is_a_value_error(declared):
    with pytest.raises(ValueError, match="MSFRAME_API"):
        api.parse(declared)


# --------------------------------------------------------------------- declared API at load


def test_a_plugin_for_the_old_major_is_refused_with_what_changed(site, monkeypatch):
    install(site, "old", 'MSFRAME_API = ">=1,<2"\n' + SALT_PEPPER)
    loaded, said = load_only(monkeypatch, "old")
    assert "old" not in loaded.plugins and "salt_pepper_old" not in loaded.registry.names("task")
    line = loaded.failures["old"]
    assert "\n" not in line
    assert "written for plugin API 1" in line and "has API 2.0" in line and "a backbone returns a correction" in line
    assert said == [f"plugin 'old' skipped: {line}"]
    monkeypatch.setenv("MSFRAME_STRICT_PLUGINS", "old")
    with pytest.raises(PluginError, match="plugin 'old' skipped: it was written for plugin API 1"):
        load_only(monkeypatch, "old")


def test_a_plugin_for_the_current_api_loads_and_is_listed_with_it(site, monkeypatch):
    install(site, "current", 'MSFRAME_API = ">=2,<3"\n' + SALT_PEPPER)
    loaded, said = load_only(monkeypatch, "current")
    assert said == [] and "current" in loaded.plugins and "current" not in loaded.notes
    row = next(r for r in plugins.describe(loaded) if r["name"] == "salt_pepper_current")
    assert row["api"] == ">=2,<3"


def test_a_plugin_declaring_no_api_loads_with_a_note(site, monkeypatch):
    install(site, "undeclared", SALT_PEPPER)
    loaded, said = load_only(monkeypatch, "undeclared")
    assert said == [] and "salt_pepper_undeclared" in loaded.registry.names("task")
    assert "declares no plugin API" in loaded.notes["undeclared"] and 'MSFRAME_API = ">=2,<3"' in loaded.notes["undeclared"]
    row = next(r for r in plugins.describe(loaded) if r["name"] == "salt_pepper_undeclared")
    assert row["api"] == "none declared"


def test_a_malformed_declaration_is_refused(site, monkeypatch):
    install(site, "garbled", 'MSFRAME_API = "version two"\n' + SALT_PEPPER)
    loaded, _ = load_only(monkeypatch, "garbled")
    assert "is not a version specifier" in loaded.failures["garbled"]


# --------------------------------------------------------------------------- hook hygiene


def test_a_misspelled_hook_is_an_error_at_its_definition(site, monkeypatch):
    install(site, "misspelled", SALT_PEPPER.replace("def register_tasks", "def register_task"))
    loaded, said = load_only(monkeypatch, "misspelled")
    reason = loaded.failures["misspelled"]
    line = 1 + SALT_PEPPER.splitlines().index("@msframe.hookimpl")  # where the function's definition starts
    assert f"msframe_misspelled.py:{line}: @msframe.hookimpl function 'register_task' is not an msframe hook" in reason
    assert "did you mean 'register_tasks'?" in reason and len(said) == 1


def test_a_plugin_that_registers_nothing_is_a_warning(site, monkeypatch):
    install(site, "unmarked", SALT_PEPPER.replace("@msframe.hookimpl\n", ""))
    loaded, said = load_only(monkeypatch, "unmarked")
    assert "unmarked" in loaded.plugins and not loaded.failures
    assert said == [(f"plugin 'unmarked' registers no component: module 'msframe_unmarked' has no function marked "
                    f"@msframe.hookimpl named after a hook ({', '.join(k.hook for k in plugins.KINDS)}) that calls "
                    "register(name, cls)")]


def test_strict_mode_scoped_to_a_plugin_ignores_an_unrelated_broken_one(site, monkeypatch):
    install(site, "mine", 'MSFRAME_API = ">=2,<3"\n' + SALT_PEPPER)
    install(site, "theirs", "import a_module_that_does_not_exist\n")
    monkeypatch.setenv("MSFRAME_STRICT_PLUGINS", "mine")
    loaded, said = load_only(monkeypatch, "mine", "theirs")
    assert "mine" in loaded.plugins and "theirs" in loaded.failures and said[0].startswith("plugin 'theirs' skipped")
    for strict in ("theirs", "1", "mine, theirs"):
        monkeypatch.setenv("MSFRAME_STRICT_PLUGINS", strict)
        with pytest.raises(PluginError, match="plugin 'theirs' skipped"):
            load_only(monkeypatch, "mine", "theirs")


def test_strict_mode_scoped_to_a_plugin_is_strict_about_its_conflicts(site, monkeypatch):
    install(site, "mine", SALT_PEPPER.replace('"salt_pepper_{name}"', '"denoise"'))
    monkeypatch.setenv("MSFRAME_STRICT_PLUGINS", "unrelated")
    loaded, _ = load_only(monkeypatch, "mine")
    assert loaded.registry.conflicts()
    monkeypatch.setenv("MSFRAME_STRICT_PLUGINS", "mine")
    with pytest.raises(PluginError, match="task 'denoise' is registered twice"):
        load_only(monkeypatch, "mine")
