"""Loading plugins: built-ins and third parties alike come from the ``msframe`` entry-point group.

Environment:
- ``MSFRAME_PLUGINS=a,b``: load only these entry points (by name), for reproducible runs.
- ``MSFRAME_STRICT_PLUGINS=1``: a plugin that fails to import or register, or a name claimed by two
  plugins, is fatal instead of a warning (for plugin authors).
"""

from __future__ import annotations

import importlib
import os
import traceback
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from msframe import hookspecs
from msframe.errors import PluginError
from msframe.kinds import KINDS
from msframe.registry import Origin, Registry

GROUP = "msframe"


@dataclass
class Loaded:
    """The outcome of loading: the registry, the plugins that loaded and those that failed."""

    registry: Registry
    plugins: dict[str, Origin] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # plugin -> reason

    def versions(self) -> dict[str, str]:
        return {name: f"{o.distribution} {o.version}" for name, o in sorted(self.plugins.items())}


class PluginWarning(UserWarning):
    """A plugin was skipped; the others still load."""


def _strict() -> bool:
    return os.environ.get("MSFRAME_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


def _fail(loaded: Loaded, name: str, reason: str) -> None:
    loaded.failures[name] = reason
    message = f"plugin '{name}' skipped: {reason}"
    if _strict():
        raise PluginError(message + " (MSFRAME_STRICT_PLUGINS is set)")
    warnings.warn(message, PluginWarning, stacklevel=3)


def _register_one(loaded: Loaded, name: str, module, origin: Origin) -> None:
    """Call every hook of one plugin module into a scratch registry, then merge it: all or nothing."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs.Specs)
    pm.register(module, name=name)
    staged = Registry()
    for kind in KINDS:
        def register(comp_name, cls, _kind=kind.name):
            staged.add(_kind, comp_name, cls, origin)

        getattr(pm.hook, kind.hook)(register=register)
    for entry in staged.entries():
        loaded.registry.add(entry.kind, entry.name, entry.cls, entry.origin)


def _where(exc: BaseException) -> str:
    """``FILE:LINE`` of the plugin code that raised ``exc`` (the innermost frame outside Python's import
    machinery and msframe itself; for a syntax error, the offending line)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    here = os.path.dirname(os.path.abspath(__file__))
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<") and not os.path.abspath(f.filename).startswith(here + os.sep)
              and "importlib" not in f.filename and "pluggy" not in f.filename]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "unknown location"


def load() -> Loaded:
    """Load every plugin of the ``msframe`` entry-point group, isolating the ones that fail."""
    loaded = Loaded(Registry())
    only = {p.strip() for p in os.environ.get("MSFRAME_PLUGINS", "").split(",") if p.strip()}
    eps = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
    seen: set[str] = set()
    for ep in eps:
        if ep.name in seen or (only and ep.name not in only):
            continue  # the same distribution can be visible twice on sys.path
        seen.add(ep.name)
        dist = ep.dist.name if ep.dist else "unknown"
        version = ep.dist.version if ep.dist else "unknown"
        origin = Origin(ep.name, dist, version)
        try:
            module = importlib.import_module(ep.value)
        except Exception as exc:  # a broken plugin must not take the others down
            _fail(loaded, ep.name, f"import of '{ep.value}' failed at {_where(exc)}: {type(exc).__name__}: {exc}")
            continue
        try:
            _register_one(loaded, ep.name, module, origin)
        except Exception as exc:
            _fail(loaded, ep.name, f"registration failed at {_where(exc)}: {type(exc).__name__}: {exc}")
            continue
        loaded.plugins[ep.name] = origin
    missing = only - seen
    if missing:
        raise PluginError(f"MSFRAME_PLUGINS names plugins that are not installed: {', '.join(sorted(missing))}")
    if _strict():
        for entries in loaded.registry.conflicts():
            origins = " and ".join(str(e.origin) for e in entries)
            raise PluginError(f"{entries[0].kind} '{entries[0].name}' is registered twice, by {origins}")
    return loaded


def describe(loaded: Loaded) -> list[dict]:
    """One row per registered component: kind, name, plugin, distribution, version."""
    return [
        {
            "kind": e.kind,
            "name": e.name,
            "plugin": e.origin.plugin,
            "distribution": e.origin.distribution,
            "version": e.origin.version,
        }
        for e in loaded.registry.entries()
    ]

