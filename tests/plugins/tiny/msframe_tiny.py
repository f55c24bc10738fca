"""A third-party plugin as an outside author would write it: one task, registered by entry point."""

import torch
from pydantic import Field

import msframe
from msframe.components import Degraded, Params, Task


class SaltPepper(Task):
    """Sets a fraction of the pixels to 0 or 1."""

    class Params(Params):
        amount: float = Field(0.1, ge=0, le=1)

    def degrade(self, clean, generator):
        u = torch.rand(clean.shape, generator=generator, device=clean.device)
        salt = torch.rand(clean.shape, generator=generator, device=clean.device) < 0.5
        hit = u < self.params.amount
        noisy = torch.where(hit, salt.to(clean.dtype), clean)
        return Degraded(noisy, clean)


@msframe.hookimpl
def register_tasks(register):
    register("salt_pepper", SaltPepper)
