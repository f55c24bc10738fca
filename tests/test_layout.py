"""The shape of the engine: imports run one way, no library module needs the script folder, and the
rooms stay small enough to read (the limits of issue "One assembly")."""

from __future__ import annotations

import ast

from conftest import ROOT

ENGINE = ROOT / "msframe"


def _module(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """msframe module -> the msframe modules it imports, at module level or inside a function."""
    modules = {_module(p): p for p in ENGINE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name and t != "msframe"}
        graph[name] = found
    return graph


def test_the_scan_sees_the_imports():
    graph = imports()
    assert "msframe.assembly" in graph["msframe.train"] and "msframe.plan" in graph["msframe.assembly"]


def test_no_import_circle_in_the_engine():
    graph, done, path = imports(), set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_no_engine_module_reaches_into_tools():
    """No import of tools/ and no path built to it (an installed wheel has no tools/ folder)."""
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            named = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            joined = isinstance(node, ast.Constant) and node.value == "tools"  # e.g. ROOT / "tools" / "run.py"
            if joined or any(n.split(".")[0] == "tools" for n in named):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders


def test_rooms_stay_small():
    lines = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in ENGINE.rglob("*.py")}
    assert lines["msframe/train.py"] < 350 and lines["msframe/cli.py"] < 350, lines
    assert max(lines.values()) <= 400, {k: v for k, v in lines.items() if v > 400}
