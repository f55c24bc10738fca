"""msframe: Multiscale Gradient Estimation and Full-Multiscale training of image-restoration CNNs.

Importing the package is light (no torch): ``tools/run.py`` and ``python -m msframe`` rely on it to
answer Ctrl-C during start-up with exit 130.
"""

import pluggy

__version__ = "0.2.0"

from msframe.api import PLUGIN_API  # the plugin API version, see msframe/api.py and CHANGELOG.md

#: the pluggy project name, and the marker plugins decorate their hooks with (see msframe.hookspecs)
PROJECT = "msframe"
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PLUGIN_API", "PROJECT", "__version__", "hookimpl"]
