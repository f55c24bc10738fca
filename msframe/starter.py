"""``new-plugin``: write a working plugin package to start from.

``main(["NAME", "--kind", "task", "--out", "FOLDER"])`` writes into FOLDER (default ``./NAME``; an
existing non-empty folder is refused) a distribution ``NAME`` whose module ``NAME_plugin`` holds one
component of that kind (task, backbone, resampler or dataset) registered as ``NAME``, with

- ``pyproject.toml``: the ``msframe`` entry point and a dependency on this msframe's version range;
- the module: the component, ``MSFRAME_API`` (the plugin API it is written for) and its hook;
- ``tests/test_NAME.py``: the component's kit check (``msframe.testing``) and a smoke run;
- ``README.md``: how to install it and run its tests.

As generated, the package installs (``pip install -e FOLDER``) and passes its tests.
"""

from __future__ import annotations

import argparse
import keyword
import sys
from pathlib import Path

from msframe import __version__, api

KINDS = ("task", "backbone", "resampler", "dataset")

_PYPROJECT = '''[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "An msframe plugin: the {kind} '{name}'"
requires-python = ">=3.11"
dependencies = ["msframe>={version}"]

[project.optional-dependencies]
test = ["pytest>=7"]

# msframe finds the plugin through this group: the entry point's name is the plugin's name
[project.entry-points.msframe]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]
'''

_HEAD = '''"""The msframe plugin '{name}': one {kind}, registered as "{name}"."""

from __future__ import annotations

{torch_imports}

import msframe
{imports}

#: the plugin API this plugin is written for (msframe/api.py, CHANGELOG.md)
MSFRAME_API = "{spec}"


'''

_BODIES = {
    "task": '''class {cls}(Task):
    """Additive Gaussian noise of standard deviation ``sigma``; the network restores the noisy input."""

    class Params(Params):
        sigma: float = 0.1  # a float parameter: NaN and infinity are refused by msframe's Params

    def degrade(self, clean: Tensor, generator: torch.Generator) -> Degraded:
        # every draw from the generator passed in, on the batch's device, in its dtype
        noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        return Degraded(clean + self.params.sigma * noise, clean)
''',
    "backbone": '''class _Network(nn.Module):
    """Two convolutions; the last starts at zero, so the untrained network's correction is zero."""

    def __init__(self, in_channels: int, out_channels: int, features: int):
        super().__init__()
        self.body = nn.Conv2d(in_channels, features, 3, padding=1)
        self.head = nn.Conv2d(features, out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        # the correction to the task's baseline, not the image: Task.restored adds the baseline
        return self.head(torch.relu(self.body(x)))


class {cls}(Backbone):
    """A two-layer convolutional network predicting the correction to the task's baseline."""

    class Params(Params):
        features: int = 16

    def capabilities(self) -> Capabilities:
        # no layer mixes samples (no BatchNorm), so the engine may evaluate terms in one pass
        return Capabilities(batch_independent=True)

    def build(self, in_channels: int, out_channels: int, cond_channels: int, scale: int = 1) -> nn.Module:
        return _Network(in_channels, out_channels, self.params.features)
''',
    "resampler": '''class {cls}(Resampler):
    """The mean of each 2x2 block: halves each side; weights sum to 1, so a constant stays the same."""

    def restrict(self, x: Tensor) -> Tensor:
        return nn.functional.avg_pool2d(x, 2)

    def min_side(self) -> int:
        return 2
''',
    "dataset": '''class _Split(ImageSplit):
    """Seeded synthetic images: smooth colour gradients, the same for the same split name."""

    def __init__(self, name: str, count: int, side: int, channels: int):
        self.names = [f"{{name}}-{{i}}" for i in range(count)]
        g = torch.Generator().manual_seed(sum(map(ord, name)))
        ramp = torch.linspace(0, 1, side)
        weights = torch.rand(count, channels, 2, generator=g)
        self.images = (weights[..., 0, None, None] * ramp[:, None] + weights[..., 1, None, None] * ramp[None, :]) / 2

    def crops(self, n: int, size: int, generator: torch.Generator) -> Tensor:
        pick = torch.randint(len(self.names), (n,), generator=generator).tolist()
        top = torch.randint(self.images.shape[-1] - size + 1, (n, 2), generator=generator).tolist()
        return torch.stack([self.images[i, :, y : y + size, x : x + size] for i, (y, x) in zip(pick, top)]).clone()

    def tiles(self, size: int, per_image: int, max_images: int | None = None) -> Tensor:
        # one tile (the top-left corner) of each of the first images: deterministic, no augmentation
        return self.images[: max_images or len(self.names), :, :size, :size].clone()

    def whole(self, max_images: int | None = None) -> list[Tensor]:
        # the images whole, for the whole-image evaluation protocol (eval.protocol = "whole")
        return [im.clone() for im in self.images[:max_images]]

    def usable(self, size: int) -> int:
        return len(self.names) if size <= self.images.shape[-1] else 0


class {cls}(Dataset):
    """Synthetic images in train, val and test splits (replace with a reader of your files)."""

    class Params(Params):
        images: int = 8
        side: int = 96

    def channels(self) -> int:
        return 3

    def split(self, name: str) -> ImageSplit:
        return _Split(name, self.params.images, self.params.side, self.channels())
''',
}

#: kind -> (the torch imports, the msframe.components imports) of its module
_IMPORTS = {
    "task": ("import torch\nfrom torch import Tensor", "from msframe.components import Degraded, Params, Task"),
    "backbone": ("import torch\nfrom torch import Tensor, nn",
                 "from msframe.components import Backbone, Capabilities, Params"),
    "resampler": ("from torch import Tensor, nn", "from msframe.components import Resampler"),
    "dataset": ("import torch\nfrom torch import Tensor", "from msframe.components import Dataset, ImageSplit, Params"),
}

_HOOK = '''

@msframe.hookimpl
def {hook}(register):
    register("{name}", {cls})
'''

_TEST = '''"""The {kind} '{name}' passes msframe's conformance kit and trains in a tiny run.

Run as msframe's docs/plugins.md says: installed, with strict loading for this plugin
(MSFRAME_STRICT_PLUGINS={name} python -m pytest tests).
"""

import msframe.testing as mt
from {module} import {cls}


def test_{name}_passes_the_kit(tmp_path):
    {check}


def test_{name}_trains_in_a_tiny_run(tmp_path):
    summary = mt.smoke_train("{kind}", {cls}, directory=tmp_path)
    assert summary["iterations"] > 0
'''

_CHECKS = {
    "task": 'mt.check_task({cls}, resamplers=mt.registered_resamplers())',
    "backbone": 'mt.check_backbone({cls})',
    "resampler": 'mt.check_resampler({cls})',
    "dataset": 'mt.check_dataset({cls}, None)',
}

_README = '''# {dist}

An msframe plugin: the {kind} `{name}`, written for msframe plugin API {spec}.

    pip install -e .
    MSFRAME_STRICT_PLUGINS={name} python -m pytest tests

A recipe chooses it with `type = "{name}"` in its `[{section}]` section. docs/plugins.md of msframe
describes every method a {kind} may override.
'''


def files(name: str, kind: str) -> dict[str, str]:
    """The files of a plugin package ``name`` with one ``kind`` component, by relative path."""
    from msframe.kinds import kind as kind_of

    module, cls = f"{name}_plugin", "".join(part.capitalize() for part in name.split("_"))
    spec = f">={api.major()},<{api.major() + 1}"
    fields = {"name": name, "kind": kind, "module": module, "cls": cls, "dist": name.replace("_", "-"), "spec": spec,
              "version": __version__, "hook": kind_of(kind).hook, "section": kind_of(kind).section}
    torch_imports, imports = _IMPORTS[kind]
    source = (_HEAD.format(torch_imports=torch_imports, imports=imports, **fields) + _BODIES[kind].format(**fields)
              + _HOOK.format(**fields))
    return {
        "pyproject.toml": _PYPROJECT.format(**fields),
        f"{module}/__init__.py": source,
        f"tests/test_{name}.py": _TEST.format(check=_CHECKS[kind].format(**fields), **fields),
        "README.md": _README.format(**fields),
    }


def write(target: Path, name: str, kind: str) -> list[Path]:
    """Write the package into ``target`` (created; refused when it exists and is not empty); the paths written."""
    if not (name.isidentifier() and name.islower() and not keyword.iskeyword(name)):
        raise ValueError(f"plugin name {name!r} must be a lower-case Python identifier (letters, digits, '_')")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty folder; choose another --out")
    written = []
    for relative, text in files(name, kind).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    """``new-plugin NAME --kind KIND [--out FOLDER]``: 0 when written, 2 (with one line on stderr) when refused."""
    p = argparse.ArgumentParser(prog="run.py new-plugin", description="Write a working msframe plugin package: "
                                "one component, its entry point, its declared plugin API and its kit test.")
    p.add_argument("name", help="plugin name: a lower-case identifier, also the component's registered name")
    p.add_argument("--kind", required=True, choices=KINDS, help="the kind of component to start from")
    p.add_argument("--out", type=Path, help="folder to write (default: ./NAME); must not exist or be empty")
    args = p.parse_args(argv)
    target = args.out or Path(args.name)
    try:
        written = write(target, args.name, args.kind)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files into {target}:")
    for path in written:
        print(f"  {path.relative_to(target)}")
    print(f"next: pip install -e {target} && cd {target} && MSFRAME_STRICT_PLUGINS={args.name} python -m pytest tests")
    return 0
