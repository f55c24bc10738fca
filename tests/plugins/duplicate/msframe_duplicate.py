"""A plugin that claims the built-in task name 'denoise' a second time."""

import msframe
from msframe.components import Degraded, Task


class OtherDenoise(Task):
    def degrade(self, clean, generator):
        return Degraded(clean, clean)


@msframe.hookimpl
def register_tasks(register):
    register("denoise", OtherDenoise)
