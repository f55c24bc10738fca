"""The plugin API version: what a plugin may rely on, and what each major version changed.

:data:`PLUGIN_API` is semantic: its major number changes when a contract of
:mod:`msframe.components` changes meaning (a plugin written for the old meaning would still run, but
do the wrong thing), its minor number when something is added that older plugins need not know.
A plugin declares the versions it was written for in its entry-point module::

    MSFRAME_API = ">=2,<3"

(a version specifier, as in a ``requires-python``). The loader refuses a plugin whose declaration
excludes this msframe's :data:`PLUGIN_API`, in one line naming the plugin and what changed
(:func:`refusal`); a plugin that declares nothing still loads, with a note in ``plugins``.
"""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

#: This msframe's plugin API, "MAJOR.MINOR".
PLUGIN_API = "2.0"

#: The module-level name a plugin's entry-point module declares its API requirement in.
DECLARATION = "MSFRAME_API"

#: major version -> what it changed against the one before (the line a refused plugin gets)
CHANGES: dict[int, str] = {
    1: "the first plugin API: a backbone returned the restored image",
    2: "a backbone returns a correction that Task.restored adds to the task's baseline (Task.baseline), "
       "not the restored image; a network starts with zero output",
}


def major(version: str = PLUGIN_API) -> int:
    """The major number of ``version``."""
    return Version(version).major


def parse(declared: object) -> SpecifierSet:
    """A plugin's ``MSFRAME_API`` as a specifier set; a ValueError says what is wrong with it."""
    if not isinstance(declared, str) or not declared.strip():
        raise ValueError(f"{DECLARATION} must be a version specifier string such as '>=2,<3', got {declared!r}")
    try:
        return SpecifierSet(declared)
    except InvalidSpecifier:
        raise ValueError(f"{DECLARATION} = {declared!r} is not a version specifier (write e.g. '>=2,<3')") from None


def majors(spec: SpecifierSet, highest: int | None = None) -> list[int]:
    """The major versions, up to ``highest`` (default: this one plus 5), of which ``spec`` admits some version."""
    top = major() + 5 if highest is None else highest
    return [m for m in range(top + 1) if any(Version(f"{m}.{minor}") in spec for minor in (0, 1, 99))]


def refusal(declared: object) -> str | None:
    """Why a plugin declaring ``declared`` cannot load here (one line), or None when it may."""
    spec = parse(declared)
    if Version(PLUGIN_API) in spec:
        return None
    built = majors(spec)
    here = major()
    if not built:
        return f"it declares {DECLARATION} = {declared!r}, which admits no plugin API version (this msframe has {PLUGIN_API})"
    if max(built) < here:
        changed = "; ".join(f"API {m}: {CHANGES[m]}" for m in range(max(built) + 1, here + 1) if m in CHANGES)
        return (f"it was written for plugin API {' or '.join(map(str, built))} ({DECLARATION} = {declared!r}); this msframe "
                f"has API {PLUGIN_API}, which changed: {changed}; update the plugin and its declaration")
    return (f"it needs plugin API {' or '.join(map(str, built))} ({DECLARATION} = {declared!r}); this msframe has "
            f"{PLUGIN_API}: upgrade msframe")
