"""Name -> component, with where each name came from."""

from __future__ import annotations

from dataclasses import dataclass

from msframe import components as C
from msframe.errors import PluginError, UserError
from msframe.kinds import KINDS

#: kind -> base class a registered component must subclass
BASES: dict[str, type] = {k.name: k.base for k in KINDS}


@dataclass(frozen=True)
class Origin:
    """Which plugin (entry point), distribution and version registered a component."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' ({self.distribution} {self.version})"


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    cls: type
    origin: Origin


class Registry:
    """Components by kind and name. A name claimed twice is kept as a conflict and reported on use."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], list[Entry]] = {}

    def add(self, kind: str, name: str, cls: type, origin: Origin) -> None:
        """Record ``cls`` as component ``name`` of ``kind``; raise PluginError if it is malformed."""
        base = BASES[kind]
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginError(f"{origin} registered a {kind} with an invalid name {name!r}")
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(
                f"{origin} registered {kind} '{name}' as {cls!r}, which is not a subclass of "
                f"msframe.components.{base.__name__}"
            )
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, C.Params)):
            raise PluginError(
                f"{origin} registered {kind} '{name}' whose Params is not a msframe.components.Params model"
            )
        self._entries.setdefault((kind, name), []).append(Entry(kind, name, cls, origin))

    def conflicts(self) -> list[list[Entry]]:
        return [es for es in self._entries.values() if len(es) > 1]

    def names(self, kind: str) -> list[str]:
        return sorted(n for (k, n) in self._entries if k == kind)

    def entries(self) -> list[Entry]:
        return [e for key in sorted(self._entries) for e in self._entries[key]]

    def get(self, kind: str, name: str, *, key: str | None = None) -> Entry:
        """The one component ``name`` of ``kind``; a UserError lists the known names or both origins.

        ``plugin:name`` picks the component of that plugin (entry point) when two plugins claim a name.
        """
        plugin, sep, bare = name.rpartition(":")
        if sep:
            found = [e for e in self._entries.get((kind, bare), []) if e.origin.plugin == plugin]
            if not found:
                by = [str(e.origin.plugin) for e in self._entries.get((kind, bare), [])]
                known = ", ".join(self.names(kind)) or "none"
                raise UserError(f"{name!r}: plugin '{plugin}' registers no {kind} '{bare}' "
                                f"({'registered by: ' + ', '.join(by) if by else 'known: ' + known})",
                                key=key)
            return found[0]
        found = self._entries.get((kind, name))
        if not found:
            known = ", ".join(self.names(kind)) or "none registered"
            raise UserError(f"{name!r} is not a registered {kind} (known: {known})", key=key)
        if len(found) > 1:
            origins = " and ".join(str(e.origin) for e in found)
            raise UserError(
                f"{kind} '{name}' is registered twice, by {origins}; write PLUGIN:{name} (e.g. "
                f"'{found[-1].origin.plugin}:{name}'), uninstall one, or choose plugins with MSFRAME_PLUGINS",
                key=key,
            )
        return found[0]
