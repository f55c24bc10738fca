"""Built-in backbones, one module each.

- ``cnn``: a plain residual convolutional network (DnCNN-like)
- ``unet``: encoder-decoder with residual blocks, GroupNorm, optional conditioning and attention
- ``resnet``: the paper's flat residual network
- ``espcn``: sub-pixel convolution network for super-resolution (adapts to the task's scale)
- ``timm``: a timm feature encoder with a light decoder
"""

from __future__ import annotations

import msframe

from .cnn import CNN, PlainCNN
from .espcn import ESPCN
from .resnet import ResNet
from .timm_encoder import TimmEncoder
from .unet import UNet

#: the plugin API this plugin is written for (msframe/api.py): backbones return corrections
MSFRAME_API = ">=2,<3"

__all__ = ["CNN", "ESPCN", "PlainCNN", "ResNet", "TimmEncoder", "UNet"]


@msframe.hookimpl
def register_backbones(register):
    register("cnn", CNN)
    register("unet", UNet)
    register("resnet", ResNet)
    register("espcn", ESPCN)
    register("timm", TimmEncoder)
