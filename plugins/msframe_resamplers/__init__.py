"""Built-in restrictions (mesh h -> 2h), all through kornia.

- ``nearest``: plain decimation, the reference implementation's choice (aliases badly).
- ``bilinear`` / ``bicubic``: interpolation, with Gaussian antialiasing unless ``antialias = false``.
- ``area``: the mean of each 2x2 block (full-weighting for cell-centred images).
- ``gaussian``: Gaussian pyramid reduction (5x5 blur, then decimation).
"""

from __future__ import annotations

from typing import Literal

import kornia.geometry.transform as KT
from torch import Tensor

import msframe
from msframe.components import Params, Resampler

#: the plugin API this plugin is written for (msframe/api.py): backbones return corrections
MSFRAME_API = ">=2,<3"


class Nearest(Resampler):
    def restrict(self, x: Tensor) -> Tensor:
        return KT.rescale(x, 0.5, interpolation="nearest")


class Area(Resampler):
    def restrict(self, x: Tensor) -> Tensor:
        return KT.rescale(x, 0.5, interpolation="area")


class _Interpolating(Resampler):
    MODE = "bilinear"

    class Params(Params):
        antialias: bool = True

    def restrict(self, x: Tensor) -> Tensor:
        return KT.rescale(x, 0.5, interpolation=self.MODE, align_corners=False, antialias=self.params.antialias)


class Bilinear(_Interpolating):
    MODE = "bilinear"


class Bicubic(_Interpolating):
    MODE = "bicubic"


class Gaussian(Resampler):
    class Params(Params):
        border: Literal["reflect", "replicate", "constant", "circular"] = "reflect"

    def restrict(self, x: Tensor) -> Tensor:
        return KT.pyrdown(x, border_type=self.params.border)

    def min_side(self) -> int:
        return 4  # the 5x5 kernel pads 2 px on each side; reflection needs more than that


@msframe.hookimpl
def register_resamplers(register):
    register("nearest", Nearest)
    register("area", Area)
    register("bilinear", Bilinear)
    register("bicubic", Bicubic)
    register("gaussian", Gaussian)
