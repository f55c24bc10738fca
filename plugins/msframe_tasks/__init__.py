"""Built-in degradation tasks, one module each.

- ``denoise``: additive white Gaussian noise.
- ``deblur``: Gaussian or motion blur plus a little noise.
- ``inpaint``: holes from boxes, free-form strokes or pixel dropout; the mask is a network input.
- ``superres``: ×2 or ×4 antialiased downsampling.
"""

from __future__ import annotations

import msframe

from .deblur import Deblur
from .denoise import Denoise
from .inpaint import Inpaint
from .superres import SuperRes

#: the plugin API this plugin is written for (msframe/api.py): backbones return corrections
MSFRAME_API = ">=2,<3"


@msframe.hookimpl
def register_tasks(register):
    register("denoise", Denoise)
    register("deblur", Deblur)
    register("inpaint", Inpaint)
    register("superres", SuperRes)
