"""Loading plugins: built-ins and third parties alike come from the ``msframe`` entry-point group.

Environment:
- ``MSFRAME_PLUGINS=a,b``: load only these entry points (by name), for reproducible runs.
- ``MSFRAME_STRICT_PLUGINS=1``: a plugin that fails to import, register or declare a usable plugin API,
  or a name claimed by two plugins, is fatal instead of a warning (for plugin authors).
  ``MSFRAME_STRICT_PLUGINS=myplugin,other`` is strict about these plugins only: an unrelated broken
  plugin that happens to be installed stays a warning.

Each plugin's entry-point module may declare the plugin API it was written for
(``MSFRAME_API = ">=2,<3"``, see :mod:`msframe.api`); one written for another major version is
refused. A hook function whose name matches no hook (``register_task``) is an error located at its
definition, and a plugin that registers no component is a warning.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import traceback
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from msframe import api, hookspecs
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
    apis: dict[str, str | None] = field(default_factory=dict)  # loaded plugin -> its MSFRAME_API, None if undeclared
    notes: dict[str, str] = field(default_factory=dict)  # loaded plugin -> what its author should know

    def versions(self) -> dict[str, str]:
        return {name: f"{o.distribution} {o.version}" for name, o in sorted(self.plugins.items())}


class PluginWarning(UserWarning):
    """A plugin was skipped, or registered nothing; the others still load."""


class HookNameError(PluginError):
    """A function marked ``@msframe.hookimpl`` is named after no hook; the message gives its location."""


def _strict(name: str) -> bool:
    """Whether ``MSFRAME_STRICT_PLUGINS`` makes plugin ``name``'s problems fatal: "1", "true" or "yes" for
    every plugin, otherwise a comma-separated list of the plugins (entry-point names) to be strict about."""
    value = os.environ.get("MSFRAME_STRICT_PLUGINS", "").strip()
    if value.lower() in ("1", "true", "yes"):
        return True
    return name in {p.strip() for p in value.split(",") if p.strip()}


def _fail(loaded: Loaded, name: str, reason: str) -> None:
    loaded.failures[name] = reason
    message = f"plugin '{name}' skipped: {reason}"
    if _strict(name):
        raise PluginError(message + " (MSFRAME_STRICT_PLUGINS is set)")
    warnings.warn(message, PluginWarning, stacklevel=3)


def _register_one(loaded: Loaded, name: str, module, origin: Origin) -> None:
    """Call every hook of one plugin module into a scratch registry, then merge it: all or nothing."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs.Specs)
    pm.register(module, name=name)
    _check_hook_names(pm, module)
    staged = Registry()
    for kind in KINDS:
        def register(comp_name, cls, _kind=kind.name):
            staged.add(_kind, comp_name, cls, origin)

        getattr(pm.hook, kind.hook)(register=register)
    if not staged.entries():
        hooks = ", ".join(k.hook for k in KINDS)
        warnings.warn(f"plugin '{name}' registers no component: module '{module.__name__}' has no function marked "
                      f"@msframe.hookimpl named after a hook ({hooks}) that calls register(name, cls)",
                      PluginWarning, stacklevel=3)
    for entry in staged.entries():
        loaded.registry.add(entry.kind, entry.name, entry.cls, entry.origin)


def _check_hook_names(pm: pluggy.PluginManager, module) -> None:
    """A function marked ``@msframe.hookimpl`` whose name is no hook (``register_task``) would register nothing,
    silently: raise a PluginError naming it, where it is defined, and the hook it was probably meant to be."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        hooks = [k.hook for k in KINDS]
        for hook_name in sorted(n for n in dir(pm.hook) if not n.startswith("_") and n not in hooks):
            function = getattr(module, hook_name, None)
            try:
                where = f"{inspect.getsourcefile(function)}:{inspect.getsourcelines(function)[1]}"
            except (TypeError, OSError):
                where = f"module '{module.__name__}'"
            guess = difflib.get_close_matches(hook_name, hooks, n=1)
            raise HookNameError(f"{where}: @msframe.hookimpl function '{hook_name}' is not an msframe hook"
                              f"{f'; did you mean {guess[0]!r}?' if guess else ''} (hooks: {', '.join(hooks)})") from None
        raise


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
        declared = getattr(module, api.DECLARATION, None)
        try:
            refused = None if declared is None else api.refusal(declared)
        except ValueError as exc:
            refused = f"module '{ep.value}': {exc}"
        if refused:
            _fail(loaded, ep.name, refused)
            continue
        try:
            _register_one(loaded, ep.name, module, origin)
        except HookNameError as exc:  # the message says where
            _fail(loaded, ep.name, f"registration failed: {exc}")
            continue
        except Exception as exc:
            _fail(loaded, ep.name, f"registration failed at {_where(exc)}: {type(exc).__name__}: {exc}")
            continue
        loaded.plugins[ep.name] = origin
        loaded.apis[ep.name] = declared
        if declared is None:
            loaded.notes[ep.name] = (f"declares no plugin API; if it was written before API {api.major()} check it "
                                     f"against CHANGELOG.md ({api.CHANGES[api.major()]}), then declare "
                                     f"{api.DECLARATION} = \">={api.major()},<{api.major() + 1}\" in '{ep.value}'")
    missing = only - seen
    if missing:
        raise PluginError(f"MSFRAME_PLUGINS names plugins that are not installed: {', '.join(sorted(missing))}")
    for entries in loaded.registry.conflicts():
        if any(_strict(e.origin.plugin) for e in entries):
            origins = " and ".join(str(e.origin) for e in entries)
            raise PluginError(f"{entries[0].kind} '{entries[0].name}' is registered twice, by {origins}")
    return loaded


def describe(loaded: Loaded) -> list[dict]:
    """One row per registered component: kind, name, plugin, distribution, version, and the plugin API its
    plugin declares (``api``: its ``MSFRAME_API``, or "none declared")."""
    return [
        {
            "kind": e.kind,
            "name": e.name,
            "plugin": e.origin.plugin,
            "distribution": e.origin.distribution,
            "version": e.origin.version,
            "api": loaded.apis.get(e.origin.plugin) or "none declared",
        }
        for e in loaded.registry.entries()
    ]

