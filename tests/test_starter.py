"""``new-plugin`` (msframe.starter) writes, for each kind, a package that passes its own kit test as generated.

Nothing is pip-installed: the generated module is imported from its folder and its test module's
functions are called, as pytest would.
"""

from __future__ import annotations

import importlib
import sys
import tomllib

import pytest

import msframe
from msframe import starter


@pytest.mark.parametrize("kind", starter.KINDS)
def test_new_plugin_passes_its_own_kit_test(kind, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    name = f"my_{kind}"
    target = tmp_path / name
    assert starter.main([name, "--kind", kind, "--out", str(target)]) == 0
    assert "pyproject.toml" in capsys.readouterr().out

    project = tomllib.loads((target / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["msframe"] == {name: f"{name}_plugin"}
    monkeypatch.syspath_prepend(str(target))
    monkeypatch.syspath_prepend(str(target / "tests"))
    module = importlib.import_module(f"{name}_plugin")
    assert module.MSFRAME_API == f">={msframe.api.major()},<{msframe.api.major() + 1}"
    assert msframe.api.refusal(module.MSFRAME_API) is None
    registered = {}
    hook = getattr(module, f"register_{kind}s")
    hook(register=lambda n, cls: registered.setdefault(n, cls))
    assert list(registered) == [name]

    tests = importlib.import_module(f"test_{name}")
    for test in (f for n, f in vars(tests).items() if n.startswith("test_")):
        test(tmp_path / test.__name__)
    for module_name in (f"{name}_plugin", f"test_{name}"):
        sys.modules.pop(module_name)


def test_new_plugin_refuses_a_folder_that_is_not_empty_and_a_bad_name(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    assert starter.main(["ok", "--kind", "task", "--out", str(tmp_path / "taken")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert starter.main(["Not-A-Name", "--kind", "task", "--out", str(tmp_path / "new")]) == 2
    assert "lower-case Python identifier" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
