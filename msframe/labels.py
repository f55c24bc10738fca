"""What a run is, in words: its method (estimators, stages, meshes) for run names, tags and plots.

Works on the resolved recipe as a plain dict (``recipe.resolved.toml`` or ``Recipe.to_dict()``), so
tools that read run folders need no plugins to label them.
"""

from __future__ import annotations


def stage_estimators(recipe: dict) -> list[str]:
    """The estimator name of every stage, coarse to fine."""
    sch = recipe.get("schedule", {})
    default = recipe.get("estimator", {}).get("type", "?")
    if sch.get("stage"):
        return [st.get("estimator", {}).get("type", default) for st in sch["stage"]]
    if sch.get("budget") is not None:  # split weights, one per stage, or one stage per level
        stages = len(sch.get("split") or [1] * int(sch.get("levels", 1)))
    else:
        stages = len(sch.get("iterations") or sch.get("work") or [1])
    return [default] * stages


def meshes(recipe: dict) -> list[int]:
    """The mesh sides the run trains on, finest first."""
    sch = recipe.get("schedule", {})
    resolution, levels = int(sch.get("resolution", 64)), int(sch.get("levels", 1))
    return [resolution // 2**m for m in range(levels)]


def method(recipe: dict) -> str:
    """E.g. ``mge, 3 stages, 64/32/16px`` or ``single, 1 stage, 64px``; mixed estimators joined with '+'."""
    names = stage_estimators(recipe)
    estimators = "+".join(dict.fromkeys(names))
    stages = f"{len(names)} stage" + ("s" if len(names) > 1 else "")
    return f"{estimators}, {stages}, {'/'.join(str(m) for m in meshes(recipe))}px"


def tags(recipe: dict) -> list[str]:
    """Short ``key:value`` tags for run tables: estimators, stages, meshes, task, backbone."""
    names = stage_estimators(recipe)
    out = [f"estimator:{n}" for n in dict.fromkeys(names)]
    out += [f"stages:{len(names)}", f"meshes:{'/'.join(str(m) for m in meshes(recipe))}"]
    for section in ("task", "backbone", "data"):
        kind = recipe.get(section, {}).get("type")
        if kind:
            out.append(f"{section}:{kind}")
    return out


def run_name(recipe: dict, folder: str) -> str:
    """A run name that says the method first: ``mge-3st-64.32.16px_<folder>``."""
    names = stage_estimators(recipe)
    short = "+".join(dict.fromkeys(names))
    return f"{short}-{len(names)}st-{'.'.join(str(m) for m in meshes(recipe))}px_{folder}"


def ratio_words(ratio: float | None) -> str:
    """The single-scale work / this run's work, said truly: ``2.00x less work than single-scale``,
    ``1.09x MORE work than single-scale`` (ratio 0.92), or ``the same work as single-scale``."""
    if not ratio:
        return "no work"
    if abs(ratio - 1) < 0.005:
        return "the same work as single-scale"
    if ratio > 1:
        return f"{ratio:.2f}x less work than single-scale"
    return f"{1 / ratio:.2f}x MORE work than single-scale"
