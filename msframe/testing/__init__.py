"""Conformance checks for msframe components, for plugin authors to run in their own CI.

One plain function per kind of component. Each takes the component class and, optionally, its
parameters (a ``Params`` instance or a dict of keyword arguments; ``None`` means the defaults), builds
the component the way the engine does, and raises ``AssertionError`` with a message naming the
component and what is wrong. They use no ``assert`` statements, so they also check under
``python -O``, and they work from pytest, unittest or a plain script::

    import msframe.testing as mt
    from msframe.components import Degraded, Task

    class Dim(Task):
        def degrade(self, clean, generator):
            return Degraded(0.5 * clean, clean)

    gaps = mt.check_task(Dim)  # shapes, dtypes, losses, determinism on a 3-level plan
    print(gaps)  # {'area': 0.0, ...}: a pointwise scaling commutes with every linear restriction

What each check promises is in its docstring. Measurements that have no right answer (how far
"degrade, then restrict" is from "restrict, then degrade") are returned, not asserted. A worked
plugin that tests itself this way is ``plugins/examples/msframe_poisson``; the guide is
``docs/plugins.md``.

The checks know components only through the base classes of :mod:`msframe.components`; the
registry (``msframe.plugins.load()``) is consulted only when :func:`check_task` is asked for every
registered resampler (``resamplers=None``) and by :func:`smoke_train`, which trains with the built-ins.

One module per kind holds its check (``msframe.testing.task`` has ``check_task``, and so on for each
kind of :data:`msframe.kinds.KINDS`; :data:`CHECKS` follows that rule), ``plumbing`` what they share,
``smoke`` :func:`smoke_train`. The example records come from :mod:`msframe.records`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from msframe.kinds import KINDS
from msframe.records import ALLOCATION_RECORD, EVAL_RECORD, SUMMARY, TRAIN_RECORD
from msframe.testing.backbone import check_backbone
from msframe.testing.dataset import check_dataset
from msframe.testing.estimator import check_estimator
from msframe.testing.hostsync import check_no_host_sync
from msframe.testing.logger import check_logger
from msframe.testing.plumbing import ParamsLike, check_params_roundtrip
from msframe.testing.resampler import check_resampler
from msframe.testing.smoke import smoke_train
from msframe.testing.task import check_task, registered_resamplers, restriction_gap

__all__ = [
    "ALLOCATION_RECORD", "CHECKS", "EVAL_RECORD", "ParamsLike", "SUMMARY", "TRAIN_RECORD", "check_backbone",
    "check_dataset", "check_estimator", "check_logger", "check_no_host_sync", "check_params_roundtrip", "check_resampler",
    "check_task",
    "smoke_train", "registered_resamplers", "restriction_gap",
]

#: kind of component -> its check, ``check_<kind>`` of the module ``msframe.testing.<kind>``
#: (``check_dataset`` needs parameters: most datasets need a root)
CHECKS: dict[str, Callable[..., Any]] = {
    k.name: getattr(import_module(f"{__name__}.{k.name}"), f"check_{k.name}") for k in KINDS
}
