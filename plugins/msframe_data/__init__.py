"""Built-in datasets, one module per family.

- ``sample_images`` (sample.py): the photographs bundled with scikit-image; the quickstart's data.
- ``image_folder`` (folder.py): any folder tree of image files.
- ``cifar10`` (cifar.py), ``stl10`` (stl.py), ``celeba`` (celeba.py): the official files, unpacked
  by the user (nothing is ever downloaded).

Shared machinery (decoding, seeded splits, resizing, small-image policy, report) is in base.py.
"""

from __future__ import annotations

import msframe
from msframe_data.celeba import CelebA
from msframe_data.cifar import Cifar10
from msframe_data.folder import ImageFolder
from msframe_data.paired import PairedFolder
from msframe_data.sample import SampleImages
from msframe_data.stl import Stl10

#: the plugin API this plugin is written for (msframe/api.py): backbones return corrections
MSFRAME_API = ">=2,<3"


@msframe.hookimpl
def register_datasets(register):
    register("sample_images", SampleImages)
    register("image_folder", ImageFolder)
    register("cifar10", Cifar10)
    register("stl10", Stl10)
    register("celeba", CelebA)
    register("paired_folder", PairedFolder)
